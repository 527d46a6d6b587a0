/*
 * The token core as a black box: provisioning, its error codes, hostile
 * requests, its RAM, and the purity of its sources.
 *
 * Every request goes through tk_dispatch as bytes, as it would over USB.
 * Hostile inputs are table-driven: each case builds one request (after
 * whatever valid prefix it needs), expects one exact status, and proves
 * that the token's state and its store did not change (but for the owner's
 * audit log, which records the verdict on every plan that verified). Inside an open
 * aggregation session, a refused feed must also close the session and
 * change nothing else. Collection and aggregation results are compared
 * with a plaintext reference in test_token_agg.c.
 */
#include "tk_fixture.h"

#include <math.h>
#include <sys/wait.h>

/* Three rows in three regions, for tokens under attack. */
static const struct fx_row victim_rows[] = {
    {101, 44, "F", "north", FX_JAN1 + 40, 8000, 71, 655, 0},
    {101, 45, "F", "south", FX_JAN1 + 90, 9100, 0, 640, FX_NULL(FX_C_HR)},
    {101, 46, "F", "east", FX_JAN1 + 200, 0, 75, 0, FX_NULL(FX_C_STEPS) | FX_NULL(FX_C_WEIGHT)},
};

/* ------------------------------------------------------ provisioning */

static void provisioning_installs_keys_once_and_refuses_bad_material(void **state)
{
    struct fx_world w;
    struct fx_token t;
    struct fx_snapshot snap;
    Cohort__TokenResponse *r;
    struct fx_cert cert, other;
    struct fx_key stranger;
    uint8_t sign_pk[32], box_pk[32], csr_msg[64 + 32 + 32];
    uint8_t sealed[32 + crypto_box_SEALBYTES] = {0}, wrong_sealed[32 + crypto_box_SEALBYTES];
    uint8_t other_box_pk[32], other_box_sk[32], scratch[2048];
    struct tk_cert_info info;
    struct fx_schema h;
    Cohort__TableSchema sleep;
    Cohort__Column hours, *hours_p = &hours;
    size_t n;
    (void)state;

    fx_world_init(&w);
    fx_token_init(&t, TK_ARENA_DEFAULT);

    /* A blank token: not provisioned, no key, no certificate, no table. */
    assert_int_equal(fx_info(&t, &r), TK_OK);
    assert_int_equal(r->body_case, COHORT__TOKEN_RESPONSE__BODY_INFO);
    assert_false(r->info->provisioned);
    assert_int_equal(r->info->sign_pk.len, 0);
    assert_null(r->info->device_cert);
    assert_int_equal(r->info->arena_size, TK_ARENA_DEFAULT);
    assert_int_equal(r->info->n_tables, 0);
    cohort__token_response__free_unpacked(r, NULL);

    /* Nothing but ProvisionBegin works before the keys exist. */
    fx_key_make(&stranger);
    fx_cert_issue(&cert, COHORT__ROLE__ROLE_TOKEN, "tok", stranger.pk, stranger.pk, &w.maker,
                  FX_NOW - FX_DAY, FX_NOW + FX_DAY, NULL);
    assert_int_equal(fx_provision_finish(&t, &cert, sealed, sizeof sealed, &w.authority.pk, 1),
                     TK_ERR_NOT_PROVISIONED);
    assert_int_equal(fx_load_health(&t, victim_rows, 3), TK_ERR_NOT_PROVISIONED);
    assert_int_equal(fx_provision_begin(&t, "", NULL), TK_ERR_MALFORMED);

    /* Begin: a CSR signed by the new key over subject || sign_pk || box_pk. */
    assert_int_equal(fx_provision_begin(&t, "token-a", &r), TK_OK);
    assert_int_equal(r->body_case, COHORT__TOKEN_RESPONSE__BODY_CERT_REQUEST);
    assert_string_equal(r->cert_request->subject, "token-a");
    assert_int_equal(r->cert_request->sign_pk.len, 32);
    assert_int_equal(r->cert_request->box_pk.len, 32);
    assert_int_equal(r->cert_request->signature.len, 64);
    memcpy(sign_pk, r->cert_request->sign_pk.data, 32);
    memcpy(box_pk, r->cert_request->box_pk.data, 32);
    n = strlen("token-a");
    memcpy(csr_msg, "token-a", n);
    memcpy(csr_msg + n, sign_pk, 32);
    memcpy(csr_msg + n + 32, box_pk, 32);
    assert_int_equal(
        fx_verify(r->cert_request->signature.data, TK_SIG_CSR, csr_msg, n + 64, sign_pk), 0);
    /* The signature covers the subject: another subject does not verify. */
    csr_msg[0] ^= 1;
    assert_int_not_equal(
        fx_verify(r->cert_request->signature.data, TK_SIG_CSR, csr_msg, n + 64, sign_pk), 0);
    cohort__token_response__free_unpacked(r, NULL);

    assert_int_equal(fx_info(&t, &r), TK_OK);
    assert_false(r->info->provisioned);
    assert_int_equal(r->info->sign_pk.len, 32);
    assert_memory_equal(r->info->sign_pk.data, sign_pk, 32);
    cohort__token_response__free_unpacked(r, NULL);

    fx_cert_issue(&cert, COHORT__ROLE__ROLE_TOKEN, "token-a", sign_pk, box_pk, &w.maker,
                  FX_NOW - FX_DAY, FX_NOW + 365 * FX_DAY, NULL);
    crypto_box_seal(sealed, w.secret, 32, box_pk);
    crypto_box_keypair(other_box_pk, other_box_sk);
    crypto_box_seal(wrong_sealed, w.secret, 32, other_box_pk);

    /* Refusals change nothing. */
    fx_snapshot_take(&snap, &t);
    fx_cert_issue(&other, COHORT__ROLE__ROLE_TOKEN, "token-a", stranger.pk, box_pk, &w.maker,
                  FX_NOW - FX_DAY, FX_NOW + FX_DAY, NULL);
    assert_int_equal(fx_provision_finish(&t, &other, sealed, sizeof sealed, &w.authority.pk, 1),
                     TK_ERR_BAD_CERT);
    fx_cert_issue(&other, COHORT__ROLE__ROLE_TOKEN, "token-a", sign_pk, other_box_pk, &w.maker,
                  FX_NOW - FX_DAY, FX_NOW + FX_DAY, NULL);
    assert_int_equal(fx_provision_finish(&t, &other, sealed, sizeof sealed, &w.authority.pk, 1),
                     TK_ERR_BAD_CERT);
    fx_cert_issue(&other, COHORT__ROLE__ROLE_RESEARCHER, "token-a", sign_pk, box_pk, &w.maker,
                  FX_NOW - FX_DAY, FX_NOW + FX_DAY, NULL);
    assert_int_equal(fx_provision_finish(&t, &other, sealed, sizeof sealed, &w.authority.pk, 1),
                     TK_ERR_ROLE);
    fx_cert_issue(&other, COHORT__ROLE__ROLE_TOKEN, "token-a", sign_pk, box_pk, &w.maker,
                  FX_NOW - 2 * FX_DAY, FX_NOW - FX_DAY, NULL);
    assert_int_equal(fx_provision_finish(&t, &other, sealed, sizeof sealed, &w.authority.pk, 1),
                     TK_ERR_EXPIRED);
    assert_int_equal(
        fx_provision_finish(&t, &cert, wrong_sealed, sizeof wrong_sealed, &w.authority.pk, 1),
        TK_ERR_DECRYPT);
    assert_int_equal(fx_provision_finish(&t, &cert, sealed, sizeof sealed - 1, &w.authority.pk, 1),
                     TK_ERR_DECRYPT);
    assert_int_equal(fx_provision_finish(&t, &cert, sealed, sizeof sealed, &w.authority.pk, 0),
                     TK_ERR_MALFORMED);
    fx_snapshot_check(&snap, &t, false);
    fx_snapshot_free(&snap);

    /* Finish installs; afterwards provisioning is refused for good. */
    assert_int_equal(fx_provision_finish(&t, &cert, sealed, sizeof sealed, &w.authority.pk, 1),
                     TK_OK);
    fx_snapshot_take(&snap, &t);
    assert_int_equal(fx_provision_finish(&t, &cert, sealed, sizeof sealed, &w.authority.pk, 1),
                     TK_ERR_PROVISIONED);
    assert_int_equal(fx_provision_begin(&t, "token-b", NULL), TK_ERR_PROVISIONED);
    fx_snapshot_check(&snap, &t, false);
    fx_snapshot_free(&snap);

    /* GetInfo: provisioned, the key, the certificate given, the tables. */
    assert_int_equal(fx_load_health(&t, victim_rows, 3), TK_OK);
    cohort__table_schema__init(&sleep);
    cohort__column__init(&hours);
    hours.name = "hours";
    hours.type = COHORT__VALUE_TYPE__VT_INT;
    sleep.name = "sleep";
    sleep.n_columns = 1;
    sleep.columns = &hours_p;
    assert_int_equal(fx_load_table(&t, &sleep, NULL, 0), TK_OK);
    fx_health_schema(&h);
    assert_int_equal(fx_load_table(&t, &h.s, NULL, 0), TK_OK); /* same schema: no new table */
    assert_int_equal(fx_info(&t, &r), TK_OK);
    assert_true(r->info->provisioned);
    assert_int_equal(r->info->sign_pk.len, 32);
    assert_memory_equal(r->info->sign_pk.data, sign_pk, 32);
    assert_non_null(r->info->device_cert);
    assert_int_equal(r->info->device_cert->body.len, cert.body_len);
    assert_memory_equal(r->info->device_cert->body.data, cert.body, cert.body_len);
    assert_memory_equal(r->info->device_cert->signature.data, cert.sig, 64);
    assert_int_equal(r->info->n_tables, 2);
    assert_string_equal(r->info->tables[0], "health");
    assert_string_equal(r->info->tables[1], "sleep");
    cohort__token_response__free_unpacked(r, NULL);

    /* The installed certificate is the manufacturer's, for these keys. */
    {
        uint8_t packed[TK_CERT_MAX];
        Cohort__Certificate c;
        fx_cert_pb(&c, &cert);
        n = cohort__certificate__pack(&c, packed);
        assert_int_equal(
            tk_cert_verify(&info, packed, n, w.maker.pk, FX_NOW, scratch, sizeof scratch), TK_OK);
        assert_int_equal(info.role, COHORT__ROLE__ROLE_TOKEN);
        assert_memory_equal(info.sign_pk, sign_pk, 32);
        assert_memory_equal(info.box_pk, box_pk, 32);
        assert_string_equal(info.subject, "token-a");
        assert_int_equal(
            tk_cert_verify(&info, packed, n, w.authority.pk, FX_NOW, scratch, sizeof scratch),
            TK_ERR_BAD_CERT);
        assert_int_equal(tk_cert_verify(&info, packed, n, w.maker.pk, FX_NOW + 400 * FX_DAY,
                                        scratch, sizeof scratch),
                         TK_ERR_EXPIRED);
    }
    fx_token_free(&t);
}

/* ------------------------------------------------------------ errors */

static void every_error_code_has_its_own_name_and_text(void **state)
{
    int a, b;
    (void)state;
    for (a = TK_OK; a >= TK_ERR_LAST; a--) {
        assert_non_null(tk_strerror(a));
        assert_non_null(tk_errname(a));
        assert_string_not_equal(tk_strerror(a), "unknown error");
        assert_string_not_equal(tk_errname(a), "TK_ERR_UNKNOWN");
        assert_true(strncmp(tk_errname(a), a == TK_OK ? "TK_OK" : "TK_ERR_", 5) == 0);
        for (b = TK_OK; b > a; b--) {
            assert_string_not_equal(tk_strerror(a), tk_strerror(b));
            assert_string_not_equal(tk_errname(a), tk_errname(b));
        }
    }
    assert_string_equal(tk_errname(TK_ERR_DUPLICATE), "TK_ERR_DUPLICATE");
    assert_string_equal(tk_strerror(TK_ERR_LAST - 1), "unknown error");
    assert_string_equal(tk_errname(1), "TK_ERR_UNKNOWN");
}

/* ---------------------------------------------------- hostile inputs */

