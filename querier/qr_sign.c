/*
 * qr_sign.c: identities, certificates and signed plans.
 *
 * Pure functions of their inputs (and of libsodium's randomness for new
 * identities). Every signature Cohort makes is an Ed25519 detached
 * signature over a domain-separation prefix (token.h's TK_SIG_*) followed by
 * the exact bytes it covers, so a signature made for one purpose can never
 * be replayed as another, and no canonical re-encoding is ever needed:
 *
 *   Certificate.signature = sign(issuer, "cohort-cert-v1" || CertBody bytes)
 *   CertRequest.signature = sign(subject, "cohort-csr-v1" || subject ||
 *                                         sign_pk || box_pk)
 *   SignedPlan.signature  = sign(researcher, "cohort-plan-v1" || Plan bytes)
 *
 * What comes from outside (a token's or a researcher's CertRequest, the
 * chain given to qr_plan_sign) is bounded before it is decoded. Secret keys are only read
 * here, never copied, except into libsodium's signing calls.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "proto/cohort.pb-c.h"
#include "querier/qr_coord_int.h"
#include "token/token.h"

_Static_assert(QR_ROLE_AUTHORITY == COHORT__ROLE__ROLE_AUTHORITY, "role values");
_Static_assert(QR_ROLE_TOKEN == COHORT__ROLE__ROLE_TOKEN, "role values");
_Static_assert(QR_ROLE_RESEARCHER == COHORT__ROLE__ROLE_RESEARCHER, "role values");

#define QR_SIG_LEN crypto_sign_BYTES
#define QR_PK_LEN crypto_sign_PUBLICKEYBYTES
#define QR_BOX_PK_LEN crypto_box_PUBLICKEYBYTES

int qr_identity_generate(struct qr_identity *id)
{
    if (id == NULL)
        return QR_ERR_ARG;
    if (sodium_init() < 0)
        return QR_ERR_CRYPTO;
    if (crypto_sign_keypair(id->sign_pk, id->sign_sk) != 0 ||
        crypto_box_keypair(id->box_pk, id->box_sk) != 0) {
        qr_identity_wipe(id);
        return QR_ERR_CRYPTO;
    }
    return 0;
}

void qr_identity_wipe(struct qr_identity *id)
{
    if (id != NULL)
        sodium_memzero(id, sizeof *id);
}

/*
 * sig = Ed25519(sk, prefix || body). The two are copied into one message:
 * Ed25519 (not Ed25519ph) signs the whole message at once.
 */
/* Pack m into a fresh malloc'd buffer of at most max bytes. */
static int pack_bounded(uint8_t **out, size_t *out_len, const ProtobufCMessage *m, size_t max)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf;
    if (n > max)
        return QR_ERR_TOO_LARGE;
    buf = malloc(n ? n : 1);
    if (buf == NULL)
        return QR_ERR_NOMEM;
    protobuf_c_message_pack(m, buf);
    *out = buf;
    *out_len = n;
    return 0;
}

static int sign_prefixed(uint8_t sig[QR_SIG_LEN], const uint8_t sk[crypto_sign_SECRETKEYBYTES],
                         const char *prefix, const uint8_t *body, size_t body_len)
{
    size_t p_len = strlen(prefix);
    uint8_t *msg;
    int rc = 0;

    if (body_len > SIZE_MAX - p_len)
        return QR_ERR_TOO_LARGE;
    msg = malloc(p_len + body_len);
    if (msg == NULL)
        return QR_ERR_NOMEM;
    memcpy(msg, prefix, p_len);
    memcpy(msg + p_len, body, body_len);
    if (crypto_sign_detached(sig, NULL, msg, p_len + body_len, sk) != 0)
        rc = QR_ERR_CRYPTO;
    free(msg);
    return rc;
}

static int strings_ok(const char *const *s, size_t n)
{
    if (n > 0 && s == NULL)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] == NULL)
            return 0;
    return 1;
}

