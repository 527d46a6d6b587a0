/*
 * net_agent.c: agents on the network, one thread and one nng req0 socket
 * each.
 *
 * An agent's loop, as the service's rules want it:
 *
 *   admit:   Hello (the token's certificate) -> a challenge; Admit (the
 *            token's signature over it) -> status 0. A connection is
 *            admitted once; a new connection (nng pipe) needs it again.
 *   work:    WorkRequest -> a reply, handed to the token (pt_agent_handle),
 *            which may produce an Upload or a TaskResult to deliver.
 *   deliver: the same bytes, sent again after any connection loss or
 *            timeout, until the service answers. The service journals an
 *            upload before acknowledging it, so an upload it took before
 *            the connection broke is answered QR_ERR_DUPLICATE: done.
 *   idle:    sleep the service's retry_after_ms (bounded, with jitter).
 *
 * Waiting. Every wait of an agent is on its own condition variable, which
 * three things signal: the completion of its aio (a send or a receive),
 * its socket's pipe events, and na_stop. Pipe events tell the agent that
 * its connection changed under a request (the service restarted): it
 * cancels the request, admits the new connection and resends. A reply
 * with status QR_ERR_NOT_ADMITTED means the same. nng's own resending is
 * off (NNG_OPT_REQ_RESENDTIME infinite), so that a request is sent again
 * only after the new connection is admitted.
 *
 * What is trusted: nothing from the network. Replies are bounded by
 * NNG_OPT_RECVMAXSZ (PT_REPLY_MAX) before anything decodes them; the
 * service's error texts are cut and kept to printable ASCII before they
 * are logged. Logs carry ids (the first 8 bytes of a token id or query
 * id), counts and statuses, never a key, a plaintext or ciphertext.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <sodium.h>

#include "participant/net_agent.h"
#include "participant/participant.h"
#include "participant/pt_owner.h"
#include "participant/pt_token.h"
#include "proto/cohort.pb-c.h"
#include "querier/querier.h"
#include "shell/shell.h"

/*
 * The agents' stacks. The token core runs on them (its RAM is a heap
 * arena, but its functions keep a few KiB of locals): the tests pass with
 * 64 KiB, and the default leaves four times that. AddressSanitizer's
 * redzones get more room still.
 */
#if defined(__SANITIZE_ADDRESS__)
#define NA_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NA_SANITIZED 1
#endif
#endif
#ifdef NA_SANITIZED
#define NA_STACK_DEFAULT (1u << 20)
#else
#define NA_STACK_DEFAULT (256u << 10)
#endif
#define NA_STACK_MIN (64u << 10)
#define NA_CLOSE_WAIT_MS 3000 /* after the grace: how long na_stop waits for a socket to close */

#define NA_ID_HEX 17u        /* 8 bytes in hex and a NUL */
#define NA_TEXT_MAX 160u     /* bytes of a service's error text that are logged */
#define NA_REPLY_BAD (-1000) /* reply_status() of a reply that does not decode */
/* The pause after the service answers a work request with an error. */
#define NA_SERVICE_ERROR_PAUSE_MS 1000u
#define NA_TOKEN_WAIT_MS 250u /* a look for a token that went away, between checks for a stop */
/* The pauses before asking a token that did not answer again: the first, the longest. */
#define NA_TOKEN_RETRY_MIN_MS 1000u
#define NA_TOKEN_RETRY_MAX_MS 60000u

const char *na_strerror(int code)
{
    switch (code) {
    case NA_OK:
        return "success";
    case NA_ERR_ARG:
        return "bad address or option";
    case NA_ERR_TOKEN:
        return "a token does not open";
    case NA_ERR_NET:
        return "network setup failed";
    case NA_ERR_NOMEM:
        return "out of memory";
    case NA_ERR_THREAD:
        return "a thread could not be started";
    default:
        return "unknown error";
    }
}

/* What a wait or an exchange ended with. */
enum xres {
    X_DONE = 0,  /* the operation completed (a reply is there) */
    X_RETRY = 1, /* connection lost or timed out: admit if need be, send again */
    X_STOP = 2,  /* the pool is stopping */
    X_FAIL = 3,  /* the agent cannot go on (its error is set) */
};

struct agent {
    struct na_pool *pool;
    char *dir;
    struct pt_token *tok;
    struct pt_agent ag;
    nng_socket sock;
    nng_aio *aio;
    bool sock_open;
    bool thread_started; /* and not joined yet */
    bool joined;
    pthread_t thread;
    char id[NA_ID_HEX];

    /* Shared with the callbacks and na_*: under mu. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    int64_t stop_at; /* sh_mono_ms() when the stop was asked */
    bool aio_done;
    uint32_t cur_pipe; /* the connected pipe's id; 0: none */
    uint64_t pipes;    /* pipes seen */
    struct na_stats st;
    bool finished; /* the thread is done with everything but returning */

    /* The agent's thread only. */
    uint32_t admitted_pipe; /* the pipe admitted; 0: none */
    uint32_t backoff_ms;
    nng_dialer dialer;
    uint32_t timeouts; /* requests in a row that got no answer in time */
};

struct na_pool {
    struct na_config cfg;
    char *url, *ca, *server_name, *token;
    size_t n;
    struct agent *agents;
    bool stopped;
    size_t stuck; /* agents whose thread did not finish in time (na_stop) */
};

/* ------------------------------------------------------------- logs */

static void vlog_agent(const struct agent *a, bool error, const char *fmt, va_list ap)
{
    char msg[512];

    if (!error && a->pool->cfg.quiet)
        return;
    vsnprintf(msg, sizeof msg, fmt, ap);
    sh_log("token %s: %s%s", a->id, error ? "error: " : "", msg);
}

