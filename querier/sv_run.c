/*
 * sv_run.c: the researcher's commands that talk to a querier service.
 *
 *   cohort-querier run --connect URL --cert FILE "SQL"
 *       compile, sign, submit, follow the study with a progress bar, fetch
 *       the sealed result, check the finalizing token's signature against
 *       the token authorities, open it with the researcher's key, print it.
 *   cohort-querier status --connect URL [QUERY_ID]
 *       the queries the service holds, and how far each has got.
 *
 * The service is not trusted with anything: it sees the signed plan and
 * gives back a result sealed to the researcher and signed by a token, which
 * qr_result_open checks before anything is printed. A connection that
 * drops is dialed again by nng; a request that gets no answer is sent
 * again (submitting the same plan twice is the same query).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "proto/cohort.pb-c.h"
#include "querier/querier.h"
#include "querier/rs.h"
#include "querier/sv.h"
#include "shell/shell.h"

#define RUN_AUTH_MAX 8u
#define RUN_REPLY_MAX (QR_REQUEST_MAX + 4096u)
#define RUN_TIMEOUT_MS 15000
#define RUN_POLL_MS 500

enum out_format { OUT_TABLE, OUT_CSV, OUT_JSON };

struct client {
    nng_socket sock;
    bool open;
};

struct net_opts {
    const char *connect;
    struct sh_tls tls;
};

/* ------------------------------------------------------------- network */

static int client_open(struct client *c, const struct net_opts *o, char *err, size_t err_len)
{
    nng_dialer d;
    int rv;

    memset(c, 0, sizeof *c);
    if ((rv = nng_req0_open(&c->sock)) != 0) {
        snprintf(err, err_len, "%s", nng_strerror(rv));
        return -1;
    }
    c->open = true;
    nng_socket_set_size(c->sock, NNG_OPT_RECVMAXSZ, RUN_REPLY_MAX);
    nng_socket_set_ms(c->sock, NNG_OPT_RECVTIMEO, RUN_TIMEOUT_MS);
    nng_socket_set_ms(c->sock, NNG_OPT_SENDTIMEO, RUN_TIMEOUT_MS);
    nng_socket_set_ms(c->sock, NNG_OPT_REQ_RESENDTIME, RUN_TIMEOUT_MS);
    nng_socket_set_ms(c->sock, NNG_OPT_RECONNMINT, 100);
    nng_socket_set_ms(c->sock, NNG_OPT_RECONNMAXT, 2000);
    if ((rv = nng_dialer_create(&d, c->sock, o->connect)) != 0) {
        snprintf(err, err_len, "%s: %s", o->connect, nng_strerror(rv));
        return -1;
    }
    if (sh_tls_dialer(&d, o->connect, &o->tls, err, err_len) != 0)
        return -1;
    if ((rv = nng_dialer_start(d, NNG_FLAG_NONBLOCK)) != 0) {
        snprintf(err, err_len, "cannot reach %s: %s", o->connect, nng_strerror(rv));
        return -1;
    }
    return 0;
}

static void client_close(struct client *c)
{
    if (c->open)
        nng_close(c->sock);
    c->open = false;
}

/*
 * One request and its decoded reply. Tries for up to wait_ms (the service
 * may be restarting); -1 with a sentence in err when it never answers.
 */
static int call(struct client *c, const Cohort__ServiceRequest *req, Cohort__ServiceReply **rep,
                int64_t wait_ms, char *err, size_t err_len)
{
    size_t len = cohort__service_request__get_packed_size(req);
    uint8_t *buf = malloc(len ? len : 1);
    int64_t until = sh_mono_ms() + wait_ms;
    int rv = 0;

    *rep = NULL;
    if (buf == NULL) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    cohort__service_request__pack(req, buf);
    do {
        void *in = NULL;
        size_t in_len = 0;

        if ((rv = nng_send(c->sock, buf, len, 0)) == 0 &&
            (rv = nng_recv(c->sock, &in, &in_len, NNG_FLAG_ALLOC)) == 0) {
            *rep = cohort__service_reply__unpack(NULL, in_len, in);
            nng_free(in, in_len);
            free(buf);
            if (*rep == NULL) {
                snprintf(err, err_len, "the service sent a reply that does not decode");
                return -1;
            }
            return 0;
        }
        if (rv != NNG_ETIMEDOUT && rv != NNG_ECONNREFUSED && rv != NNG_ECONNSHUT &&
            rv != NNG_ECLOSED && rv != NNG_ESTATE) {
            struct timespec ts = {0, 200 * 1000000L};
            nanosleep(&ts, NULL);
        }
    } while (sh_mono_ms() < until);
    free(buf);
    snprintf(err, err_len, "no answer from the service (%s)", nng_strerror(rv));
    return -1;
}

