/*
 * participant_bench — saga-bench --participant (see participant_bench.c):
 * one participant service driven directly on SQLite and on PostgreSQL, with
 * and without its barrier. Prints its table; 0, or non-zero when it could
 * not run (said on stderr).
 */
#ifndef SAGA_PARTICIPANT_BENCH_H
#define SAGA_PARTICIPANT_BENCH_H

int participant_bench_run(const char *bindir, const char *tmp, double warm_s, double secs);

#endif
