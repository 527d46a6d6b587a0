/*
 * libcohort_participant: the participant agent's core.
 *
 * The agent runs on the owner's machine, which is not trusted: it only ever
 * moves ciphertext and public data between the querier service and the
 * owner's token. This core is a state machine without I/O. It is given the
 * service's replies as bytes and answers with the next request to send, as
 * bytes; the token is reached through a token link (struct pt_link), which
 * may be the token core in the same process, a USB device or an emulator.
 * The simulator drives one agent per simulated participant; the networked
 * daemon drives the same code.
 *
 * Errors are 0 or a negative PT_ERR_*; pt_strerror() describes them.
 * Buffers returned through uint8_t ** are malloc'd; the caller frees them.
 */
#ifndef COHORT_PARTICIPANT_H
#define COHORT_PARTICIPANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "token/token.h"

enum pt_error {
    PT_OK = 0,
    PT_ERR_NOMEM = -1,
    PT_ERR_MALFORMED = -2, /* a reply from the service that does not decode */
    PT_ERR_SERVICE = -3,   /* the service answered with an error status */
    PT_ERR_LINK = -5,      /* the token link failed */
    PT_ERR_TOO_LARGE = -6,
    PT_ERR_IO = -7,     /* a file operation failed */
    PT_ERR_TOKEN = -8,  /* the token refused (tampered, rolled back, ...) */
    PT_ERR_EXISTS = -9, /* a directory that should be new or empty is not */
    PT_ERR_BUSY = -10,  /* another process has the token open */
    PT_ERR_INPUT = -11, /* the owner's input (a file to import, an argument) is invalid */
};

const char *pt_strerror(int code);

#define PT_REPLY_MAX (64u << 20) /* the largest service reply accepted */
#define PT_FEED_MAX (256u << 10) /* bytes of ciphertext per AggFeed */

/*
 * A token link. transact sends one TokenRequest and returns the
 * TokenResponse in a buffer the link owns, valid until the next call.
 * It returns 0 or PT_ERR_LINK; the token's own status is in the response.
 */
struct pt_link {
    void *ctx;
    int (*transact)(void *ctx, const uint8_t *req, size_t req_len, const uint8_t **resp,
                    size_t *resp_len);
};

/*
 * The in-process link: the token core called directly, with a RAM arena
 * and a response buffer that grows as needed (up to 64 MiB). The caller
 * owns tk and arena; pt_inproc_free releases the response buffer.
 */
struct pt_inproc {
    struct tk_token *tk;
    uint8_t *arena;
    size_t arena_len;
    uint8_t *resp;
    size_t resp_cap;
    size_t peak; /* the largest arena use seen on this link */
    uint64_t calls;
};
void pt_inproc_init(struct pt_inproc *l, struct tk_token *tk, uint8_t *arena, size_t arena_len);
void pt_inproc_free(struct pt_inproc *l);
struct pt_link pt_inproc_link(struct pt_inproc *l);

/*
 * Flash for a token (struct tk_flash, token/token.h), kept by the host.
 *
 * The memory flash holds segments in malloc'd buffers: the simulator's and
 * the tests' tokens. It holds at most PT_MEMFLASH_SEGS segments at once
 * (the live one, and the next one during a compaction); its bookkeeping is
 * a few dozen bytes, and pt_memflash_trim gives back the unused tail of
 * each buffer, so that a token at rest costs about what it holds. The
 * caller owns the struct; pt_memflash_free(m) releases the buffers.
 */
#define PT_MEMFLASH_SEGS 2
struct pt_memseg {
    uint8_t *p;
    uint32_t seg, len, cap, used;
};
struct pt_memflash {
    struct pt_memseg s[PT_MEMFLASH_SEGS];
};
void pt_memflash_init(struct pt_memflash *m);
struct tk_flash pt_memflash_flash(struct pt_memflash *m);
void pt_memflash_trim(struct pt_memflash *m);
void pt_memflash_free(struct pt_memflash *m);
/* Segment seg's bytes, or NULL when it does not exist (tests look at them). */
struct pt_memseg *pt_memflash_segment(struct pt_memflash *m, uint32_t seg);

/*
 * The file flash: segment s is the file DIR/flash.<s> (mode 0600). append
 * is write() of every byte, sync is fsync, truncate is ftruncate, remove
 * is unlink and an fsync of the directory. pt_fileflash_open keeps dir's
 * name; it does not create it. Returns 0, PT_ERR_NOMEM or PT_ERR_IO.
 */
