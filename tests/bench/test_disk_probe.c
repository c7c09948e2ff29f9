/*
 * test_disk_probe — saga-bench's probe of what a small durable write costs
 * (bench/disk_probe.c), run for real on the test's temp directory: it
 * measures both kinds of write, leaves no file behind, and refuses a bad
 * sample count or a directory it cannot write in with a message that says
 * which.
 */
#include <dirent.h>
#include <stdio.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "disk_probe.h"
#include "harness.h"

static int setup_dir(void **state)
{
    *state = th_tempdir();
    return *state != NULL ? 0 : -1;
}

static int teardown_dir(void **state)
{
    char *dir = *state;
    int rc = rmdir(dir); /* fails if the probe left a file behind */
    free(dir);
    return rc;
}

static int entries_in(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static void test_measures_both_kinds_and_leaves_nothing(void **state)
{
    const char *dir = *state;
    disk_probe_result r;
    char err[256] = "";
    assert_int_equal(disk_probe(dir, 20, &r, err, sizeof err), 0);
    assert_string_equal(err, "");
    assert_int_equal(r.samples, 20);
    assert_true(r.overwrite_p50_us > 0);
    assert_true(r.overwrite_p90_us >= r.overwrite_p50_us);
    assert_true(r.append_p50_us > 0);
    assert_true(r.append_p90_us >= r.append_p50_us);
    assert_true(r.paused_p50_us > 0);
    assert_true(r.paused_p90_us >= r.paused_p50_us);
    assert_int_equal(entries_in(dir), 0);
}

static void test_refuses_a_bad_sample_count(void **state)
{
    const char *dir = *state;
    disk_probe_result r;
    char err[256];
    assert_int_equal(disk_probe(dir, 0, &r, err, sizeof err), -1);
    assert_non_null(strstr(err, "0 samples"));
    assert_int_equal(disk_probe(dir, 100001, &r, err, sizeof err), -1);
    assert_int_equal(r.samples, 0);
    assert_int_equal(entries_in(dir), 0);
}

static void test_names_the_directory_it_cannot_write_in(void **state)
{
    const char *dir = *state;
    char missing[512];
    snprintf(missing, sizeof missing, "%s/no-such-dir", dir);
    disk_probe_result r;
    char err[768];
    assert_int_equal(disk_probe(missing, 5, &r, err, sizeof err), -1);
    assert_non_null(strstr(err, "mkstemp"));
    assert_non_null(strstr(err, missing));
    assert_int_equal(entries_in(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_measures_both_kinds_and_leaves_nothing, setup_dir,
                                        teardown_dir),
        cmocka_unit_test_setup_teardown(test_refuses_a_bad_sample_count, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_names_the_directory_it_cannot_write_in, setup_dir,
                                        teardown_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
