/*
 * Provisioning: the token's identity, once.
 *
 * ProvisionBegin makes the device's Ed25519 and X25519 key pairs inside
 * the token, once, and answers with a certificate request signed by the
 * key (proof of possession); asked again before provisioning is finished,
 * it answers with a request for the same keys (a host that lost the first
 * answer can ask again; it can never make the token change identity). The
 * storage key was made with the token itself (tk_token_init) and never
 * changes: it encrypts the log. ProvisionFinish installs
 * what the deployment's authority returns: the device certificate (which
 * must be a well-formed, currently valid token certificate for exactly
 * these keys; its issuer's signature is checked by those who rely on it,
 * researchers and services, not by the token itself, which saves an Ed25519
 * verification per token), the deployment's group secret sealed to the
 * token's X25519 key,
 * and the authorities whose researchers the token will obey. After that
 * the token refuses to be provisioned again (TK_ERR_PROVISIONED): its
 * trust anchors cannot be swapped by the host.
 *
 * The first provisioning is trust on first use: it happens where the
 * token is issued, before it reaches its owner. Both steps commit the
 * token's image before they answer.
 */
#include "token/tk_int.h"

int tk_do_provision_begin(struct tk_call *c, const Cohort__ProvisionBegin *req)
{
    struct tk_token *tk = c->tk;
    Cohort__CertRequest cr;
    size_t n = req->subject ? strlen(req->subject) : 0;
    uint8_t sig[64];
    bool made = false;
    int rc;

    if (tk_has_flag(tk, TK_FLAG_PROVISIONED))
        return TK_ERR_PROVISIONED;
    if (n == 0 || n > 63)
        return TK_ERR_MALFORMED;
    if (!tk_has_flag(tk, TK_FLAG_KEYS)) {
        if (crypto_sign_keypair(tk->sign_pk, tk->sign_sk) != 0 ||
            crypto_box_keypair(tk->box_pk, tk->box_sk) != 0)
            return TK_ERR_RANDOM;
        tk->flags |= TK_FLAG_KEYS;
        made = true;
    }
    {
        const uint8_t *parts[] = {(const uint8_t *)req->subject, tk->sign_pk, tk->box_pk};
        const size_t lens[] = {n, TK_PK_LEN, 32};
        if ((rc = tk_sign_parts(sig, tk->sign_sk, TK_SIG_CSR, parts, lens, 3)) != TK_OK)
            return rc;
    }
    cohort__cert_request__init(&cr);
    cr.subject = req->subject;
    cr.sign_pk.data = tk->sign_pk;
    cr.sign_pk.len = TK_PK_LEN;
    cr.box_pk.data = tk->box_pk;
    cr.box_pk.len = 32;
    cr.signature.data = sig;
    cr.signature.len = sizeof sig;
    tk_w_message(c->out, 4, &cr.base);
    if (c->out->overflow)
        return TK_ERR_RESPONSE_SPACE; /* before the keys are kept: a retry makes new ones */
    return made ? tk_log_commit(tk, c->arena) : TK_OK;
}

int tk_do_provision_finish(struct tk_call *c, const Cohort__ProvisionFinish *req)
{
    struct tk_token *tk = c->tk;
    Cohort__CertBody *body = NULL;
    uint8_t secret[32];
    size_t cert_len, i;
    int rc;

    if (tk_has_flag(tk, TK_FLAG_PROVISIONED))
        return TK_ERR_PROVISIONED;
    if (!tk_has_flag(tk, TK_FLAG_KEYS))
        return TK_ERR_NOT_PROVISIONED;
    if (req->device_cert == NULL)
        return TK_ERR_BAD_CERT;
    cert_len = cohort__certificate__get_packed_size(req->device_cert);
    if (cert_len > TK_CERT_MAX)
        return TK_ERR_TOO_LARGE;
    if ((rc = tk_cert_check(&body, c->arena, req->device_cert, NULL, c->now)) != TK_OK)
        return rc;
    if (body->role != COHORT__ROLE__ROLE_TOKEN)
        return TK_ERR_ROLE;
    if (sodium_memcmp(body->sign_pk.data, tk->sign_pk, TK_PK_LEN) != 0 || body->box_pk.len != 32 ||
        sodium_memcmp(body->box_pk.data, tk->box_pk, 32) != 0)
        return TK_ERR_BAD_CERT;
    if (req->n_trusted_authorities == 0)
        return TK_ERR_MALFORMED;
    if (req->n_trusted_authorities > TK_MAX_AUTHORITIES)
        return TK_ERR_TOO_LARGE;
    for (i = 0; i < req->n_trusted_authorities; i++)
        if (req->trusted_authorities[i].len != TK_PK_LEN)
            return TK_ERR_MALFORMED;
    if (req->sealed_group_secret.len != sizeof secret + crypto_box_SEALBYTES ||
        crypto_box_seal_open(secret, req->sealed_group_secret.data, req->sealed_group_secret.len,
                             tk->box_pk, tk->box_sk) != 0)
        return TK_ERR_DECRYPT;

    /* Everything checked: install. */
    memcpy(tk->group_secret, secret, sizeof secret);
    sodium_memzero(secret, sizeof secret);
    cohort__certificate__pack(req->device_cert, tk->cert);
    tk->cert_len = (uint16_t)cert_len;
    for (i = 0; i < req->n_trusted_authorities; i++)
        memcpy(tk->authorities[i], req->trusted_authorities[i].data, TK_PK_LEN);
    tk->n_authorities = (uint8_t)req->n_trusted_authorities;
    tk->flags |= TK_FLAG_PROVISIONED;
    return tk_log_commit(tk, c->arena);
}

/*
 * Attest: sign a querier service's admission challenge with the device key,
 * over TK_SIG_ADMIT || challenge, and give the device certificate with it.
 * The service checks that the certificate chains to an authority it trusts
 * and that the signature covers the challenge it just made, so only a
 * provisioned token can get its agent admitted. The key never signs
 * anything else under this prefix. Nothing changes in the token.
 */
int tk_do_attest(struct tk_call *c, const Cohort__Attest *req)
{
    struct tk_token *tk = c->tk;
    const uint8_t *parts[1];
    size_t lens[1];
    uint8_t sig[64];
    int rc;

    if (!tk_has_flag(tk, TK_FLAG_PROVISIONED))
        return TK_ERR_NOT_PROVISIONED;
    if (req->challenge.len < TK_CHALLENGE_MIN || req->challenge.len > TK_CHALLENGE_MAX)
        return TK_ERR_MALFORMED;
    parts[0] = req->challenge.data;
    lens[0] = req->challenge.len;
    if ((rc = tk_sign_parts(sig, tk->sign_sk, TK_SIG_ADMIT, parts, lens, 1)) != TK_OK)
        return rc;
    tk_w_open(c->out, 15, tk_field_len(1, tk->cert_len) + tk_field_len(2, sizeof sig));
    tk_w_bytes(c->out, 1, tk->cert, tk->cert_len);
    tk_w_bytes(c->out, 2, sig, sizeof sig);
    sodium_memzero(sig, sizeof sig);
    return c->out->overflow ? TK_ERR_RESPONSE_SPACE : TK_OK;
}