struct pt_fileflash;
int pt_fileflash_open(struct pt_fileflash **out, const char *dir);
struct tk_flash pt_fileflash_flash(struct pt_fileflash *f);
void pt_fileflash_close(struct pt_fileflash *f); /* NULL is fine */

/*
 * A software token: the token core over a directory. DIR/flash.<s> is its
 * flash, DIR/secure.img and DIR/counter stand for the chip's own memory
 * (see pt_soft.c for what that does and does not protect). err receives a
 * sentence for the owner when a call fails.
 */
struct pt_soft; /* opaque */
/* Create a new software token in dir (created with mode 0700; it must not exist, or be empty). */
int pt_soft_create(struct pt_soft **out, const char *dir, size_t arena_len, char *err,
                   size_t err_len);
/* Whether pt_soft_create may make a token in dir: it does not exist, or is an empty directory. */
bool pt_soft_can_create(const char *dir);
/* Open an existing one: fails with a clear message in err when the directory is not a token,
 * when another process has it open (flock: "busy"), or when the token refuses its flash or
 * image (tampered, rolled back). */
int pt_soft_open(struct pt_soft **out, const char *dir, size_t arena_len, char *err,
                 size_t err_len);
struct pt_link pt_soft_link(struct pt_soft *s); /* an in-process link to its token (pt_inproc) */
struct tk_token *pt_soft_token(struct pt_soft *s);
void pt_soft_close(struct pt_soft *s); /* NULL is fine; wipes the token */

/* What the agent did last, for logs and the simulator. */
enum pt_action {
    PT_IDLE = 0,       /* nothing to do; retry after retry_after_ms */
    PT_COLLECTED = 1,  /* the token contributed: upload the next request */
    PT_AGGREGATED = 2, /* a task is done (or failed): send the next request */
    PT_REFUSED = 3,    /* the token refused to collect (policy, plan) */
};

#define PT_REASON_MAX 255u  /* bytes of a token's reason for a refusal that are kept */
#define PT_DECLINED_MAX 32u /* refused plans the agent reminds the service of */

struct pt_agent {
    uint8_t token_id[32];
    struct pt_link link;
    uint32_t retry_after_ms;
    int last_token_status;
    char last_reason[PT_REASON_MAX + 1]; /* the token's reason for its last refusal, or "" */
    uint64_t token_calls;
    /* Query ids of the plans the token refused to collect (a ring): every
     * work request lists them, so the service stops offering them. */
    uint8_t declined[PT_DECLINED_MAX][32];
    uint32_t n_declined, declined_next;
    uint8_t last_query[32]; /* the query of the last plan or task handled */
};

/* Set an agent up over a link; token_id is the token's public key. */
void pt_agent_init(struct pt_agent *ag, const struct pt_link *link, const uint8_t token_id[32]);

/* The ServiceRequest asking the service for work. */
int pt_agent_work_request(struct pt_agent *ag, uint8_t **req, size_t *req_len);

/*
 * Handle a ServiceReply to a work request at time now (Unix seconds, given
 * to the token). On PT_COLLECTED and PT_AGGREGATED, *next is the
 * ServiceRequest to send (an Upload or a TaskResult); otherwise *next is
 * NULL. A token refusal to collect is PT_REFUSED with the token's status
 * in ag->last_token_status and its reason, for the owner, in
 * ag->last_reason (printable ASCII; "" when the token gave none); a failed aggregation task still
 * produces a TaskResult carrying the token's status, so the service can reassign it.
 */
int pt_agent_handle(struct pt_agent *ag, int64_t now, const uint8_t *reply, size_t reply_len,
                    enum pt_action *action, uint8_t **next, size_t *next_len);

/*
 * Admission to a networked service. pt_agent_hello builds the Hello (the
 * token's device certificate, read from the token). pt_agent_admit takes
 * the service's reply to it, has the token sign the challenge (Attest) and
 * builds the Admit to send. PT_ERR_SERVICE when the reply is an error (its
 * text in ag->last_reason), PT_ERR_TOKEN when the token will not attest
 * (not provisioned).
 */
int pt_agent_hello(struct pt_agent *ag, int64_t now, uint8_t **req, size_t *req_len);
int pt_agent_admit(struct pt_agent *ag, int64_t now, const uint8_t *reply, size_t reply_len,
                   uint8_t **req, size_t *req_len);

#endif
