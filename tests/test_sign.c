/*
 * test_sign.c: identities, certificates and signed plans (querier/qr_sign.c).
 *
 * Every signature is checked here with libsodium directly, over the exact
 * message the tokens will rebuild (prefix || bytes), not through our own
 * code: a test that verified with the signer's helper would prove nothing
 * about interoperability.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "proto/cohort.pb-c.h"
#include "querier/querier.h"
#include "token/token.h"

#define NOW 1767225600 /* 2026-01-01 */
#define DAY 86400

/* Ed25519 verification of sig over prefix || body, by libsodium alone. */
static int verify_prefixed(const uint8_t *sig, size_t sig_len, const char *prefix,
                           const uint8_t *body, size_t body_len, const uint8_t pk[32])
{
    size_t p_len = strlen(prefix);
    uint8_t *msg = malloc(p_len + body_len);
    int ok;

    assert_non_null(msg);
    memcpy(msg, prefix, p_len);
    memcpy(msg + p_len, body, body_len);
    ok = sig_len == crypto_sign_BYTES &&
         crypto_sign_verify_detached(sig, msg, p_len + body_len, pk) == 0;
    free(msg);
    return ok;
}

/* A CertRequest as a token makes it, optionally signed by another key. */
static uint8_t *make_csr(size_t *len, const char *subject, const struct qr_identity *holder,
                         const struct qr_identity *signer)
{
    Cohort__CertRequest req = COHORT__CERT_REQUEST__INIT;
    size_t p_len = strlen(TK_SIG_CSR), s_len = strlen(subject);
    uint8_t sig[crypto_sign_BYTES];
    uint8_t *msg = malloc(p_len + s_len + 64), *out;

    assert_non_null(msg);
    memcpy(msg, TK_SIG_CSR, p_len);
    memcpy(msg + p_len, subject, s_len);
    memcpy(msg + p_len + s_len, holder->sign_pk, 32);
    memcpy(msg + p_len + s_len + 32, holder->box_pk, 32);
    crypto_sign_detached(sig, NULL, msg, p_len + s_len + 64, signer->sign_sk);
    free(msg);

    req.subject = (char *)subject;
    req.sign_pk.data = (uint8_t *)holder->sign_pk;
    req.sign_pk.len = 32;
    req.box_pk.data = (uint8_t *)holder->box_pk;
    req.box_pk.len = 32;
    req.signature.data = sig;
    req.signature.len = sizeof sig;
    *len = cohort__cert_request__get_packed_size(&req);
    out = malloc(*len);
    assert_non_null(out);
    cohort__cert_request__pack(&req, out);
    return out;
}

static uint8_t *make_plan(size_t *len)
{
    Cohort__Plan plan = COHORT__PLAN__INIT;
    uint8_t nonce[16];
    uint8_t *out;

    randombytes_buf(nonce, sizeof nonce);
    plan.version = 1;
    plan.nonce.data = nonce;
    plan.nonce.len = sizeof nonce;
    plan.study = "sign-test";
    plan.protocol = "s_agg";
    plan.table = "health";
    plan.tuples_per_participant = 1;
    plan.deadline = NOW + 3600;
    *len = cohort__plan__get_packed_size(&plan);
    out = malloc(*len);
    assert_non_null(out);
    cohort__plan__pack(&plan, out);
    return out;
}

static void generated_identities_are_distinct_and_their_keys_pair_up(void **state)
{
    struct qr_identity a, b, zero;
    uint8_t box_pk[32];

    (void)state;
    assert_int_equal(qr_identity_generate(&a), 0);
    assert_int_equal(qr_identity_generate(&b), 0);
    assert_memory_not_equal(a.sign_pk, b.sign_pk, 32);
    assert_memory_not_equal(a.box_pk, b.box_pk, 32);
    assert_memory_equal(a.sign_sk + 32, a.sign_pk, 32);
    assert_int_equal(crypto_scalarmult_base(box_pk, a.box_sk), 0);
    assert_memory_equal(box_pk, a.box_pk, 32);

    qr_identity_wipe(&a);
    memset(&zero, 0, sizeof zero);
    assert_memory_equal(&a, &zero, sizeof a);
    qr_identity_wipe(NULL);
    qr_identity_wipe(&b);
    assert_int_equal(qr_identity_generate(NULL), QR_ERR_ARG);
}