/* ------------------------------------------------------------- printing */

static const char *state_text(Cohort__QueryState s)
{
    switch (s) {
    case COHORT__QUERY_STATE__QS_COLLECTING:
        return "collecting";
    case COHORT__QUERY_STATE__QS_AGGREGATING:
        return "aggregating";
    case COHORT__QUERY_STATE__QS_DONE:
        return "done";
    default:
        return "failed";
    }
}

static void progress(FILE *f, const Cohort__QueryStatus *q, bool tty)
{
    char bar[33];
    double frac = 0;
    size_t fill;

    if (q->state == COHORT__QUERY_STATE__QS_COLLECTING) {
        frac = q->target ? (double)q->contributions / (double)q->target : 0;
    } else if (q->state == COHORT__QUERY_STATE__QS_AGGREGATING) {
        frac = q->partitions ? (double)q->tasks_done / (double)q->partitions : 0;
    } else {
        frac = 1;
    }
    if (frac > 1)
        frac = 1;
    fill = (size_t)(frac * 30 + 0.5);
    memset(bar, '#', fill);
    memset(bar + fill, '.', 30 - fill);
    bar[30] = '\0';
    if (q->state == COHORT__QUERY_STATE__QS_COLLECTING && q->target)
        fprintf(f, "%scollecting   [%s] %" PRIu64 "/%" PRIu64 " participants%s", tty ? "\r" : "",
                bar, q->contributions, q->target, tty ? "   " : "\n");
    else if (q->state == COHORT__QUERY_STATE__QS_COLLECTING)
        fprintf(f, "%scollecting   %" PRIu64 " participants so far (until the deadline)%s",
                tty ? "\r" : "", q->contributions, tty ? "   " : "\n");
    else if (q->state == COHORT__QUERY_STATE__QS_AGGREGATING)
        fprintf(f, "%saggregating  [%s] level %u, %u levels done, %" PRIu64 "/%" PRIu64 " tasks%s",
                tty ? "\r" : "", bar, q->level, q->levels_done, q->tasks_done, q->partitions,
                tty ? "   " : "\n");
    else
        fprintf(f, "%s%-12s %" PRIu64 " participants, %u levels%s", tty ? "\r" : "",
                state_text(q->state), q->contributions, q->levels_done, "\n");
    fflush(f);
}

/* --------------------------------------------------------------- options */

static int need(int i, int argc, const char *opt, const char *cmd)
{
    if (i + 1 < argc)
        return 0;
    fprintf(stderr, "cohort-querier %s: %s needs a value\n", cmd, opt);
    return -1;
}

/* Options both commands take; 1 if argv[*i] was one, -1 on error. */
static int net_option(int argc, char **argv, int *i, struct net_opts *o, const char *cmd)
{
    const char *a = argv[*i];

    if (strcmp(a, "--connect") != 0 && strcmp(a, "--ca") != 0 && strcmp(a, "--server-name") != 0)
        return 0;
    if (need(*i, argc, a, cmd))
        return -1;
    (*i)++;
    if (strcmp(a, "--connect") == 0)
        o->connect = argv[*i];
    else if (strcmp(a, "--ca") == 0)
        o->tls.ca = argv[*i];
    else
        o->tls.server_name = argv[*i];
    return 1;
}

static int check_net(const struct net_opts *o, const char *cmd)
{
    bool tls;

    if (o->connect == NULL) {
        fprintf(stderr, "cohort-querier %s: --connect URL is required\n", cmd);
        return -1;
    }
    if (!sh_url_ok(o->connect, &tls)) {
        fprintf(stderr,
                "cohort-querier %s: %s: use tls+tcp://HOST:PORT, tcp://HOST:PORT or ipc:///PATH\n",
                cmd, o->connect);
        return -1;
    }
    if (tls && o->tls.ca == NULL) {
        fprintf(stderr, "cohort-querier %s: tls+tcp:// needs --ca (the service's CA certificate)\n",
                cmd);
        return -1;
    }
    return 0;
}