/*
 * The world the hostile cases draw from: contributors that collected for
 * plan A (and for plan B, another query), their sorted ciphertexts, and
 * level-1 partials of plan A: partition 0 over the first half of the
 * tuples, partition 1 over the second half, and a bogus partition 1 made
 * from the first half again.
 */
#define N_CONTRIB 4

struct hostile {
    struct fx_world w;
    struct fx_token contrib[N_CONTRIB];
    struct fx_plan_spec spec_a;
    struct fx_signed a, b, c; /* c: at most two groups */
    struct fx_cts cts_a, cts_b, cts_c;
    struct fx_cts p0, p1, p1_dup; /* level-1 partials of plan A */
};

static struct hostile *H;

static int hostile_setup(void **state)
{
    unsigned i;
    char subject[32];
    struct fx_plan_spec spec_b;
    struct fx_row rows[8];
    size_t n, half;
    (void)state;

    H = fx_alloc(sizeof *H);
    fx_world_init(&H->w);
    fx_plan_default(&H->spec_a);
    H->spec_a.max_groups = 64; /* three partial chunks per partition */
    fx_plan_sign(&H->a, &H->spec_a, &H->w.researcher);
    fx_plan_default(&spec_b);
    fx_plan_sign(&H->b, &spec_b, &H->w.researcher);
    spec_b.max_groups = 2;
    fx_plan_sign(&H->c, &spec_b, &H->w.researcher);
    for (i = 0; i < N_CONTRIB; i++) {
        fx_token_init(&H->contrib[i], TK_ARENA_DEFAULT);
        snprintf(subject, sizeof subject, "contrib-%u", i);
        fx_provision(&H->contrib[i], &H->w, subject);
        n = fx_gen_rows(rows, 8, i + 3);
        assert_int_equal(fx_load_health(&H->contrib[i], rows, n), TK_OK);
        assert_int_equal(fx_collect_into(&H->contrib[i], FX_NOW, H->a.sp, &H->cts_a), TK_OK);
        assert_int_equal(fx_collect_into(&H->contrib[i], FX_NOW, H->b.sp, &H->cts_b), TK_OK);
        assert_int_equal(fx_collect_into(&H->contrib[i], FX_NOW, H->c.sp, &H->cts_c), TK_OK);
    }
    fx_cts_sort(&H->cts_a);
    fx_cts_sort(&H->cts_b);
    fx_cts_sort(&H->cts_c);
    half = H->cts_a.n / 2;
    assert_int_equal(fx_aggregate(&H->contrib[0], FX_NOW, H->a.sp, 1, 0, false, H->cts_a.v, half, 5,
                                  &H->p0, NULL),
                     TK_OK);
    assert_int_equal(fx_aggregate(&H->contrib[1], FX_NOW, H->a.sp, 1, 1, false, H->cts_a.v + half,
                                  H->cts_a.n - half, 5, &H->p1, NULL),
                     TK_OK);
    assert_int_equal(fx_aggregate(&H->contrib[2], FX_NOW, H->a.sp, 1, 1, false, H->cts_a.v, half, 5,
                                  &H->p1_dup, NULL),
                     TK_OK);
    assert_int_equal(H->p0.n, 3);
    assert_int_equal(H->p1.n, 3);
    return 0;
}

static int hostile_teardown(void **state)
{
    unsigned i;
    (void)state;
    for (i = 0; i < N_CONTRIB; i++)
        fx_token_free(&H->contrib[i]);
    fx_signed_free(&H->a);
    fx_signed_free(&H->b);
    fx_signed_free(&H->c);
    fx_cts_free(&H->cts_a);
    fx_cts_free(&H->cts_b);
    fx_cts_free(&H->cts_c);
    fx_cts_free(&H->p0);
    fx_cts_free(&H->p1);
    fx_cts_free(&H->p1_dup);
    free(H);
    return 0;
}

/* What a case prepares on its victim: the one request under test. */
struct attempt {
    uint8_t *req;
    size_t len;
    bool in_session; /* the request is refused inside an open session */
    uint8_t session[TK_SESSION_ID_LEN];
    size_t resp_cap; /* 0: generous */
};

struct hcase {
    const char *name;
    int expected;
    bool blank_victim; /* a token that was never provisioned */
    void (*prepare)(struct fx_token *v, struct attempt *at);
};

/* Collect plan spec s, signed by signer under chain, as the request. */
static void collect_signed(struct attempt *at, const struct fx_plan_spec *s, const uint8_t sk[64],
                           const struct fx_cert *chain, size_t n_chain, int64_t now)
{
    struct fx_signed p;
    size_t len;
    uint8_t *plan = fx_plan_pack(s, &len);
    fx_sign_plan_bytes(&p, plan, len, sk, chain, n_chain);
    at->req = fx_collect_request(&at->len, now, p.sp);
    fx_signed_free(&p);
    free(plan);
}

static void collect_spec(struct attempt *at, const struct fx_plan_spec *s)
{
    collect_signed(at, s, H->w.researcher.sign.sk, &H->w.researcher.cert, 1, FX_NOW);
}

/* Open a session of plan sp on v and feed it inputs [0, n) of `in`. */
static void open_session_of(const Cohort__SignedPlan *sp, struct fx_token *v, struct attempt *at,
                            uint32_t level, uint32_t partition, Cohort__Ciphertext *const *in,
                            size_t n)
{
    assert_int_equal(fx_agg_begin(v, FX_NOW, sp, level, partition, false, at->session), TK_OK);
    if (n > 0)
        assert_int_equal(fx_agg_feed(v, FX_NOW, at->session, in, n), TK_OK);
    at->in_session = true;
}

/* The same for plan A. */
static void open_session(struct fx_token *v, struct attempt *at, uint32_t level, uint32_t partition,
                         Cohort__Ciphertext *const *in, size_t n)
{
    open_session_of(H->a.sp, v, at, level, partition, in, n);
}

static void feed(struct attempt *at, Cohort__Ciphertext *const *in, size_t n)
{
    at->req = fx_agg_feed_request(&at->len, FX_NOW, at->session, TK_SESSION_ID_LEN, in, n);
}

/* Framing. */

static void prep_truncated(struct fx_token *v, struct attempt *at)
{
    (void)v;
    at->req = fx_collect_request(&at->len, FX_NOW, H->a.sp);
    at->len /= 2;
}

static void prep_garbage(struct fx_token *v, struct attempt *at)
{
    (void)v;
    at->len = 64;
    at->req = fx_alloc(at->len);
    memset(at->req, 0x0f, at->len); /* field 1, wire type 7: no such wire type */
}

static void prep_undecodable_body(struct fx_token *v, struct attempt *at)
{
    static const uint8_t req[] = {0x08, 0x01, 0x32, 0x03, 0xff, 0xff, 0xff};
    (void)v;
    at->len = sizeof req; /* a Collect whose body is an unterminated varint */
    at->req = fx_alloc(at->len);
    memcpy(at->req, req, sizeof req);
}

static void prep_no_body(struct fx_token *v, struct attempt *at)
{
    static const uint8_t req[] = {0x08, 0x01};
    (void)v;
    at->len = sizeof req; /* `now` and nothing else */
    at->req = fx_alloc(at->len);
    memcpy(at->req, req, sizeof req);
}

static void prep_oversized(struct fx_token *v, struct attempt *at)
{
    size_t len;
    uint8_t *req = fx_collect_request(&len, FX_NOW, H->a.sp);
    (void)v;
    at->len = TK_REQUEST_MAX + 1;
    at->req = fx_alloc(at->len);
    memcpy(at->req, req, len); /* a valid request, then zeros past the limit */
    free(req);
}

/* Aggregation sessions. */

static void prep_wrong_query(struct fx_token *v, struct attempt *at)
{
    open_session(v, at, 1, 0, H->cts_a.v, 2);
    feed(at, H->cts_b.v + 10, 1);
}

static void prep_collection_tuple_at_level_2(struct fx_token *v, struct attempt *at)
{
    open_session(v, at, 2, 0, NULL, 0);
    feed(at, H->cts_a.v, 1);
}

static void prep_partial_at_level_1(struct fx_token *v, struct attempt *at)
{
    open_session(v, at, 1, 0, H->cts_a.v, 2);
    feed(at, H->p0.v, 1);
}

static void prep_partial_skipping_a_level(struct fx_token *v, struct attempt *at)
{
    open_session(v, at, 3, 0, NULL, 0);
    feed(at, H->p0.v, 1);
}

static void prep_tuple_moved_to_partition_1(struct fx_token *v, struct attempt *at)
{
    Cohort__Ciphertext *ct = fx_ct_copy(H->cts_a.v[3]);
    open_session(v, at, 1, 0, H->cts_a.v, 3);
    ct->partition = 1;
    feed(at, &ct, 1);
    cohort__ciphertext__free_unpacked(ct, NULL);
}

static void prep_tuple_with_other_chunk_count(struct fx_token *v, struct attempt *at)
{
    Cohort__Ciphertext *ct = fx_ct_copy(H->cts_a.v[3]);
    open_session(v, at, 1, 0, H->cts_a.v, 3);
    ct->nchunks = 9;
    feed(at, &ct, 1);
    cohort__ciphertext__free_unpacked(ct, NULL);
}

static void prep_partial_chunk_of_another_range(struct fx_token *v, struct attempt *at)
{
    /* Chunk 1 of the bogus partition 1 after chunk 0 of partition 1. */
    Cohort__Ciphertext *ct = fx_ct_copy(H->p1_dup.v[1]);
    Cohort__Ciphertext *in[4] = {H->p0.v[0], H->p0.v[1], H->p0.v[2], H->p1.v[0]};
    open_session(v, at, 2, 0, in, 4);
    feed(at, &ct, 1);
    cohort__ciphertext__free_unpacked(ct, NULL);
}

static void prep_tampered_box(struct fx_token *v, struct attempt *at)
{
    Cohort__Ciphertext *ct = fx_ct_copy(H->cts_a.v[3]);
    open_session(v, at, 1, 0, H->cts_a.v, 3);
    ct->box.data[ct->box.len / 2] ^= 0x20;
    feed(at, &ct, 1);
    cohort__ciphertext__free_unpacked(ct, NULL);
}

static void prep_relabelled_chunk(struct fx_token *v, struct attempt *at)
{
    /* A contributor's tuple 4 presented as its tuple 3 (the one the token
     * expects next) fails the AEAD. */
    Cohort__Ciphertext *ct = fx_ct_copy(H->cts_a.v[4]);
    open_session(v, at, 1, 0, H->cts_a.v, 3);
    assert_int_equal(ct->chunk, 4);
    ct->chunk = 3;
    feed(at, &ct, 1);
    cohort__ciphertext__free_unpacked(ct, NULL);
}

static void prep_truncated_nonce(struct fx_token *v, struct attempt *at)
{
    Cohort__Ciphertext *ct = fx_ct_copy(H->cts_a.v[3]);
    open_session(v, at, 1, 0, H->cts_a.v, 3);
    ct->nonce.len = 12;
    feed(at, &ct, 1);
    cohort__ciphertext__free_unpacked(ct, NULL);
}

static void prep_duplicate_tuple(struct fx_token *v, struct attempt *at)
{
    Cohort__Ciphertext *in[2] = {H->cts_a.v[3], H->cts_a.v[3]};
    open_session(v, at, 1, 0, H->cts_a.v, 3);
    feed(at, in, 2); /* the first is accepted, the second refused */
}

static void prep_tuples_out_of_order(struct fx_token *v, struct attempt *at)
{
    Cohort__Ciphertext *in[2] = {H->cts_a.v[3], H->cts_a.v[1]};
    open_session(v, at, 1, 0, H->cts_a.v, 3);
    feed(at, in, 2);
}

static void prep_tuple_dropped(struct fx_token *v, struct attempt *at)
{
    /* The service drops a contributor's tuple 3 and passes on tuple 4. */
    open_session(v, at, 1, 0, H->cts_a.v, 3);
    feed(at, &H->cts_a.v[4], 1);
}

static void prep_level2_overlapping_partials(struct fx_token *v, struct attempt *at)
{
    /* Partition 1 was aggregated again from partition 0's tuples. */
    open_session(v, at, 2, 0, H->p0.v, 3);
    feed(at, H->p1_dup.v, 1);
}

