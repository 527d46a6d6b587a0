/*
 * qr_result_open.c: the researcher's side of a SealedResult.
 *
 * The result comes through the untrusted service, so every claim in it is
 * checked before anything is opened, in this order:
 *
 *  1. The input is bounded (QR_SEALED_RESULT_MAX) and decodes.
 *  2. It names this query: its query_id is the id of the signed plan's Plan.
 *  3. Its signer's certificate verifies under one of the token authorities
 *     the caller trusts, at `now`, and certifies a token (ROLE_TOKEN).
 *  4. The signer's key signed "cohort-result-v1" || query_id ||
 *     BLAKE2b-256(sealed) || participants (8 bytes, little-endian).
 *  5. The sealed box opens with the researcher's X25519 key pair.
 *  6. The participants the token signed are those of the table inside.
 *
 * Then the ResultTable is laid out by qr_result_from_table() (qr_result.c).
 * This file stands alone so that code which never opens a result does not
 * link the layout code.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "proto/cohort.pb-c.h"
#include "querier/qr_coord_int.h"
#include "querier/qr_result.h"
#include "token/token.h"

#define QR_CERT_SCRATCH 2048u
#define QR_PARTICIPANTS_LEN 8u
#define QR_SEALED_HASH_LEN 32u
#define QR_SEALED_PARTS_MAX 65536u

/* Does the SealedResult's signature cover what it claims, by info's key? */
static int result_signature_ok(const Cohort__SealedResult *sr, const struct tk_cert_info *info)
{
    size_t p_len = strlen(TK_SIG_RESULT);
    uint8_t
        msg[sizeof TK_SIG_RESULT - 1 + QR_QUERY_ID_LEN + QR_SEALED_HASH_LEN + QR_PARTICIPANTS_LEN];
    uint8_t *p = msg;

    if (sr->signature.len != crypto_sign_BYTES)
        return 0;
    memcpy(p, TK_SIG_RESULT, p_len);
    p += p_len;
    memcpy(p, sr->query_id.data, QR_QUERY_ID_LEN);
    p += QR_QUERY_ID_LEN;
    {
        const uint8_t *parts[QR_SEALED_PARTS_MAX];
        size_t lens[QR_SEALED_PARTS_MAX];
        if (sr->n_sealed == 0 || sr->n_sealed > QR_SEALED_PARTS_MAX)
            return 0;
        for (size_t i = 0; i < sr->n_sealed; i++) {
            parts[i] = sr->sealed[i].data;
            lens[i] = sr->sealed[i].len;
        }
        tk_result_digest(p, parts, lens, sr->n_sealed);
    }
    p += QR_SEALED_HASH_LEN;
    for (size_t i = 0; i < QR_PARTICIPANTS_LEN; i++)
        *p++ = (uint8_t)(sr->participants >> (8 * i));
    return crypto_sign_verify_detached(sr->signature.data, msg, sizeof msg, info->sign_pk) == 0;
}

