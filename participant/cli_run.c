/*
 * cohort-participant run: the agent daemon.
 *
 * One agent per token directory, all in this process (net_agent.c), each
 * connected to the querier service at --connect on its own. The command
 * checks its whole command line before it opens a token: the address and
 * its TLS options, every directory (it must exist), the backoff. Then it
 * opens every token (any that does not open stops the command before
 * anything starts), starts the agents and waits for SIGINT or SIGTERM.
 * On either, every agent finishes the request in hand (or gives up after
 * a few seconds), closes its token, and the command prints a summary of
 * what each agent did and exits 0. If every agent stops for an error
 * first (a tampered or unprovisioned token), it exits CLI_TOKEN.
 *
 * Logs go to stderr, one line per event (sh_log): start, admission, each
 * plan collected or refused, each task done, reconnections; --quiet keeps
 * only errors. They name tokens and queries by the first 8 bytes of their
 * ids and never carry a key, a plaintext or a ciphertext.
 *
 * With --token (cli.h), the one agent uses that token (on USB, an
 * emulator's): when it goes away, the agent logs it, pauses, and resumes
 * once the same token is back.
 *
 * This command reaches the real network and the real tokens, not struct
 * cli_env's open: its tests run net_agent.c's pool directly
 * against a service in the same process, and this command as a process.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "participant/cli.h"
#include "participant/net_agent.h"
#include "shell/shell.h"

#define CMD "run"
#define RUN_PATH_MAX 4096u            /* bytes of a directory's path */
#define RUN_BACKOFF_MAX_S 3600u       /* --max-backoff, at most */
#define RUN_POLL_MS 250               /* how often the command looks at its agents */
#define RUN_DIRS_FILE_MAX (64u << 20) /* bytes of a --dirs-from file */

static void help(FILE *f)
{
    cli_usage(f, CMD);
    fprintf(f,
            "\nTakes part in studies: runs an agent for the token in each DIR, connected to\n"
            "the querier service at URL, until SIGINT or SIGTERM.\n\n"
            "  --connect URL        the service: tls+tcp://HOST:PORT, tcp://HOST:PORT or\n"
            "                       ipc:///PATH (tcp and ipc are for a service on this machine)\n"
            "  --ca FILE            the PEM certificate(s) of the service's CA (tls+tcp only)\n"
            "  --server-name NAME   the name the service's certificate must carry (default:\n"
            "                       the host of URL)\n"
            "  --dir DIR            a token directory; give it once per token\n"
            "  --dirs-from FILE     token directories, one per line ('#' starts a comment)\n"
            "  --max-backoff SECS   the longest wait between reconnection attempts (1 to %u,\n"
            "                       default %u)\n"
            "  --pace MS            wait MS milliseconds after each plan collected or task\n"
            "                       done (spreads the load of many agents; default 0)\n"
            "  --quiet              log only errors\n",
            RUN_BACKOFF_MAX_S, NA_BACKOFF_DEFAULT_MS / 1000);
}

struct dir_list {
    const char **dirs;
    char **owned; /* the lines read from --dirs-from files */
    size_t n, n_owned, cap, cap_owned;
};

static int push(struct dir_list *l, const char *dir, bool owned)
{
    if (l->n >= NA_AGENTS_MAX)
        return -1;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        const char **d = realloc(l->dirs, cap * sizeof *d);
        if (d == NULL)
            return -1;
        l->dirs = d;
        l->cap = cap;
    }
    if (owned) {
        if (l->n_owned == l->cap_owned) {
            size_t cap = l->cap_owned ? 2 * l->cap_owned : 16;
            char **o = realloc(l->owned, cap * sizeof *o);
            if (o == NULL)
                return -1;
            l->owned = o;
            l->cap_owned = cap;
        }
        if ((l->owned[l->n_owned] = strdup(dir)) == NULL)
            return -1;
        dir = l->owned[l->n_owned++];
    }
    l->dirs[l->n++] = dir;
    return 0;
}

static void dir_list_free(struct dir_list *l)
{
    for (size_t i = 0; i < l->n_owned; i++)
        free(l->owned[i]);
    free(l->owned);
    free(l->dirs);
}