static void an_issued_certificate_decodes_and_verifies_over_the_cert_prefix(void **state)
{
    struct qr_identity issuer, subject;
    const char *tables[] = {"health"};
    const char *columns[] = {"health.steps", "health.age"};
    const char *studies[] = {"s1"};
    struct qr_scope scope = {tables, 1, columns, 2, studies, 1, 1.5};
    Cohort__Certificate *cert;
    Cohort__CertBody *body;
    uint8_t *buf;
    size_t len;

    (void)state;
    assert_int_equal(qr_identity_generate(&issuer), 0);
    assert_int_equal(qr_identity_generate(&subject), 0);
    assert_int_equal(qr_cert_issue(&buf, &len, &issuer, COHORT__ROLE__ROLE_RESEARCHER, "dr who",
                                   subject.sign_pk, subject.box_pk, NOW, NOW + DAY, &scope),
                     0);
    cert = cohort__certificate__unpack(NULL, len, buf);
    assert_non_null(cert);
    body = cohort__cert_body__unpack(NULL, cert->body.len, cert->body.data);
    assert_non_null(body);
    assert_int_equal(body->version, 1);
    assert_int_equal(body->role, COHORT__ROLE__ROLE_RESEARCHER);
    assert_string_equal(body->subject, "dr who");
    assert_int_equal(body->sign_pk.len, 32);
    assert_memory_equal(body->sign_pk.data, subject.sign_pk, 32);
    assert_int_equal(body->box_pk.len, 32);
    assert_memory_equal(body->box_pk.data, subject.box_pk, 32);
    assert_int_equal(body->issuer_pk.len, 32);
    assert_memory_equal(body->issuer_pk.data, issuer.sign_pk, 32);
    assert_int_equal(body->not_before, NOW);
    assert_int_equal(body->not_after, NOW + DAY);
    assert_non_null(body->scope);
    assert_int_equal(body->scope->n_tables, 1);
    assert_string_equal(body->scope->tables[0], "health");
    assert_int_equal(body->scope->n_columns, 2);
    assert_string_equal(body->scope->columns[1], "health.age");
    assert_int_equal(body->scope->n_studies, 1);
    assert_string_equal(body->scope->studies[0], "s1");
    assert_true(body->scope->max_epsilon == 1.5);

    assert_true(verify_prefixed(cert->signature.data, cert->signature.len, "cohort-cert-v1",
                                cert->body.data, cert->body.len, issuer.sign_pk));
    /* The prefix is part of what is signed: the bare body does not verify. */
    assert_false(verify_prefixed(cert->signature.data, cert->signature.len, "", cert->body.data,
                                 cert->body.len, issuer.sign_pk));
    cert->body.data[cert->body.len - 1] ^= 1;
    assert_false(verify_prefixed(cert->signature.data, cert->signature.len, "cohort-cert-v1",
                                 cert->body.data, cert->body.len, issuer.sign_pk));

    cohort__cert_body__free_unpacked(body, NULL);
    cohort__certificate__free_unpacked(cert, NULL);
    free(buf);
    qr_identity_wipe(&issuer);
    qr_identity_wipe(&subject);
}