static void prep_level2_partial_given_twice(struct fx_token *v, struct attempt *at)
{
    open_session(v, at, 2, 0, H->p0.v, 3);
    feed(at, H->p0.v, 1);
}

static void prep_level2_partitions_out_of_order(struct fx_token *v, struct attempt *at)
{
    open_session(v, at, 2, 0, H->p1.v, 3);
    feed(at, H->p0.v, 1);
}

static void prep_partial_missing_a_chunk(struct fx_token *v, struct attempt *at)
{
    open_session(v, at, 2, 0, H->p0.v, 1);
    feed(at, H->p0.v + 2, 1);
}

static void prep_partial_missing_its_last_chunk(struct fx_token *v, struct attempt *at)
{
    open_session(v, at, 2, 0, H->p0.v, 2);
    feed(at, H->p1.v, 1);
}

static void prep_partial_missing_its_first_chunk(struct fx_token *v, struct attempt *at)
{
    open_session(v, at, 2, 0, NULL, 0);
    feed(at, H->p0.v + 1, 1);
}

static void prep_end_with_a_partial_missing_a_chunk(struct fx_token *v, struct attempt *at)
{
    open_session(v, at, 2, 0, H->p0.v, 2);
    at->req = fx_agg_end_request(&at->len, FX_NOW, at->session, TK_SESSION_ID_LEN);
}

static void prep_final_missing_a_first_chunk(struct fx_token *v, struct attempt *at)
{
    /* A final partition must cover whole contributors: this one lacks the
     * first contributor's chunk 0. */
    assert_int_equal(fx_agg_begin(v, FX_NOW, H->a.sp, 1, 0, true, at->session), TK_OK);
    assert_int_equal(fx_agg_feed(v, FX_NOW, at->session, H->cts_a.v + 1, 7), TK_OK);
    at->in_session = true;
    at->req = fx_agg_end_request(&at->len, FX_NOW, at->session, TK_SESSION_ID_LEN);
}

static void prep_end_without_inputs(struct fx_token *v, struct attempt *at)
{
    open_session(v, at, 1, 0, NULL, 0);
    at->req = fx_agg_end_request(&at->len, FX_NOW, at->session, TK_SESSION_ID_LEN);
}

static void prep_feed_of_another_session(struct fx_token *v, struct attempt *at)
{
    uint8_t other[TK_SESSION_ID_LEN];
    open_session(v, at, 1, 0, H->cts_a.v, 2);
    memcpy(other, at->session, sizeof other);
    other[0] ^= 1;
    at->req = fx_agg_feed_request(&at->len, FX_NOW, other, sizeof other, H->cts_a.v + 2, 1);
}

static void prep_feed_without_session(struct fx_token *v, struct attempt *at)
{
    uint8_t id[TK_SESSION_ID_LEN];
    (void)v;
    randombytes_buf(id, sizeof id);
    at->req = fx_agg_feed_request(&at->len, FX_NOW, id, sizeof id, H->cts_a.v, 1);
}

static void prep_end_without_session(struct fx_token *v, struct attempt *at)
{
    uint8_t id[TK_SESSION_ID_LEN];
    (void)v;
    randombytes_buf(id, sizeof id);
    at->req = fx_agg_end_request(&at->len, FX_NOW, id, sizeof id);
}

static void prep_replayed_partition(struct fx_token *v, struct attempt *at)
{
    assert_int_equal(fx_aggregate(v, FX_NOW, H->a.sp, 1, 0, false, H->cts_a.v, 8, 3, NULL, NULL),
                     TK_OK);
    at->req = fx_agg_begin_request(&at->len, FX_NOW, H->a.sp, 1, 0, false);
}

static void prep_level_zero(struct fx_token *v, struct attempt *at)
{
    (void)v;
    at->req = fx_agg_begin_request(&at->len, FX_NOW, H->a.sp, 0, 0, false);
}

static void prep_aggregation_after_expiry(struct fx_token *v, struct attempt *at)
{
    (void)v;
    at->req = fx_agg_begin_request(&at->len, H->spec_a.expires_at + 1, H->a.sp, 1, 0, false);
}

/* Plans and their signatures. */

static void prep_forged_plan_signature(struct fx_token *v, struct attempt *at)
{
    Cohort__SignedPlan *sp = H->a.sp;
    (void)v;
    sp->signature.data[7] ^= 1;
    at->req = fx_collect_request(&at->len, FX_NOW, sp);
    sp->signature.data[7] ^= 1;
}

static void prep_plan_signed_by_another_key(struct fx_token *v, struct attempt *at)
{
    struct fx_key k;
    (void)v;
    fx_key_make(&k);
    collect_signed(at, &H->spec_a, k.sk, &H->w.researcher.cert, 1, FX_NOW);
}

static void prep_researcher_cert_bad_signature(struct fx_token *v, struct attempt *at)
{
    struct fx_cert c = H->w.researcher.cert;
    (void)v;
    c.sig[3] ^= 1;
    collect_signed(at, &H->spec_a, H->w.researcher.sign.sk, &c, 1, FX_NOW);
}

static void prep_plan_without_chain(struct fx_token *v, struct attempt *at)
{
    (void)v;
    collect_signed(at, &H->spec_a, H->w.researcher.sign.sk, NULL, 0, FX_NOW);
}

static void researcher_with(struct fx_researcher *r, const struct fx_key *issuer, int role,
                            int64_t nb, int64_t na, const struct fx_scope *scope)
{
    fx_researcher_make(r, issuer, nb, na, scope);
    fx_cert_issue(&r->cert, role, "dr-who", r->sign.pk, r->box_pk, issuer, nb, na, scope);
}

static void collect_as(struct attempt *at, const struct fx_researcher *r,
                       const struct fx_plan_spec *s)
{
    collect_signed(at, s, r->sign.sk, &r->cert, 1, FX_NOW);
}

static void prep_researcher_without_box_key(struct fx_token *v, struct attempt *at)
{
    struct fx_researcher r;
    (void)v; /* nobody to seal the result to */
    fx_researcher_make(&r, &H->w.authority, FX_NOW - FX_DAY, FX_NOW + FX_DAY, NULL);
    fx_cert_issue(&r.cert, COHORT__ROLE__ROLE_RESEARCHER, "dr-who", r.sign.pk, NULL,
                  &H->w.authority, FX_NOW - FX_DAY, FX_NOW + FX_DAY, NULL);
    collect_as(at, &r, &H->spec_a);
}

static void prep_expired_researcher(struct fx_token *v, struct attempt *at)
{
    struct fx_researcher r;
    (void)v;
    researcher_with(&r, &H->w.authority, COHORT__ROLE__ROLE_RESEARCHER, FX_NOW - 30 * FX_DAY,
                    FX_NOW - FX_DAY, NULL);
    collect_as(at, &r, &H->spec_a);
}

static void prep_researcher_not_yet_valid(struct fx_token *v, struct attempt *at)
{
    struct fx_researcher r;
    (void)v;
    researcher_with(&r, &H->w.authority, COHORT__ROLE__ROLE_RESEARCHER, FX_NOW + FX_DAY,
                    FX_NOW + 30 * FX_DAY, NULL);
    collect_as(at, &r, &H->spec_a);
}

static void prep_collect_after_deadline(struct fx_token *v, struct attempt *at)
{
    (void)v;
    at->req = fx_collect_request(&at->len, H->spec_a.deadline + 1, H->a.sp);
}

static void prep_plan_from_the_future(struct fx_token *v, struct attempt *at)
{
    struct fx_plan_spec s = H->spec_a;
    (void)v;
    s.issued_at = FX_NOW + 3600;
    s.deadline = FX_NOW + 7200;
    collect_spec(at, &s);
}

static void prep_scope_table(struct fx_token *v, struct attempt *at)
{
    struct fx_scope sc = {.tables = {"diet"}};
    struct fx_researcher r;
    (void)v;
    researcher_with(&r, &H->w.authority, COHORT__ROLE__ROLE_RESEARCHER, FX_NOW - FX_DAY,
                    FX_NOW + FX_DAY, &sc);
    collect_as(at, &r, &H->spec_a);
}

static void prep_scope_column(struct fx_token *v, struct attempt *at)
{
    static const struct fx_instr where[] = {FI_COL("age"), FI_CONST(FVI_INT(40)), FI_OP(GE)};
    struct fx_scope sc = {.tables = {"health"}, .columns = {"health.region", "health.steps"}};
    struct fx_researcher r;
    struct fx_plan_spec s = H->spec_a;
    (void)v;
    researcher_with(&r, &H->w.authority, COHORT__ROLE__ROLE_RESEARCHER, FX_NOW - FX_DAY,
                    FX_NOW + FX_DAY, &sc);
    s.where = where; /* the researcher may not filter on age */
    s.n_where = 3;
    collect_as(at, &r, &s);
}

static void prep_scope_study(struct fx_token *v, struct attempt *at)
{
    struct fx_scope sc = {.studies = {"study-2"}};
    struct fx_researcher r;
    (void)v;
    researcher_with(&r, &H->w.authority, COHORT__ROLE__ROLE_RESEARCHER, FX_NOW - FX_DAY,
                    FX_NOW + FX_DAY, &sc);
    collect_as(at, &r, &H->spec_a);
}

static void prep_untrusted_authority(struct fx_token *v, struct attempt *at)
{
    struct fx_key rogue;
    struct fx_researcher r;
    (void)v;
    fx_key_make(&rogue);
    researcher_with(&r, &rogue, COHORT__ROLE__ROLE_RESEARCHER, FX_NOW - FX_DAY, FX_NOW + FX_DAY,
                    NULL);
    collect_as(at, &r, &H->spec_a);
}

static void prep_token_cert_as_researcher(struct fx_token *v, struct attempt *at)
{
    struct fx_researcher r;
    (void)v;
    researcher_with(&r, &H->w.authority, COHORT__ROLE__ROLE_TOKEN, FX_NOW - FX_DAY, FX_NOW + FX_DAY,
                    NULL);
    collect_as(at, &r, &H->spec_a);
}

static void prep_unknown_column(struct fx_token *v, struct attempt *at)
{
    struct fx_plan_spec s = H->spec_a;
    (void)v;
    s.group_by[0] = "income";
    collect_spec(at, &s);
}

static void prep_where_type_mismatch(struct fx_token *v, struct attempt *at)
{
    static const struct fx_instr where[] = {FI_COL("age"), FI_CONST(FVI_TEXT("forty")), FI_OP(EQ)};
    struct fx_plan_spec s = H->spec_a;
    (void)v;
    s.where = where;
    s.n_where = 3;
    collect_spec(at, &s);
}

static void prep_where_not_boolean(struct fx_token *v, struct attempt *at)
{
    static const struct fx_instr where[] = {FI_COL("age")};
    struct fx_plan_spec s = H->spec_a;
    (void)v;
    s.where = where;
    s.n_where = 1;
    collect_spec(at, &s);
}

static void prep_sum_of_text(struct fx_token *v, struct attempt *at)
{
    struct fx_plan_spec s = H->spec_a;
    (void)v;
    s.aggs[1] = (struct fx_agg){COHORT__AGG_FUNC__AGG_SUM, "sex"};
    collect_spec(at, &s);
}

static void prep_plan_version_2(struct fx_token *v, struct attempt *at)
{
    struct fx_plan_spec s = H->spec_a;
    (void)v;
    s.version = 2;
    collect_spec(at, &s);
}

/* spec_a under differential privacy: COUNT(*) and SUM(steps) by region. */
static struct fx_plan_spec dp_spec(void)
{
    struct fx_plan_spec s = H->spec_a;
    s.epsilon = 0.5;
    s.max_rows = 1;
    s.contribution_bound = 20000;
    return s;
}

static void prep_dp_without_max_rows(struct fx_token *v, struct attempt *at)
{
    struct fx_plan_spec s = dp_spec();
    (void)v;
    s.max_rows = 0;
    collect_spec(at, &s);
}

static void prep_dp_sum_without_bound(struct fx_token *v, struct attempt *at)
{
    struct fx_plan_spec s = dp_spec();
    (void)v;
    s.contribution_bound = 0;
    collect_spec(at, &s);
}