/* Read the directories of a --dirs-from file. CLI_OK or a reported CLI_USAGE. */
static int read_dirs(const struct cli_env *env, const char *path, struct dir_list *l)
{
    char line[RUN_PATH_MAX + 2];
    FILE *f = fopen(path, "r");
    size_t lineno = 0, bytes = 0;
    int rc = CLI_OK;

    if (f == NULL)
        return cli_usage_error(env, CMD, "--dirs-from %.200s: %s", path, strerror(errno));
    while (fgets(line, sizeof line, f) != NULL) {
        size_t n = strlen(line);
        lineno++;
        bytes += n;
        if (bytes > RUN_DIRS_FILE_MAX) {
            rc = cli_usage_error(env, CMD, "--dirs-from %.200s: larger than %u bytes", path,
                                 RUN_DIRS_FILE_MAX);
            break;
        }
        if (n > 0 && line[n - 1] != '\n' && !feof(f)) {
            rc = cli_usage_error(env, CMD, "--dirs-from %.200s: line %zu is longer than %u bytes",
                                 path, lineno, RUN_PATH_MAX);
            break;
        }
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' ||
                         line[n - 1] == '\t'))
            line[--n] = '\0';
        if (n == 0 || line[0] == '#')
            continue;
        if (push(l, line, true) != 0) {
            rc = cli_usage_error(env, CMD, "--dirs-from %.200s: too many directories (at most %u)",
                                 path, NA_AGENTS_MAX);
            break;
        }
    }
    if (rc == CLI_OK && ferror(f))
        rc = cli_usage_error(env, CMD, "--dirs-from %.200s: cannot be read", path);
    fclose(f);
    return rc;
}

/* Print what each agent did, and a total. */
static void summary(const struct cli_env *env, na_pool *pool, size_t *failed)
{
    uint64_t collected = 0, refused = 0, tasks = 0, reconnects = 0, pauses = 0;
    struct na_stats st;
    char id[2 * 8 + 1];
    size_t n = na_count(pool);

    *failed = 0;
    fprintf(env->out, "%-16s  %-7s  %9s  %7s  %5s  %10s  %6s  %s\n", "token", "state", "collected",
            "refused", "tasks", "reconnects", "pauses", "directory");
    for (size_t i = 0; i < n; i++) {
        na_stats(pool, i, &st);
        cli_hex(id, st.token_id, 8);
        fprintf(env->out, "%-16s  %-7s  %9llu  %7llu  %5llu  %10llu  %6llu  ", id,
                st.state == NA_FAILED ? "failed" : "stopped", (unsigned long long)st.collected,
                (unsigned long long)st.refused, (unsigned long long)st.tasks,
                (unsigned long long)st.reconnects, (unsigned long long)st.token_pauses);
        cli_put(env->out, na_dir(pool, i));
        fputc('\n', env->out);
        if (st.state == NA_FAILED) {
            fprintf(env->out, "%-16s  error: %s\n", "", st.error);
            (*failed)++;
        }
        collected += st.collected;
        refused += st.refused;
        tasks += st.tasks;
        reconnects += st.reconnects;
        pauses += st.token_pauses;
    }
    fprintf(env->out, "%-16s  %-7s  %9llu  %7llu  %5llu  %10llu  %6llu  %zu agent%s, %zu failed\n",
            "total", "", (unsigned long long)collected, (unsigned long long)refused,
            (unsigned long long)tasks, (unsigned long long)reconnects, (unsigned long long)pauses,
            n, n == 1 ? "" : "s", *failed);
}

