/*
 * cohort-participant identity: the token's device certificate, for
 * someone who wants to share documents with this token.
 *
 * It prints the certificate (as an authority made it for the token's
 * keys) in base64 on one line, which the sharer gives to `share create
 * --to`; with --json, the token's public key too. The certificate is
 * public: it names the token's keys and the authority that vouches for
 * them, nothing of the owner's data.
 */
#include <string.h>

#include <sodium.h>

#include "participant/cli.h"
#include "participant/pt_doc.h"

#define CMD "identity"

static void help(FILE *f)
{
    cli_usage(f, CMD);
    fprintf(f, "\nPrints the device certificate of the token in DIR, base64, on one line:\n"
               "what someone who shares documents with this token gives to\n"
               "`" CLI_PROG " share create --to`. --json: with the token's public key.\n");
}

int cli_identity(int argc, char **argv, const struct cli_env *env)
{
    const char *dir = NULL;
    uint8_t pk[32], cert[PT_CERT_MAX];
    char pk_hex[65], b64[sodium_base64_ENCODED_LEN(PT_CERT_MAX, sodium_base64_VARIANT_ORIGINAL)];
    struct pt_status st;
    struct cli_session s;
    size_t cert_len = 0;
    bool json = false;
    int rc;

    if ((rc = cli_dir_json(env, CMD, argc, argv, help, &dir, &json)) != CLI_OK || dir == NULL)
        return rc;
    if ((rc = cli_open(env, CMD, dir, false, &s)) != CLI_OK)
        return rc;
    rc = pt_identity(&s.o.link, env->now, pk, cert, &cert_len, &st);
    cli_close(env, &s);
    if (rc != 0)
        return cli_doc_fail(env, CMD, rc, &st, "cannot read the token's identity");
    if (cert_len == 0)
        return cli_fail(env, CLI_DATA, CMD,
                        "the token has no certificate yet: provision it first (" CLI_PROG
                        " provision)");
    sodium_bin2base64(b64, sizeof b64, cert, cert_len, sodium_base64_VARIANT_ORIGINAL);
    cli_hex(pk_hex, pk, 32);
    if (json)
        fprintf(env->out, "{\"token\":\"%s\",\"certificate\":\"%s\"}\n", pk_hex, b64);
    else
        fprintf(env->out, "%s\n", b64);
    return CLI_OK;
}