static void prep_dp_with_max(struct fx_token *v, struct attempt *at)
{
    struct fx_plan_spec s = dp_spec();
    (void)v;
    s.aggs[s.n_aggs++] = (struct fx_agg){COHORT__AGG_FUNC__AGG_MAX, "steps"};
    collect_spec(at, &s);
}

static void prep_epsilon_nan(struct fx_token *v, struct attempt *at)
{
    struct fx_plan_spec s = dp_spec();
    (void)v;
    s.epsilon = NAN;
    collect_spec(at, &s);
}

static void prep_epsilon_negative(struct fx_token *v, struct attempt *at)
{
    struct fx_plan_spec s = dp_spec();
    (void)v;
    s.epsilon = -1;
    collect_spec(at, &s);
}

/* Noise of scale about 10^20: more than the sampler draws exactly. */
static void prep_dp_noise_too_large(struct fx_token *v, struct attempt *at)
{
    struct fx_plan_spec s = dp_spec();
    (void)v;
    s.epsilon = 1e-12;
    collect_spec(at, &s);
}

static void prep_other_protocol(struct fx_token *v, struct attempt *at)
{
    struct fx_plan_spec s = H->spec_a;
    (void)v;
    s.protocol = "no_such_protocol";
    collect_spec(at, &s);
}

static void prep_table_the_token_lacks(struct fx_token *v, struct attempt *at)
{
    static Cohort__Column hours = {PROTOBUF_C_MESSAGE_INIT(&cohort__column__descriptor), "hours",
                                   COHORT__VALUE_TYPE__VT_INT, 0};
    static Cohort__Column *cols[] = {&hours};
    static Cohort__TableSchema sleep = {PROTOBUF_C_MESSAGE_INIT(&cohort__table_schema__descriptor),
                                        "sleep", 1, cols};
    struct fx_plan_spec s = H->spec_a;
    Cohort__ConsentPolicy p;
    char *tables[] = {"health", "sleep"};
    /* The owner shares a table the token does not hold (yet). */
    cohort__consent_policy__init(&p);
    p.n_tables = 2;
    p.tables = tables;
    assert_int_equal(fx_set_policy(v, &p, NULL), TK_OK);
    s.table = "sleep";
    s.schema = &sleep;
    s.group_by[0] = "hours";
    s.aggs[1] = (struct fx_agg){COHORT__AGG_FUNC__AGG_SUM, "hours"};
    collect_spec(at, &s);
}

static void prep_column_type_differs_on_token(struct fx_token *v, struct attempt *at)
{
    /* The plan's catalog says steps is TEXT; this token's table says INT. */
    struct fx_schema h;
    struct fx_plan_spec s = H->spec_a;
    (void)v;
    fx_health_schema(&h);
    h.cols[FX_C_STEPS].type = COHORT__VALUE_TYPE__VT_TEXT;
    s.schema = &h.s;
    s.aggs[1] = (struct fx_agg){COHORT__AGG_FUNC__AGG_COUNT, "steps"};
    collect_spec(at, &s);
}

static void prep_more_groups_than_tuples(struct fx_token *v, struct attempt *at)
{
    struct fx_plan_spec s = H->spec_a;
    (void)v;
    s.tuples = 2; /* the victim has rows in three regions */
    collect_spec(at, &s);
}

/* Tables. */

static void load_rows_request(struct attempt *at, Cohort__TableSchema *schema,
                              const struct fx_row *rows, size_t n, int bad_col,
                              const struct fx_val *bad, int drop_last)
{
    struct fx_rows_pb pb;
    Cohort__TokenRequest req;
    Cohort__LoadTable lt;
    fx_rows_pb(&pb, rows, n);
    if (bad_col >= 0)
        fx_val_pb(&pb.vals[(n - 1) * FX_NCOLS + bad_col], bad);
    if (drop_last)
        pb.rows[n - 1].n_values--;
    cohort__token_request__init(&req);
    cohort__load_table__init(&lt);
    lt.schema = schema;
    lt.n_rows = n;
    lt.rows = pb.ptrs;
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_LOAD_TABLE;
    req.load_table = &lt;
    at->req = fx_pack_request(&req, &at->len);
    fx_rows_pb_free(&pb);
}

static void prep_row_with_a_wrong_type(struct fx_token *v, struct attempt *at)
{
    struct fx_schema h;
    struct fx_val bad = FV_TEXT("old");
    (void)v;
    fx_health_schema(&h);
    load_rows_request(at, &h.s, victim_rows, 3, FX_C_AGE, &bad, 0);
}

static void prep_row_with_a_missing_value(struct fx_token *v, struct attempt *at)
{
    struct fx_schema h;
    (void)v;
    fx_health_schema(&h);
    load_rows_request(at, &h.s, victim_rows, 3, -1, NULL, 1);
}

static void prep_row_with_a_wrong_scale(struct fx_token *v, struct attempt *at)
{
    struct fx_schema h;
    struct fx_val bad = FV_DEC(6550, 2);
    (void)v;
    fx_health_schema(&h);
    load_rows_request(at, &h.s, victim_rows, 3, FX_C_WEIGHT, &bad, 0);
}

static void prep_schema_that_differs_from_the_stored_one(struct fx_token *v, struct attempt *at)
{
    struct fx_schema h;
    (void)v;
    fx_health_schema(&h);
    h.cols[FX_C_WEIGHT].scale = 2;
    load_rows_request(at, &h.s, NULL, 0, -1, NULL, 0);
}

static void prep_schema_with_duplicate_columns(struct fx_token *v, struct attempt *at)
{
    struct fx_schema h;
    (void)v;
    fx_health_schema(&h);
    h.cols[FX_C_STEPS].name = "age";
    h.s.name = "health2";
    load_rows_request(at, &h.s, NULL, 0, -1, NULL, 0);
}

/* More plans the token must refuse. */

static void prep_having_on_an_ungrouped_column(struct fx_token *v, struct attempt *at)
{
    static const struct fx_instr having[] = {FI_COL("age"), FI_CONST(FVI_INT(40)), FI_OP(GE)};
    struct fx_plan_spec s = H->spec_a;
    (void)v;
    s.having = having;
    s.n_having = 3;
    collect_spec(at, &s);
}

static void prep_where_with_an_aggregate(struct fx_token *v, struct attempt *at)
{
    static const struct fx_instr where[] = {FI_AGG(0), FI_CONST(FVI_INT(4)), FI_OP(GE)};
    struct fx_plan_spec s = H->spec_a;
    (void)v;
    s.where = where;
    s.n_where = 3;
    collect_spec(at, &s);
}

static void prep_having_on_a_missing_aggregate(struct fx_token *v, struct attempt *at)
{
    static const struct fx_instr having[] = {FI_AGG(2), FI_CONST(FVI_INT(4)), FI_OP(GE)};
    struct fx_plan_spec s = H->spec_a;
    (void)v;
    s.having = having;
    s.n_having = 3;
    collect_spec(at, &s);
}

static void prep_in_list_with_null(struct fx_token *v, struct attempt *at)
{
    static const struct fx_val list[] = {FVI_TEXT("north"), FVI_NULL};
    static const struct fx_instr where[] = {FI_COL("region"), FI_IN(list, 2)};
    struct fx_plan_spec s = H->spec_a;
    (void)v;
    s.where = where;
    s.n_where = 2;
    collect_spec(at, &s);
}

static void prep_like_on_an_int_column(struct fx_token *v, struct attempt *at)
{
    static const struct fx_instr where[] = {FI_COL("age"), FI_LIKE("4")};
    struct fx_plan_spec s = H->spec_a;
    (void)v;
    s.where = where;
    s.n_where = 2;
    collect_spec(at, &s);
}

static void prep_program_deeper_than_the_stack(struct fx_token *v, struct attempt *at)
{
    /* FX_STACK_MAX + 1 booleans, then as many ORs: well formed, one too deep. */
    struct fx_instr where[2 * FX_STACK_MAX + 1];
    struct fx_plan_spec s = H->spec_a;
    size_t i;
    (void)v;
    for (i = 0; i <= FX_STACK_MAX; i++) {
        where[i] = (struct fx_instr)FI_CONST(FVI_INT(1));
        where[i].value.type = COHORT__VALUE_TYPE__VT_BOOL;
    }
    for (i = 0; i < FX_STACK_MAX; i++)
        where[FX_STACK_MAX + 1 + i] = (struct fx_instr)FI_OP(OR);
    s.where = where;
    s.n_where = 2 * FX_STACK_MAX + 1;
    collect_spec(at, &s);
}

static void prep_program_too_long(struct fx_token *v, struct attempt *at)
{
    /* age IS NULL, then NOTs: well formed, one instruction too long. */
    struct fx_instr where[FX_PROGRAM_MAX + 1];
    struct fx_plan_spec s = H->spec_a;
    size_t i;
    (void)v;
    where[0] = (struct fx_instr)FI_COL("age");
    where[1] = (struct fx_instr)FI_OP(IS_NULL);
    for (i = 2; i <= FX_PROGRAM_MAX; i++)
        where[i] = (struct fx_instr)FI_OP(NOT);
    s.where = where;
    s.n_where = FX_PROGRAM_MAX + 1;
    collect_spec(at, &s);
}

static void prep_too_many_aggregates(struct fx_token *v, struct attempt *at)
{
    struct fx_plan_spec s = H->spec_a;
    size_t i;
    (void)v;
    for (i = 0; i < FX_MAX_AGGS + 1; i++)
        s.aggs[i] = (struct fx_agg){COHORT__AGG_FUNC__AGG_COUNT_STAR, NULL};
    s.n_aggs = FX_MAX_AGGS + 1;
    collect_spec(at, &s);
}

static void prep_no_aggregates(struct fx_token *v, struct attempt *at)
{
    struct fx_plan_spec s = H->spec_a;
    (void)v;
    s.n_aggs = 0;
    collect_spec(at, &s);
}

static void prep_grouping_twice_by_a_column(struct fx_token *v, struct attempt *at)
{
    struct fx_plan_spec s = H->spec_a;
    (void)v;
    s.group_by[1] = "region";
    s.n_group = 2;
    collect_spec(at, &s);
}

static void prep_no_tuples(struct fx_token *v, struct attempt *at)
{
    struct fx_plan_spec s = H->spec_a;
    (void)v;
    s.tuples = 0;
    collect_spec(at, &s);
}

static void prep_too_many_tuples(struct fx_token *v, struct attempt *at)
{
    struct fx_plan_spec s = H->spec_a;
    (void)v;
    s.tuples = FX_MAX_TUPLES + 1;
    collect_spec(at, &s);
}

static void prep_too_many_groups_allowed(struct fx_token *v, struct attempt *at)
{
    struct fx_plan_spec s = H->spec_a;
    (void)v;
    s.max_groups = 65537;
    collect_spec(at, &s);
}

static void prep_deadline_after_expiry(struct fx_token *v, struct attempt *at)
{
    struct fx_plan_spec s = H->spec_a;
    (void)v;
    s.deadline = s.expires_at + 1;
    collect_spec(at, &s);
}

static void prep_schema_of_another_table(struct fx_token *v, struct attempt *at)
{
    struct fx_schema h;
    struct fx_plan_spec s = H->spec_a;
    (void)v;
    fx_health_schema(&h);
    h.s.name = "diet";
    s.schema = &h.s;
    collect_spec(at, &s);
}

/* Certificate chains. */

static void chain_via(struct attempt *at, int inter_role, bool researcher_from_root, size_t n)
{
    struct fx_key inter;
    struct fx_researcher r;
    struct fx_cert chain[FX_MAX_CHAIN + 1];
    size_t i;
    fx_key_make(&inter);
    researcher_with(&r, researcher_from_root ? &H->w.authority : &inter,
                    COHORT__ROLE__ROLE_RESEARCHER, FX_NOW - FX_DAY, FX_NOW + FX_DAY, NULL);
    chain[0] = r.cert;
    for (i = 1; i < n; i++)
        fx_cert_issue(&chain[i], inter_role, "ethics-board-2", inter.pk, NULL, &H->w.authority,
                      FX_NOW - FX_DAY, FX_NOW + FX_DAY, NULL);
    collect_signed(at, &H->spec_a, r.sign.sk, chain, n, FX_NOW);
}

