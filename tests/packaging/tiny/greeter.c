/*
 * greeter — a participant written out of tree, as a user of the installed
 * library would: it includes <saga/participant.h> and links with
 * `pkg-config --cflags --libs saga-participant` (tests/packaging/
 * check-out-of-tree.sh). Its one operation, greet(name), stores a greeting
 * and returns it; ungreet deletes it.
 *
 * It also defines functions named like the library's internals (log_init,
 * kv_set, sb_init, httpd_close): if the library exported them, its own calls
 * would bind to these and abort. They must never run.
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <saga/participant.h>

void log_init(const char *program);
int kv_set(void *map, const char *key, const char *value);
void sb_init(void *sb);
void httpd_close(void *h);

void log_init(const char *program)
{
    fprintf(stderr, "greeter: the library called the program's log_init(%s)\n", program);
    abort();
}
int kv_set(void *map, const char *key, const char *value)
{
    (void)map, (void)value;
    fprintf(stderr, "greeter: the library called the program's kv_set(%s)\n", key);
    abort();
}
void sb_init(void *sb)
{
    (void)sb;
    fprintf(stderr, "greeter: the library called the program's sb_init\n");
    abort();
}
void httpd_close(void *h)
{
    (void)h;
    fprintf(stderr, "greeter: the library called the program's httpd_close\n");
    abort();
}

static volatile sig_atomic_t stop;
static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static int greet(sqlite3 *db, const pt_request *req, pt_reply *reply, void *arg)
{
    const char *name;
    sqlite3_stmt *st;
    char text[256];
    (void)arg;
    if (pt_param_str(req, reply, "name", &name) != 0)
        return PT_REJECTED;
    snprintf(text, sizeof text, "hello %s", name);
    if (pt_prepare(req, "INSERT INTO greetings (saga_id, text) VALUES (?1, ?2)", &st) != SQLITE_OK)
        return pt_db_error(reply, db);
    sqlite3_bind_text(st, 1, req->saga_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, text, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE)
        return pt_db_error(reply, db);
    return pt_result_set(reply, "greeting", text) == 0 ? PT_OK : pt_retry(reply, "out of memory");
}

static int ungreet(sqlite3 *db, const pt_request *req, pt_reply *reply, void *arg)
{
    sqlite3_stmt *st;
    (void)arg;
    if (pt_prepare(req, "DELETE FROM greetings WHERE saga_id = ?1", &st) != SQLITE_OK)
        return pt_db_error(reply, db);
    sqlite3_bind_text(st, 1, req->saga_id, -1, SQLITE_STATIC);
    return sqlite3_step(st) == SQLITE_DONE ? PT_OK : pt_db_error(reply, db);
}

int main(int argc, char **argv)
{
    char err[512] = "";
    if (argc != 3) {
        fprintf(stderr, "usage: greeter LISTEN_URL DB\n");
        return 2;
    }
    pt_options opts = {.name = "greeter", .listen_url = argv[1], .db_path = argv[2]};
    participant *p = pt_create(&opts, err, sizeof err);
    if (p == NULL) {
        fprintf(stderr, "greeter: %s\n", err);
        return 1;
    }
    if (sqlite3_exec(pt_db(p), "CREATE TABLE IF NOT EXISTS greetings (saga_id TEXT, text TEXT)",
                     NULL, NULL, NULL) != SQLITE_OK ||
        pt_register(p, "greet", greet, "ungreet", ungreet, NULL) != 0 ||
        pt_start(p, err, sizeof err) != 0) {
        fprintf(stderr, "greeter: cannot start: %s\n", err);
        pt_destroy(p);
        return 1;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    const struct timespec tick = {0, 50 * 1000 * 1000};
    while (!stop)
        nanosleep(&tick, NULL);
    pt_destroy(p);
    return 0;
}