/* Run the pool until a signal or until no agent is left. */
static int serve(const struct cli_env *env, const struct na_config *cfg, const struct dir_list *l)
{
    char err[CLI_ERR_MAX];
    sigset_t sigs, old;
    struct timespec poll = {0, RUN_POLL_MS * 1000000L};
    na_pool *pool = NULL;
    size_t failed = 0;
    int rc, sig = 0;

    /* The agents' threads inherit the blocked signals: this thread alone takes them. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, &old);
    rc = na_start(&pool, cfg, l->dirs, l->n, err, sizeof err);
    if (rc != NA_OK) {
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        return cli_fail(env, rc == NA_ERR_ARG ? CLI_USAGE : CLI_TOKEN, CMD, "%s", err);
    }
    sh_log("%zu agent%s for the service at %s", l->n, l->n == 1 ? "" : "s", cfg->url);
    while (sig <= 0 && na_running(pool) > 0) {
        sig = sigtimedwait(&sigs, NULL, &poll);
        if (sig < 0 && errno != EAGAIN && errno != EINTR)
            break;
    }
    if (sig > 0)
        sh_log("%s: stopping the agents", sig == SIGINT ? "SIGINT" : "SIGTERM");
    na_stop(pool);
    summary(env, pool, &failed);
    rc = failed == na_count(pool) ? CLI_TOKEN : CLI_OK;
    if (rc != CLI_OK)
        cli_fail(env, rc, CMD, "every agent stopped for an error");
    na_free(pool);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

int cli_run(int argc, char **argv, const struct cli_env *env)
{
    struct na_config cfg;
    struct dir_list l;
    const char *value = NULL;
    char err[CLI_ERR_MAX];
    uint64_t backoff = NA_BACKOFF_DEFAULT_MS / 1000;
    uint64_t pace = 0;
    struct stat sb;
    int rc = CLI_OK, m;

    memset(&cfg, 0, sizeof cfg);
    memset(&l, 0, sizeof l);
    for (int i = 1; i < argc && rc == CLI_OK; i++) {
        if (cli_is_help(argv[i])) {
            help(env->out);
            dir_list_free(&l);
            return CLI_OK;
        }
        if (strcmp(argv[i], "--quiet") == 0) {
            cfg.quiet = true;
        } else if ((m = cli_opt(env, CMD, argc, argv, &i, "--connect", &cfg.url)) != 0 ||
                   (m = cli_opt(env, CMD, argc, argv, &i, "--ca", &cfg.ca)) != 0 ||
                   (m = cli_opt(env, CMD, argc, argv, &i, "--server-name", &cfg.server_name)) !=
                       0) {
            if (m < 0)
                rc = CLI_USAGE;
        } else if ((m = cli_opt(env, CMD, argc, argv, &i, "--dir", &value)) != 0) {
            if (m < 0)
                rc = CLI_USAGE;
            else if (value[0] == '\0' || strlen(value) > RUN_PATH_MAX)
                rc = cli_usage_error(env, CMD, "--dir: a path of 1 to %u bytes", RUN_PATH_MAX);
            else if (push(&l, value, false) != 0)
                rc = cli_usage_error(env, CMD, "too many directories (at most %u)", NA_AGENTS_MAX);
        } else if ((m = cli_opt(env, CMD, argc, argv, &i, "--dirs-from", &value)) != 0) {
            rc = m < 0 ? CLI_USAGE : read_dirs(env, value, &l);
        } else if ((m = cli_opt(env, CMD, argc, argv, &i, "--pace", &value)) != 0) {
            if (m < 0 || cli_u64(env, CMD, "--pace", value, 0, 600000, &pace) != 0)
                rc = CLI_USAGE;
            else
                cfg.pace_ms = (uint32_t)pace;
        } else if ((m = cli_opt(env, CMD, argc, argv, &i, "--max-backoff", &value)) != 0) {
            if (m < 0 ||
                cli_u64(env, CMD, "--max-backoff", value, 1, RUN_BACKOFF_MAX_S, &backoff) != 0)
                rc = CLI_USAGE;
        } else {
            rc = cli_usage_error(env, CMD, "unexpected argument '%.60s'", argv[i]);
        }
    }
    if (rc == CLI_OK && cfg.url == NULL)
        rc = cli_usage_error(env, CMD, "give the service's address with --connect URL");
    if (rc == CLI_OK && l.n == 0)
        rc = cli_usage_error(env, CMD,
                             "give the token directories with --dir DIR or --dirs-from FILE");
    if (rc == CLI_OK && env->token != NULL && l.n != 1)
        rc = cli_usage_error(env, CMD, "--token names one token: give one --dir with it");
    for (size_t i = 0; rc == CLI_OK && i < l.n; i++) {
        if (stat(l.dirs[i], &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            rc = cli_fail_text(env, CLI_USAGE, CMD, "", l.dirs[i],
                               stat(l.dirs[i], &sb) != 0 ? "no such directory" : "not a directory");
            cli_usage(env->err, CMD);
        }
    }
    if (rc == CLI_OK) {
        cfg.token = env->token;
        cfg.max_backoff_ms = (uint32_t)(backoff * 1000);
        if (na_config_check(&cfg, err, sizeof err) != NA_OK)
            rc = cli_usage_error(env, CMD, "%s", err);
    }
    if (rc == CLI_OK) {
        sh_log_init(CLI_PROG, false);
        rc = serve(env, &cfg, &l);
    }
    dir_list_free(&l);
    return rc;
}
