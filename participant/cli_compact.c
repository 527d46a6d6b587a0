/*
 * cohort-participant compact: rewrite the token's log with only its live
 * records (the latest policy, the rows that were not deleted, the audit
 * log), and say how much smaller it got.
 */
#include "participant/cli.h"

#define CMD "compact"

int cli_compact(int argc, char **argv, const struct cli_env *env)
{
    const char *dir = NULL;
    struct cli_session s;
    struct pt_changed ch;
    int rc;

    if ((rc = cli_dir_only(env, CMD, argc, argv,
                           "Rewrites the log of the token in DIR with only its live records.",
                           &dir)) != CLI_OK ||
        dir == NULL)
        return rc;
    if ((rc = cli_open(env, CMD, dir, false, &s)) != CLI_OK)
        return rc;
    rc = pt_owner_compact(&s.o, &ch);
    cli_close(env, &s);
    if (rc != 0)
        return cli_owner_fail(env, CMD, &s.o, rc, "cannot compact the log");
    fprintf(env->out, "compacted the token's log: %llu -> %llu bytes\n",
            (unsigned long long)ch.log_bytes_before, (unsigned long long)ch.log_bytes_after);
    return CLI_OK;
}
