/*
 * test_log — common/log.c: held lines (log_hold) are written only at
 * release, in order, as whole lines, at most PIPE_BUF bytes per write; a
 * WARN line writes what is held first; without a hold every line goes out
 * at once; the throttle of repeatable reports.
 */
#define _GNU_SOURCE /* F_SETPIPE_SZ */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

typedef struct {
    int rd;        /* read end of the pipe that is stderr now */
    int saved_err; /* the real stderr */
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    int fds[2];
    if (f == NULL || pipe(fds) != 0)
        return -1;
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    fcntl(fds[1], F_SETPIPE_SZ, 1 << 20); /* room for every line of a test */
    f->saved_err = dup(STDERR_FILENO);
    dup2(fds[1], STDERR_FILENO);
    close(fds[1]);
    f->rd = fds[0];
    log_init("t");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    dup2(f->saved_err, STDERR_FILENO);
    close(f->saved_err);
    close(f->rd);
    free(f);
    return 0;
}

/* Everything in the pipe now (NUL-terminated, malloc'd); counts the reads. */
static char *drain(fixture *f, size_t *out_len)
{
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap + 1);
    ssize_t n;
    assert_non_null(buf);
    while ((n = read(f->rd, buf + len, cap - len)) > 0)
        len += (size_t)n;
    assert_true(n == 0 || errno == EAGAIN);
    buf[len] = 0;
    *out_len = len;
    return buf;
}

static size_t count(const char *s, const char *what)
{
    size_t n = 0;
    for (const char *p = strstr(s, what); p; p = strstr(p + 1, what))
        n++;
    return n;
}

static void test_without_hold_lines_go_out_at_once(void **state)
{
    fixture *f = *state;
    size_t len;
    log_info("first %d", 1);
    char *out = drain(f, &len);
    assert_non_null(strstr(out, "INFO  t: first 1\n"));
    free(out);
}

static void test_held_lines_wait_for_release(void **state)
{
    fixture *f = *state;
    size_t len;
    log_hold();
    log_info("held %d", 1);
    log_debug("below the level: never written");
    log_info("held %d", 2);
    char *out = drain(f, &len);
    assert_int_equal(len, 0);
    free(out);
    log_release();
    out = drain(f, &len);
    char *a = strstr(out, "held 1\n"), *b = strstr(out, "held 2\n");
    assert_non_null(a);
    assert_non_null(b);
    assert_true(a < b);
    assert_null(strstr(out, "never written"));
    free(out);
    log_info("after release");
    out = drain(f, &len);
    assert_non_null(strstr(out, "after release\n"));
    free(out);
}

static void test_warn_writes_what_is_held_first(void **state)
{
    fixture *f = *state;
    size_t len;
    log_hold();
    log_info("before");
    log_warn("trouble");
    char *out = drain(f, &len);
    char *a = strstr(out, "before\n"), *b = strstr(out, "WARN  t: trouble\n");
    assert_non_null(a);
    assert_non_null(b);
    assert_true(a < b);
    free(out);
    log_release();
}

/* Many held lines (several writes): whole lines, in order, none lost. */
static void test_many_held_lines_whole_and_in_order(void **state)
{
    fixture *f = *state;
    size_t len;
    log_hold();
    for (int i = 0; i < 500; i++)
        log_info("line %04d of a long run of held lines, padded to look like sagad's", i);
    log_release();
    char *out = drain(f, &len);
    assert_int_equal(count(out, "\n"), 500);
    char *p = out;
    for (int i = 0; i < 500; i++) {
        char want[32];
        snprintf(want, sizeof want, "line %04d ", i);
        char *at = strstr(p, want);
        assert_non_null(at);
        p = at;
    }
    free(out);
}

/* A throttled report: the first at once, then at most once per LOG_THROTTLE_MS with the count. */
static void test_throttle(void **state)
{
    (void)state;
    log_throttle t = {0, 0};
    int64_t now = 1000;
    assert_int_equal(log_throttle_hit(&t, now), 1);
    assert_int_equal(log_throttle_hit(&t, now + 1), 0);
    assert_int_equal(log_throttle_hit(&t, now + LOG_THROTTLE_MS - 1), 0);
    assert_int_equal(log_throttle_hit(&t, now + LOG_THROTTLE_MS), 3);
    assert_int_equal(log_throttle_hit(&t, now + LOG_THROTTLE_MS + 1), 0);
}

int main(void)
{
    log_set_level(LOG_INFO);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_without_hold_lines_go_out_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_held_lines_wait_for_release, setup, teardown),
        cmocka_unit_test_setup_teardown(test_warn_writes_what_is_held_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_held_lines_whole_and_in_order, setup, teardown),
        cmocka_unit_test(test_throttle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
