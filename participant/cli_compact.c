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
    int rc, m;

    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            cli_usage(env->out, CMD);
            fprintf(env->out, "\nRewrites the log of the token in DIR with only its live "
                              "records.\n");
            return CLI_OK;
        }
        if ((m = cli_opt(env, CMD, argc, argv, &i, "--dir", &dir)) != 0) {
            if (m < 0)
                return CLI_USAGE;
            continue;
        }
        return cli_usage_error(env, CMD, "unexpected argument '%.60s'", argv[i]);
    }
    if (dir == NULL)
        return cli_usage_error(env, CMD, "give the token's directory with --dir DIR");
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
