/*
 * cohort-participant provision: install what an authority made for the
 * token.
 *
 * `init` leaves a certificate request in DIR/token.csr; the deployment's
 * authority answers it with a bundle (cohort-authority certify-token): the
 * token's certificate, the deployment's group secret sealed to the token's
 * box key, and the authorities whose researchers the token will obey. This
 * command reads the bundle (at most PT_BUNDLE_MAX bytes), checks that it is
 * one and that it was made for this token, and hands it over; the token
 * checks it again, opens the secret inside itself and keeps it. The host
 * never sees the secret: it is sealed to a key that never leaves the token.
 *
 * Provisioning happens once. Afterwards the token refuses any bundle, so
 * whoever holds the host cannot swap the authorities it trusts.
 */
#include <stdlib.h>
#include <string.h>

#include "participant/cli.h"
#include "shell/shell.h"

#define CMD "provision"
#define ID_BYTES 8u /* a key's id: its first bytes in hex */

static void help(FILE *f)
{
    cli_usage(f, CMD);
    fprintf(f, "\nGives the token in DIR the BUNDLE an authority made from its certificate "
               "request\n(cohort-authority certify-token --csr DIR/" CLI_CSR_FILE
               " ...): its certificate, the\ndeployment's group secret sealed to the token, and "
               "the authorities whose\nresearchers it will obey. A token is provisioned once; "
               "it refuses a bundle\nmade for another token.\n");
}

static void put_id(FILE *f, const uint8_t pk[static PT_KEY_LEN])
{
    char hex[2 * ID_BYTES + 1];
    cli_hex(hex, pk, ID_BYTES);
    fputs(hex, f);
}

/* A token's refusal of the bundle, in the owner's words. */
static int refused(const struct cli_env *env, const struct cli_session *s,
                   const struct pt_bundle *b, int rc)
{
    char from[PT_TIMESTAMP_TEXT], to[PT_TIMESTAMP_TEXT];

    if (rc != PT_ERR_TOKEN)
        return cli_owner_fail(env, CMD, &s->o, rc, "the token was not provisioned");
    switch (s->o.token_status) {
    case TK_ERR_PROVISIONED:
        return cli_fail(env, CLI_DATA, CMD, "the token is already provisioned");
    case TK_ERR_BAD_CERT:
    case TK_ERR_ROLE:
        return cli_fail(env, CLI_DATA, CMD,
                        "the bundle's certificate does not match this token's keys");
    case TK_ERR_DECRYPT:
        return cli_fail(env, CLI_DATA, CMD,
                        "the bundle's group secret was not sealed to this token");
    case TK_ERR_EXPIRED:
        pt_timestamp_format(from, b->not_before);
        pt_timestamp_format(to, b->not_after);
        return cli_fail(env, CLI_DATA, CMD,
                        "the bundle's certificate is valid from %s to %s, not now", from, to);
    default:
        return cli_owner_fail(env, CMD, &s->o, rc, "the token was not provisioned");
    }
}

int cli_provision(int argc, char **argv, const struct cli_env *env)
{
    const char *dir = NULL, *path = NULL;
    char from[PT_TIMESTAMP_TEXT], to[PT_TIMESTAMP_TEXT];
    struct cli_session s;
    struct pt_token_info info;
    struct pt_bundle b;
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc;

    const struct cli_arg args[] = {{"--dir", &dir, NULL, false}, {NULL, &path, NULL, true}};
    if ((rc = cli_args(env, CMD, argc, argv, help, args, CLI_NARGS(args))) != CLI_OK)
        return rc == CLI_HELPED ? CLI_OK : rc;
    if (dir == NULL || dir[0] == '\0' || path == NULL)
        return cli_usage_error(env, CMD,
                               "give the token's directory with --dir DIR and the BUNDLE");

    if ((rc = cli_read_file(env, CMD, "", path, PT_BUNDLE_MAX, &buf, &len)) != CLI_OK)
        return rc;
    rc = pt_bundle_decode(&b, buf, len);
    if (rc != 0) {
        free(buf);
        fprintf(env->err, CLI_PROG ": " CMD ": ");
        cli_put(env->err, path);
        fprintf(env->err, " is not a provisioning bundle (cohort-authority certify-token makes "
                          "them)\n");
        return CLI_DATA;
    }

    if ((rc = cli_open(env, CMD, dir, false, &s)) != CLI_OK) {
        free(buf);
        return rc;
    }
    /* Say what is wrong in the owner's terms before the token says it in its own. */
    rc = pt_owner_info(&s.o, &info);
    if (rc != 0) {
        rc = cli_owner_fail(env, CMD, &s.o, rc, "cannot ask the token who it is");
        goto done;
    }
    if (info.provisioned) {
        rc = cli_fail(env, CLI_DATA, CMD, "the token is already provisioned");
        goto done;
    }
    if (!info.has_keys) {
        rc = cli_fail(env, CLI_DATA, CMD, "the token has no keys yet: it was not made by init");
        goto done;
    }
    if (memcmp(info.sign_pk, b.token_pk, PT_KEY_LEN) != 0) {
        char mine[2 * ID_BYTES + 1], theirs[2 * ID_BYTES + 1];
        cli_hex(mine, info.sign_pk, ID_BYTES);
        cli_hex(theirs, b.token_pk, ID_BYTES);
        rc = cli_fail(env, CLI_DATA, CMD,
                      "the bundle was made for another token (key %s; this token's is %s)", theirs,
                      mine);
        goto done;
    }
    rc = pt_owner_provision_finish(&s.o, buf, len);
    if (rc != 0) {
        rc = refused(env, &s, &b, rc);
        goto done;
    }

    pt_timestamp_format(from, b.not_before);
    pt_timestamp_format(to, b.not_after);
    fprintf(env->out, "provisioned the token in %s\n  token:         ", dir);
    put_id(env->out, b.token_pk);
    fprintf(env->out, " (");
    cli_put(env->out, b.subject);
    fprintf(env->out, ")\n  certified by:  ");
    put_id(env->out, b.issuer_pk);
    fprintf(env->out, "\n  valid:         %s to %s\n  trusts:        ", from, to);
    for (size_t i = 0; i < b.n_authorities; i++) {
        fprintf(env->out, "%s", i > 0 ? ", " : "");
        put_id(env->out, b.authorities[i]);
    }
    fprintf(env->out, "\n                 (it obeys researchers certified by these authorities)\n");
    rc = CLI_OK;

done:
    cli_close(env, &s);
    free(buf);
    return rc;
}