static void prep_chain_with_a_broken_link(struct fx_token *v, struct attempt *at)
{
    (void)v; /* the researcher's issuer is the root, not the next certificate */
    chain_via(at, COHORT__ROLE__ROLE_AUTHORITY, true, 2);
}

static void prep_chain_through_a_non_authority(struct fx_token *v, struct attempt *at)
{
    (void)v;
    chain_via(at, COHORT__ROLE__ROLE_RESEARCHER, false, 2);
}

static void prep_chain_too_long(struct fx_token *v, struct attempt *at)
{
    (void)v;
    chain_via(at, COHORT__ROLE__ROLE_AUTHORITY, false, FX_MAX_CHAIN + 1);
}

/* More aggregation inputs. */

static void prep_more_groups_than_max_groups(struct fx_token *v, struct attempt *at)
{
    open_session_of(H->c.sp, v, at, 1, 0, NULL, 0);
    feed(at, H->cts_c.v, H->cts_c.n); /* four contributors, more than two regions */
}

static void prep_feed_with_an_unknown_field(struct fx_token *v, struct attempt *at)
{
    Cohort__AggFeed af;
    uint8_t *body;
    size_t n;
    open_session(v, at, 1, 0, H->cts_a.v, 2);
    cohort__agg_feed__init(&af);
    af.session.data = at->session;
    af.session.len = TK_SESSION_ID_LEN;
    af.n_inputs = 1;
    af.inputs = H->cts_a.v + 2;
    n = cohort__agg_feed__get_packed_size(&af);
    body = fx_alloc(n + 2);
    cohort__agg_feed__pack(&af, body);
    body[n] = (9 << 3) | 0; /* AggFeed has no field 9 */
    body[n + 1] = 1;
    at->req = fx_raw_request(&at->len, FX_NOW, COHORT__TOKEN_REQUEST__BODY_AGG_FEED, body, n + 2);
    free(body);
}

/* The host's flash (test_store.c has every kind of tampering; these are
 * the ones a collection must catch). */

static void prep_tampered_store(struct fx_token *v, struct attempt *at)
{
    struct pt_memseg *s = fx_flash(v);
    s->p[s->len / 2] ^= 0x01;
    at->req = fx_collect_request(&at->len, FX_NOW, H->a.sp);
}

static void prep_store_cut_short(struct fx_token *v, struct attempt *at)
{
    fx_flash(v)->len -= 7;
    at->req = fx_collect_request(&at->len, FX_NOW, H->a.sp);
}

static void prep_store_records_swapped(struct fx_token *v, struct attempt *at)
{
    struct pt_memseg *s = fx_flash(v);
    size_t first;
    uint8_t *copy;
    first = 4 + 24 + ((size_t)s->p[0] | (size_t)s->p[1] << 8 | (size_t)s->p[2] << 16);
    assert_true(first < s->len);
    copy = fx_alloc(s->len);
    memcpy(copy, s->p + first, s->len - first);
    memcpy(copy + s->len - first, s->p, first);
    memcpy(s->p, copy, s->len);
    free(copy);
    at->req = fx_collect_request(&at->len, FX_NOW, H->a.sp);
}

/* Table contents. */

static void prep_text_over_the_limit(struct fx_token *v, struct attempt *at)
{
    static const char long_region[] = "a-region-name-that-is-much-longer-than-sixty-four-bytes-"
                                      "allowed-by-the-token";
    struct fx_schema h;
    struct fx_val bad = FV_TEXT(long_region);
    (void)v;
    fx_health_schema(&h);
    load_rows_request(at, &h.s, victim_rows, 3, FX_C_REGION, &bad, 0);
}

static void prep_bool_out_of_range(struct fx_token *v, struct attempt *at)
{
    Cohort__Column c, *cp = &c;
    Cohort__TableSchema sc;
    Cohort__Value val, *vp = &val;
    Cohort__Row row, *rp = &row;
    Cohort__TokenRequest req;
    Cohort__LoadTable lt;
    (void)v;
    cohort__column__init(&c);
    c.name = "smoker";
    c.type = COHORT__VALUE_TYPE__VT_BOOL;
    cohort__table_schema__init(&sc);
    sc.name = "habits";
    sc.n_columns = 1;
    sc.columns = &cp;
    cohort__value__init(&val);
    val.type = COHORT__VALUE_TYPE__VT_BOOL;
    val.i = 2;
    cohort__row__init(&row);
    row.n_values = 1;
    row.values = &vp;
    cohort__token_request__init(&req);
    cohort__load_table__init(&lt);
    lt.schema = &sc;
    lt.n_rows = 1;
    lt.rows = &rp;
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_LOAD_TABLE;
    req.load_table = &lt;
    at->req = fx_pack_request(&req, &at->len);
}

/* Response buffers and provisioning state. */

static void prep_small_response(struct fx_token *v, struct attempt *at)
{
    (void)v;
    at->req = fx_collect_request(&at->len, FX_NOW, H->a.sp);
    at->resp_cap = 64; /* room for the status, not the contribution */
}

static void prep_no_response_room_at_all(struct fx_token *v, struct attempt *at)
{
    (void)v;
    at->req = fx_collect_request(&at->len, FX_NOW, H->a.sp);
    at->resp_cap = 2;
}

static void prep_begin_reply_does_not_fit(struct fx_token *v, struct attempt *at)
{
    (void)v;
    at->req = fx_agg_begin_request(&at->len, FX_NOW, H->a.sp, 1, 5, false);
    at->resp_cap = 16;
}

static void prep_collect_unprovisioned(struct fx_token *v, struct attempt *at)
{
    (void)v;
    at->req = fx_collect_request(&at->len, FX_NOW, H->a.sp);
}

static void prep_agg_begin_unprovisioned(struct fx_token *v, struct attempt *at)
{
    (void)v;
    at->req = fx_agg_begin_request(&at->len, FX_NOW, H->a.sp, 1, 0, false);
}

static void prep_provision_again(struct fx_token *v, struct attempt *at)
{
    Cohort__TokenRequest req;
    Cohort__ProvisionBegin pb;
    (void)v;
    cohort__token_request__init(&req);
    cohort__provision_begin__init(&pb);
    pb.subject = "again";
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_PROVISION_BEGIN;
    req.provision_begin = &pb;
    at->req = fx_pack_request(&req, &at->len);
}

static const struct hcase hostile_cases[] = {
    {"a truncated request", TK_ERR_TRUNCATED, false, prep_truncated},
    {"garbage bytes", TK_ERR_MALFORMED, false, prep_garbage},
    {"a framed body that does not decode", TK_ERR_MALFORMED, false, prep_undecodable_body},
    {"a request without a body", TK_ERR_MALFORMED, false, prep_no_body},
    {"a request over TK_REQUEST_MAX", TK_ERR_TOO_LARGE, false, prep_oversized},
    {"a ciphertext of another query", TK_ERR_WRONG_QUERY, false, prep_wrong_query},
    {"a collection tuple fed at level 2", TK_ERR_BINDING, false, prep_collection_tuple_at_level_2},
    {"a level-1 partial fed at level 1", TK_ERR_BINDING, false, prep_partial_at_level_1},
    {"a level-1 partial fed at level 3", TK_ERR_BINDING, false, prep_partial_skipping_a_level},
    {"a tuple relabelled to partition 1", TK_ERR_BINDING, false, prep_tuple_moved_to_partition_1},
    {"a tuple with another chunk count", TK_ERR_BINDING, false, prep_tuple_with_other_chunk_count},
    {"a partial chunk of another key range", TK_ERR_BINDING, false,
     prep_partial_chunk_of_another_range},
    {"a tampered box", TK_ERR_DECRYPT, false, prep_tampered_box},
    {"a tuple relabelled with another chunk number", TK_ERR_DECRYPT, false, prep_relabelled_chunk},
    {"a ciphertext with a short nonce", TK_ERR_MALFORMED, false, prep_truncated_nonce},
    {"a tuple given twice", TK_ERR_DUPLICATE, false, prep_duplicate_tuple},
    {"tuples out of order", TK_ERR_ORDER, false, prep_tuples_out_of_order},
    {"a contributor's tuple dropped from the middle", TK_ERR_INCOMPLETE, false, prep_tuple_dropped},
    {"level-2 inputs from one partition aggregated twice", TK_ERR_DUPLICATE, false,
     prep_level2_overlapping_partials},
    {"a level-1 partial given twice", TK_ERR_DUPLICATE, false, prep_level2_partial_given_twice},
    {"level-1 partitions out of order", TK_ERR_ORDER, false, prep_level2_partitions_out_of_order},
    {"a partial missing a middle chunk", TK_ERR_INCOMPLETE, false, prep_partial_missing_a_chunk},
    {"a partial missing its last chunk", TK_ERR_INCOMPLETE, false,
     prep_partial_missing_its_last_chunk},
    {"a partial missing its first chunk", TK_ERR_INCOMPLETE, false,
     prep_partial_missing_its_first_chunk},
    {"AggEnd with a partial missing a chunk", TK_ERR_INCOMPLETE, false,
     prep_end_with_a_partial_missing_a_chunk},
    {"AggEnd without any input", TK_ERR_INCOMPLETE, false, prep_end_without_inputs},
    {"a final partition that lacks a contributor's first chunk", TK_ERR_INCOMPLETE, false,
     prep_final_missing_a_first_chunk},
    {"an AggFeed naming another session", TK_ERR_SESSION, false, prep_feed_of_another_session},
    {"an AggFeed with an unknown session", TK_ERR_SESSION, false, prep_feed_without_session},
    {"an AggEnd with an unknown session", TK_ERR_SESSION, false, prep_end_without_session},
    {"a partition replayed to the same token", TK_ERR_REPLAY, false, prep_replayed_partition},
    {"an aggregation at level 0", TK_ERR_BINDING, false, prep_level_zero},
    {"an aggregation after the plan expired", TK_ERR_EXPIRED, false, prep_aggregation_after_expiry},
    {"a forged plan signature", TK_ERR_BAD_SIGNATURE, false, prep_forged_plan_signature},
    {"a plan signed by a key other than the researcher's", TK_ERR_BAD_SIGNATURE, false,
     prep_plan_signed_by_another_key},
    {"a researcher certificate with a bad signature", TK_ERR_BAD_CERT, false,
     prep_researcher_cert_bad_signature},
    {"a plan without a certificate chain", TK_ERR_BAD_CERT, false, prep_plan_without_chain},
    {"a researcher certificate without a box key", TK_ERR_BAD_CERT, false,
     prep_researcher_without_box_key},
    {"an expired researcher certificate", TK_ERR_EXPIRED, false, prep_expired_researcher},
    {"a researcher certificate not yet valid", TK_ERR_EXPIRED, false,
     prep_researcher_not_yet_valid},
    {"a collection after the deadline", TK_ERR_EXPIRED, false, prep_collect_after_deadline},
    {"a plan issued in the future", TK_ERR_EXPIRED, false, prep_plan_from_the_future},
    {"a plan outside the researcher's tables", TK_ERR_SCOPE, false, prep_scope_table},
    {"a plan outside the researcher's columns", TK_ERR_SCOPE, false, prep_scope_column},
    {"a plan outside the researcher's studies", TK_ERR_SCOPE, false, prep_scope_study},
    {"a plan chained to an untrusted authority", TK_ERR_UNTRUSTED, false, prep_untrusted_authority},
    {"a token certificate used as researcher", TK_ERR_ROLE, false, prep_token_cert_as_researcher},
    {"a plan naming an unknown column", TK_ERR_BAD_PLAN, false, prep_unknown_column},
    {"a WHERE comparing INT with TEXT", TK_ERR_BAD_PLAN, false, prep_where_type_mismatch},
    {"a WHERE that is not boolean", TK_ERR_BAD_PLAN, false, prep_where_not_boolean},
    {"a SUM of a TEXT column", TK_ERR_BAD_PLAN, false, prep_sum_of_text},
    {"a plan of version 2", TK_ERR_BAD_PLAN, false, prep_plan_version_2},
    {"a plan whose column type differs on the token", TK_ERR_BAD_PLAN, false,
     prep_column_type_differs_on_token},
    {"a DP plan without max_rows", TK_ERR_BAD_PLAN, false, prep_dp_without_max_rows},
    {"a DP plan that sums without a contribution bound", TK_ERR_BAD_PLAN, false,
     prep_dp_sum_without_bound},
    {"a DP plan with MAX", TK_ERR_BAD_PLAN, false, prep_dp_with_max},
    {"a plan whose epsilon is NaN", TK_ERR_BAD_PLAN, false, prep_epsilon_nan},
    {"a plan with a negative epsilon", TK_ERR_BAD_PLAN, false, prep_epsilon_negative},
    {"a DP plan whose noise is too large to draw", TK_ERR_BAD_PLAN, false, prep_dp_noise_too_large},
    {"a plan of another protocol", TK_ERR_UNSUPPORTED, false, prep_other_protocol},
    {"a plan for a table the token lacks", TK_ERR_NO_TABLE, false, prep_table_the_token_lacks},
    {"more groups than tuples_per_participant", TK_ERR_TOO_MANY_GROUPS, false,
     prep_more_groups_than_tuples},
    {"a row with a value of the wrong type", TK_ERR_SCHEMA, false, prep_row_with_a_wrong_type},
    {"a row with a missing value", TK_ERR_SCHEMA, false, prep_row_with_a_missing_value},
    {"a row with a decimal of the wrong scale", TK_ERR_SCHEMA, false, prep_row_with_a_wrong_scale},
    {"a schema that differs from the stored one", TK_ERR_SCHEMA, false,
     prep_schema_that_differs_from_the_stored_one},
    {"a schema with duplicate column names", TK_ERR_SCHEMA, false,
     prep_schema_with_duplicate_columns},
    {"a HAVING on a column that is not grouped", TK_ERR_BAD_PLAN, false,
     prep_having_on_an_ungrouped_column},
    {"a WHERE that uses an aggregate", TK_ERR_BAD_PLAN, false, prep_where_with_an_aggregate},
    {"a HAVING on an aggregate the plan lacks", TK_ERR_BAD_PLAN, false,
     prep_having_on_a_missing_aggregate},
    {"an IN list holding NULL", TK_ERR_BAD_PLAN, false, prep_in_list_with_null},
    {"a LIKE on an INT column", TK_ERR_BAD_PLAN, false, prep_like_on_an_int_column},
    {"a program deeper than the stack", TK_ERR_BAD_PLAN, false, prep_program_deeper_than_the_stack},
    {"a program longer than TK_PROGRAM_MAX", TK_ERR_TOO_LARGE, false, prep_program_too_long},
    {"more aggregates than TK_MAX_AGGS", TK_ERR_TOO_LARGE, false, prep_too_many_aggregates},
    {"a plan without aggregates", TK_ERR_BAD_PLAN, false, prep_no_aggregates},
    {"a plan grouping twice by one column", TK_ERR_BAD_PLAN, false,
     prep_grouping_twice_by_a_column},
    {"a plan with no tuples per participant", TK_ERR_BAD_PLAN, false, prep_no_tuples},
    {"a plan with more tuples than TK_MAX_TUPLES", TK_ERR_BAD_PLAN, false, prep_too_many_tuples},
    {"a plan allowing more groups than TK_MAX_GROUPS", TK_ERR_BAD_PLAN, false,
     prep_too_many_groups_allowed},
    {"a plan whose deadline is after its expiry", TK_ERR_BAD_PLAN, false,
     prep_deadline_after_expiry},
    {"a plan whose catalog schema is of another table", TK_ERR_BAD_PLAN, false,
     prep_schema_of_another_table},
    {"a chain whose researcher was not certified by the next link", TK_ERR_BAD_CERT, false,
     prep_chain_with_a_broken_link},
    {"a chain through a certificate that is not an authority", TK_ERR_ROLE, false,
     prep_chain_through_a_non_authority},
    {"a chain longer than TK_MAX_CHAIN", TK_ERR_TOO_LARGE, false, prep_chain_too_long},
    {"more groups in a partition than max_groups", TK_ERR_TOO_MANY_GROUPS, false,
     prep_more_groups_than_max_groups},
    {"an AggFeed with an unknown field", TK_ERR_MALFORMED, false, prep_feed_with_an_unknown_field},
    {"a tampered store record", TK_ERR_TAMPERED, false, prep_tampered_store},
    {"a store cut short", TK_ERR_TAMPERED, false, prep_store_cut_short},
    {"store records in another order", TK_ERR_TAMPERED, false, prep_store_records_swapped},
    {"a text value over TK_TEXT_MAX", TK_ERR_TOO_LARGE, false, prep_text_over_the_limit},
    {"a BOOL value other than 0 or 1", TK_ERR_SCHEMA, false, prep_bool_out_of_range},
    {"a response buffer too small for the contribution", TK_ERR_RESPONSE_SPACE, false,
     prep_small_response},
    {"a response buffer too small for the status", TK_ERR_RESPONSE_SPACE, false,
     prep_no_response_room_at_all},
    {"a response buffer too small for the session id", TK_ERR_RESPONSE_SPACE, false,
     prep_begin_reply_does_not_fit},
    {"a collection before provisioning", TK_ERR_NOT_PROVISIONED, true, prep_collect_unprovisioned},
    {"an aggregation before provisioning", TK_ERR_NOT_PROVISIONED, true,
     prep_agg_begin_unprovisioned},
    {"a second provisioning", TK_ERR_PROVISIONED, false, prep_provision_again},
};

