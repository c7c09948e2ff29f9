/*
 * test_wire_frames — common/wire.c frames (StepBatch): several packed
 * messages in one, told from a single StepRequest by the first byte. Round
 * trip, the limits (1 to WIRE_BATCH_MAX items), garbage after the mark, and
 * that a packed StepRequest can never be taken for a frame.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "wire.h"

static void test_round_trip(void **state)
{
    (void)state;
    const uint8_t a[] = {1, 2, 3}, b[] = {0}, c[] = {9, 8, 7, 6, 5};
    const uint8_t *items[] = {a, b, c};
    const size_t lens[] = {sizeof a, sizeof b, sizeof c};
    size_t len = 0;
    uint8_t *frame = wire_pack_batch(3, items, lens, &len);
    assert_non_null(frame);
    assert_true(wire_is_batch(frame, len));
    StepBatch *sb = wire_unpack_batch(frame, len);
    assert_non_null(sb);
    assert_int_equal(sb->n_items, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(sb->items[i].len, lens[i]);
        assert_memory_equal(sb->items[i].data, items[i], lens[i]);
    }
    saga__v1__step_batch__free_unpacked(sb, NULL);
    free(frame);
}

static void test_limits(void **state)
{
    (void)state;
    const uint8_t one[] = {42};
    const uint8_t *items[WIRE_BATCH_MAX + 1];
    size_t lens[WIRE_BATCH_MAX + 1], len;
    for (size_t i = 0; i <= WIRE_BATCH_MAX; i++) {
        items[i] = one;
        lens[i] = sizeof one;
    }
    uint8_t *frame = wire_pack_batch(WIRE_BATCH_MAX, items, lens, &len);
    StepBatch *sb = wire_unpack_batch(frame, len);
    assert_non_null(sb);
    assert_int_equal(sb->n_items, WIRE_BATCH_MAX);
    saga__v1__step_batch__free_unpacked(sb, NULL);
    free(frame);

    frame = wire_pack_batch(WIRE_BATCH_MAX + 1, items, lens, &len);
    assert_null(wire_unpack_batch(frame, len)); /* too many */
    free(frame);
    frame = wire_pack_batch(0, items, lens, &len);
    assert_true(wire_is_batch(frame, len));
    assert_null(wire_unpack_batch(frame, len)); /* empty */
    free(frame);
}

static void test_not_frames(void **state)
{
    (void)state;
    const uint8_t junk[] = {WIRE_BATCH_MARK, 0xff, 0xff, 0xff, 0xff};
    const uint8_t plain[] = {0x0a, 0x01, 'k'};
    assert_null(wire_unpack_batch(junk, sizeof junk));
    assert_null(wire_unpack_batch(plain, sizeof plain));
    assert_false(wire_is_batch(plain, sizeof plain));
    assert_false(wire_is_batch(NULL, 0));
    assert_null(wire_unpack_batch(junk, 0));
}

/* Whatever it holds, a packed StepRequest or StepReply starts with a field tag, never 0x07. */
static void test_messages_never_look_like_frames(void **state)
{
    (void)state;
    kvmap params = KVMAP_INIT;
    assert_int_equal(kv_set(&params, "amount", "100"), 0);
    size_t len;
    uint8_t *req =
        wire_pack_request("s/pay/action", "s", "pay", PHASE_ACTION, "charge", 1, &params, &len);
    assert_non_null(req);
    assert_false(wire_is_batch(req, len));
    free(req);
    kvmap none = KVMAP_INIT;
    uint8_t *empty = wire_pack_request("", "", "", PHASE_ACTION, "", 0, &none, &len);
    assert_true(empty == NULL || !wire_is_batch(empty, len));
    free(empty);
    uint8_t *rep = wire_pack_reply("k", OUTCOME_OK, 0, &params, NULL, &len);
    assert_non_null(rep);
    assert_false(wire_is_batch(rep, len));
    free(rep);
    kv_free(&params);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_not_frames),
        cmocka_unit_test(test_messages_never_look_like_frames),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
