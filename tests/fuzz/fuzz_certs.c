/*
 * Fuzz target: the decoders of the files a deployment passes around. The
 * first byte picks what the rest is:
 *   0: a certificate request (qr_cert_request_check: what an authority
 *      reads from a token or a researcher),
 *   1: a provisioning bundle (pt_bundle_decode: what an owner gives a
 *      token).
 *
 * Invariants. A request is accepted only if its signature, made by the key
 * it names over TK_SIG_CSR || subject || sign_pk || box_pk, verifies when
 * checked again here with libsodium, and its subject is 1 to 63 bytes; any
 * other input is one of the documented errors, and the output is not
 * written. A bundle either decodes with 1 to PT_AUTHORITIES_MAX authorities
 * and a NUL-terminated subject, or is PT_ERR_INPUT or PT_ERR_TOO_LARGE.
 */
#include <string.h>

#include <sodium.h>

#include "participant/pt_owner.h"
#include "proto/cohort.pb-c.h"
#include "querier/querier.h"
#include "tests/fuzz/fuzz.h"
#include "token/token.h"

static void one_request(const uint8_t *data, size_t size)
{
    struct qr_cert_request r;
    int rc;

    memset(&r, 0x5a, sizeof r);
    rc = qr_cert_request_check(&r, data, size);
    FUZZ_CHECK(rc == 0 || rc == QR_ERR_MALFORMED || rc == QR_ERR_SIGNATURE ||
               rc == QR_ERR_TOO_LARGE);
    if (rc != 0) {
        for (size_t i = 0; i < sizeof r; i++)
            FUZZ_CHECK(((const uint8_t *)&r)[i] == 0x5a);
        return;
    }
    {
        size_t p = strlen(TK_SIG_CSR), s = strnlen(r.subject, sizeof r.subject);
        uint8_t msg[128];
        Cohort__CertRequest *cr = cohort__cert_request__unpack(NULL, size, data);
        FUZZ_CHECK(s >= 1 && s <= 63);
        FUZZ_CHECK(cr != NULL && cr->signature.len == 64);
        memcpy(msg, TK_SIG_CSR, p);
        memcpy(msg + p, r.subject, s);
        memcpy(msg + p + s, r.sign_pk, 32);
        memcpy(msg + p + s + 32, r.box_pk, 32);
        FUZZ_CHECK(crypto_sign_verify_detached(cr->signature.data, msg, p + s + 64, r.sign_pk) ==
                   0);
        cohort__cert_request__free_unpacked(cr, NULL);
    }
}

static void one_bundle(const uint8_t *data, size_t size)
{
    struct pt_bundle b;
    int rc = pt_bundle_decode(&b, data, size);

    FUZZ_CHECK(rc == 0 || rc == PT_ERR_INPUT || rc == PT_ERR_TOO_LARGE);
    if (rc != 0)
        return;
    FUZZ_CHECK(b.n_authorities >= 1 && b.n_authorities <= PT_AUTHORITIES_MAX);
    FUZZ_CHECK(memchr(b.subject, '\0', sizeof b.subject) != NULL);
}

void fuzz_one(const uint8_t *data, size_t size)
{
    if (size == 0)
        return;
    if (data[0] % 2 == 0)
        one_request(data + 1, size - 1);
    else
        one_bundle(data + 1, size - 1);
}

/* A request signed by its key, as keygen or a token makes it; 0-prefixed. */
static size_t make_request(uint8_t *out, const struct qr_identity *id, const char *subject)
{
    Cohort__CertRequest cr = COHORT__CERT_REQUEST__INIT;
    size_t p = strlen(TK_SIG_CSR), s = strlen(subject);
    uint8_t msg[128], sig[64];

    memcpy(msg, TK_SIG_CSR, p);
    memcpy(msg + p, subject, s);
    memcpy(msg + p + s, id->sign_pk, 32);
    memcpy(msg + p + s + 32, id->box_pk, 32);
    crypto_sign_detached(sig, NULL, msg, p + s + 64, id->sign_sk);
    cr.subject = (char *)subject;
    cr.sign_pk.data = (uint8_t *)id->sign_pk;
    cr.sign_pk.len = 32;
    cr.box_pk.data = (uint8_t *)id->box_pk;
    cr.box_pk.len = 32;
    cr.signature.data = sig;
    cr.signature.len = 64;
    out[0] = 0;
    return 1 + cohort__cert_request__pack(&cr, out + 1);
}

void fuzz_seeds(void (*add)(const uint8_t *data, size_t size))
{
    struct qr_identity authority, token;
    uint8_t buf[2048], *cert = NULL, sealed[32 + crypto_box_SEALBYTES], secret[32] = {7};
    size_t n, cert_len = 0;
    Cohort__ProvisionBundle b = COHORT__PROVISION_BUNDLE__INIT;
    Cohort__ProvisionFinish f = COHORT__PROVISION_FINISH__INIT;
    ProtobufCBinaryData auth[2];
    Cohort__Certificate *c;

    if (qr_identity_generate(&authority) != 0 || qr_identity_generate(&token) != 0)
        abort();
    n = make_request(buf, &token, "token 1");
    add(buf, n);
    if (qr_cert_issue_for_request(&cert, &cert_len, &authority, buf + 1, n - 1, 0, INT64_MAX / 2) !=
        0)
        abort();
    n = make_request(buf, &authority, "an authority with a longer name, é");
    add(buf, n);

    c = cohort__certificate__unpack(NULL, cert_len, cert);
    if (c == NULL)
        abort();
    crypto_box_seal(sealed, secret, sizeof secret, token.box_pk);
    auth[0].data = authority.sign_pk;
    auth[0].len = 32;
    auth[1].data = token.sign_pk;
    auth[1].len = 32;
    f.device_cert = c;
    f.sealed_group_secret.data = sealed;
    f.sealed_group_secret.len = sizeof sealed;
    f.n_trusted_authorities = 2;
    f.trusted_authorities = auth;
    b.finish = &f;
    b.subject = "token 1";
    buf[0] = 1;
    n = 1 + cohort__provision_bundle__pack(&b, buf + 1);
    add(buf, n);
    cohort__certificate__free_unpacked(c, NULL);
    free(cert);
    qr_identity_wipe(&authority);
    qr_identity_wipe(&token);
}