/*
 * The one change a refusal may make: a collection whose plan verified is
 * logged in the owner's audit log (its verdict, or its acceptance when the
 * contribution then did not fit the response). Anything else of the state
 * must be as it was, and the flash may only have grown by that entry.
 */
static bool only_an_audit_entry_was_added(const struct fx_snapshot *s, struct fx_token *v, int rc)
{
    struct tk_token now;
    Cohort__TokenRequest req;
    Cohort__ReadAudit ra;
    Cohort__TokenResponse *r;
    const Cohort__AuditEntry *e;
    size_t i;
    bool ok;

    memcpy(&now, &v->tk, sizeof now);
    if (now.audit_seq != s->tk.audit_seq + 1)
        return false;
    now.log = s->tk.log;
    now.work = s->tk.work;
    now.counter = s->tk.counter;
    now.audit_seq = s->tk.audit_seq;
    memcpy(now.plans, s->tk.plans, sizeof now.plans);
    now.plan_next = s->tk.plan_next;
    if (memcmp(&now, &s->tk, sizeof now) != 0)
        return false;
    for (i = 0; i < PT_MEMFLASH_SEGS; i++) {
        const struct pt_memseg *a = &s->seg[i], *b = &v->flash.s[i];
        if (a->used != b->used || (a->used && (a->seg != b->seg || a->len > b->len ||
                                               (a->len && memcmp(a->p, b->p, a->len) != 0))))
            return false;
    }
    cohort__token_request__init(&req);
    cohort__read_audit__init(&ra);
    ra.after = s->tk.audit_seq;
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_READ_AUDIT;
    req.read_audit = &ra;
    if (fx_call(v, &req, &r) != TK_OK)
        return false;
    ok = r->audit->n_entries == 1;
    if (ok) {
        e = r->audit->entries[0];
        /* Refused before any row is read, or accepted (and debited) and
         * then failed reading the rows or writing the response. */
        ok = strcmp(e->event, "collect") == 0 && (e->accepted || e->status == rc);
    }
    cohort__token_response__free_unpacked(r, NULL);
    return ok;
}

/* Run one case; returns false (and says why) if the token misbehaved. */
static bool run_hostile_case(const struct hcase *c)
{
    static const uint8_t zero[TK_SESSION_ID_LEN];
    struct fx_token v;
    struct fx_snapshot snap;
    struct attempt at;
    bool ok = true;
    int rc;

    memset(&at, 0, sizeof at);
    fx_token_init(&v, TK_ARENA_DEFAULT);
    if (!c->blank_victim) {
        fx_provision(&v, &H->w, "victim");
        assert_int_equal(fx_load_health(&v, victim_rows, 3), TK_OK);
    }
    c->prepare(&v, &at);
    assert_non_null(at.req);
    fx_snapshot_take(&snap, &v);
    if (at.resp_cap)
        v.resp_cap = at.resp_cap;
    rc = fx_call_raw(&v, at.req, at.len, NULL);
    v.resp_cap = FX_RESP_CAP;
    if (rc != c->expected) {
        print_error("%s: got %s, want %s\n", c->name, tk_errname(rc), tk_errname(c->expected));
        ok = false;
    }
    /* The refusal changed nothing (but a tampered flash, which the token
     * now refuses to use); inside a session it closed the session. */
    if (rc == TK_ERR_TAMPERED)
        snap.tk.tampered = true;
    if (!fx_snapshot_same(&snap, &v, at.in_session) &&
        !only_an_audit_entry_was_added(&snap, &v, rc)) {
        print_error("%s: the token's state or store changed\n", c->name);
        ok = false;
    }
    if (at.in_session) {
        if (memcmp(v.tk.session, zero, sizeof zero) != 0 ||
            fx_agg_end(&v, FX_NOW, at.session, NULL) != TK_ERR_SESSION) {
            print_error("%s: the session is still open\n", c->name);
            ok = false;
        }
    }
    fx_snapshot_free(&snap);
    free(at.req);
    fx_token_free(&v);
    return ok;
}

static void each_hostile_request_gets_its_exact_code_and_changes_nothing(void **state)
{
    size_t i, failed = 0, n = sizeof hostile_cases / sizeof hostile_cases[0];
    (void)state;
    for (i = 0; i < n; i++)
        failed += !run_hostile_case(&hostile_cases[i]);
    if (failed)
        fail_msg("%zu of %zu hostile cases failed", failed, n);
    print_message("%zu hostile cases, each refused with its code and no change\n", n);
}

/* A guard on the table itself: no case is named twice. */
static void the_hostile_table_names_each_case_once(void **state)
{
    size_t i, j, n = sizeof hostile_cases / sizeof hostile_cases[0];
    (void)state;
    for (i = 0; i < n; i++)
        for (j = 0; j < i; j++)
            assert_string_not_equal(hostile_cases[i].name, hostile_cases[j].name);
}

/*
 * An AggEnd request followed by unknown fields: first, if filler > 0, a
 * length-delimited field 49 of filler bytes, then one fixed64 field 50 per
 * 8-byte word of image, last word first. protobuf-c copies each unknown
 * field into its own allocation, in order, each below the previous one;
 * a fixed64 field's copy is exactly its 8 bytes. (TokenRequest uses every
 * field number up to 37, and 40, so these take two-byte tags.)
 */
static uint8_t *padded_agg_end(size_t *len, const uint8_t session[TK_SESSION_ID_LEN], size_t filler,
                               const uint8_t *image, size_t words)
{
    size_t n, i, w, v;
    uint8_t *req = fx_agg_end_request(&n, FX_NOW, session, TK_SESSION_ID_LEN);
    uint8_t *big = fx_alloc(n + 14 + filler + 10 * words);
    memcpy(big, req, n);
    i = n;
    if (filler > 0) {
        i += fx_put_varint(big + i, (49 << 3) | 2);
        for (v = filler; v >= 0x80; v >>= 7)
            big[i++] = (uint8_t)(v | 0x80);
        big[i++] = (uint8_t)v;
        memset(big + i, 0x5a, filler);
        i += filler;
    }
    for (w = words; w-- > 0;) {
        i += fx_put_varint(big + i, (50 << 3) | 1);
        memcpy(big + i, image + 8 * w, 8);
        i += 8;
    }
    *len = i;
    free(req);
    return big;
}

/* The arena peak of a padded AggEnd on a token without a session; 0 if it does not fit. */
static size_t padded_peak(struct fx_token *probe, size_t filler, size_t words, const uint8_t *image)
{
    uint8_t id[TK_SESSION_ID_LEN];
    size_t len;
    uint8_t *req;
    int rc;
    memset(id, 0x11, sizeof id);
    req = padded_agg_end(&len, id, filler, image, words);
    rc = fx_call_raw(probe, req, len, NULL);
    free(req);
    assert_true(rc == TK_ERR_SESSION || rc == TK_ERR_NO_MEMORY);
    return rc == TK_ERR_SESSION ? probe->last_peak : 0;
}

