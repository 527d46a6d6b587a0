/*
 * cohort-authority certify-token: answer a token's certificate request with
 * a provisioning bundle.
 *
 * The request (DIR/token.csr of cohort-participant init) names the token's
 * two public keys and is signed by the token's signing key; the signature
 * is checked (proof of possession) before anything else is done with it.
 * The bundle holds what the token installs once, with cohort-participant
 * provision: its certificate (role TOKEN, issued by this authority), the
 * deployment's group secret sealed to the token's box key (crypto_box_seal:
 * only the token can open it; the host that carries the bundle cannot),
 * and the authorities whose researchers the token will obey: this one, and
 * each root named with --trust (at most AU_TRUST_MAX in all).
 *
 * The certificate is no longer valid than the root that signs it.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "authority/au.h"
#include "shell/shell.h"

#define CMD "certify-token"

static void help(FILE *f)
{
    au_usage(f, CMD);
    fprintf(f,
            "\nChecks a token's certificate request (DIR/token.csr of cohort-participant init),\n"
            "certifies the token and writes BUNDLE (mode 0600; it must not exist) for\n"
            "cohort-participant provision: the token's certificate, the deployment's group\n"
            "secret sealed to the token, and the authorities whose researchers it will obey.\n\n"
            "  --dir DIR         the authority's directory (cohort-authority init)\n"
            "  --csr FILE        the token's certificate request\n"
            "  --out BUNDLE      the bundle to write\n"
            "  --days N          how long the certificate is valid (default %u, at most %u;\n"
            "                    never past the root's end)\n"
            "  --trust CERTFILE  also obey researchers of the root this certificate file ends at\n"
            "                    (another authority's " AU_CERT_FILE "); may be repeated, %u roots "
            "in all\n",
            AU_TOKEN_DAYS, AU_DAYS_MAX, AU_TRUST_MAX);
}

int au_certify_token(int argc, char **argv, const struct au_env *env)
{
    struct au_certify_args args = {NULL, NULL, NULL, NULL};
    const char *value;
    const char *trust[AU_TRUST_MAX];
    char id[AU_ID_TEXT], from[AU_TIME_TEXT], to[AU_TIME_TEXT];
    struct au_authority *a = NULL;
    struct qr_cert_request req;
    uint8_t trusted[AU_TRUST_MAX][AU_PK_LEN], sealed[AU_SECRET_LEN + crypto_box_SEALBYTES];
    uint8_t *csr = NULL, *cert = NULL, *bundle = NULL;
    size_t n_trust = 0, n_trusted = 0, csr_len = 0, cert_len = 0, bundle_len = 0, i, k;
    uint64_t days = AU_TOKEN_DAYS;
    int64_t not_before, not_after;
    bool cut = false;
    int rc, m;

    for (int j = 1; j < argc; j++) {
        if (au_is_help(argv[j])) {
            help(env->out);
            return AU_OK;
        }
        if ((m = au_opt(env, CMD, argc, argv, &j, "--trust", &value)) != 0) {
            if (m < 0)
                return AU_USAGE;
            if (n_trust + 1 >= AU_TRUST_MAX)
                return au_usage_error(env, CMD,
                                      "--trust: a token trusts at most %u authorities, this one "
                                      "included",
                                      AU_TRUST_MAX);
            trust[n_trust++] = value;
            continue;
        }
        if ((m = au_certify_opt(env, CMD, argc, argv, &j, &args)) != 0) {
            if (m < 0)
                return AU_USAGE;
            continue;
        }
        return au_usage_error(env, CMD, "unexpected argument '%.60s'", argv[j]);
    }
    if ((rc = au_certify_check(env, CMD, &args, "BUNDLE", &days)) != AU_OK)
        return rc;
    if ((rc = au_check_new(env, CMD, args.out)) != AU_OK)
        return rc;

    if ((rc = au_authority_load(env, CMD, args.dir, &a)) != AU_OK)
        return rc;
    if ((rc = au_cert_window(env, CMD, a, days, &not_before, &not_after, &cut)) != AU_OK)
        goto cleanup;
    if ((rc = au_csr_read(env, CMD, args.csr, &req, &csr, &csr_len)) != AU_OK)
        goto cleanup;

    /* The authorities the token will obey: this one first, then each --trust once. */
    memcpy(trusted[n_trusted++], a->id.sign_pk, AU_PK_LEN);
    for (i = 0; i < n_trust; i++) {
        uint8_t pk[AU_PK_LEN];
        if ((rc = au_trust_read(env, CMD, trust[i], pk)) != AU_OK)
            goto cleanup;
        for (k = 0; k < n_trusted && memcmp(trusted[k], pk, AU_PK_LEN) != 0; k++)
            ;
        if (k == n_trusted)
            memcpy(trusted[n_trusted++], pk, AU_PK_LEN);
    }

    rc = qr_cert_issue_for_request(&cert, &cert_len, &a->id, csr, csr_len, not_before, not_after);
    if (rc != 0) {
        rc = au_fail(env, AU_DATA, CMD, "cannot certify the token: %s", qr_strerror(rc));
        goto cleanup;
    }
    if (crypto_box_seal(sealed, a->group_secret, AU_SECRET_LEN, req.box_pk) != 0) {
        rc = au_fail(env, AU_DATA, CMD, "the token's box key is not usable");
        goto cleanup;
    }
    if (au_bundle_pack(&bundle, &bundle_len, cert, cert_len, sealed, sizeof sealed,
                       (const uint8_t(*)[AU_PK_LEN])trusted, n_trusted, req.subject) != 0) {
        rc = au_fail(env, AU_IO, CMD, "out of memory");
        goto cleanup;
    }
    if ((rc = au_write(env, CMD, args.out, bundle, bundle_len, 0600)) != AU_OK)
        goto cleanup;

    au_id(id, req.sign_pk);
    au_time(from, not_before);
    au_time(to, not_after);
    fprintf(env->out, "certified the token ");
    sh_put(env->out, req.subject);
    fprintf(env->out, "\n  token key id:  %s\n  valid:         %s to %s%s\n  trusts:        ", id,
            from, to, cut ? " (the root's end)" : "");
    for (i = 0; i < n_trusted; i++) {
        au_id(id, trusted[i]);
        fprintf(env->out, "%s%s%s", i > 0 ? ", " : "", id, i == 0 ? " (this authority)" : "");
    }
    fprintf(env->out, "\n  bundle:        ");
    sh_put(env->out, args.out);
    fprintf(env->out, " (for cohort-participant provision)\n");
    rc = AU_OK;

cleanup:
    sodium_memzero(sealed, sizeof sealed);
    free(bundle);
    free(cert);
    free(csr);
    au_authority_free(a);
    return rc;
}