int qr_result_open_table(uint8_t **table_out, size_t *table_len_out, const uint8_t *sealed,
                         size_t sealed_len, const uint8_t *signed_plan, size_t signed_plan_len,
                         const struct qr_identity *researcher,
                         const uint8_t (*token_authorities)[32], size_t n_token_authorities,
                         int64_t now)
{
    Cohort__SealedResult *sr = NULL;
    Cohort__SignedPlan *sp = NULL;
    struct tk_cert_info info;
    uint8_t query_id[QR_QUERY_ID_LEN];
    uint8_t scratch[QR_CERT_SCRATCH];
    uint8_t *signer = NULL, *table = NULL;
    size_t signer_len, table_len = 0, i;
    int rc = 0, verified = 0;

    if (table_out == NULL || table_len_out == NULL)
        return QR_ERR_ARG;
    *table_out = NULL;
    *table_len_out = 0;
    if ((sealed == NULL && sealed_len > 0) || signed_plan == NULL || researcher == NULL ||
        (token_authorities == NULL && n_token_authorities > 0))
        return QR_ERR_ARG;
    if (sealed_len > QR_SEALED_RESULT_MAX || signed_plan_len > QR_SIGNED_PLAN_MAX)
        return QR_ERR_TOO_LARGE;
    if (sodium_init() < 0)
        return QR_ERR_CRYPTO;

    sr = cohort__sealed_result__unpack(NULL, sealed_len, sealed);
    sp = cohort__signed_plan__unpack(NULL, signed_plan_len, signed_plan);
    if (sr == NULL || sp == NULL) {
        rc = QR_ERR_MALFORMED;
        goto cleanup;
    }
    tk_query_id(query_id, sp->plan.data, sp->plan.len);
    if (sr->query_id.len != QR_QUERY_ID_LEN ||
        memcmp(sr->query_id.data, query_id, QR_QUERY_ID_LEN) != 0) {
        rc = QR_ERR_WRONG_QUERY;
        goto cleanup;
    }
    if (sr->signer == NULL) {
        rc = QR_ERR_SIGNATURE;
        goto cleanup;
    }

    /* The certificate's own signature covers its body bytes, not this encoding. */
    signer_len = cohort__certificate__get_packed_size(sr->signer);
    signer = malloc(signer_len ? signer_len : 1);
    if (signer == NULL) {
        rc = QR_ERR_NOMEM;
        goto cleanup;
    }
    cohort__certificate__pack(sr->signer, signer);
    for (i = 0; i < n_token_authorities && !verified; i++)
        verified = tk_cert_verify(&info, signer, signer_len, token_authorities[i], now, scratch,
                                  sizeof scratch) == TK_OK;
    if (!verified || info.role != QR_ROLE_TOKEN || !result_signature_ok(sr, &info)) {
        rc = QR_ERR_SIGNATURE;
        goto cleanup;
    }

    /* Open every part; their plaintexts, in order, make one ResultTable. */
    for (i = 0; i < sr->n_sealed; i++) {
        if (sr->sealed[i].len < crypto_box_SEALBYTES) {
            rc = QR_ERR_DECRYPT;
            goto cleanup;
        }
        table_len += sr->sealed[i].len - crypto_box_SEALBYTES;
    }
    table = malloc(table_len ? table_len : 1);
    if (table == NULL) {
        rc = QR_ERR_NOMEM;
        goto cleanup;
    }
    {
        size_t at = 0;
        for (i = 0; i < sr->n_sealed; i++) {
            if (crypto_box_seal_open(table + at, sr->sealed[i].data, sr->sealed[i].len,
                                     researcher->box_pk, researcher->box_sk) != 0) {
                rc = QR_ERR_DECRYPT;
                goto cleanup;
            }
            at += sr->sealed[i].len - crypto_box_SEALBYTES;
        }
    }
    /* 6: the participants the token signed are those of the table inside. */
    {
        Cohort__ResultTable *rt = cohort__result_table__unpack(NULL, table_len, table);
        int same = rt != NULL && rt->participants == sr->participants;
        if (rt != NULL)
            cohort__result_table__free_unpacked(rt, NULL);
        if (!same) {
            rc = rt == NULL ? QR_ERR_MALFORMED : QR_ERR_SIGNATURE;
            goto cleanup;
        }
    }
    *table_out = table;
    *table_len_out = table_len;
    table = NULL;

cleanup:
    if (table != NULL)
        sodium_memzero(table, table_len);
    free(table);
    free(signer);
    sodium_memzero(scratch, sizeof scratch);
    cohort__signed_plan__free_unpacked(sp, NULL);
    cohort__sealed_result__free_unpacked(sr, NULL);
    return rc;
}

int qr_result_open(struct qr_result *out, const uint8_t *sealed, size_t sealed_len,
                   const uint8_t *signed_plan, size_t signed_plan_len,
                   const struct qr_identity *researcher, const uint8_t (*token_authorities)[32],
                   size_t n_token_authorities, int64_t now)
{
    Cohort__SignedPlan *sp = NULL;
    uint8_t *table = NULL;
    size_t table_len = 0;
    int rc;

    if (out == NULL)
        return QR_ERR_ARG;
    memset(out, 0, sizeof *out);
    rc = qr_result_open_table(&table, &table_len, sealed, sealed_len, signed_plan, signed_plan_len,
                              researcher, token_authorities, n_token_authorities, now);
    if (rc != 0)
        return rc;
    sp = cohort__signed_plan__unpack(NULL, signed_plan_len, signed_plan);
    rc = sp == NULL ? QR_ERR_MALFORMED
                    : qr_result_from_table(out, table, table_len, sp->plan.data, sp->plan.len);
    sodium_memzero(table, table_len);
    free(table);
    cohort__signed_plan__free_unpacked(sp, NULL);
    return rc;
}