static void a_certificate_without_box_key_or_scope_omits_them(void **state)
{
    struct qr_identity issuer, subject;
    Cohort__Certificate *cert;
    Cohort__CertBody *body;
    uint8_t *buf;
    size_t len;

    (void)state;
    assert_int_equal(qr_identity_generate(&issuer), 0);
    assert_int_equal(qr_identity_generate(&subject), 0);
    assert_int_equal(qr_cert_issue(&buf, &len, &issuer, COHORT__ROLE__ROLE_AUTHORITY, "ethics",
                                   subject.sign_pk, NULL, NOW, NOW + DAY, NULL),
                     0);
    cert = cohort__certificate__unpack(NULL, len, buf);
    assert_non_null(cert);
    body = cohort__cert_body__unpack(NULL, cert->body.len, cert->body.data);
    assert_non_null(body);
    assert_int_equal(body->role, COHORT__ROLE__ROLE_AUTHORITY);
    assert_int_equal(body->box_pk.len, 0);
    assert_null(body->scope);
    cohort__cert_body__free_unpacked(body, NULL);
    cohort__certificate__free_unpacked(cert, NULL);
    free(buf);
}

static void cert_issue_refuses_bad_arguments(void **state)
{
    struct qr_identity issuer;
    char long_subject[65];
    uint8_t *buf = (uint8_t *)1;
    size_t len = 1;

    (void)state;
    assert_int_equal(qr_identity_generate(&issuer), 0);
    memset(long_subject, 'x', 64);
    long_subject[64] = '\0';
    assert_int_equal(
        qr_cert_issue(&buf, &len, &issuer, 0, "s", issuer.sign_pk, NULL, NOW, NOW, NULL),
        QR_ERR_ARG);
    assert_null(buf);
    assert_int_equal(len, 0);
    assert_int_equal(
        qr_cert_issue(&buf, &len, &issuer, 4, "s", issuer.sign_pk, NULL, NOW, NOW, NULL),
        QR_ERR_ARG);
    assert_int_equal(
        qr_cert_issue(&buf, &len, &issuer, 2, "", issuer.sign_pk, NULL, NOW, NOW, NULL),
        QR_ERR_ARG);
    assert_int_equal(
        qr_cert_issue(&buf, &len, &issuer, 2, long_subject, issuer.sign_pk, NULL, NOW, NOW, NULL),
        QR_ERR_ARG);
    assert_int_equal(
        qr_cert_issue(&buf, &len, &issuer, 2, "s", issuer.sign_pk, NULL, NOW + 1, NOW, NULL),
        QR_ERR_ARG);
    assert_int_equal(qr_cert_issue(&buf, &len, &issuer, 2, "s", NULL, NULL, NOW, NOW, NULL),
                     QR_ERR_ARG);
    assert_int_equal(qr_cert_issue(&buf, &len, NULL, 2, "s", issuer.sign_pk, NULL, NOW, NOW, NULL),
                     QR_ERR_ARG);
    assert_null(buf);
}

static void a_correctly_self_signed_request_is_certified_as_a_token(void **state)
{
    struct qr_identity authority, token;
    Cohort__Certificate *cert;
    Cohort__CertBody *body;
    uint8_t *csr, *buf;
    size_t csr_len, len;

    (void)state;
    assert_int_equal(qr_identity_generate(&authority), 0);
    assert_int_equal(qr_identity_generate(&token), 0);
    csr = make_csr(&csr_len, "token-0001", &token, &token);
    assert_int_equal(
        qr_cert_issue_for_request(&buf, &len, &authority, csr, csr_len, NOW, NOW + DAY), 0);
    assert_true(len <= TK_CERT_MAX);
    cert = cohort__certificate__unpack(NULL, len, buf);
    assert_non_null(cert);
    body = cohort__cert_body__unpack(NULL, cert->body.len, cert->body.data);
    assert_non_null(body);
    assert_int_equal(body->role, COHORT__ROLE__ROLE_TOKEN);
    assert_string_equal(body->subject, "token-0001");
    assert_memory_equal(body->sign_pk.data, token.sign_pk, 32);
    assert_memory_equal(body->box_pk.data, token.box_pk, 32);
    assert_memory_equal(body->issuer_pk.data, authority.sign_pk, 32);
    assert_null(body->scope);
    assert_true(verify_prefixed(cert->signature.data, cert->signature.len, TK_SIG_CERT,
                                cert->body.data, cert->body.len, authority.sign_pk));
    cohort__cert_body__free_unpacked(body, NULL);
    cohort__certificate__free_unpacked(cert, NULL);
    free(buf);
    free(csr);
}