static void say(const struct agent *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const struct agent *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog_agent(a, false, fmt, ap);
    va_end(ap);
}

static void complain(const struct agent *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void complain(const struct agent *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog_agent(a, true, fmt, ap);
    va_end(ap);
}

/* Stop the agent for an error: the sentence goes to its stats and the log. */
static int fail(struct agent *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct agent *a, const char *fmt, ...)
{
    char msg[NA_ERROR_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&a->mu);
    memcpy(a->st.error, msg, sizeof msg);
    a->st.state = NA_FAILED;
    pthread_mutex_unlock(&a->mu);
    sh_log("token %s: error: %s; this agent stops", a->id, msg);
    return X_FAIL;
}

static void id_prefix(char out[NA_ID_HEX], const uint8_t *id, size_t len)
{
    if (len >= 8)
        sh_hex(out, id, 8);
    else
        snprintf(out, NA_ID_HEX, "-");
}

/* Text from the service, cut and kept to printable ASCII for the log. */
static void printable(char *out, size_t cap, const char *s)
{
    size_t n = 0;
    for (; s != NULL && *s != '\0' && n + 1 < cap; s++)
        out[n++] = (*s >= 0x20 && *s < 0x7f) ? *s : '?';
    out[n] = '\0';
}

/* ---------------------------------------------------------- replies */

/* The status of a ServiceReply (NA_REPLY_BAD if it does not decode), and its error text. */
static int reply_status(nng_msg *m, char *text, size_t cap)
{
    Cohort__ServiceReply *r;
    int status;

    text[0] = '\0';
    if (nng_msg_len(m) > PT_REPLY_MAX)
        return NA_REPLY_BAD;
    r = cohort__service_reply__unpack(NULL, nng_msg_len(m), nng_msg_body(m));
    if (r == NULL)
        return NA_REPLY_BAD;
    status = r->status;
    printable(text, cap, r->error);
    cohort__service_reply__free_unpacked(r, NULL);
    return status;
}

/* The level and partition of the task a work reply carried, for the log. */
static void reply_task(nng_msg *m, uint32_t *level, uint32_t *partition)
{
    Cohort__ServiceReply *r;

    *level = *partition = 0;
    if (nng_msg_len(m) > PT_REPLY_MAX)
        return;
    r = cohort__service_reply__unpack(NULL, nng_msg_len(m), nng_msg_body(m));
    if (r == NULL)
        return;
    if (r->work != NULL && r->work->work_case == COHORT__WORK_REPLY__WORK_TASK) {
        *level = r->work->task->level;
        *partition = r->work->task->partition;
    }
    cohort__service_reply__free_unpacked(r, NULL);
}

/* A token status after which the token cannot serve: its store is broken or it has no keys. */
static bool token_broken(int status)
{
    return status == TK_ERR_TAMPERED || status == TK_ERR_ROLLBACK || status == TK_ERR_STORE ||
           status == TK_ERR_RANDOM || status == TK_ERR_NOT_PROVISIONED;
}

/* ----------------------------------------------------------- waiting */

static void aio_done(void *arg)
{
    struct agent *a = arg;
    pthread_mutex_lock(&a->mu);
    a->aio_done = true;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

/* Pipe events run with the socket's lock held: they only note the change. */
static void pipe_event(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    struct agent *a = arg;
    uint32_t id = (uint32_t)nng_pipe_id(p);

    pthread_mutex_lock(&a->mu);
    if (ev == NNG_PIPE_EV_ADD_POST) {
        a->cur_pipe = id;
        if (++a->pipes > 1)
            a->st.reconnects++;
    } else if (ev == NNG_PIPE_EV_REM_POST && a->cur_pipe == id) {
        a->cur_pipe = 0;
    }
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

static void deadline_ts(struct timespec *ts, int64_t mono_ms)
{
    ts->tv_sec = (time_t)(mono_ms / 1000);
    ts->tv_nsec = (long)(mono_ms % 1000) * 1000000L;
}

/* Whether the agent must stop now (under mu). in_hand: it holds a request to deliver. */
static bool must_stop(const struct agent *a, bool in_hand, int64_t now)
{
    return a->stop && (!in_hand || now >= a->stop_at + (int64_t)a->pool->cfg.stop_grace_ms);
}

/* When a wait must end at the latest, given a stop (under mu). */
static int64_t wait_limit(const struct agent *a, bool in_hand, int64_t deadline)
{
    if (a->stop && in_hand && a->stop_at + (int64_t)a->pool->cfg.stop_grace_ms < deadline)
        return a->stop_at + (int64_t)a->pool->cfg.stop_grace_ms;
    return deadline;
}

/* Sleep for ms, or less if the pool stops. X_DONE or X_STOP. */
static int pause_ms(struct agent *a, uint32_t ms, bool in_hand)
{
    int64_t deadline = sh_mono_ms() + ms;
    struct timespec ts;
    int rc = X_DONE;

    pthread_mutex_lock(&a->mu);
    for (;;) {
        int64_t now = sh_mono_ms();
        if (must_stop(a, in_hand, now)) {
            rc = X_STOP;
            break;
        }
        if (now >= deadline)
            break;
        deadline_ts(&ts, wait_limit(a, in_hand, deadline));
        pthread_cond_timedwait(&a->cv, &a->mu, &ts);
    }
    pthread_mutex_unlock(&a->mu);
    return rc;
}

/*
 * Dial again with a new dialer. nng 1.5.2 can leave a dialer that never
 * reconnects, or a connection that carries nothing, after its peer went
 * away in the middle of a transfer; closing the dialer closes its
 * connection, and the new one starts over.
 */
static void redial(struct agent *a, const char *why)
{
    const struct na_config *cfg = &a->pool->cfg;
    struct sh_tls tls = {NULL, cfg->ca, cfg->server_name};
    char err[NA_ERROR_MAX];
    nng_dialer d;

    say(a, "%s: dialing again", why);
    nng_dialer_close(a->dialer);
    if (nng_dialer_create(&d, a->sock, cfg->url) != 0 ||
        sh_tls_dialer(&d, cfg->url, &tls, err, sizeof err) != 0 ||
        nng_dialer_set_ms(d, NNG_OPT_RECONNMINT, NA_RECONNECT_MIN_MS) != 0 ||
        nng_dialer_set_ms(d, NNG_OPT_RECONNMAXT, (nng_duration)cfg->max_backoff_ms) != 0 ||
        nng_dialer_start(d, NNG_FLAG_NONBLOCK) != 0) {
        complain(a, "cannot make a new dialer");
        return;
    }
    a->dialer = d;
}

/* How long without a connection before the agent dials again. */
static int64_t redial_after_ms(const struct agent *a)
{
    int64_t ms = 3 * (int64_t)a->pool->cfg.max_backoff_ms;
    return ms < 2000 ? 2000 : ms;
}

/* Wait until the socket has a connection; its pipe id in *pipe. X_DONE or X_STOP. */
static int wait_connected(struct agent *a, bool in_hand, uint32_t *pipe)
{
    struct timespec ts;
    int rc = X_DONE;
    int64_t since = sh_mono_ms();

    pthread_mutex_lock(&a->mu);
    for (;;) {
        int64_t now = sh_mono_ms();
        if (must_stop(a, in_hand, now)) {
            rc = X_STOP;
            break;
        }
        if (a->cur_pipe != 0)
            break;
        if (now - since >= redial_after_ms(a)) {
            pthread_mutex_unlock(&a->mu);
            redial(a, "no connection to the service");
            pthread_mutex_lock(&a->mu);
            since = sh_mono_ms();
            continue;
        }
        deadline_ts(&ts, wait_limit(a, in_hand, since + redial_after_ms(a)));
        pthread_cond_timedwait(&a->cv, &a->mu, &ts);
    }
    *pipe = a->cur_pipe;
    pthread_mutex_unlock(&a->mu);
    return rc;
}

/*
 * Wait for the aio started on pipe. X_DONE when it completed (whatever
 * its result); otherwise it is cancelled and X_RETRY (the connection
 * changed, or the deadline passed) or X_STOP.
 */
static int wait_aio(struct agent *a, uint32_t pipe, int64_t deadline, bool in_hand)
{
    struct timespec ts;
    int rc;

    pthread_mutex_lock(&a->mu);
    for (;;) {
        int64_t now = sh_mono_ms();
        if (a->aio_done) {
            rc = X_DONE;
            break;
        }
        if (must_stop(a, in_hand, now)) {
            rc = X_STOP;
            break;
        }
        if (a->cur_pipe != pipe || now >= deadline) {
            rc = X_RETRY;
            break;
        }
        deadline_ts(&ts, wait_limit(a, in_hand, deadline));
        pthread_cond_timedwait(&a->cv, &a->mu, &ts);
    }
    pthread_mutex_unlock(&a->mu);
    if (rc != X_DONE) {
        nng_aio_cancel(a->aio);
        nng_aio_wait(a->aio);
        if (nng_aio_result(a->aio) == 0)
            rc = X_DONE; /* it completed before the cancel */
    }
    return rc;
}

/*
 * Send req and wait for its reply (*reply: the caller frees it). X_DONE,
 * X_RETRY (the connection was lost, or no reply came in time: send it
 * again), X_STOP or X_FAIL.
 */
static int exchange(struct agent *a, const uint8_t *req, size_t len, bool in_hand, nng_msg **reply)
{
    int64_t deadline;
    uint32_t pipe;
    nng_msg *m = NULL;
    int rc, err;

    *reply = NULL;
    if ((rc = wait_connected(a, in_hand, &pipe)) != X_DONE)
        return rc;
    deadline = sh_mono_ms() + a->pool->cfg.request_timeout_ms;
    if (nng_msg_alloc(&m, 0) != 0 || nng_msg_append(m, req, len) != 0) {
        nng_msg_free(m);
        return fail(a, "out of memory for a request");
    }

    pthread_mutex_lock(&a->mu);
    a->aio_done = false;
    pthread_mutex_unlock(&a->mu);
    nng_aio_set_msg(a->aio, m);
    nng_send_aio(a->sock, a->aio);
    rc = wait_aio(a, pipe, deadline, in_hand);
    err = nng_aio_result(a->aio);
    if (rc != X_DONE || err != 0) {
        /* A send that did not complete leaves the message with us. */
        nng_msg_free(nng_aio_get_msg(a->aio));
        nng_aio_set_msg(a->aio, NULL);
        if (rc == X_DONE)
            return err == NNG_ECLOSED ? fail(a, "the socket closed") : X_RETRY;
        return rc;
    }

    pthread_mutex_lock(&a->mu);
    a->aio_done = false;
    pthread_mutex_unlock(&a->mu);
    nng_recv_aio(a->sock, a->aio);
    rc = wait_aio(a, pipe, deadline, in_hand);
    err = nng_aio_result(a->aio);
    if (rc == X_RETRY && sh_mono_ms() >= deadline && ++a->timeouts >= 2) {
        a->timeouts = 0;
        redial(a, "no answer from the service twice");
    }
    if (rc != X_DONE)
        return rc;
    a->timeouts = 0;
    if (err != 0) {
        if (err == NNG_ECLOSED)
            return fail(a, "the socket closed");
        /* A connection reset: give the dialer a moment before the request goes again. */
        return pause_ms(a, NA_RECONNECT_MIN_MS, in_hand) == X_STOP ? X_STOP : X_RETRY;
    }
    *reply = nng_aio_get_msg(a->aio);
    nng_aio_set_msg(a->aio, NULL);
    return X_DONE;
}

/* ---------------------------------------------------------- admission */

static bool need_admission(struct agent *a)
{
    bool need;
    pthread_mutex_lock(&a->mu);
    need = a->admitted_pipe == 0 || a->admitted_pipe != a->cur_pipe;
    pthread_mutex_unlock(&a->mu);
    return need;
}

/* The next backoff after a failed admission: 100 ms, doubling, up to the configured maximum. */
static uint32_t next_backoff(struct agent *a)
{
    uint32_t max = a->pool->cfg.max_backoff_ms;
    a->backoff_ms = a->backoff_ms == 0 ? NA_RECONNECT_MIN_MS : a->backoff_ms * 2;
    if (a->backoff_ms > max)
        a->backoff_ms = max;
    return a->backoff_ms;
}

/* Admit the current connection. X_DONE (admitted), X_RETRY, X_STOP or X_FAIL. */
/*
 * The token link failed. A token that went away (unplugged, its emulator
 * stopped) is waited for; one that did not answer (hung, or a broken
 * frame) is tried again after a pause that doubles up to
 * NA_TOKEN_RETRY_MAX_MS, and is waited for if it goes away meanwhile (its
 * owner plugging it in again). The work resumes when the same token
 * answers: X_DONE (the round is over; the next asks the service for work
 * afresh, and the service offers again whatever was lost with the link)
 * or X_STOP. A failure that would repeat (a request too large for the
 * link, a version mismatch), or another token in its place, stops the
 * agent.
 */
static int token_lost(struct agent *a)
{
    struct pt_owner o;
    struct pt_token_info info;
    struct pt_link link;
    uint32_t backoff = NA_TOKEN_RETRY_MIN_MS;
    uint64_t pauses;

    if (!pt_token_may_recover(a->tok))
        return fail(a, "the token link failed: %s",
                    pt_token_link_error(a->tok)[0] ? pt_token_link_error(a->tok)
                                                   : "no reason given");
    pthread_mutex_lock(&a->mu);
    pauses = ++a->st.token_pauses;
    pthread_mutex_unlock(&a->mu);
    say(a, "the token %s (%s): work paused until it is back (pause %llu)",
        pt_token_gone(a->tok) ? "is gone" : "does not answer", pt_token_link_error(a->tok),
        (unsigned long long)pauses);
    for (;;) {
        if (pt_token_gone(a->tok)) {
            while (pt_token_wait(a->tok, NA_TOKEN_WAIT_MS) != PT_OK)
                if (pause_ms(a, 0, false) == X_STOP)
                    return X_STOP;
        } else {
            if (pause_ms(a, backoff, false) == X_STOP)
                return X_STOP;
            backoff = backoff >= NA_TOKEN_RETRY_MAX_MS / 2 ? NA_TOKEN_RETRY_MAX_MS : 2 * backoff;
        }
        link = pt_token_link(a->tok);
        pt_owner_init(&o, &link, sh_now_ms() / 1000);
        if (pt_owner_info(&o, &info) == PT_OK)
            break;
        if (!pt_token_may_recover(a->tok))
            return fail(a, "the token link failed: %s", pt_token_link_error(a->tok));
    }
    if (sodium_memcmp(info.sign_pk, a->st.token_id, sizeof a->st.token_id) != 0)
        return fail(a, "another token was plugged in where this one was: stopping");
    say(a, "the token is back: work resumes");
    return X_DONE;
}

static int admit(struct agent *a, bool in_hand)
{
    uint8_t *req = NULL;
    size_t len = 0;
    nng_msg *reply = NULL;
    char text[NA_TEXT_MAX];
    int rc, status;
    uint32_t pipe;
    uint64_t admissions;

    rc = pt_agent_hello(&a->ag, sh_now_ms() / 1000, &req, &len);
    if (rc == PT_ERR_LINK)
        return token_lost(a) == X_STOP ? X_STOP : X_RETRY;
    if (rc == PT_ERR_TOKEN)
        return fail(a, "the token is not provisioned (it has no device certificate): have an "
                       "authority certify it first");
    if (rc != PT_OK)
        return fail(a, "the token's certificate cannot be read: %s", pt_strerror(rc));
    rc = exchange(a, req, len, in_hand, &reply);
    free(req);
    if (rc != X_DONE)
        return rc;

    rc = pt_agent_admit(&a->ag, sh_now_ms() / 1000, nng_msg_body(reply), nng_msg_len(reply), &req,
                        &len);
    nng_msg_free(reply);
    if (rc == PT_ERR_SERVICE) {
        complain(a, "the service refused the hello: %s", a->ag.last_reason);
        return X_RETRY;
    }
    if (rc == PT_ERR_MALFORMED || rc == PT_ERR_TOO_LARGE) {
        complain(a, "the service's answer to the hello is malformed");
        return X_RETRY;
    }
    if (rc == PT_ERR_LINK)
        return token_lost(a) == X_STOP ? X_STOP : X_RETRY;
    if (rc == PT_ERR_TOKEN)
        return fail(a, "the token will not attest the service's challenge: %s (%s)",
                    tk_strerror(a->ag.last_token_status), tk_errname(a->ag.last_token_status));
    if (rc != PT_OK)
        return fail(a, "the admission failed: %s", pt_strerror(rc));

    rc = exchange(a, req, len, in_hand, &reply);
    free(req);
    if (rc != X_DONE)
        return rc;
    status = reply_status(reply, text, sizeof text);
    pipe = (uint32_t)nng_pipe_id(nng_msg_get_pipe(reply));
    nng_msg_free(reply);
    if (status != 0) {
        if (status == NA_REPLY_BAD)
            complain(a, "the service's answer to the admission is malformed");
        else
            complain(a, "the service refused the admission: %s (%d)", text, status);
        return X_RETRY;
    }
    pthread_mutex_lock(&a->mu);
    a->admitted_pipe = pipe;
    admissions = ++a->st.admissions;
    pthread_mutex_unlock(&a->mu);
    a->backoff_ms = 0;
    if (admissions == 1)
        say(a, "admitted by the service");
    else
        say(a, "reconnected; admitted again (admission %llu)", (unsigned long long)admissions);
    return X_DONE;
}

/* Admit if the connection needs it; on X_RETRY, after a backoff. */
static int ensure_admitted(struct agent *a, bool in_hand)
{
    int rc;

    while (need_admission(a)) {
        rc = admit(a, in_hand);
        if (rc == X_DONE)
            break;
        if (rc != X_RETRY)
            return rc;
        if (pause_ms(a, next_backoff(a), in_hand) == X_STOP)
            return X_STOP;
    }
    return X_DONE;
}

/* --------------------------------------------------------------- work */

/*
 * Deliver an Upload or a TaskResult: the same bytes until the service
 * answers (or the pool stops and the grace runs out). *status: the
 * service's.
 */
static int deliver(struct agent *a, const uint8_t *req, size_t len, int *status, char *text,
                   size_t cap)
{
    nng_msg *reply;
    int rc;

    for (;;) {
        if ((rc = ensure_admitted(a, true)) != X_DONE)
            return rc;
        rc = exchange(a, req, len, true, &reply);
        if (rc == X_RETRY)
            continue;
        if (rc != X_DONE)
            return rc;
        *status = reply_status(reply, text, cap);
        nng_msg_free(reply);
        if (*status == QR_ERR_NOT_ADMITTED) {
            a->admitted_pipe = 0;
            continue;
        }
        return X_DONE;
    }
}

static int upload(struct agent *a, const uint8_t *req, size_t len)
{
    char q[NA_ID_HEX], text[NA_TEXT_MAX];
    int rc, status = 0;

    id_prefix(q, a->ag.last_query, sizeof a->ag.last_query);
    if ((rc = deliver(a, req, len, &status, text, sizeof text)) != X_DONE) {
        if (rc == X_STOP)
            complain(a, "stopping before the service took the upload for query %s", q);
        return rc;
    }
    if (status == 0 || status == QR_ERR_DUPLICATE) {
        pthread_mutex_lock(&a->mu);
        a->st.collected++;
        pthread_mutex_unlock(&a->mu);
        say(a, "collected query %s: uploaded%s", q,
            status == 0 ? "" : " (the service had it already)");
    } else if (status == NA_REPLY_BAD) {
        complain(a, "the service's answer to the upload for query %s is malformed", q);
    } else {
        complain(a, "the service refused the upload for query %s: %s (%d)", q, text, status);
    }
    return X_DONE;
}

static int task_result(struct agent *a, const uint8_t *req, size_t len, uint32_t level,
                       uint32_t partition)
{
    char q[NA_ID_HEX], text[NA_TEXT_MAX];
    int rc, status = 0, token_status = a->ag.last_token_status;

    id_prefix(q, a->ag.last_query, sizeof a->ag.last_query);
    if ((rc = deliver(a, req, len, &status, text, sizeof text)) != X_DONE) {
        if (rc == X_STOP)
            complain(a, "stopping before the service took the result of a task of query %s", q);
        return rc;
    }
    if (status == 0 || status == QR_ERR_UNKNOWN_TASK) {
        pthread_mutex_lock(&a->mu);
        a->st.tasks++;
        pthread_mutex_unlock(&a->mu);
        say(a, "task done: query %s level %u partition %u, token status %d (%s)%s", q, level,
            partition, token_status, token_status == 0 ? "ok" : tk_errname(token_status),
            status == 0 ? "" : "; the service no longer needed it");
    } else if (status == NA_REPLY_BAD) {
        complain(a, "the service's answer to a task result of query %s is malformed", q);
    } else {
        complain(a, "the service refused a task result of query %s: %s (%d)", q, text, status);
    }
    return X_DONE;
}

/* The pause after an idle reply: the service's retry_after_ms, bounded, plus up to 20%. */
static uint32_t idle_ms(const struct agent *a)
{
    uint32_t ms = a->ag.retry_after_ms;
    if (ms < NA_IDLE_MIN_MS)
        ms = NA_IDLE_MIN_MS;
    if (ms > NA_IDLE_MAX_MS)
        ms = NA_IDLE_MAX_MS;
    return ms + randombytes_uniform(ms / 5 + 1);
}

/* One round: ask for work, hand it to the token, deliver what it produced. */
static int work_round(struct agent *a)
{
    uint8_t *req = NULL, *next = NULL;
    size_t len = 0, next_len = 0;
    nng_msg *reply = NULL;
    enum pt_action action = PT_IDLE;
    uint32_t level = 0, partition = 0;
    char q[NA_ID_HEX], text[NA_TEXT_MAX];
    int rc, status;

    if ((rc = pt_agent_work_request(&a->ag, &req, &len)) != PT_OK)
        return fail(a, "cannot build a work request: %s", pt_strerror(rc));
    rc = exchange(a, req, len, false, &reply);
    free(req);
    if (rc != X_DONE)
        return rc;

    rc = pt_agent_handle(&a->ag, sh_now_ms() / 1000, nng_msg_body(reply), nng_msg_len(reply),
                         &action, &next, &next_len);
    if (rc == PT_ERR_SERVICE) {
        status = reply_status(reply, text, sizeof text);
        nng_msg_free(reply);
        if (status == QR_ERR_NOT_ADMITTED) {
            a->admitted_pipe = 0;
            return X_RETRY;
        }
        complain(a, "the service answered the work request with an error: %s (%d)", text, status);
        return pause_ms(a, NA_SERVICE_ERROR_PAUSE_MS, false);
    }
    if (rc == PT_OK && action == PT_AGGREGATED && !a->pool->cfg.quiet)
        reply_task(reply, &level, &partition);
    nng_msg_free(reply);
    if (rc == PT_ERR_LINK)
        return token_lost(a);
    if (rc != PT_OK) {
        complain(a, "the service's work could not be handled: %s", pt_strerror(rc));
        return pause_ms(a, NA_SERVICE_ERROR_PAUSE_MS, false);
    }

    id_prefix(q, a->ag.last_query, sizeof a->ag.last_query);
    switch (action) {
    case PT_IDLE:
        return pause_ms(a, idle_ms(a), false);
    case PT_REFUSED:
        pthread_mutex_lock(&a->mu);
        a->st.refused++;
        pthread_mutex_unlock(&a->mu);
        if (token_broken(a->ag.last_token_status))
            return fail(a, "the token cannot work: %s (%s)", tk_strerror(a->ag.last_token_status),
                        tk_errname(a->ag.last_token_status));
        say(a, "refused query %s: %s%s%s", q, tk_errname(a->ag.last_token_status),
            a->ag.last_reason[0] ? ": " : "", a->ag.last_reason);
        return X_DONE;
    case PT_COLLECTED:
        rc = upload(a, next, next_len);
        break;
    case PT_AGGREGATED:
        status = a->ag.last_token_status;
        rc = task_result(a, next, next_len, level, partition);
        if (rc == X_DONE && token_broken(status))
            rc = fail(a, "the token cannot work: %s (%s)", tk_strerror(status), tk_errname(status));
        break;
    }
    free(next);
    if (rc == X_DONE && a->pool->cfg.pace_ms > 0)
        rc = pause_ms(a, a->pool->cfg.pace_ms, false);
    return rc;
}

static void *agent_main(void *arg)
{
    struct agent *a = arg;
    int rc = X_DONE;

    say(a, "started: service %s", a->pool->url);
    for (;;) {
        bool stop;
        pthread_mutex_lock(&a->mu);
        stop = a->stop;
        pthread_mutex_unlock(&a->mu);
        if (stop)
            break;
        if ((rc = ensure_admitted(a, false)) == X_DONE)
            rc = work_round(a);
        if (rc == X_STOP || rc == X_FAIL)
            break;
    }
    /* The token first: its state is safe on disk whatever the socket does next. */
    pt_token_close(a->tok);
    a->tok = NULL;
    pthread_mutex_lock(&a->mu);
    if (a->st.state == NA_RUNNING)
        a->st.state = NA_STOPPED;
    pthread_mutex_unlock(&a->mu);
    say(a, "stopped: %llu collected, %llu refused, %llu tasks, %llu reconnects, %llu token pauses",
        (unsigned long long)a->st.collected, (unsigned long long)a->st.refused,
        (unsigned long long)a->st.tasks, (unsigned long long)a->st.reconnects,
        (unsigned long long)a->st.token_pauses);
    nng_close(a->sock);
    pthread_mutex_lock(&a->mu);
    a->finished = true;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* --------------------------------------------------------------- pool */

/* Make a socket and its dialer for cfg (started when start is set). */
static int make_socket(nng_socket *sock, const struct na_config *cfg, struct agent *a, bool start,
                       char *err, size_t err_len)
{
    struct sh_tls tls = {NULL, cfg->ca, cfg->server_name};
    nng_dialer d;
    int rv;

    if ((rv = nng_req0_open(sock)) != 0) {
        snprintf(err, err_len, "cannot make a socket: %s", nng_strerror(rv));
        return NA_ERR_NET;
    }
    if ((rv = nng_socket_set_size(*sock, NNG_OPT_RECVMAXSZ, PT_REPLY_MAX)) != 0 ||
        (rv = nng_socket_set_ms(*sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE)) != 0 ||
        (a != NULL && (rv = nng_pipe_notify(*sock, NNG_PIPE_EV_ADD_POST, pipe_event, a)) != 0) ||
        (a != NULL && (rv = nng_pipe_notify(*sock, NNG_PIPE_EV_REM_POST, pipe_event, a)) != 0)) {
        snprintf(err, err_len, "cannot set up a socket: %s", nng_strerror(rv));
        goto fail_net;
    }
    if ((rv = nng_dialer_create(&d, *sock, cfg->url)) != 0) {
        snprintf(err, err_len, "%s: not a usable address: %s", cfg->url, nng_strerror(rv));
        nng_close(*sock);
        return NA_ERR_ARG;
    }
    if (sh_tls_dialer(&d, cfg->url, &tls, err, err_len) != 0) {
        nng_close(*sock);
        return NA_ERR_ARG;
    }
    if ((rv = nng_dialer_set_ms(d, NNG_OPT_RECONNMINT, NA_RECONNECT_MIN_MS)) != 0 ||
        (rv = nng_dialer_set_ms(d, NNG_OPT_RECONNMAXT, (nng_duration)cfg->max_backoff_ms)) != 0) {
        snprintf(err, err_len, "cannot set up a dialer: %s", nng_strerror(rv));
        goto fail_net;
    }
    if (start && (rv = nng_dialer_start(d, NNG_FLAG_NONBLOCK)) != 0) {
        snprintf(err, err_len, "%s: cannot dial: %s", cfg->url, nng_strerror(rv));
        goto fail_net;
    }
    if (a != NULL)
        a->dialer = d;
    return NA_OK;
fail_net:
    nng_close(*sock);
    return NA_ERR_NET;
}

/* The configuration with its defaults filled in. */
static void config_defaults(struct na_config *c)
{
    if (c->max_backoff_ms == 0)
        c->max_backoff_ms = NA_BACKOFF_DEFAULT_MS;
    if (c->request_timeout_ms == 0)
        c->request_timeout_ms = NA_REQUEST_TIMEOUT_DEFAULT_MS;
    if (c->stop_grace_ms == 0)
        c->stop_grace_ms = NA_STOP_GRACE_DEFAULT_MS;
    if (c->stack_size == 0)
        c->stack_size = NA_STACK_DEFAULT;
    if (c->stack_size < NA_STACK_MIN)
        c->stack_size = NA_STACK_MIN;
}

int na_config_check(const struct na_config *cfg, char *err, size_t err_len)
{
    struct na_config c = *cfg;
    nng_socket s;
    bool is_tls;
    int rc;

    if (!sh_url_ok(c.url, &is_tls)) {
        snprintf(err, err_len, "%s: use tls+tcp://HOST:PORT, tcp://HOST:PORT or ipc:///PATH",
                 c.url ? c.url : "(no address)");
        return NA_ERR_ARG;
    }
    if (is_tls && c.ca == NULL) {
        snprintf(err, err_len, "%s: a tls+tcp:// address needs --ca (the service's CA certificate)",
                 c.url);
        return NA_ERR_ARG;
    }
    if (!is_tls && (c.ca != NULL || c.server_name != NULL)) {
        snprintf(err, err_len, "%s: --ca and --server-name are for tls+tcp:// addresses only",
                 c.url);
        return NA_ERR_ARG;
    }
    if (c.max_backoff_ms > NA_BACKOFF_MAX_MS) {
        snprintf(err, err_len, "the longest backoff is %u seconds", NA_BACKOFF_MAX_MS / 1000);
        return NA_ERR_ARG;
    }
    config_defaults(&c);
    rc = make_socket(&s, &c, NULL, false, err, err_len);
    if (rc == NA_OK)
        nng_close(s);
    return rc;
}

static void agent_clear(struct agent *a)
{
    /* A thread that ran closed its socket and its token itself. */
    if (a->sock_open && !a->joined)
        nng_close(a->sock);
    if (!a->joined)
        pt_token_close(a->tok);
    a->tok = NULL;
    nng_aio_free(a->aio);
    a->aio = NULL;
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->mu);
    free(a->dir);
    a->dir = NULL;
}

static void pool_free(na_pool *p)
{
    if (p->agents != NULL)
        for (size_t i = 0; i < p->n; i++)
            agent_clear(&p->agents[i]);
    free(p->agents);
    free(p->url);
    free(p->ca);
    free(p->server_name);
    free(p->token);
    free(p);
}

static char *dup_or_null(const char *s, bool *failed)
{
    char *d;
    if (s == NULL)
        return NULL;
    if ((d = strdup(s)) == NULL)
        *failed = true;
    return d;
}

/* Open agent a's token (the pool's --token, or the software token in dir); learn its id. */
static int agent_open(struct agent *a, const char *dir, char *err, size_t err_len)
{
    char msg[NA_ERROR_MAX] = "";
    const char *token = a->pool->cfg.token;
    struct pt_token_spec spec;
    struct pt_owner o;
    struct pt_token_info info;
    struct pt_link link;
    int rc;

    if (token != NULL) {
        if (pt_token_spec_parse(token, &spec, msg, sizeof msg) != PT_OK) {
            snprintf(err, err_len, "%s", msg);
            return NA_ERR_ARG;
        }
    } else if (strlen(dir) < sizeof spec.path) {
        spec.kind = PT_TOKEN_SOFT;
        memcpy(spec.path, dir, strlen(dir) + 1);
    } else {
        snprintf(err, err_len, "%.64s...: the path is too long", dir);
        return NA_ERR_ARG;
    }
    rc = pt_token_open(&a->tok, &spec, false, msg, sizeof msg);
    if (rc != PT_OK) {
        /* pt_soft's sentences mostly name the directory already. */
        if (token != NULL)
            snprintf(err, err_len, "cannot open the token %s: %s", token,
                     msg[0] ? msg : pt_strerror(rc));
        else if (msg[0] != '\0' && strncmp(msg, dir, strlen(dir)) == 0)
            snprintf(err, err_len, "cannot open a token: %s", msg);
        else
            snprintf(err, err_len, "cannot open the token %s: %s", dir,
                     msg[0] ? msg : pt_strerror(rc));
        return NA_ERR_TOKEN;
    }
    link = pt_token_link(a->tok);
    pt_owner_init(&o, &link, sh_now_ms() / 1000);
    if ((rc = pt_owner_info(&o, &info)) != PT_OK) {
        snprintf(err, err_len, "cannot open the token %s: %s", token ? token : dir,
                 pt_strerror(rc));
        return NA_ERR_TOKEN;
    }
    pt_agent_init(&a->ag, &link, info.sign_pk);
    memcpy(a->st.token_id, info.sign_pk, sizeof a->st.token_id);
    id_prefix(a->id, info.sign_pk, sizeof info.sign_pk);
    return NA_OK;
}

int na_start(na_pool **out, const struct na_config *cfg, const char *const *dirs, size_t n,
             char *err, size_t err_len)
{
    na_pool *p;
    pthread_attr_t attr;
    pthread_condattr_t ca;
    bool nomem = false;
    int rc;

    *out = NULL;
    if (n == 0 || n > NA_AGENTS_MAX) {
        snprintf(err, err_len, "give from 1 to %u token directories", NA_AGENTS_MAX);
        return NA_ERR_ARG;
    }
    if (cfg->token != NULL && n != 1) {
        snprintf(err, err_len, "--token names one token: give one --dir with it");
        return NA_ERR_ARG;
    }
    if ((rc = na_config_check(cfg, err, err_len)) != NA_OK)
        return rc;
    if (tk_library_init() != 0) {
        snprintf(err, err_len, "libsodium failed to initialise");
        return NA_ERR_NOMEM;
    }
    if ((p = calloc(1, sizeof *p)) == NULL)
        goto nomem;
    p->cfg = *cfg;
    config_defaults(&p->cfg);
    p->url = dup_or_null(cfg->url, &nomem);
    p->ca = dup_or_null(cfg->ca, &nomem);
    p->server_name = dup_or_null(cfg->server_name, &nomem);
    p->token = dup_or_null(cfg->token, &nomem);
    p->cfg.url = p->url;
    p->cfg.ca = p->ca;
    p->cfg.server_name = p->server_name;
    p->cfg.token = p->token;
    if (nomem || (p->agents = calloc(n, sizeof *p->agents)) == NULL) {
        pool_free(p);
        goto nomem;
    }

    /* Every agent's token, socket and aio before any thread starts: all or nothing. */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    for (size_t i = 0; i < n; i++) {
        struct agent *a = &p->agents[i];
        a->pool = p;
        pthread_mutex_init(&a->mu, NULL);
        pthread_cond_init(&a->cv, &ca);
        p->n = i + 1;
        if ((a->dir = strdup(dirs[i])) == NULL) {
            snprintf(err, err_len, "out of memory");
            rc = NA_ERR_NOMEM;
            break;
        }
        if ((rc = agent_open(a, dirs[i], err, err_len)) != NA_OK)
            break;
        if (nng_aio_alloc(&a->aio, aio_done, a) != 0) {
            snprintf(err, err_len, "out of memory");
            rc = NA_ERR_NOMEM;
            break;
        }
        nng_aio_set_timeout(a->aio, NNG_DURATION_INFINITE);
        if ((rc = make_socket(&a->sock, &p->cfg, a, true, err, err_len)) != NA_OK)
            break;
        a->sock_open = true;
    }
    pthread_condattr_destroy(&ca);
    if (rc != NA_OK) {
        pool_free(p);
        return rc;
    }

    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, p->cfg.stack_size);
    for (size_t i = 0; i < n; i++) {
        struct agent *a = &p->agents[i];
        if ((rc = pthread_create(&a->thread, &attr, agent_main, a)) != 0) {
            snprintf(err, err_len, "cannot start an agent's thread: %s", strerror(rc));
            pthread_attr_destroy(&attr);
            na_free(p);
            return NA_ERR_THREAD;
        }
        a->thread_started = true;
    }
    pthread_attr_destroy(&attr);
    *out = p;
    return NA_OK;
nomem:
    snprintf(err, err_len, "out of memory");
    return NA_ERR_NOMEM;
}

size_t na_count(const na_pool *p)
{
    return p->n;
}

const char *na_dir(const na_pool *p, size_t i)
{
    return i < p->n ? p->agents[i].dir : NULL;
}

size_t na_running(na_pool *p)
{
    size_t n = 0;
    for (size_t i = 0; i < p->n; i++) {
        struct agent *a = &p->agents[i];
        pthread_mutex_lock(&a->mu);
        n += a->st.state == NA_RUNNING;
        pthread_mutex_unlock(&a->mu);
    }
    return n;
}

void na_stats(na_pool *p, size_t i, struct na_stats *out)
{
    struct agent *a;

    memset(out, 0, sizeof *out);
    if (i >= p->n)
        return;
    a = &p->agents[i];
    pthread_mutex_lock(&a->mu);
    *out = a->st;
    pthread_mutex_unlock(&a->mu);
}

size_t na_stop(na_pool *p)
{
    int64_t deadline;
    struct timespec ts;

    if (p == NULL || p->stopped)
        return p ? p->stuck : 0;
    for (size_t i = 0; i < p->n; i++) {
        struct agent *a = &p->agents[i];
        pthread_mutex_lock(&a->mu);
        if (!a->stop) {
            a->stop = true;
            a->stop_at = sh_mono_ms();
        }
        pthread_cond_broadcast(&a->cv);
        pthread_mutex_unlock(&a->mu);
    }
    /*
     * Wait for each thread to finish, but not forever: nng 1.5's nng_close
     * can hang when a connection closes while a message is moving on it
     * (nng issues #1543 and #1813). An agent closes its token before its
     * socket, so one left behind holds nothing that matters.
     */
    deadline = sh_mono_ms() + p->cfg.stop_grace_ms + NA_CLOSE_WAIT_MS;
    deadline_ts(&ts, deadline);
    for (size_t i = 0; i < p->n; i++) {
        struct agent *a = &p->agents[i];
        bool finished;
        if (!a->thread_started)
            continue;
        pthread_mutex_lock(&a->mu);
        while (!a->finished && sh_mono_ms() < deadline)
            pthread_cond_timedwait(&a->cv, &a->mu, &ts);
        finished = a->finished;
        pthread_mutex_unlock(&a->mu);
        if (finished) {
            pthread_join(a->thread, NULL);
            a->thread_started = false;
            a->joined = true;
        } else {
            p->stuck++;
        }
    }
    p->stopped = true;
    return p->stuck;
}

void na_free(na_pool *p)
{
    if (p == NULL)
        return;
    if (na_stop(p) > 0) {
        /* A thread still inside nng_close uses its agent: leave the pool to the process's end. */
        sh_log("%zu agent%s did not finish closing its connection; leaving %s", p->stuck,
               p->stuck == 1 ? "" : "s", p->stuck == 1 ? "it" : "them");
        return;
    }
    pool_free(p);
}