int qr_cert_issue(uint8_t **cert, size_t *cert_len, const struct qr_identity *issuer, int role,
                  const char *subject, const uint8_t sign_pk[32], const uint8_t *box_pk,
                  int64_t not_before, int64_t not_after, const struct qr_scope *scope)
{
    Cohort__CertBody body = COHORT__CERT_BODY__INIT;
    Cohort__Scope sc = COHORT__SCOPE__INIT;
    Cohort__Certificate c = COHORT__CERTIFICATE__INIT;
    uint8_t sig[QR_SIG_LEN];
    uint8_t *body_buf = NULL;
    size_t body_len, subject_len;
    int rc;

    if (cert == NULL || cert_len == NULL)
        return QR_ERR_ARG;
    *cert = NULL;
    *cert_len = 0;
    if (issuer == NULL || subject == NULL || sign_pk == NULL)
        return QR_ERR_ARG;
    if (role != QR_ROLE_AUTHORITY && role != QR_ROLE_TOKEN && role != QR_ROLE_RESEARCHER)
        return QR_ERR_ARG;
    subject_len = strlen(subject);
    if (subject_len == 0 || subject_len > QR_SUBJECT_MAX || not_before > not_after)
        return QR_ERR_ARG;
    if (scope != NULL &&
        (!strings_ok(scope->tables, scope->n_tables) ||
         !strings_ok(scope->columns, scope->n_columns) ||
         !strings_ok(scope->studies, scope->n_studies) || !(scope->max_epsilon >= 0)))
        return QR_ERR_ARG;
    if (sodium_init() < 0)
        return QR_ERR_CRYPTO;

    body.version = QR_CERT_VERSION;
    body.role = (Cohort__Role)role;
    body.subject = (char *)subject;
    body.sign_pk.data = (uint8_t *)sign_pk;
    body.sign_pk.len = QR_PK_LEN;
    if (box_pk != NULL) {
        body.box_pk.data = (uint8_t *)box_pk;
        body.box_pk.len = QR_BOX_PK_LEN;
    }
    body.issuer_pk.data = (uint8_t *)issuer->sign_pk;
    body.issuer_pk.len = QR_PK_LEN;
    body.not_before = not_before;
    body.not_after = not_after;
    if (scope != NULL) {
        /* protobuf-c packs from non-const pointers; nothing is written. */
        sc.n_tables = scope->n_tables;
        sc.tables = (char **)scope->tables;
        sc.n_columns = scope->n_columns;
        sc.columns = (char **)scope->columns;
        sc.n_studies = scope->n_studies;
        sc.studies = (char **)scope->studies;
        sc.max_epsilon = scope->max_epsilon;
        body.scope = &sc;
    }

    body_len = cohort__cert_body__get_packed_size(&body);
    body_buf = malloc(body_len);
    if (body_buf == NULL) {
        rc = QR_ERR_NOMEM;
        goto cleanup;
    }
    cohort__cert_body__pack(&body, body_buf);
    rc = sign_prefixed(sig, issuer->sign_sk, TK_SIG_CERT, body_buf, body_len);
    if (rc != 0)
        goto cleanup;

    c.body.data = body_buf;
    c.body.len = body_len;
    c.signature.data = sig;
    c.signature.len = sizeof sig;
    /* A token keeps its device certificate in TK_CERT_MAX bytes. */
    rc = pack_bounded(cert, cert_len, &c.base, role == QR_ROLE_TOKEN ? TK_CERT_MAX : QR_CERT_MAX);

cleanup:
    free(body_buf);
    return rc;
}

int qr_cert_request_check(struct qr_cert_request *out, const uint8_t *csr, size_t csr_len)
{
    Cohort__CertRequest *req = NULL;
    uint8_t *msg = NULL;
    size_t p_len = strlen(TK_SIG_CSR), subject_len, msg_len;
    int rc;

    if (out == NULL || (csr == NULL && csr_len > 0))
        return QR_ERR_ARG;
    if (csr_len > QR_CSR_MAX)
        return QR_ERR_TOO_LARGE;
    if (sodium_init() < 0)
        return QR_ERR_CRYPTO;
    req = cohort__cert_request__unpack(NULL, csr_len, csr);
    if (req == NULL)
        return QR_ERR_MALFORMED;

    subject_len = strlen(req->subject);
    if (req->sign_pk.len != QR_PK_LEN || req->box_pk.len != QR_BOX_PK_LEN ||
        req->signature.len != QR_SIG_LEN || subject_len == 0 || subject_len > QR_SUBJECT_MAX) {
        rc = QR_ERR_MALFORMED;
        goto cleanup;
    }
    /* The signature covers the fields, not this encoding of them. */
    msg_len = p_len + subject_len + QR_PK_LEN + QR_BOX_PK_LEN;
    msg = malloc(msg_len);
    if (msg == NULL) {
        rc = QR_ERR_NOMEM;
        goto cleanup;
    }
    memcpy(msg, TK_SIG_CSR, p_len);
    memcpy(msg + p_len, req->subject, subject_len);
    memcpy(msg + p_len + subject_len, req->sign_pk.data, QR_PK_LEN);
    memcpy(msg + p_len + subject_len + QR_PK_LEN, req->box_pk.data, QR_BOX_PK_LEN);
    if (crypto_sign_verify_detached(req->signature.data, msg, msg_len, req->sign_pk.data) != 0) {
        rc = QR_ERR_SIGNATURE;
        goto cleanup;
    }
    memset(out, 0, sizeof *out);
    memcpy(out->subject, req->subject, subject_len);
    memcpy(out->sign_pk, req->sign_pk.data, QR_PK_LEN);
    memcpy(out->box_pk, req->box_pk.data, QR_BOX_PK_LEN);
    rc = 0;

cleanup:
    free(msg);
    cohort__cert_request__free_unpacked(req, NULL);
    return rc;
}