static void run_usage(FILE *f)
{
    fprintf(
        f, "usage: cohort-querier run --connect URL --cert FILE [--key FILE] [--ca PEM]\n"
           "         [--server-name NAME] [--authority CERT]... [--study NAME]\n"
           "         [--epsilon E] [--contribution-bound B] [--max-rows N]\n"
           "         [--protocol NAME|auto]\n"
           "         [--csv | --json] [--no-progress] [--wait SECONDS] \"SQL\"\n"
           "\n"
           "  --cert FILE       your certificate chain (from cohort-authority certify-researcher)\n"
           "  --key FILE        your key (default: the --cert path with .cert replaced by .key)\n"
           "  --authority CERT  an authority whose tokens may sign results (default: the\n"
           "                    root of your own chain)\n"
           "  --wait SECONDS    give up waiting after this long (default: until the plan\n"
           "                    expires)\n"
           "  --protocol NAME   s_agg, rnf_noise, c_noise, ed_hist or shuffle, unless the SQL's\n"
           "                    WITH names one; auto (the default): the cost model's choice\n"
           "                    among protocols that show the service nothing. ed_hist runs\n"
           "                    a histogram study (s_agg) first.\n");
}

/* -------------------------------------------------------------------- run */

#define RUN_REPORTED 1 /* run_one's failure, already told on stderr */

/*
 * Sign a plan, submit it, follow it with a progress bar until it is done
 * (or deadline_ms, or its expiry when deadline_ms < 0), fetch the result
 * and open it into *result. 0, or RUN_REPORTED after saying why.
 */
