/*
 * test_kv_json — common/kv.c's stored JSON form (jansson): the text of
 * ordinary maps is byte for byte what the hand-written writer before it
 * stored, text that writer stored (raw invalid UTF-8, \u escapes of its own
 * spelling) still reads back, malformed text is refused; and
 * util_utf8_repair, which keeps every document valid UTF-8.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "kv.h"
#include "util.h"

static void test_ordinary_maps_keep_their_bytes(void **state)
{
    kvmap m = KVMAP_INIT;
    assert_int_equal(kv_set(&m, "sku", "WIDGET-1"), 0);
    assert_int_equal(kv_set(&m, "amount", "2500"), 0);
    assert_int_equal(kv_set(&m, "note", "say \"hi\"\\\n\tcaf\xc3\xa9 \xe2\x82\xac"), 0);
    char *text = kv_to_json(&m);
    /* Sorted keys, compact, escapes as the old writer spelled them. */
    assert_string_equal(text, "{\"amount\":\"2500\",\"note\":\"say \\\"hi\\\"\\\\\\n\\tcaf\xc3\xa9 "
                              "\xe2\x82\xac\",\"sku\":\"WIDGET-1\"}");
    kvmap back = KVMAP_INIT;
    assert_int_equal(kv_from_json(&back, text), 0);
    assert_true(kv_equal(&m, &back));
    free(text);
    kv_free(&back);
    kv_free(&m);

    kvmap empty = KVMAP_INIT;
    text = kv_to_json(&empty);
    assert_string_equal(text, "{}");
    assert_int_equal(kv_from_json(&empty, text), 0);
    assert_int_equal(empty.len, 0);
    free(text);
}

static void test_text_stored_by_the_old_writer_reads_back(void **state)
{
    /* It escaped 0x7f and wrote other bytes as they were, valid UTF-8 or not. */
    kvmap m = KVMAP_INIT;
    assert_int_equal(kv_from_json(&m, "{\"a\":\"x\\u001by\\u007f\",\"b\":\"\xff\xfe ok\"}"), 0);
    assert_string_equal(kv_get(&m, "a"), "x\x1by\x7f");
    assert_string_equal(kv_get(&m, "b"), "\xef\xbf\xbd\xef\xbf\xbd ok"); /* U+FFFD each */
    kv_free(&m);
}

static void test_malformed_text_is_refused(void **state)
{
    const char *bad[] = {"",
                         "[]",
                         "\"a\"",
                         "{\"a\":1}",
                         "{\"a\":null}",
                         "{\"a\":\"1\"",
                         "{\"a\":\"1\"} x",
                         "{\"a\":\"\\u0000\"}",
                         "{\"a\":{}}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kvmap m = KVMAP_INIT;
        if (kv_from_json(&m, bad[i]) != -1)
            fail_msg("accepted: %s", bad[i]);
        kv_free(&m);
    }
}

static void test_invalid_utf8_is_written_as_u_fffd(void **state)
{
    kvmap m = KVMAP_INIT;
    assert_int_equal(kv_set(&m, "k\xc3", "v\x80"), 0);
    char *text = kv_to_json(&m);
    assert_non_null(text);
    assert_string_equal(text, "{\"k\xef\xbf\xbd\":\"v\xef\xbf\xbd\"}");
    free(text);
    kv_free(&m);
}

static void test_utf8_repair(void **state)
{
    const struct {
        const char *in, *out;
    } cases[] = {
        {"", ""},
        {"plain", "plain"},
        {"caf\xc3\xa9 \xf0\x9f\x98\x80", "caf\xc3\xa9 \xf0\x9f\x98\x80"},
        {"\xff", "\xef\xbf\xbd"},
        {"a\xc3", "a\xef\xbf\xbd"},                               /* cut sequence */
        {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},                 /* overlong */
        {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* surrogate */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *got = util_utf8_repair(cases[i].in);
        assert_non_null(got);
        assert_string_equal(got, cases[i].out);
        assert_true(util_utf8_valid(got, strlen(got)));
        free(got);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ordinary_maps_keep_their_bytes),
        cmocka_unit_test(test_text_stored_by_the_old_writer_reads_back),
        cmocka_unit_test(test_malformed_text_is_refused),
        cmocka_unit_test(test_invalid_utf8_is_written_as_u_fffd),
        cmocka_unit_test(test_utf8_repair),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
