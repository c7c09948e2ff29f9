/*
 * Fault injection and crashes of the participant runtime: the spec parser
 * (valid and invalid specs, errors naming the option), the retry fault, the
 * determinism of the draws, and SIGKILL just before / just after COMMIT
 * (by fault and by crash point) in a child process, after which the parent
 * checks what the database durably holds.
 *
 * Children are this same program re-executed with posix_spawn ("child"
 * mode below), never fork(): nng is not fork-safe.
 */
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "bank.h"
#include "crashpoint.h"
#include "util.h"

extern char **environ;

typedef bank_fixture fixture;

static void test_spec_valid(void **state)
{
    fixture *f = *state;
    const char *specs[] = {
        NULL,
        "",
        "seed=42",
        "retry=0",
        "seed=42,drop_reply=0.5,crash_before_commit=0,crash_after_commit=0,delay=0.25,"
        "delay_ms=10,retry=0.1",
        "retry=1,delay=1e-3",
    };
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        char err[256] = "";
        pt_options o = {.name = "bank", .db_path = f->dir.db, .faults = specs[i]};
        participant *p = pt_create(&o, err, sizeof err);
        if (p == NULL)
            fail_msg("spec '%s' refused: %s", specs[i] ? specs[i] : "(null)", err);
        pt_destroy(p);
    }
}

static void test_spec_invalid_names_option(void **state)
{
    fixture *f = *state;
    const struct {
        const char *spec;
        const char *names;
    } bad[] = {
        {"bogus=1", "unknown fault option 'bogus'"},
        {"retry=1.5", "'retry' needs a probability"},
        {"drop_reply=-0.1", "'drop_reply' needs a probability"},
        {"delay=nan", "'delay' needs a probability"},
        {"crash_after_commit=", "'crash_after_commit' needs a probability"},
        {"crash_before_commit=0.5x", "'crash_before_commit'"},
        {"delay_ms=-1", "'delay_ms' needs milliseconds"},
        {"delay_ms=600001", "'delay_ms'"},
        {"seed=abc", "'seed' needs an unsigned integer"},
        {"seed=-3", "'seed'"},
        {"retry", "'retry' needs a value"},
        {"retry=0.1,,delay=0.1", "empty fault option"},
        {"retry=0.1,", "empty fault option"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[256] = "";
        pt_options o = {.name = "bank", .db_path = f->dir.db, .faults = bad[i].spec};
        participant *p = pt_create(&o, err, sizeof err);
        if (p != NULL) {
            pt_destroy(p);
            fail_msg("spec '%s' accepted", bad[i].spec);
        }
        if (strstr(err, bad[i].names) == NULL)
            fail_msg("spec '%s': error '%s' does not name '%s'", bad[i].spec, err, bad[i].names);
    }
}

static void test_help_lists_every_option(void **state)
{
    const char *help = pt_faults_help();
    const char *names[] = {
        "seed=",     "drop_reply=", "crash_before_commit=", "crash_after_commit=", "delay=",
        "delay_ms=", "retry="};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strstr(help, names[i]) == NULL)
            fail_msg("help does not mention %s", names[i]);
}

/* retry=1: every request answers RETRY, without a handler call or a stored row. */
static void test_retry_fault(void **state)
{
    fixture *f = *state;
    f->p = bank_open_simple(f->dir.db, &f->st, "retry=1");
    bank_req q = {"k1", "s1", "pay", PHASE_ACTION, "debit", "alice", "30"};
    bank_reply r;
    bank_call(f->p, &q, &r);
    assert_int_equal(r.outcome, OUTCOME_RETRY);
    assert_non_null(strstr(r.error, "fault injected"));
    assert_int_equal(f->st.debit_calls, 0);
    assert_int_equal(bank_balance(f->p, "alice"), 100);
    assert_int_equal(bank_query(f->p, "SELECT count(*) FROM pt_idempotency"), 0);
    pt_stats s;
    pt_get_stats(f->p, &s);
    assert_int_equal(s.retries, 1);
    assert_int_equal(s.effects, 0);
    bank_reply_free(&r);
}

/* Runs 40 distinct debits of 1 on a fresh database; writes 'O' or 'R' per reply. */
static void run_pattern(const char *faults, char pattern[41])
{
    bank_dir d;
    bank_state st = {0};
    assert_int_equal(bank_dir_make(&d), 0);
    participant *p = bank_open_simple(d.db, &st, faults);
    for (int i = 0; i < 40; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        bank_req q = {key, key, "pay", PHASE_ACTION, "debit", "alice", "1"};
        bank_reply r;
        bank_call(p, &q, &r);
        assert_true(r.outcome == OUTCOME_OK || r.outcome == OUTCOME_RETRY);
        pattern[i] = r.outcome == OUTCOME_OK ? 'O' : 'R';
        bank_reply_free(&r);
    }
    pattern[40] = '\0';
    /* Every OK is one debit, every RETRY none. */
    int oks = 0;
    for (int i = 0; i < 40; i++)
        oks += pattern[i] == 'O';
    assert_int_equal(bank_balance(p, "alice"), 100 - oks);
    assert_int_equal(st.debit_calls, oks);
    pt_destroy(p);
    bank_dir_remove(&d);
}

static void test_faults_deterministic(void **state)
{
    char a[41], b[41];
    run_pattern("seed=7,retry=0.5", a);
    run_pattern("seed=7,retry=0.5", b);
    assert_string_equal(a, b);
    assert_non_null(strchr(a, 'O'));
    assert_non_null(strchr(a, 'R'));
}

/* ---- Crashes in a child process --------------------------------------- */

/*
 * Child mode: argv = {self, "child", db, faults|"-", crashpoint|"-"}. Opens
 * the bank on db, sends one debit of 30 (key s1/pay/action) and exits 0
 * when it was answered OK; 2..4 for failures. A crash kills it first.
 */