/*
 * The decoder copies unknown fields into the arena's scratch end, and the
 * host chooses them. A host that pads an AggEnd so that the copies reach
 * the bottom of the arena could rewrite the open session (its plan, its
 * researcher's key, its group table) with bytes of its choosing. The
 * unknown fields must never reach the session: the token runs out of
 * scratch first (TK_ERR_NO_MEMORY), and a session wiped by the pad
 * (TK_ERR_SESSION) or sealed to the host's key must never be seen.
 */
static void an_agg_end_padded_over_the_session_cannot_rewrite_it(void **state)
{
    const size_t words = 1000; /* 8000 bytes: the session and its group table */
    struct fx_token v, probe;
    uint8_t session[TK_SESSION_ID_LEN], host_pk[32], host_sk[32], *req, *image;
    Cohort__TokenResponse *r = NULL;
    size_t len, lo = 0, hi = TK_ARENA_DEFAULT, i, hits = 0;
    int rc, attempt;
    (void)state;

    fx_token_init(&v, TK_ARENA_DEFAULT);
    fx_provision(&v, &H->w, "padded");
    fx_token_init(&probe, TK_ARENA_DEFAULT);
    fx_provision(&probe, &H->w, "probe");
    image = fx_alloc(8 * words);

    /*
     * The largest filler that fits before the words, on a token without a
     * session (nothing but the decoder uses its arena): then the last word
     * lands on the arena's first byte.
     */
    while (lo + 1 < hi) {
        size_t mid = (lo + hi) / 2;
        if (padded_peak(&probe, mid, words, image) != 0)
            lo = mid;
        else
            hi = mid;
    }
    assert_int_equal(padded_peak(&probe, lo, words, image), TK_ARENA_DEFAULT);

    for (attempt = 0; attempt < 2; attempt++) {
        assert_int_equal(fx_agg_begin(&v, FX_NOW, H->a.sp, 1, (uint32_t)attempt, true, session),
                         TK_OK);
        assert_int_equal(fx_agg_feed(&v, FX_NOW, session, H->cts_a.v, 16), TK_OK);
        if (attempt == 0) {
            /* Zeros: a session rewritten by them is no session at all. */
            memset(image, 0, 8 * words);
        } else {
            /* The session as it is, sealed to the host. */
            memcpy(image, v.arena, 8 * words);
            crypto_box_keypair(host_pk, host_sk);
            for (i = 0; i + 32 <= 8 * words; i++)
                if (memcmp(image + i, H->w.researcher.box_pk, 32) == 0) {
                    memcpy(image + i, host_pk, 32);
                    hits++;
                }
            assert_true(hits > 0);
        }
        req = padded_agg_end(&len, session, lo, image, words);
        assert_true(len < TK_REQUEST_MAX);
        rc = fx_call_raw(&v, req, len, &r);
        if (rc == TK_OK && r->output != NULL && r->output->result != NULL) {
            const Cohort__SealedResult *sr = r->output->result;
            size_t part;
            for (part = 0; part < sr->n_sealed; part++) {
                uint8_t *plain = fx_alloc(sr->sealed[part].len);
                if (crypto_box_seal_open(plain, sr->sealed[part].data, sr->sealed[part].len,
                                         host_pk, host_sk) == 0)
                    fail_msg("the host opened a result sealed to its own key");
                free(plain);
            }
        }
        assert_int_equal(rc, TK_ERR_NO_MEMORY);
        assert_true(v.last_peak <= TK_ARENA_DEFAULT);
        assert_int_equal(fx_agg_end(&v, FX_NOW, session, NULL), TK_ERR_SESSION);
        if (r != NULL)
            cohort__token_response__free_unpacked(r, NULL);
        free(req);
    }
    free(image);
    fx_token_free(&v);
    fx_token_free(&probe);
}

/* An AggEnd whose output does not fit keeps the session for a retry. */
static void an_agg_end_that_does_not_fit_can_be_retried(void **state)
{
    struct fx_token v;
    uint8_t session[TK_SESSION_ID_LEN];
    Cohort__TokenResponse *r;
    Cohort__ResultTable *rt;
    (void)state;

    fx_token_init(&v, TK_ARENA_DEFAULT);
    fx_provision(&v, &H->w, "retry");
    assert_int_equal(fx_agg_begin(&v, FX_NOW, H->a.sp, 1, 0, false, session), TK_OK);
    assert_int_equal(fx_agg_feed(&v, FX_NOW, session, H->cts_a.v, 16), TK_OK);
    v.resp_cap = 512;
    assert_int_equal(fx_agg_end(&v, FX_NOW, session, NULL), TK_ERR_RESPONSE_SPACE);
    v.resp_cap = FX_RESP_CAP;
    assert_int_equal(fx_agg_end(&v, FX_NOW, session, &r), TK_OK);
    assert_int_equal(r->output->n_partials, H->p0.n);
    cohort__token_response__free_unpacked(r, NULL);
    /* Now the partition is done, and done once. */
    assert_int_equal(fx_agg_end(&v, FX_NOW, session, NULL), TK_ERR_SESSION);
    assert_int_equal(fx_agg_begin(&v, FX_NOW, H->a.sp, 1, 0, false, session), TK_ERR_REPLAY);

    /* The same for a final session: the retry seals a result that opens. */
    assert_int_equal(fx_agg_begin(&v, FX_NOW, H->a.sp, 2, 0, true, session), TK_OK);
    assert_int_equal(fx_agg_feed(&v, FX_NOW, session, H->p0.v, H->p0.n), TK_OK);
    assert_int_equal(fx_agg_feed(&v, FX_NOW, session, H->p1.v, H->p1.n), TK_OK);
    v.resp_cap = 64;
    assert_int_equal(fx_agg_end(&v, FX_NOW, session, NULL), TK_ERR_RESPONSE_SPACE);
    v.resp_cap = FX_RESP_CAP;
    assert_int_equal(fx_agg_end(&v, FX_NOW, session, &r), TK_OK);
    rt = fx_open_result(r->output->result, &H->w, H->a.query_id);
    assert_int_equal(rt->participants, N_CONTRIB);
    cohort__result_table__free_unpacked(rt, NULL);
    cohort__token_response__free_unpacked(r, NULL);
    fx_token_free(&v);
}

/* Any request other than AggFeed/AggEnd closes an open session. */
static void another_request_closes_an_open_session(void **state)
{
    struct fx_token v;
    uint8_t session[TK_SESSION_ID_LEN];
    (void)state;

    fx_token_init(&v, TK_ARENA_DEFAULT);
    fx_provision(&v, &H->w, "closer");
    assert_int_equal(fx_agg_begin(&v, FX_NOW, H->a.sp, 1, 0, false, session), TK_OK);
    assert_int_equal(fx_agg_feed(&v, FX_NOW, session, H->cts_a.v, 4), TK_OK);
    assert_int_equal(fx_info(&v, NULL), TK_OK);
    assert_int_equal(fx_agg_feed(&v, FX_NOW, session, H->cts_a.v + 4, 4), TK_ERR_SESSION);
    fx_token_free(&v);
}

/* Plan.expires_at: "tokens refuse any work for the plan after this". */
static void a_session_refuses_work_once_its_plan_has_expired(void **state)
{
    const int64_t end = H->spec_a.expires_at;
    struct fx_token v;
    uint8_t session[TK_SESSION_ID_LEN];
    (void)state;

    fx_token_init(&v, TK_ARENA_DEFAULT);
    fx_provision(&v, &H->w, "late");
    assert_int_equal(fx_agg_begin(&v, end - 5, H->a.sp, 1, 0, false, session), TK_OK);
    assert_int_equal(fx_agg_feed(&v, end, session, H->cts_a.v, 4), TK_OK);
    assert_int_equal(fx_agg_feed(&v, end + 1, session, H->cts_a.v + 4, 4), TK_ERR_EXPIRED);
    assert_int_equal(fx_agg_end(&v, end, session, NULL), TK_ERR_SESSION);

    assert_int_equal(fx_agg_begin(&v, end - 5, H->a.sp, 1, 1, false, session), TK_OK);
    assert_int_equal(fx_agg_feed(&v, end, session, H->cts_a.v, 4), TK_OK);
    assert_int_equal(fx_agg_end(&v, end + 1, session, NULL), TK_ERR_EXPIRED);
    assert_int_equal(fx_agg_end(&v, end, session, NULL), TK_ERR_SESSION);
    fx_token_free(&v);
}

/* A researcher certified by an intermediate authority that the root certified. */
static void a_researcher_certified_through_an_intermediate_authority_is_obeyed(void **state)
{
    struct fx_token v;
    struct fx_key inter;
    struct fx_researcher r;
    struct fx_cert chain[2];
    struct fx_signed p;
    size_t len;
    uint8_t *plan;
    Cohort__TokenResponse *resp;
    (void)state;

    fx_token_init(&v, TK_ARENA_DEFAULT);
    fx_provision(&v, &H->w, "chained");
    assert_int_equal(fx_load_health(&v, victim_rows, 3), TK_OK);
    fx_key_make(&inter);
    fx_researcher_make(&r, &inter, FX_NOW - FX_DAY, FX_NOW + FX_DAY, NULL);
    chain[0] = r.cert;
    fx_cert_issue(&chain[1], COHORT__ROLE__ROLE_AUTHORITY, "ethics-board-2", inter.pk, NULL,
                  &H->w.authority, FX_NOW - FX_DAY, FX_NOW + FX_DAY, NULL);
    plan = fx_plan_pack(&H->spec_a, &len);
    fx_sign_plan_bytes(&p, plan, len, r.sign.sk, chain, 2);
    assert_int_equal(fx_collect(&v, FX_NOW, p.sp, &resp), TK_OK);
    assert_int_equal(resp->contribution->n_tuples, H->spec_a.tuples);
    cohort__token_response__free_unpacked(resp, NULL);
    /* Alone, the researcher's certificate leads to no trusted root. */
    fx_signed_free(&p);
    fx_sign_plan_bytes(&p, plan, len, r.sign.sk, chain, 1);
    assert_int_equal(fx_collect(&v, FX_NOW, p.sp, NULL), TK_ERR_UNTRUSTED);
    fx_signed_free(&p);
    free(plan);
    fx_token_free(&v);
}

/*
 * The contribution key is the same every time a token answers one query
 * (so aggregators catch a contribution given twice) and different from
 * one query to the next (so the service cannot link a participant's
 * contributions across queries). Ciphertexts are never equal.
 */
static void a_contribution_key_is_stable_within_a_query_and_unlinkable_across_queries(void **state)
{
    struct fx_token v;
    Cohort__TokenResponse *a1, *a2, *b1;
    (void)state;

    fx_token_init(&v, TK_ARENA_DEFAULT);
    fx_provision(&v, &H->w, "pseudonymous");
    assert_int_equal(fx_load_health(&v, victim_rows, 3), TK_OK);
    assert_int_equal(fx_collect(&v, FX_NOW, H->a.sp, &a1), TK_OK);
    assert_int_equal(fx_collect(&v, FX_NOW, H->a.sp, &a2), TK_OK);
    assert_int_equal(fx_collect(&v, FX_NOW, H->b.sp, &b1), TK_OK);
    assert_memory_equal(a1->contribution->key.data, a2->contribution->key.data, TK_CONTRIB_KEY_LEN);
    assert_memory_not_equal(a1->contribution->key.data, b1->contribution->key.data,
                            TK_CONTRIB_KEY_LEN);
    assert_memory_not_equal(a1->contribution->tuples[0]->box.data,
                            a2->contribution->tuples[0]->box.data,
                            a1->contribution->tuples[0]->box.len);
    cohort__token_response__free_unpacked(a1, NULL);
    cohort__token_response__free_unpacked(a2, NULL);
    cohort__token_response__free_unpacked(b1, NULL);
    fx_token_free(&v);
}

static int counter_set_alone(void *ctx, uint64_t value)
{
    (void)ctx;
    (void)value;
    return 0;
}

