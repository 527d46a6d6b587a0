/*
 * cohort-participant: the owner's command line, over a software token.
 *
 * A thin shell: the commands (cli.c and cli_*.c) do the work through
 * struct cli_env; this gives them the world: a software token kept in a
 * directory (pt_soft_*), with TK_ARENA_DEFAULT bytes of RAM, the clock,
 * stdout and stderr. Exit statuses are in cli.h.
 */
#include <stdio.h>
#include <time.h>

#include "participant/cli.h"

static int soft_open(void *ctx, const char *dir, bool create, struct pt_link *link, void **handle,
                     char *msg, size_t msg_len)
{
    struct pt_soft *s = NULL;
    int rc;

    (void)ctx;
    if (create)
        rc = pt_soft_create(&s, dir, TK_ARENA_DEFAULT, msg, msg_len);
    else
        rc = pt_soft_open(&s, dir, TK_ARENA_DEFAULT, msg, msg_len);
    if (rc != 0)
        return rc;
    *link = pt_soft_link(s);
    *handle = s;
    return 0;
}

static void soft_close(void *ctx, void *handle)
{
    (void)ctx;
    pt_soft_close(handle);
}

int main(int argc, char **argv)
{
    struct cli_env env = {stdout, stderr, (int64_t)time(NULL), soft_open, soft_close, NULL};
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
