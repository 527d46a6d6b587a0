/*
 * The agent daemon's network side: participant agents (participant.h)
 * driving tokens (software tokens, or one on USB or an emulator), each
 * connected to a querier service over nng.
 *
 * One agent per token directory. Each has its own req0 socket and dialer
 * (so the service sees one connection per token, as it would from
 * separate machines) and its own thread, which runs the agent core's loop:
 * admit the connection (Hello, challenge, Admit), ask for work, hand the
 * reply to the token, deliver what the token produced (an Upload or a
 * TaskResult) until the service answers, sleep when there is nothing to
 * do. A pool holds the agents of one process, from one to thousands.
 *
 * Failures: the service may go away at any time; the dialer reconnects
 * with backoff and the agent admits the new connection and resends the
 * request in hand, byte for byte. A token that cannot go on (tampered,
 * rolled back, not provisioned) stops its agent with a sentence in its
 * stats; the other agents go on. A token that goes away (a USB token
 * unplugged, an emulator stopped) pauses its agent, which waits for the
 * same token to be back, then asks the service for work afresh.
 *
 * Thread safety: na_* functions are called from one thread (the one that
 * started the pool); the agents run in their own threads.
 */
#ifndef COHORT_NET_AGENT_H
#define COHORT_NET_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum na_error {
    NA_OK = 0,
    NA_ERR_ARG = -1,   /* a bad address or option: the message says which */
    NA_ERR_TOKEN = -2, /* a token directory that does not open */
    NA_ERR_NET = -3,   /* nng refused to make a socket or dialer */
    NA_ERR_NOMEM = -4,
    NA_ERR_THREAD = -5, /* a thread could not be started */
};

const char *na_strerror(int code);

/* Limits and defaults (milliseconds unless said otherwise). */
#define NA_AGENTS_MAX 100000u                /* agents in one pool */
#define NA_RECONNECT_MIN_MS 100              /* the dialer's first reconnection delay */
#define NA_BACKOFF_DEFAULT_MS 10000u         /* its longest, by default */
#define NA_BACKOFF_MAX_MS 3600000u           /* the longest one may ask for */
#define NA_REQUEST_TIMEOUT_DEFAULT_MS 30000u /* a request unanswered this long is sent again */
#define NA_STOP_GRACE_DEFAULT_MS 5000u       /* how long a stopping agent waits for a reply */
#define NA_IDLE_MIN_MS 50u                   /* bounds on the service's retry_after_ms */
#define NA_IDLE_MAX_MS 10000u
#define NA_ERROR_MAX 256u /* bytes of an agent's error sentence */

struct na_config {
    const char *url;         /* tls+tcp://, tcp:// or ipc:// */
    const char *ca;          /* PEM CA file: required for tls+tcp://, refused otherwise */
    const char *server_name; /* the name the service's certificate must carry; NULL: the URL's */
    uint32_t max_backoff_ms; /* 0: NA_BACKOFF_DEFAULT_MS */
    uint32_t request_timeout_ms; /* 0: NA_REQUEST_TIMEOUT_DEFAULT_MS */
    uint32_t stop_grace_ms;      /* 0: NA_STOP_GRACE_DEFAULT_MS */
    size_t stack_size;           /* bytes of each agent thread's stack; 0: a default */
    uint32_t pace_ms;            /* wait at least this long after each piece of work done */
    bool quiet;                  /* log only errors */
    const char *token; /* --token (pt_token.h) for the one agent; NULL: a software token per dir */
};

/*
 * Check an address and its TLS options without connecting: the URL's
 * form, --ca for tls+tcp:// (and a CA file that loads), no TLS option for
 * other transports, an address nng accepts. Returns 0 or NA_ERR_ARG with
 * a sentence in err.
 */
int na_config_check(const struct na_config *cfg, char *err, size_t err_len);

typedef struct na_pool na_pool;

/*
 * Open the token of every directory (a software token in each, n of them,
 * at most NA_AGENTS_MAX; or, with cfg->token, that one token for n = 1), make each agent's socket
 * and dialer (started without waiting for the service, which may be down), and start the agents'
 * threads. All or nothing: on an error nothing is left open, *out is
 * NULL and err says what failed (NA_ERR_TOKEN: "cannot open the token
 * DIR: ..."). The pool copies cfg and the directory names.
 */
int na_start(na_pool **out, const struct na_config *cfg, const char *const *dirs, size_t n,
             char *err, size_t err_len);

enum na_state {
    NA_RUNNING = 0,
    NA_STOPPED = 1, /* by na_stop */
    NA_FAILED = 2,  /* for an error: see error */
};

struct na_stats {
    uint8_t token_id[32];
    enum na_state state;
    uint64_t collected;       /* plans the token contributed to, uploads the service took */
    uint64_t refused;         /* plans the token refused */
    uint64_t tasks;           /* aggregation tasks returned to the service */
    uint64_t reconnects;      /* connections after the first */
    uint64_t admissions;      /* connections admitted */
    uint64_t token_pauses;    /* times the token went away (unplugged) and work waited for it */
    char error[NA_ERROR_MAX]; /* why a failed agent stopped; "" otherwise */
};

size_t na_count(const na_pool *p);
/* Agents still running. */
size_t na_running(na_pool *p);
/* The counters of agent i (0 <= i < na_count), in the order of the directories. */
void na_stats(na_pool *p, size_t i, struct na_stats *out);
/* The directory of agent i (owned by the pool). */
const char *na_dir(const na_pool *p, size_t i);

/*
 * Stop every agent and wait for their threads: an agent waiting for the
 * reply to an Upload or a TaskResult waits for it at most stop_grace_ms;
 * any other wait ends at once. Each agent closes its token, then its
 * socket. Returns the number of agents whose thread had not finished a
 * few seconds after the grace (0 unless nng hangs in closing a socket,
 * a known nng 1.5 bug; their tokens are closed and their stats final).
 * Calling it again does nothing and returns the same number.
 */
size_t na_stop(na_pool *p);

/* na_stop, then free the pool (left to the process's end if a thread is stuck). NULL is fine. */
void na_free(na_pool *p);

#endif