static int run_one(struct client *cl, const struct net_opts *net, const uint8_t *plan,
                   size_t plan_len, const struct qr_identity *id, uint8_t **chain,
                   const size_t *chain_lens, size_t n_chain, const uint8_t (*auth)[32],
                   size_t n_auth, int64_t deadline_ms, bool show, struct qr_result *result)
{
    Cohort__ServiceRequest req;
    Cohort__Submit submit;
    Cohort__StatusRequest sreq;
    Cohort__FetchResult freq;
    Cohort__ServiceReply *rep = NULL;
    Cohort__SignedPlan *sp = NULL;
    uint8_t *signed_plan = NULL, qid[32];
    size_t signed_len = 0;
    char err[SH_ERR_MAX], qid_hex[65];
    int rc = RUN_REPORTED, r;

    if (qr_plan_sign(&signed_plan, &signed_len, plan, plan_len, id, (const uint8_t *const *)chain,
                     chain_lens, n_chain) != 0) {
        fprintf(stderr, "cohort-querier run: cannot sign the plan\n");
        goto out;
    }
    sp = cohort__signed_plan__unpack(NULL, signed_len, signed_plan);
    if (sp == NULL)
        goto out;
    if (deadline_ms < 0) {
        Cohort__Plan *p = cohort__plan__unpack(NULL, sp->plan.len, sp->plan.data);

        if (p == NULL)
            goto out;
        deadline_ms = (p->expires_at + 5) * 1000;
        cohort__plan__free_unpacked(p, NULL);
    }
    cohort__service_request__init(&req);
    cohort__submit__init(&submit);
    submit.plan = sp;
    req.body_case = COHORT__SERVICE_REQUEST__BODY_SUBMIT;
    req.submit = &submit;
    if (call(cl, &req, &rep, 60000, err, sizeof err) != 0) {
        fprintf(stderr, "cohort-querier run: %s: %s\n", net->connect, err);
        goto out;
    }
    if (rep->status != 0 || rep->n_queries != 1 || rep->queries[0]->query_id.len != 32) {
        fprintf(stderr, "cohort-querier run: the service refused the study: %s\n",
                rep->error && rep->error[0] ? rep->error : qr_strerror(rep->status));
        goto out;
    }
    memcpy(qid, rep->queries[0]->query_id.data, 32);
    sh_hex(qid_hex, qid, 32);
    fprintf(stderr, "submitted query %s\n", qid_hex);
    cohort__service_reply__free_unpacked(rep, NULL);
    rep = NULL;

    /* Follow it. */
    for (;;) {
        struct timespec ts = {0, RUN_POLL_MS * 1000000L};

        cohort__service_request__init(&req);
        cohort__status_request__init(&sreq);
        sreq.query_id.data = qid;
        sreq.query_id.len = 32;
        req.body_case = COHORT__SERVICE_REQUEST__BODY_STATUS;
        req.status = &sreq;
        if (call(cl, &req, &rep, 60000, err, sizeof err) != 0) {
            fprintf(stderr, "%scohort-querier run: %s\n", show ? "\n" : "", err);
            goto out;
        }
        if (rep->status != 0 || rep->n_queries != 1) {
            fprintf(stderr, "%scohort-querier run: %s\n", show ? "\n" : "",
                    rep->error && rep->error[0] ? rep->error : qr_strerror(rep->status));
            goto out;
        }
        if (show)
            progress(stderr, rep->queries[0], isatty(2));
        if (rep->queries[0]->state == COHORT__QUERY_STATE__QS_FAILED) {
            fprintf(stderr, "cohort-querier run: the study failed: %s\n",
                    rep->queries[0]->failure && rep->queries[0]->failure[0]
                        ? rep->queries[0]->failure
                        : "no reason given");
            goto out;
        }
        if (rep->queries[0]->state == COHORT__QUERY_STATE__QS_DONE)
            break;
        cohort__service_reply__free_unpacked(rep, NULL);
        rep = NULL;
        if (sh_now_ms() > deadline_ms) {
            fprintf(stderr,
                    "%scohort-querier run: gave up waiting; the study goes on: "
                    "cohort-querier status --connect %s %s\n",
                    show ? "\n" : "", net->connect, qid_hex);
            goto out;
        }
        nanosleep(&ts, NULL);
    }
    cohort__service_reply__free_unpacked(rep, NULL);
    rep = NULL;

    cohort__service_request__init(&req);
    cohort__fetch_result__init(&freq);
    freq.query_id.data = qid;
    freq.query_id.len = 32;
    req.body_case = COHORT__SERVICE_REQUEST__BODY_FETCH;
    req.fetch = &freq;
    if (call(cl, &req, &rep, 60000, err, sizeof err) != 0) {
        fprintf(stderr, "cohort-querier run: %s\n", err);
        goto out;
    }
    if (rep->status != 0 || rep->result == NULL) {
        fprintf(stderr, "cohort-querier run: no result: %s\n",
                rep->error && rep->error[0] ? rep->error : qr_strerror(rep->status));
        goto out;
    }
    {
        size_t n = cohort__sealed_result__get_packed_size(rep->result);
        uint8_t *sealed = malloc(n ? n : 1);

        if (sealed == NULL)
            goto out;
        cohort__sealed_result__pack(rep->result, sealed);
        r = qr_result_open(result, sealed, n, signed_plan, signed_len, id, auth, n_auth,
                           (int64_t)time(NULL));
        free(sealed);
    }
    if (r != 0) {
        fprintf(stderr, "cohort-querier run: the result does not check out: %s\n", qr_strerror(r));
        goto out;
    }
    rc = 0;
out:
    if (rep)
        cohort__service_reply__free_unpacked(rep, NULL);
    if (sp)
        cohort__signed_plan__free_unpacked(sp, NULL);
    free(signed_plan);
    return rc;
}

