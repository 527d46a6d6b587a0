/*
 * sh_cert.c: a certificate's signature, checked as a token checks it.
 *
 * A certificate is a body and an Ed25519 signature by its issuer over
 * TK_SIG_CERT || body (token/token.h). The programs check certificates
 * that come from elsewhere (an authority's root given with --trust, a
 * researcher's chain, a file being shown) with libsodium directly over that
 * message, so that what they accept is what a token accepts.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "shell/shell.h"
#include "token/token.h"

bool sh_cert_signed_by(const uint8_t *sig, size_t sig_len, const uint8_t *body, size_t body_len,
                       const uint8_t pk[static SH_PK_LEN])
{
    size_t p_len = strlen(TK_SIG_CERT);
    uint8_t *msg;
    bool ok;

    if (sig_len != crypto_sign_BYTES)
        return false;
    msg = malloc(p_len + body_len);
    if (msg == NULL)
        return false;
    memcpy(msg, TK_SIG_CERT, p_len);
    if (body_len > 0)
        memcpy(msg + p_len, body, body_len);
    ok = crypto_sign_verify_detached(sig, msg, p_len + body_len, pk) == 0;
    free(msg);
    return ok;
}
