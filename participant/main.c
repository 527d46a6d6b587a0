/*
 * cohort-participant: the owner's command line.
 *
 * A thin shell: the commands (cli.c and cli_*.c) do the work through
 * struct cli_env; this gives them the world: the token --token names
 * (pt_token.h: a software token, a token on USB or an emulator; by default
 * the software token kept in --dir), the clock, stdout and stderr. Exit
 * statuses are in cli.h.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "participant/cli.h"
#include "participant/pt_token.h"

/* The token a command has open (one at a time), for its link's errors. */
struct world {
    struct pt_token *open;
};

static int token_open(void *ctx, const char *token, const char *dir, bool create,
                      struct pt_link *link, void **handle, char *msg, size_t msg_len)
{
    struct world *w = ctx;
    struct pt_token_spec spec;
    struct pt_token *t = NULL;
    int rc;

    if (token == NULL) {
        spec.kind = PT_TOKEN_SOFT;
        if (strlen(dir) >= sizeof spec.path) {
            snprintf(msg, msg_len, "the directory's path is too long");
            return PT_ERR_INPUT;
        }
        memcpy(spec.path, dir, strlen(dir) + 1);
    } else if ((rc = pt_token_spec_parse(token, &spec, msg, msg_len)) != PT_OK) {
        return rc;
    }
    if ((rc = pt_token_open(&t, &spec, create && spec.kind == PT_TOKEN_SOFT, msg, msg_len)) != 0)
        return rc;
    /* A token elsewhere keeps the owner's files (the certificate request,
     * the documents) in dir, which init makes once the token is there. */
    if (create && token != NULL && mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(msg, msg_len, "%s: %s", dir, strerror(errno));
        pt_token_close(t);
        return PT_ERR_IO;
    }
    *link = pt_token_link(t);
    *handle = t;
    w->open = t;
    return 0;
}

static void token_close(void *ctx, void *handle)
{
    struct world *w = ctx;
    if (w->open == handle)
        w->open = NULL;
    pt_token_close(handle);
}

static const char *link_error(void *ctx)
{
    struct world *w = ctx;
    return w->open != NULL ? pt_token_link_error(w->open) : NULL;
}

int main(int argc, char **argv)
{
    struct world w = {NULL};
    struct cli_env env = {stdout, stderr, (int64_t)time(NULL), token_open, token_close,
                          &w,     NULL,   link_error};
    int rc;

    if (tk_library_init() != 0) {
        fprintf(stderr, CLI_PROG ": libsodium failed to initialise\n");
        return CLI_TOKEN;
    }
    rc = cli_main(argc, argv, &env);
    if (fflush(stdout) != 0 && rc == CLI_OK) {
        perror(CLI_PROG ": stdout");
        rc = CLI_TOKEN;
    }
    return rc;
}