static int child_main(char **argv)
{
    const char *db = argv[2];
    const char *faults = strcmp(argv[3], "-") == 0 ? NULL : argv[3];
    if (strcmp(argv[4], "-") != 0)
        setenv("SAGA_CRASH_POINT", argv[4], 1);
    crashpoint_init();
    bank_state st = {0};
    pt_options o = {.name = "child", .faults = faults};
    participant *p = bank_open(&o, db, &st);
    if (p == NULL)
        return 2;
    kvmap params = KVMAP_INIT;
    size_t len, rlen = 0;
    if (kv_set(&params, "account", "alice") != 0 || kv_set(&params, "amount", "30") != 0)
        return 3;
    uint8_t *msg =
        wire_pack_request("s1/pay/action", "s1", "pay", PHASE_ACTION, "debit", 1, &params, &len);
    const uint8_t *msgs[1] = {msg};
    uint8_t *reply = NULL;
    if (msg == NULL || pt_process_batch(p, 1, msgs, &len, &reply, &rlen) != 0)
        return 3;
    StepReply *rep = saga__v1__step_reply__unpack(NULL, rlen, reply);
    int ok = rep && rep->outcome == SAGA__V1__OUTCOME__OUTCOME_OK;
    if (rep)
        saga__v1__step_reply__free_unpacked(rep, NULL);
    free(reply);
    free(msg);
    kv_free(&params);
    pt_destroy(p);
    return ok ? 0 : 4;
}

/* Runs a child on db; returns its wait status. */
static int run_child(const char *db, const char *faults, const char *point)
{
    char *argv[] = {
        "test_runtime_faults",         "child", (char *)db, (char *)(faults ? faults : "-"),
        (char *)(point ? point : "-"), NULL};
    pid_t pid;
    int status = 0;
    assert_int_equal(posix_spawn(&pid, "/proc/self/exe", NULL, NULL, argv, environ), 0);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return status;
}

static void assert_killed(int status)
{
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
        fail_msg("child was not killed by SIGKILL (status %d)", status);
}

/* After a crash before COMMIT: nothing of the batch is stored; the retry runs once. */
static void check_nothing_committed(fixture *f)
{
    f->p = bank_open_simple(f->dir.db, &f->st, NULL);
    assert_int_equal(bank_balance(f->p, "alice"), 100);
    assert_int_equal(bank_query(f->p, "SELECT count(*) FROM ledger"), 0);
    assert_int_equal(bank_query(f->p, "SELECT count(*) FROM pt_idempotency"), 0);
    assert_int_equal(bank_counter(f->p, "effects"), 0);
    bank_req q = {"s1/pay/action", "s1", "pay", PHASE_ACTION, "debit", "alice", "30"};
    bank_reply r;
    bank_call(f->p, &q, &r);
    assert_int_equal(r.outcome, OUTCOME_OK);
    assert_false(r.replayed);
    assert_int_equal(bank_balance(f->p, "alice"), 70);
    bank_reply_free(&r);
}

/* After a crash after COMMIT: the effect and its record are durable; the retry replays. */
static void check_committed(fixture *f)
{
    f->p = bank_open_simple(f->dir.db, &f->st, NULL);
    assert_int_equal(bank_balance(f->p, "alice"), 70);
    assert_int_equal(bank_query(f->p, "SELECT count(*) FROM ledger"), 1);
    assert_int_equal(bank_query(f->p, "SELECT outcome FROM pt_idempotency"), OUTCOME_OK);
    assert_int_equal(bank_counter(f->p, "effects"), 1);
    bank_req q = {"s1/pay/action", "s1", "pay", PHASE_ACTION, "debit", "alice", "30"};
    bank_reply r;
    bank_call(f->p, &q, &r);
    assert_int_equal(r.outcome, OUTCOME_OK);
    assert_true(r.replayed);
    assert_int_equal(f->st.debit_calls, 0);
    assert_int_equal(bank_balance(f->p, "alice"), 70);
    bank_reply_free(&r);
}

static void test_child_without_faults_succeeds(void **state)
{
    fixture *f = *state;
    int status = run_child(f->dir.db, NULL, NULL);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    check_committed(f);
}

static void test_crash_before_commit_fault(void **state)
{
    fixture *f = *state;
    assert_killed(run_child(f->dir.db, "crash_before_commit=1", NULL));
    check_nothing_committed(f);
}

static void test_crash_after_commit_fault(void **state)
{
    fixture *f = *state;
    assert_killed(run_child(f->dir.db, "crash_after_commit=1", NULL));
    check_committed(f);
}

static void test_crashpoint_before_commit(void **state)
{
    fixture *f = *state;
    assert_killed(run_child(f->dir.db, NULL, "participant.before_commit"));
    check_nothing_committed(f);
}

static void test_crashpoint_after_commit(void **state)
{
    fixture *f = *state;
    assert_killed(run_child(f->dir.db, NULL, "participant.after_commit"));
    check_committed(f);
}

#define T(t) cmocka_unit_test_setup_teardown(t, bank_fixture_setup_dir, bank_fixture_teardown)

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "child") == 0)
        return child_main(argv);
    const struct CMUnitTest tests[] = {
        T(test_spec_valid),
        T(test_spec_invalid_names_option),
        cmocka_unit_test(test_help_lists_every_option),
        T(test_retry_fault),
        cmocka_unit_test(test_faults_deterministic),
        T(test_child_without_faults_succeeds),
        T(test_crash_before_commit_fault),
        T(test_crash_after_commit_fault),
        T(test_crashpoint_before_commit),
        T(test_crashpoint_after_commit),
    };
    return cmocka_run_group_tests_name("runtime_faults", tests, NULL, NULL);
}
