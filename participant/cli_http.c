/*
 * cohort-participant http: the local HTTP API for apps (pt_http.h).
 *
 * Opens the token of --dir and its document store (--docs, by default
 * DIR/docs), keeps the shares' packages in DIR/outbox, serves on the
 * loopback address of --listen (127.0.0.1:8088 by default; any other
 * address is refused before the token is opened) until SIGINT or SIGTERM,
 * then lets the requests in hand finish and closes the token.
 *
 * When it listens it prints one line on stdout, "listening on
 * http://127.0.0.1:PORT" (with the port it got, if --listen asked for
 * port 0), so that a script can wait for it. Each request is logged on
 * stderr: method, route pattern, status and duration, never a credential,
 * a document's content or its metadata.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "participant/cli.h"
#include "participant/pt_http.h"
#include "shell/shell.h"

#define CMD "http"
#define HTTP_PATH_MAX 4096u

static void help(FILE *f)
{
    cli_usage(f, CMD);
    fprintf(f, "\nServes the owner's documents to apps on a loopback address, until SIGINT or\n"
               "SIGTERM. Every request but GET /v1/identity and POST /v1/inbox needs\n"
               "\"Authorization: Bearer <credential>\" (make one with `" CLI_PROG " app add`).\n\n"
               "  --dir DIR          the token's directory\n"
               "  --docs PATH        the ciphertext store (default DIR/docs)\n"
               "  --listen ADDR      127.0.0.1:PORT, [::1]:PORT or localhost:PORT "
               "(default " PT_HTTP_LISTEN_DEFAULT ";\n"
               "                     port 0 picks a free one)\n");
}

static int64_t clock_now(void *ctx)
{
    (void)ctx;
    return (int64_t)time(NULL);
}

static int serve(const struct cli_env *env, struct pt_http_config *cfg)
{
    char err[CLI_ERR_MAX];
    sigset_t sigs, old;
    struct pt_http *h = NULL;
    int rc, sig = 0;

    /* nng's threads and the workers inherit the blocked signals: this thread takes them. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, &old);
    rc = pt_http_start(&h, cfg, err, sizeof err);
    if (rc != 0) {
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        return cli_fail(env, rc == PT_ERR_INPUT ? CLI_USAGE : CLI_TOKEN, CMD, "%s", err);
    }
    fprintf(env->out, "listening on http://%s:%d\n", cfg->listen[0] == '[' ? "[::1]" : "127.0.0.1",
            pt_http_port(h));
    fflush(env->out);
    sh_log("serving the API on port %d", pt_http_port(h));
    while (sig <= 0) {
        sig = sigwaitinfo(&sigs, NULL);
        if (sig < 0 && errno != EINTR)
            break;
    }
    sh_log("%s: stopping", sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "error");
    pt_http_stop(h);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return CLI_OK;
}

int cli_http(int argc, char **argv, const struct cli_env *env)
{
    const char *dir = NULL, *docs = NULL, *listen = PT_HTTP_LISTEN_DEFAULT;
    char url[128], docs_path[HTTP_PATH_MAX + 16], outbox[HTTP_PATH_MAX + 16];
    struct cli_session s;
    struct pt_docstore *ds = NULL;
    struct pt_http_config cfg;
    int rc = CLI_OK, m;

    const struct cli_arg args[] = {{"--dir", &dir, NULL, false},
                                   {"--docs", &docs, NULL, false},
                                   {"--listen", &listen, NULL, false}};
    if ((rc = cli_args(env, CMD, argc, argv, help, args, CLI_NARGS(args))) != CLI_OK)
        return rc == CLI_HELPED ? CLI_OK : rc;
    if (dir == NULL)
        return cli_usage_error(env, CMD, "give the token's directory with --dir DIR");
    if (strlen(dir) == 0 || strlen(dir) > HTTP_PATH_MAX ||
        (docs != NULL && (strlen(docs) == 0 || strlen(docs) > HTTP_PATH_MAX)))
        return cli_usage_error(env, CMD, "a path is 1 to %u bytes", HTTP_PATH_MAX);
    if (pt_http_listen_url(listen, url, sizeof url) != 0)
        return cli_usage_error(env, CMD,
                               "--listen: a loopback address and port (127.0.0.1:PORT, "
                               "[::1]:PORT or localhost:PORT), not '%.60s'",
                               listen);
    if (docs == NULL) {
        snprintf(docs_path, sizeof docs_path, "%s/docs", dir);
        docs = docs_path;
    }
    snprintf(outbox, sizeof outbox, "%s/outbox", dir);

    if ((rc = cli_open(env, CMD, dir, false, &s)) != CLI_OK)
        return rc;
    if ((m = pt_docstore_open(&ds, docs)) != 0) {
        rc = cli_fail(env, CLI_TOKEN, CMD, "cannot open the document store: %s", pt_strerror(m));
        cli_close(env, &s);
        return rc;
    }
    sh_log_init(CLI_PROG, false);
    memset(&cfg, 0, sizeof cfg);
    cfg.listen = listen;
    cfg.link = s.o.link;
    cfg.ds = ds;
    cfg.outbox = outbox;
    cfg.clock = clock_now;
    rc = serve(env, &cfg);
    pt_docstore_close(ds);
    cli_close(env, &s);
    return rc;
}
