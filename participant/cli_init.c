/*
 * cohort-participant init: create a software token in a directory.
 *
 * The token makes its own keys inside (pt_soft_create, then
 * ProvisionBegin): its storage key, its device signing key and its box
 * key never leave it. What comes out is public: the device's public key
 * and a certificate request, signed by the token to prove it holds the
 * key, which the command writes to DIR/token.csr for an authority to
 * certify later. The directory must not exist, or be empty.
 *
 * With --token (a token on USB, an emulator), the token exists already,
 * blank, as its maker made it: init has it make its keys (a token that has
 * them refuses), and DIR, made if need be, only receives the request.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "participant/cli.h"
#include "shell/shell.h"

#define CMD "init"

static void help(FILE *f)
{
    cli_usage(f, CMD);
    fprintf(f,
            "\nCreates a new token in DIR (made with mode 0700; it must not exist, or be "
            "empty).\nThe token makes its keys inside; its certificate request goes to "
            "DIR/" CLI_CSR_FILE ",\nfor an authority to sign. With --token usb or emulator:PATH, "
            "the token is there\nalready, blank: it makes its keys, and DIR (made if need be) "
            "gets the request.\n\n"
            "  --subject NAME   the name the request gives the token (default '" CLI_SUBJECT_DEFAULT
            "';\n                   at most 63 bytes, no control characters)\n");
}

static bool subject_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > PT_SUBJECT_MAX || !pt_utf8_valid((const uint8_t *)s, n, NULL))
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

int cli_init(int argc, char **argv, const struct cli_env *env)
{
    const char *dir = NULL, *subject = CLI_SUBJECT_DEFAULT;
    struct cli_session s;
    uint8_t *csr = NULL, pk[PT_KEY_LEN];
    size_t csr_len = 0;
    char path[4096], hex[2 * PT_KEY_LEN + 1];
    int rc, m;

    const struct cli_arg args[] = {{"--dir", &dir, NULL, false},
                                   {"--subject", &subject, NULL, false}};
    if ((rc = cli_args(env, CMD, argc, argv, help, args, CLI_NARGS(args))) != CLI_OK)
        return rc == CLI_HELPED ? CLI_OK : rc;
    if (dir == NULL || dir[0] == '\0')
        return cli_usage_error(env, CMD, "give the token's directory with --dir DIR");
    if (!subject_ok(subject))
        return cli_usage_error(env, CMD,
                               "--subject: 1 to %u bytes of UTF-8 text without control characters",
                               PT_SUBJECT_MAX);
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, CLI_CSR_FILE) >= sizeof path)
        return cli_usage_error(env, CMD, "--dir: the path is too long");
    /* A token elsewhere may be given a directory that holds a request already: keep it. */
    if (env->token != NULL && access(path, F_OK) == 0)
        return cli_fail(env, CLI_DATA, CMD, "%s exists already: give another --dir", path);
    if ((rc = cli_open(env, CMD, dir, true, &s)) != CLI_OK)
        return rc;
    rc = pt_owner_provision_begin(&s.o, subject, &csr, &csr_len, pk);
    cli_close(env, &s);
    if (rc != 0)
        return cli_owner_fail(env, CMD, &s.o, rc, "the token could not make its keys");
    /* Never over a request that is there (an exclusive write): errno says why not. */
    m = sh_write_file(path, csr, csr_len, 0644, true, NULL, 0) != 0 ? errno : 0;
    free(csr);
    if (m != 0)
        return cli_fail(env, CLI_TOKEN, CMD, "the token is made, but %s cannot be written: %s",
                        path, strerror(m));
    cli_hex(hex, pk, sizeof pk);
    if (env->token != NULL)
        fprintf(env->out, "the token %s has its keys; its files go in %s\n", env->token, dir);
    else
        fprintf(env->out, "created a token in %s\n", dir);
    fprintf(env->out, "  public key:           %s\n", hex);
    fprintf(env->out, "  subject:              ");
    cli_put(env->out, subject);
    fprintf(env->out, "\n  certificate request:  %s (for an authority to sign)\n", path);
    return CLI_OK;
}