int sv_run_main(int argc, char **argv)
{
    struct net_opts net;
    struct qr_compile_opts copts;
    struct qr_sql_error sqlerr;
    struct qr_identity id;
    struct qr_result result;
    struct client cl;
    const char *cert = NULL, *key = NULL, *sql = NULL, *auth_files[RUN_AUTH_MAX];
    char key_buf[4096], err[SH_ERR_MAX];
    uint8_t auth[RUN_AUTH_MAX][32], *plan = NULL;
    uint8_t **chain = NULL;
    size_t *chain_lens = NULL, n_chain = 0, n_auth = 0, plan_len = 0;
    enum out_format fmt = OUT_TABLE;
    bool show = isatty(2), loaded = false;
    int64_t wait_s = -1, deadline_ms;
    int status = SV_EXIT_FAILED, r;

    memset(&net, 0, sizeof net);
    memset(&copts, 0, sizeof copts);
    memset(&cl, 0, sizeof cl);
    memset(&result, 0, sizeof result);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];

        if ((r = net_option(argc, argv, &i, &net, "run")) != 0) {
            if (r < 0)
                return SV_EXIT_USAGE;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            run_usage(stdout);
            return 0;
        } else if (strcmp(a, "--csv") == 0) {
            fmt = OUT_CSV;
        } else if (strcmp(a, "--json") == 0) {
            fmt = OUT_JSON;
        } else if (strcmp(a, "--no-progress") == 0) {
            show = false;
        } else if (strcmp(a, "--progress") == 0) {
            show = true;
        } else if (strcmp(a, "--") == 0 && sql == NULL && i + 1 < argc) {
            sql = argv[++i];
        } else if (a[0] != '-' && sql == NULL) {
            sql = a;
        } else if (strcmp(a, "--cert") == 0 || strcmp(a, "--key") == 0 ||
                   strcmp(a, "--authority") == 0 || strcmp(a, "--study") == 0 ||
                   strcmp(a, "--epsilon") == 0 || strcmp(a, "--contribution-bound") == 0 ||
                   strcmp(a, "--max-rows") == 0 || strcmp(a, "--wait") == 0 ||
                   strcmp(a, "--protocol") == 0) {
            const char *v;
            char *end;

            if (need(i, argc, a, "run"))
                return SV_EXIT_USAGE;
            v = argv[++i];
            errno = 0;
            if (strcmp(a, "--cert") == 0) {
                cert = v;
            } else if (strcmp(a, "--key") == 0) {
                key = v;
            } else if (strcmp(a, "--study") == 0) {
                copts.study = v;
            } else if (strcmp(a, "--protocol") == 0) {
                if (qr_protocol_valid(v) != 0) {
                    fprintf(stderr, "cohort-querier run: --protocol must be auto, s_agg, "
                                    "rnf_noise, c_noise, ed_hist or shuffle\n");
                    return SV_EXIT_USAGE;
                }
                copts.protocol = v;
            } else if (strcmp(a, "--authority") == 0) {
                if (n_auth == RUN_AUTH_MAX) {
                    fprintf(stderr, "cohort-querier run: at most %u authorities\n", RUN_AUTH_MAX);
                    return SV_EXIT_USAGE;
                }
                auth_files[n_auth++] = v;
            } else if (strcmp(a, "--epsilon") == 0) {
                copts.epsilon = strtod(v, &end);
                if (errno || *end || !(copts.epsilon > 0 && copts.epsilon <= 1000)) {
                    fprintf(stderr, "cohort-querier run: --epsilon must be in (0, 1000]\n");
                    return SV_EXIT_USAGE;
                }
            } else {
                uint64_t x;

                if (sh_parse_u64(v, 1, strcmp(a, "--max-rows") == 0 ? 1000000u : 1000000000000u,
                                 &x) != 0) {
                    fprintf(stderr, "cohort-querier run: %s needs a positive whole number\n", a);
                    return SV_EXIT_USAGE;
                }
                if (strcmp(a, "--max-rows") == 0)
                    copts.max_rows = (uint32_t)x;
                else if (strcmp(a, "--wait") == 0)
                    wait_s = (int64_t)x;
                else
                    copts.contribution_bound = (int64_t)x;
            }
        } else {
            fprintf(stderr, "cohort-querier run: unexpected argument '%s'\n", a);
            run_usage(stderr);
            return SV_EXIT_USAGE;
        }
    }
    if (sql == NULL || cert == NULL) {
        fprintf(stderr, "cohort-querier run: give --cert FILE and the SQL\n");
        run_usage(stderr);
        return SV_EXIT_USAGE;
    }
    if (check_net(&net, "run") != 0)
        return SV_EXIT_USAGE;
    if (key == NULL) {
        size_t n = strlen(cert);

        if (n < 5 || strcmp(cert + n - 5, ".cert") != 0 || n + 1 > sizeof key_buf) {
            fprintf(stderr, "cohort-querier run: give --key FILE (the --cert path does not end "
                            "in .cert)\n");
            return SV_EXIT_USAGE;
        }
        memcpy(key_buf, cert, n - 5);
        memcpy(key_buf + n - 5, ".key", 5);
        key = key_buf;
    }
    sh_log_init("cohort-querier", false);

    if (rs_load_researcher(key, cert, &id, &chain, &chain_lens, &n_chain, err, sizeof err) != 0) {
        fprintf(stderr, "cohort-querier run: %s\n", err);
        return SV_EXIT_FAILED;
    }
    loaded = true;
    for (size_t i = 0; i < n_auth; i++)
        if (sv_root_key(auth_files[i], auth[i], err, sizeof err) != 0) {
            fprintf(stderr, "cohort-querier run: %s\n", err);
            goto out;
        }
    if (n_auth == 0) {
        /* The root of the researcher's own chain. */
        if (sv_root_key(cert, auth[0], err, sizeof err) != 0) {
            fprintf(stderr, "cohort-querier run: %s\n", err);
            goto out;
        }
        n_auth = 1;
    }

    copts.now = (int64_t)time(NULL);
    r = qr_sql_compile(&plan, &plan_len, sql, &copts, &sqlerr);
    if (r == QR_ERR_SQL) {
        fprintf(stderr, "cohort-querier run: line %u, column %u: %s\n", sqlerr.line, sqlerr.col,
                sqlerr.msg);
        status = SV_EXIT_USAGE;
        goto out;
    }
    if (r != 0) {
        fprintf(stderr, "cohort-querier run: cannot compile the plan: %s\n", qr_strerror(r));
        goto out;
    }
    if (wait_s >= 0)
        deadline_ms = sh_now_ms() + wait_s * 1000;
    else
        deadline_ms = -1; /* until each plan expires */
    if (client_open(&cl, &net, err, sizeof err) != 0) {
        fprintf(stderr, "cohort-querier run: %s\n", err);
        goto out;
    }
    {
        Cohort__Plan *p = cohort__plan__unpack(NULL, plan_len, plan);
        bool hist = p != NULL && p->protocol != NULL && strcmp(p->protocol, "ed_hist") == 0;

        cohort__plan__free_unpacked(p, NULL);
        if (hist) {
            /* ED_Hist: the histogram study first, then the buckets it gives. */
            uint8_t *hp = NULL, *next = NULL;
            size_t hp_len = 0, next_len = 0;
            struct qr_result h;

            memset(&h, 0, sizeof h);
            fprintf(stderr, "ed_hist: running its histogram study first (s_agg, COUNT(*) per "
                            "group)\n");
            r = qr_hist_plan(&hp, &hp_len, plan, plan_len);
            if (r == 0)
                r = run_one(&cl, &net, hp, hp_len, &id, chain, chain_lens, n_chain, auth, n_auth,
                            deadline_ms, show, &h);
            if (r == 0)
                r = qr_hist_apply(&next, &next_len, plan, plan_len, &h);
            free(hp);
            qr_result_free(&h);
            if (r != 0) {
                if (r != RUN_REPORTED)
                    fprintf(stderr, "cohort-querier run: cannot draw the buckets: %s\n",
                            qr_strerror(r));
                free(next);
                goto out;
            }
            free(plan);
            plan = next;
            plan_len = next_len;
        }
    }
    if (run_one(&cl, &net, plan, plan_len, &id, chain, chain_lens, n_chain, auth, n_auth,
                deadline_ms, show, &result) != 0)
        goto out;
    if (fmt == OUT_CSV)
        qr_print_csv(stdout, &result);
    else if (fmt == OUT_JSON)
        qr_print_json(stdout, &result);
    else {
        qr_print_table(stdout, &result);
        printf("%" PRIu64 " participants; result signed by a certified token and checked\n",
               result.participants);
    }
    status = fflush(stdout) == 0 ? 0 : SV_EXIT_FAILED;

