/* Placeholder: replaced by the dispatcher. */
#include "token/token.h"
int tk_library_init(void)
{
    return TK_OK;
}
int tk_cert_verify(struct tk_cert_info *out, const uint8_t *cert, size_t cert_len,
                   const uint8_t issuer_pk[TK_PK_LEN], int64_t now, uint8_t *scratch,
                   size_t scratch_len)
{
    (void)out, (void)cert, (void)cert_len, (void)issuer_pk, (void)now, (void)scratch,
        (void)scratch_len;
    return TK_ERR_UNSUPPORTED;
}
#include <sodium.h>
void tk_query_id(uint8_t out[TK_QUERY_ID_LEN], const uint8_t *plan, size_t plan_len)
{
    crypto_generichash(out, TK_QUERY_ID_LEN, plan, plan_len, NULL, 0);
}