static void a_forged_request_is_refused_with_a_signature_error(void **state)
{
    struct qr_identity authority, token, thief;
    Cohort__CertRequest *req;
    uint8_t *csr, *buf = NULL;
    size_t csr_len, len = 0;

    (void)state;
    assert_int_equal(qr_identity_generate(&authority), 0);
    assert_int_equal(qr_identity_generate(&token), 0);
    assert_int_equal(qr_identity_generate(&thief), 0);

    /* Someone else's key claimed without its secret. */
    csr = make_csr(&csr_len, "token-0002", &token, &thief);
    assert_int_equal(
        qr_cert_issue_for_request(&buf, &len, &authority, csr, csr_len, NOW, NOW + DAY),
        QR_ERR_SIGNATURE);
    assert_null(buf);
    assert_int_equal(len, 0);
    free(csr);

    /* A genuine request whose subject was changed on the way. */
    csr = make_csr(&csr_len, "token-0002", &token, &token);
    req = cohort__cert_request__unpack(NULL, csr_len, csr);
    assert_non_null(req);
    req->subject[6] = '9';
    cohort__cert_request__pack(req, csr);
    assert_int_equal(
        qr_cert_issue_for_request(&buf, &len, &authority, csr, csr_len, NOW, NOW + DAY),
        QR_ERR_SIGNATURE);
    cohort__cert_request__free_unpacked(req, NULL);
    free(csr);
}