out:
    qr_result_free(&result);
    client_close(&cl);
    free(plan);
    if (loaded) {
        rs_chain_free(chain, chain_lens, n_chain);
        qr_identity_wipe(&id);
    }
    return status;
}

/* ----------------------------------------------------------------- status */

int sv_status_main(int argc, char **argv)
{
    struct net_opts net;
    struct client cl;
    const char *query = NULL;
    uint8_t qid[32];
    char err[SH_ERR_MAX];
    Cohort__ServiceRequest req;
    Cohort__StatusRequest sreq;
    Cohort__ServiceReply *rep = NULL;
    bool json = false;
    int status = SV_EXIT_FAILED, r;

    memset(&net, 0, sizeof net);
    for (int i = 1; i < argc; i++) {
        if ((r = net_option(argc, argv, &i, &net, "status")) != 0) {
            if (r < 0)
                return SV_EXIT_USAGE;
            continue;
        }
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: cohort-querier status --connect URL [--ca PEM] [--server-name NAME] "
                   "[--json] [QUERY_ID]\n");
            return 0;
        } else if (argv[i][0] != '-' && query == NULL) {
            query = argv[i];
        } else {
            fprintf(stderr, "cohort-querier status: unexpected argument '%s'\n", argv[i]);
            return SV_EXIT_USAGE;
        }
    }
    if (check_net(&net, "status") != 0)
        return SV_EXIT_USAGE;
    if (query != NULL && sh_unhex(qid, 32, query) != 0) {
        fprintf(stderr, "cohort-querier status: a query id is 64 hex digits\n");
        return SV_EXIT_USAGE;
    }
    if (client_open(&cl, &net, err, sizeof err) != 0) {
        fprintf(stderr, "cohort-querier status: %s\n", err);
        client_close(&cl);
        return SV_EXIT_FAILED;
    }
    cohort__service_request__init(&req);
    cohort__status_request__init(&sreq);
    if (query != NULL) {
        sreq.query_id.data = qid;
        sreq.query_id.len = 32;
    }
    req.body_case = COHORT__SERVICE_REQUEST__BODY_STATUS;
    req.status = &sreq;
    if (call(&cl, &req, &rep, RUN_TIMEOUT_MS, err, sizeof err) != 0) {
        fprintf(stderr, "cohort-querier status: %s: %s\n", net.connect, err);
        goto out;
    }
    if (rep->status != 0) {
        fprintf(stderr, "cohort-querier status: %s\n",
                rep->error && rep->error[0] ? rep->error : qr_strerror(rep->status));
        goto out;
    }
    if (json)
        fputs("[", stdout);
    else if (rep->n_queries == 0)
        printf("no queries\n");
    else
        printf("%-16s  %-16s  %-11s  %12s  %-14s  %s\n", "QUERY", "STUDY", "STATE", "PARTICIPANTS",
               "AGGREGATION", "RESEARCHER");
    for (size_t i = 0; i < rep->n_queries; i++) {
        const Cohort__QueryStatus *q = rep->queries[i];
        char id[65], agg[48];

        if (q->query_id.len != 32)
            continue;
        sh_hex(id, q->query_id.data, 32);
        if (json) {
            printf("%s{\"query_id\":\"%s\",\"study\":", i ? "," : "", id);
            qr_print_json_string(stdout, q->study ? q->study : "");
            printf(",\"state\":\"%s\",\"contributions\":%" PRIu64 ",\"target\":%" PRIu64
                   ",\"level\":%u,\"levels_done\":%u,\"tasks_done\":%" PRIu64
                   ",\"partitions\":%" PRIu64 ",\"tasks_reassigned\":%" PRIu64
                   ",\"ciphertexts\":%" PRIu64 ",\"bytes_in\":%" PRIu64 ",\"bytes_out\":%" PRIu64
                   ",\"bytes_held\":%" PRIu64 ",\"failure\":",
                   state_text(q->state), q->contributions, q->target, q->level, q->levels_done,
                   q->tasks_done, q->partitions, q->tasks_reassigned, q->ciphertexts, q->bytes_in,
                   q->bytes_out, q->bytes_held);
            qr_print_json_string(stdout, q->failure ? q->failure : "");
            fputs("}", stdout);
            continue;
        }
        if (q->state == COHORT__QUERY_STATE__QS_AGGREGATING)
            snprintf(agg, sizeof agg, "level %u, %" PRIu64 "/%" PRIu64, q->level, q->tasks_done,
                     q->partitions);
        else if (q->state == COHORT__QUERY_STATE__QS_DONE)
            snprintf(agg, sizeof agg, "%u levels", q->levels_done);
        else
            snprintf(agg, sizeof agg, "-");
        id[16] = '\0';
        printf("%-16s  %-16.16s  %-11s  %12" PRIu64 "  %-14s  %s\n", id, q->study ? q->study : "",
               state_text(q->state), q->contributions, agg, q->researcher ? q->researcher : "");
        if (q->state == COHORT__QUERY_STATE__QS_FAILED && q->failure && q->failure[0])
            printf("  failed: %s\n", q->failure);
    }
    if (json)
        fputs("]\n", stdout);
    status = 0;
out:
    if (rep)
        cohort__service_reply__free_unpacked(rep, NULL);
    client_close(&cl);
    return status;
}
