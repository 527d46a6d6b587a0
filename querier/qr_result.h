/*
 * Private to libcohort_querier: laying out a decrypted result.
 */
#ifndef COHORT_QR_RESULT_H
#define COHORT_QR_RESULT_H

#include "querier/querier.h"

/*
 * Decode a serialized ResultTable (as sealed by the finalizing token: the
 * plan's group_by columns, then its aggregates) and lay it out in the plan's
 * SELECT order, sorted by its ORDER BY, cut to its LIMIT. plan is a
 * serialized Plan. On error *out is left empty (qr_result_free-safe).
 */
int qr_result_from_table(struct qr_result *out, const uint8_t *table, size_t table_len,
                         const uint8_t *plan, size_t plan_len);

/*
 * qr_result_open's checks and decryption, without the layout: *table
 * (malloc'd; the caller wipes and frees it) receives the serialized
 * ResultTable exactly as the finalizing token sealed it, in plan order.
 */
int qr_result_open_table(uint8_t **table, size_t *table_len, const uint8_t *sealed,
                         size_t sealed_len, const uint8_t *signed_plan, size_t signed_plan_len,
                         const struct qr_identity *researcher,
                         const uint8_t (*token_authorities)[32], size_t n_token_authorities,
                         int64_t now);

#endif
