/*
 * The agent's local HTTP API: apps reach the owner's documents through it,
 * and the owner manages credentials, shares and the audit log.
 *
 * It is a shell over the agent's calls (pt_doc.h) on nng's HTTP server,
 * listening on a loopback address only: any other address is refused
 * before a socket is made, and a request whose Host header does not name
 * a loopback address is refused too (a web page that rebinds a DNS name
 * to 127.0.0.1 cannot talk to it). Every request but GET /v1/identity and
 * POST /v1/inbox carries "Authorization: Bearer <96 hex digits>"; the
 * token, not this server, decides what that credential may do.
 *
 * Routes, bodies, status codes and the JSON of each answer are in the
 * README and at the top of pt_http.c. Bodies are bounded before they are
 * read: JSON at cfg.json_max (64 KiB), documents and share packages at
 * cfg.doc_max (64 MiB); a larger Content-Length is 413 without reading
 * the body, and the connection is closed.
 *
 * What is never written anywhere but the answer to its own request: a
 * credential's secret, a document's content, its metadata. Error answers
 * are {"error": sentence, "code": name} with sentences fixed by the
 * server (never the token's reason, which may quote metadata the caller
 * may not see). The log gets one line per request: method, the route's
 * pattern (never the path's ids or the query), status and duration.
 *
 * Threads: nng's threads parse requests and read bodies; a few workers of
 * our own run the agent's calls, one whole call at a time under one lock
 * (the token is a single session at a time), and deliver share packages
 * to other agents outside that lock.
 */
#ifndef COHORT_PT_HTTP_H
#define COHORT_PT_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "participant/pt_doc.h"

#define PT_HTTP_LISTEN_DEFAULT "127.0.0.1:8088"
#define PT_HTTP_JSON_MAX (64u << 10)      /* a JSON request body */
#define PT_HTTP_DOC_MAX (64u << 20)       /* a document, or a share package */
#define PT_HTTP_URI_MAX 2048u             /* a request's target */
#define PT_HTTP_PARAMS_MAX 40u            /* parameters of a query string */
#define PT_HTTP_VALUE_MAX 256u            /* bytes of one parameter once decoded */
#define PT_HTTP_WORKERS 4u                /* threads running the agent's calls */
#define PT_HTTP_QUEUE_MAX 256u            /* requests waiting for a worker */
#define PT_HTTP_INFLIGHT_MAX (256u << 20) /* body bytes held at once (503 beyond) */
#define PT_HTTP_ANSWER_MAX (32u << 20)    /* a JSON answer */
#define PT_HTTP_DELIVER_MS 10000          /* a delivery to another agent */
#define PT_HTTP_BODY_MS 60000             /* a request body, from its head to its last byte */
#define PT_HTTP_SYNC_MAX 64u              /* share syncs after one write */
#define PT_HTTP_URL_MAX 256u              /* a share's delivery URL */
#define PT_HTTP_CREDS_MAX 256u            /* credentials listed */
#define PT_HTTP_AUDIT_MAX 1000u           /* audit entries in one answer */

/* The log sink: one line, without its newline. NULL in the config: stderr. */
typedef void (*pt_http_log_fn)(void *ctx, const char *line);
/* The clock sent to the token (Unix seconds). NULL in the config: time(). */
typedef int64_t (*pt_http_clock_fn)(void *ctx);

struct pt_http_config {
    const char *listen;     /* "127.0.0.1:8088", "[::1]:8088", "localhost:0" (0: any port) */
    struct pt_link link;    /* the token; the server serialises its calls */
    struct pt_docstore *ds; /* the ciphertext files */
    const char *outbox;     /* the shares' latest packages (created 0700 if missing) */
    pt_http_log_fn log;
    void *log_ctx;
    pt_http_clock_fn clock;
    void *clock_ctx;
    size_t json_max; /* 0: PT_HTTP_JSON_MAX */
    size_t doc_max;  /* 0: PT_HTTP_DOC_MAX */
    int body_ms;     /* 0: PT_HTTP_BODY_MS; a body slower than this is dropped */
};

struct pt_http;

/*
 * The nng URL of a listen address, "http://127.0.0.1:8088": 0, or
 * PT_ERR_INPUT when it is not host:port with a loopback host (127.0.0.0/8,
 * ::1 in brackets, or "localhost", which is taken as 127.0.0.1) and a
 * port from 0 to 65535.
 */
int pt_http_listen_url(const char *listen, char *url, size_t cap);

/*
 * Start serving (the caller keeps link and ds open until pt_http_stop).
 * 0 with *out, or PT_ERR_INPUT (the address; err says why), PT_ERR_IO (the
 * port is taken, the outbox cannot be made), PT_ERR_NOMEM.
 */
int pt_http_start(struct pt_http **out, const struct pt_http_config *cfg, char *err,
                  size_t err_len);

/* The port it listens on (useful after asking for port 0). */
int pt_http_port(const struct pt_http *h);

/* Stop: no new request is taken, those running finish, then it returns.
 * NULL is fine. */
void pt_http_stop(struct pt_http *h);

/* The HTTP status of a token's refusal (TK_ERR_*), outside the inbox. */
int pt_http_status(int token_status);

#endif