/* The entry point's own guards. */
static void a_token_needs_an_empty_store_and_a_valid_state(void **state)
{
    struct pt_memflash mf;
    struct tk_flash flash, no_truncate;
    struct tk_secure half = {NULL, NULL, NULL, NULL};
    struct tk_token tk;
    static uint8_t arena[TK_ARENA_MIN];
    uint8_t req[] = {0x08, 0x01, 0x12, 0x00}, resp[64];
    size_t resp_len = 99, peak = 99;
    (void)state;

    pt_memflash_init(&mf);
    flash = pt_memflash_flash(&mf);
    assert_int_equal(flash.append(flash.ctx, 0, (const uint8_t *)"x", 1), 0);
    assert_int_equal(tk_token_init(&tk, &flash, NULL, arena, sizeof arena), TK_ERR_STORE);
    assert_int_equal(flash.truncate(flash.ctx, 0, 0), 0);
    assert_int_equal(tk_token_init(&tk, &flash, NULL, arena, sizeof arena - 8), TK_ERR_NO_MEMORY);
    assert_int_equal(tk_token_init(&tk, NULL, NULL, arena, sizeof arena), TK_ERR_MALFORMED);
    no_truncate = flash;
    no_truncate.truncate = NULL;
    assert_int_equal(tk_token_init(&tk, &no_truncate, NULL, arena, sizeof arena), TK_ERR_MALFORMED);
    half.counter_set = counter_set_alone; /* a setter without a getter */
    assert_int_equal(tk_token_init(&tk, &flash, &half, arena, sizeof arena), TK_ERR_MALFORMED);
    assert_int_equal(tk_token_init(&tk, &flash, NULL, arena, sizeof arena), TK_OK);
    assert_int_equal(tk_dispatch(NULL, arena, sizeof arena, req, sizeof req, resp, sizeof resp,
                                 &resp_len, &peak),
                     TK_ERR_NOT_PROVISIONED);
    assert_true(resp_len > 0 && peak == 0);
    tk_token_wipe(&tk); /* no longer a token */
    assert_int_equal(
        tk_dispatch(&tk, arena, sizeof arena, req, sizeof req, resp, sizeof resp, &resp_len, &peak),
        TK_ERR_NOT_PROVISIONED);
    pt_memflash_free(&mf);
}

/* A one-column INT table named `name`, without rows. */
static int load_empty_table(struct fx_token *t, const char *name)
{
    Cohort__Column c, *cp = &c;
    Cohort__TableSchema sc;
    cohort__column__init(&c);
    c.name = "x";
    c.type = COHORT__VALUE_TYPE__VT_INT;
    cohort__table_schema__init(&sc);
    sc.name = (char *)name;
    sc.n_columns = 1;
    sc.columns = &cp;
    return fx_load_table(t, &sc, NULL, 0);
}

/* The ninth table is as present as the first (GetInfo lists only eight). */
static void a_token_with_many_tables_collects_from_any_of_them(void **state)
{
    struct fx_token v;
    Cohort__TokenResponse *r;
    char name[16];
    int i;
    (void)state;

    fx_token_init(&v, TK_ARENA_DEFAULT);
    fx_provision(&v, &H->w, "many-tables");
    for (i = 0; i < 9; i++) {
        snprintf(name, sizeof name, "extra%d", i);
        assert_int_equal(load_empty_table(&v, name), TK_OK);
    }
    assert_int_equal(fx_load_health(&v, victim_rows, 3), TK_OK);
    assert_int_equal(fx_collect(&v, FX_NOW, H->a.sp, &r), TK_OK);
    assert_int_equal(r->contribution->n_tuples, H->spec_a.tuples);
    cohort__token_response__free_unpacked(r, NULL);
    fx_token_free(&v);
}

/* --------------------------------------------------------- the arena */

static void collection_and_aggregation_stay_within_the_arena(void **state)
{
    static const size_t sizes[] = {TK_ARENA_MIN, TK_ARENA_DEFAULT};
    size_t k;
    (void)state;

    for (k = 0; k < 2; k++) {
        struct fx_token v;
        uint8_t session[TK_SESSION_ID_LEN];
        Cohort__TokenResponse *r;
        size_t i;

        fx_token_init(&v, sizes[k]);
        fx_provision(&v, &H->w, "ram");
        assert_true(v.last_peak > 0 && v.last_peak <= sizes[k]);
        assert_int_equal(fx_load_health(&v, victim_rows, 3), TK_OK);
        assert_true(v.last_peak > 0 && v.last_peak <= sizes[k]);
        assert_int_equal(fx_collect(&v, FX_NOW, H->a.sp, &r), TK_OK);
        assert_true(v.last_peak > 0 && v.last_peak <= sizes[k]);
        assert_int_equal(r->arena_peak, v.last_peak);
        cohort__token_response__free_unpacked(r, NULL);

        assert_int_equal(fx_agg_begin(&v, FX_NOW, H->a.sp, 1, 0, false, session), TK_OK);
        assert_true(v.last_peak > 0 && v.last_peak <= sizes[k]);
        for (i = 0; i < 16; i += 4) {
            assert_int_equal(fx_agg_feed(&v, FX_NOW, session, H->cts_a.v + i, 4), TK_OK);
            assert_true(v.last_peak > 0 && v.last_peak <= sizes[k]);
        }
        assert_int_equal(fx_agg_end(&v, FX_NOW, session, NULL), TK_OK);
        assert_true(v.last_peak > 0 && v.last_peak <= sizes[k]);
        fx_token_free(&v);
    }
}

/* A plan whose groups could not fit in a token's RAM is refused at once:
 * no owner's data goes into a study that no token could aggregate. */
static void a_token_refuses_to_collect_for_a_plan_it_could_not_aggregate(void **state)
{
    struct fx_token v;
    struct fx_plan_spec s = H->spec_a;
    struct fx_signed p;
    Cohort__TokenResponse *r = NULL;
    (void)state;

    fx_token_init(&v, TK_ARENA_DEFAULT);
    fx_provision(&v, &H->w, "ram-check");
    assert_int_equal(fx_load_health(&v, victim_rows, 3), TK_OK);
    s.max_groups = 65536;
    fx_plan_sign(&p, &s, &H->w.researcher);
    assert_int_equal(fx_collect(&v, FX_NOW, p.sp, &r), TK_ERR_NO_MEMORY);
    if (r)
        cohort__token_response__free_unpacked(r, NULL);
    fx_signed_free(&p);
    s.max_groups = 16;
    fx_plan_sign(&p, &s, &H->w.researcher);
    assert_int_equal(fx_collect(&v, FX_NOW, p.sp, &r), TK_OK);
    cohort__token_response__free_unpacked(r, NULL);
    fx_signed_free(&p);
    fx_token_free(&v);
}

/* The most tuples a plan may ask, grouped by a TEXT column, in the least RAM. */
static void a_token_with_the_minimum_arena_collects_the_most_tuples_a_plan_may_ask(void **state)
{
    struct fx_token v;
    struct fx_plan_spec s = H->spec_a;
    struct fx_signed p;
    Cohort__TokenResponse *r;
    (void)state;

    fx_token_init(&v, TK_ARENA_MIN);
    fx_provision(&v, &H->w, "small-collector");
    assert_int_equal(fx_load_health(&v, victim_rows, 3), TK_OK);
    s.tuples = FX_MAX_TUPLES;
    fx_plan_sign(&p, &s, &H->w.researcher);
    assert_int_equal(fx_collect(&v, FX_NOW, p.sp, &r), TK_OK);
    assert_int_equal(r->contribution->n_tuples, FX_MAX_TUPLES);
    assert_true(v.last_peak <= TK_ARENA_MIN);
    cohort__token_response__free_unpacked(r, NULL);
    fx_signed_free(&p);
    fx_token_free(&v);
}

static void an_arena_below_the_minimum_is_refused(void **state)
{
    struct fx_token v;
    struct fx_snapshot snap;
    uint8_t *arena;
    (void)state;

    fx_token_init(&v, TK_ARENA_DEFAULT);
    fx_provision(&v, &H->w, "tiny");
    arena = v.arena;
    v.arena_len = TK_ARENA_MIN - 8;
    fx_snapshot_take(&snap, &v);
    assert_int_equal(fx_info(&v, NULL), TK_ERR_NO_MEMORY);
    assert_int_equal(fx_collect(&v, FX_NOW, H->a.sp, NULL), TK_ERR_NO_MEMORY);
    fx_snapshot_check(&snap, &v, false);
    fx_snapshot_free(&snap);
    v.arena = NULL;
    assert_int_equal(fx_info(&v, NULL), TK_ERR_NO_MEMORY);
    v.arena = arena;
    v.arena_len = TK_ARENA_MIN;
    assert_int_equal(fx_info(&v, NULL), TK_OK);
    fx_token_free(&v);
}

/* ------------------------------------------------------------ purity */

static int run_purity(const char *dir)
{
    char cmd[1024];
    int st;
    snprintf(cmd, sizeof cmd, "sh '%s/tests/check_token_purity.sh' '%s' >/dev/null 2>&1",
             COHORT_SOURCE_DIR, dir);
    st = system(cmd);
    assert_true(st != -1 && WIFEXITED(st));
    return WEXITSTATUS(st);
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void remove_dir(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void the_purity_check_rejects_heap_and_stdio_and_accepts_the_token(void **state)
{
    char heap[] = "/tmp/tk_purity_heap_XXXXXX", io[] = "/tmp/tk_purity_io_XXXXXX";
    char clean[] = "/tmp/tk_purity_clean_XXXXXX";
    (void)state;

    assert_non_null(mkdtemp(heap));
    write_file(heap, "tk_ok.c", "int tk_ok(void) { return 0; }\n");
    write_file(heap, "tk_heap.c", "#include <stdlib.h>\nvoid *tk_x(void) { return malloc (8); }\n");
    assert_int_not_equal(run_purity(heap), 0);

    assert_non_null(mkdtemp(io));
    write_file(io, "tk_io.h", "#include <stdio.h>\n");
    assert_int_not_equal(run_purity(io), 0);

    assert_non_null(mkdtemp(clean));
    write_file(clean, "tk_ok.c", "/* no malloc here */\nint tk_ok(void) { return 0; }\n");
    assert_int_equal(run_purity(clean), 0);

    assert_int_equal(run_purity(COHORT_SOURCE_DIR "/token"), 0);
    remove_dir(heap);
    remove_dir(io);
    remove_dir(clean);
}

int main(void)
{
    const struct CMUnitTest alone[] = {
        cmocka_unit_test(provisioning_installs_keys_once_and_refuses_bad_material),
        cmocka_unit_test(every_error_code_has_its_own_name_and_text),
        cmocka_unit_test(the_purity_check_rejects_heap_and_stdio_and_accepts_the_token),
    };
    const struct CMUnitTest hostile[] = {
        cmocka_unit_test(the_hostile_table_names_each_case_once),
        cmocka_unit_test(each_hostile_request_gets_its_exact_code_and_changes_nothing),
        cmocka_unit_test(an_agg_end_padded_over_the_session_cannot_rewrite_it),
        cmocka_unit_test(an_agg_end_that_does_not_fit_can_be_retried),
        cmocka_unit_test(another_request_closes_an_open_session),
        cmocka_unit_test(a_token_with_many_tables_collects_from_any_of_them),
        cmocka_unit_test(a_session_refuses_work_once_its_plan_has_expired),
        cmocka_unit_test(a_researcher_certified_through_an_intermediate_authority_is_obeyed),
        cmocka_unit_test(a_contribution_key_is_stable_within_a_query_and_unlinkable_across_queries),
        cmocka_unit_test(a_token_needs_an_empty_store_and_a_valid_state),
        cmocka_unit_test(collection_and_aggregation_stay_within_the_arena),
        cmocka_unit_test(a_token_with_the_minimum_arena_collects_the_most_tuples_a_plan_may_ask),
        cmocka_unit_test(a_token_refuses_to_collect_for_a_plan_it_could_not_aggregate),
        cmocka_unit_test(an_arena_below_the_minimum_is_refused),
    };
    int failed = cmocka_run_group_tests_name("token", alone, NULL, NULL);
    failed += cmocka_run_group_tests_name("token, hostile host", hostile, hostile_setup,
                                          hostile_teardown);
    return failed;
}
