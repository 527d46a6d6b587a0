/*
 * The researcher's side: qr_result_open on a real sealed result from a
 * simulated study, and on every way the service could tamper with it.
 * Each refusal has its exact code, and a refused result leaves nothing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "proto/cohort.pb-c.h"
#include "sim/sim.h"

static struct sim_report rep;

static int run_study(void **state)
{
    struct sim_config cfg;
    (void)state;
    sim_config_default(&cfg);
    cfg.tokens = 600;
    cfg.seed = 5;
    /* 128 regions by sex: the sealed table spans several parts. */
    cfg.sql = "SELECT region, sex, COUNT(*), AVG(steps), MAX(weight) FROM health "
              "GROUP BY region, sex WITH (min_group_size = 1)";
    cfg.keep_artifacts = 1;
    if (sim_run(&rep, &cfg) != 0 || !rep.ok || rep.sealed_result == NULL)
        return -1;
    return 0;
}

static int end_study(void **state)
{
    (void)state;
    sim_report_free(&rep);
    return 0;
}

static int open_bytes(struct qr_result *out, const uint8_t *sealed, size_t len,
                      const struct qr_identity *who, const uint8_t (*auth)[32])
{
    return qr_result_open(out, sealed, len, rep.signed_plan, rep.signed_plan_len, who, auth, 1,
                          (int64_t)time(NULL));
}

/* Re-encode the study's SealedResult after `change` has altered it. */
static uint8_t *altered(size_t *len, void (*change)(Cohort__SealedResult *))
{
    Cohort__SealedResult *sr =
        cohort__sealed_result__unpack(NULL, rep.sealed_result_len, rep.sealed_result);
    uint8_t *out;
    size_t parts;
    assert_non_null(sr);
    parts = sr->n_sealed;
    change(sr);
    *len = cohort__sealed_result__get_packed_size(sr);
    out = malloc(*len + 1);
    assert_non_null(out);
    cohort__sealed_result__pack(sr, out);
    sr->n_sealed = parts; /* so that every part is freed */
    cohort__sealed_result__free_unpacked(sr, NULL);
    return out;
}

static void flip_a_byte(Cohort__SealedResult *sr)
{
    sr->sealed[sr->n_sealed - 1].data[40] ^= 1;
}

static void drop_the_last_part(Cohort__SealedResult *sr)
{
    sr->n_sealed--;
}

static void swap_two_parts(Cohort__SealedResult *sr)
{
    ProtobufCBinaryData t = sr->sealed[0];
    sr->sealed[0] = sr->sealed[1];
    sr->sealed[1] = t;
}

static void claim_more_participants(Cohort__SealedResult *sr)
{
    sr->participants++;
}

static void the_study_result_opens_and_spans_several_sealed_parts(void **state)
{
    Cohort__SealedResult *sr =
        cohort__sealed_result__unpack(NULL, rep.sealed_result_len, rep.sealed_result);
    struct qr_result r;
    (void)state;
    assert_non_null(sr);
    assert_true(sr->n_sealed >= 2);
    cohort__sealed_result__free_unpacked(sr, NULL);
    assert_int_equal(open_bytes(&r, rep.sealed_result, rep.sealed_result_len, &rep.researcher,
                                (const uint8_t(*)[32])rep.manufacturer_pk),
                     0);
    assert_int_equal(r.n_rows, rep.result.n_rows);
    assert_true(r.n_rows > 100);
    qr_result_free(&r);
}

static void every_tampering_of_the_sealed_result_is_refused(void **state)
{
    static const struct {
        const char *name;
        void (*change)(Cohort__SealedResult *);
    } cases[] = {
        {"a flipped byte", flip_a_byte},
        {"a dropped part", drop_the_last_part},
        {"two parts swapped", swap_two_parts},
        {"a changed participant count", claim_more_participants},
    };
    size_t i, len;
    (void)state;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct qr_result r;
        uint8_t *bytes = altered(&len, cases[i].change);
        int rc =
            open_bytes(&r, bytes, len, &rep.researcher, (const uint8_t(*)[32])rep.manufacturer_pk);
        if (rc != QR_ERR_SIGNATURE)
            fail_msg("%s: got %d, want QR_ERR_SIGNATURE", cases[i].name, rc);
        assert_int_equal(r.n_rows, 0);
        assert_null(r.cells);
        free(bytes);
    }
}

static void a_result_is_refused_by_the_wrong_researcher_or_authority(void **state)
{
    struct qr_identity other;
    struct qr_result r;
    uint8_t stranger[32];
    (void)state;
    assert_int_equal(qr_identity_generate(&other), 0);
    assert_int_equal(open_bytes(&r, rep.sealed_result, rep.sealed_result_len, &other,
                                (const uint8_t(*)[32])rep.manufacturer_pk),
                     QR_ERR_DECRYPT);
    assert_int_equal(r.n_rows, 0);
    memcpy(stranger, other.sign_pk, 32);
    assert_int_equal(open_bytes(&r, rep.sealed_result, rep.sealed_result_len, &rep.researcher,
                                (const uint8_t(*)[32])stranger),
                     QR_ERR_SIGNATURE);
    qr_identity_wipe(&other);
}

static void garbage_and_oversized_results_are_refused(void **state)
{
    struct qr_result r;
    uint8_t junk[64];
    (void)state;
    memset(junk, 0xff, sizeof junk);
    assert_int_equal(open_bytes(&r, junk, sizeof junk, &rep.researcher,
                                (const uint8_t(*)[32])rep.manufacturer_pk),
                     QR_ERR_MALFORMED);
    assert_int_equal(open_bytes(&r, rep.sealed_result, (size_t)1 << 40, &rep.researcher,
                                (const uint8_t(*)[32])rep.manufacturer_pk),
                     QR_ERR_TOO_LARGE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_study_result_opens_and_spans_several_sealed_parts),
        cmocka_unit_test(every_tampering_of_the_sealed_result_is_refused),
        cmocka_unit_test(a_result_is_refused_by_the_wrong_researcher_or_authority),
        cmocka_unit_test(garbage_and_oversized_results_are_refused),
    };
    return cmocka_run_group_tests(tests, run_study, end_study);
}