int qr_cert_issue_for_request(uint8_t **cert, size_t *cert_len, const struct qr_identity *issuer,
                              const uint8_t *csr, size_t csr_len, int64_t not_before,
                              int64_t not_after)
{
    struct qr_cert_request req;
    int rc;

    if (cert == NULL || cert_len == NULL)
        return QR_ERR_ARG;
    *cert = NULL;
    *cert_len = 0;
    if (issuer == NULL)
        return QR_ERR_ARG;
    if ((rc = qr_cert_request_check(&req, csr, csr_len)) != 0)
        return rc;
    return qr_cert_issue(cert, cert_len, issuer, QR_ROLE_TOKEN, req.subject, req.sign_pk,
                         req.box_pk, not_before, not_after, NULL);
}

int qr_plan_sign(uint8_t **signed_plan, size_t *len, const uint8_t *plan, size_t plan_len,
                 const struct qr_identity *researcher, const uint8_t *const *chain,
                 const size_t *chain_lens, size_t n_chain)
{
    Cohort__SignedPlan sp = COHORT__SIGNED_PLAN__INIT;
    Cohort__Plan *decoded = NULL;
    Cohort__Certificate **certs = NULL;
    Cohort__CertBody *first = NULL;
    uint8_t sig[QR_SIG_LEN];
    size_t i, n_certs = 0;
    int rc = 0;

    if (signed_plan == NULL || len == NULL)
        return QR_ERR_ARG;
    *signed_plan = NULL;
    *len = 0;
    if (plan == NULL || plan_len == 0 || researcher == NULL ||
        (n_chain > 0 && (chain == NULL || chain_lens == NULL)))
        return QR_ERR_ARG;
    if (plan_len > QR_SIGNED_PLAN_MAX || n_chain > QR_SIGNED_PLAN_MAX / QR_CERT_MAX)
        return QR_ERR_TOO_LARGE;
    if (sodium_init() < 0)
        return QR_ERR_CRYPTO;
    decoded = cohort__plan__unpack(NULL, plan_len, plan);
    if (decoded == NULL)
        return QR_ERR_MALFORMED;

    certs = calloc(n_chain ? n_chain : 1, sizeof *certs);
    if (certs == NULL) {
        rc = QR_ERR_NOMEM;
        goto cleanup;
    }
    for (i = 0; i < n_chain; i++) {
        if (chain[i] == NULL || chain_lens[i] == 0) {
            rc = QR_ERR_ARG;
            goto cleanup;
        }
        if (chain_lens[i] > QR_CERT_MAX) {
            rc = QR_ERR_TOO_LARGE;
            goto cleanup;
        }
        certs[i] = cohort__certificate__unpack(NULL, chain_lens[i], chain[i]);
        if (certs[i] == NULL) {
            rc = QR_ERR_MALFORMED;
            goto cleanup;
        }
        n_certs++;
    }
    /* The first certificate must be the researcher's own. */
    if (n_chain > 0) {
        first = cohort__cert_body__unpack(NULL, certs[0]->body.len, certs[0]->body.data);
        if (first == NULL) {
            rc = QR_ERR_MALFORMED;
            goto cleanup;
        }
        if (first->sign_pk.len != QR_PK_LEN ||
            memcmp(first->sign_pk.data, researcher->sign_pk, QR_PK_LEN) != 0) {
            rc = QR_ERR_ARG;
            goto cleanup;
        }
    }

    rc = sign_prefixed(sig, researcher->sign_sk, TK_SIG_PLAN, plan, plan_len);
    if (rc != 0)
        goto cleanup;
    sp.plan.data = (uint8_t *)plan;
    sp.plan.len = plan_len;
    sp.signature.data = sig;
    sp.signature.len = sizeof sig;
    sp.n_chain = n_chain;
    sp.chain = certs;
    rc = pack_bounded(signed_plan, len, &sp.base, QR_SIGNED_PLAN_MAX);

cleanup:
    cohort__cert_body__free_unpacked(first, NULL);
    for (i = 0; i < n_certs; i++)
        cohort__certificate__free_unpacked(certs[i], NULL);
    free(certs);
    cohort__plan__free_unpacked(decoded, NULL);
    return rc;
}