static void oversized_garbage_and_misshapen_requests_are_refused(void **state)
{
    struct qr_identity authority, token;
    Cohort__CertRequest *req;
    uint8_t big[4097], garbage[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    uint8_t *csr, *buf = NULL;
    size_t csr_len, len = 0;

    (void)state;
    assert_int_equal(qr_identity_generate(&authority), 0);
    assert_int_equal(qr_identity_generate(&token), 0);
    memset(big, 0, sizeof big);
    assert_int_equal(
        qr_cert_issue_for_request(&buf, &len, &authority, big, sizeof big, NOW, NOW + DAY),
        QR_ERR_TOO_LARGE);
    assert_int_equal(
        qr_cert_issue_for_request(&buf, &len, &authority, garbage, sizeof garbage, NOW, NOW + DAY),
        QR_ERR_MALFORMED);
    assert_int_equal(qr_cert_issue_for_request(&buf, &len, &authority, NULL, 0, NOW, NOW + DAY),
                     QR_ERR_MALFORMED);

    /* A box key of the wrong length. */
    csr = make_csr(&csr_len, "token-0003", &token, &token);
    req = cohort__cert_request__unpack(NULL, csr_len, csr);
    assert_non_null(req);
    req->box_pk.len = 31;
    cohort__cert_request__pack(req, csr);
    assert_int_equal(qr_cert_issue_for_request(&buf, &len, &authority, csr,
                                               cohort__cert_request__get_packed_size(req), NOW,
                                               NOW + DAY),
                     QR_ERR_MALFORMED);
    assert_null(buf);
    cohort__cert_request__free_unpacked(req, NULL);
    free(csr);
}

static void a_signed_plan_verifies_over_the_plan_prefix_with_its_chain_in_order(void **state)
{
    struct qr_identity root, researcher;
    Cohort__SignedPlan *sp;
    uint8_t *plan, *c0, *c1, *out;
    size_t plan_len, c0_len, c1_len, out_len;
    const uint8_t *chain[2];
    size_t lens[2];

    (void)state;
    assert_int_equal(qr_identity_generate(&root), 0);
    assert_int_equal(qr_identity_generate(&researcher), 0);
    assert_int_equal(qr_cert_issue(&c0, &c0_len, &root, COHORT__ROLE__ROLE_RESEARCHER, "dr",
                                   researcher.sign_pk, researcher.box_pk, NOW, NOW + DAY, NULL),
                     0);
    assert_int_equal(qr_cert_issue(&c1, &c1_len, &root, COHORT__ROLE__ROLE_AUTHORITY, "root",
                                   root.sign_pk, NULL, NOW, NOW + DAY, NULL),
                     0);
    plan = make_plan(&plan_len);
    chain[0] = c0;
    chain[1] = c1;
    lens[0] = c0_len;
    lens[1] = c1_len;
    assert_int_equal(qr_plan_sign(&out, &out_len, plan, plan_len, &researcher, chain, lens, 2), 0);

    sp = cohort__signed_plan__unpack(NULL, out_len, out);
    assert_non_null(sp);
    assert_int_equal(sp->plan.len, plan_len);
    assert_memory_equal(sp->plan.data, plan, plan_len);
    assert_true(verify_prefixed(sp->signature.data, sp->signature.len, "cohort-plan-v1",
                                sp->plan.data, sp->plan.len, researcher.sign_pk));
    assert_false(verify_prefixed(sp->signature.data, sp->signature.len, "cohort-cert-v1",
                                 sp->plan.data, sp->plan.len, researcher.sign_pk));
    assert_int_equal(sp->n_chain, 2);
    for (size_t i = 0; i < 2; i++) {
        uint8_t packed[4096];

        assert_int_equal(cohort__certificate__get_packed_size(sp->chain[i]), lens[i]);
        cohort__certificate__pack(sp->chain[i], packed);
        assert_memory_equal(packed, chain[i], lens[i]);
    }
    cohort__signed_plan__free_unpacked(sp, NULL);
    free(out);

    /* The chain must start with the researcher's own certificate. */
    chain[0] = c1;
    lens[0] = c1_len;
    assert_int_equal(qr_plan_sign(&out, &out_len, plan, plan_len, &researcher, chain, lens, 1),
                     QR_ERR_ARG);
    assert_null(out);
    free(plan);
    free(c0);
    free(c1);
}

static void plan_sign_refuses_garbage_plans_and_certificates(void **state)
{
    struct qr_identity researcher;
    uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    const uint8_t *chain[1] = {garbage};
    size_t lens[1] = {sizeof garbage};
    uint8_t *plan, *out = NULL;
    size_t plan_len, out_len = 0;

    (void)state;
    assert_int_equal(qr_identity_generate(&researcher), 0);
    assert_int_equal(
        qr_plan_sign(&out, &out_len, garbage, sizeof garbage, &researcher, NULL, NULL, 0),
        QR_ERR_MALFORMED);
    plan = make_plan(&plan_len);
    assert_int_equal(qr_plan_sign(&out, &out_len, plan, plan_len, &researcher, chain, lens, 1),
                     QR_ERR_MALFORMED);
    assert_int_equal(qr_plan_sign(&out, &out_len, plan, 0, &researcher, NULL, NULL, 0), QR_ERR_ARG);
    assert_null(out);
    assert_int_equal(out_len, 0);
    free(plan);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(generated_identities_are_distinct_and_their_keys_pair_up),
        cmocka_unit_test(an_issued_certificate_decodes_and_verifies_over_the_cert_prefix),
        cmocka_unit_test(a_certificate_without_box_key_or_scope_omits_them),
        cmocka_unit_test(cert_issue_refuses_bad_arguments),
        cmocka_unit_test(a_correctly_self_signed_request_is_certified_as_a_token),
        cmocka_unit_test(a_forged_request_is_refused_with_a_signature_error),
        cmocka_unit_test(oversized_garbage_and_misshapen_requests_are_refused),
        cmocka_unit_test(a_signed_plan_verifies_over_the_plan_prefix_with_its_chain_in_order),
        cmocka_unit_test(plan_sign_refuses_garbage_plans_and_certificates),
    };

    if (sodium_init() < 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
