/*
 * libcohort_querier: the querier's cores.
 *
 * - The SQL front end (qr_sql_*): SQL text to a Plan message (proto/cohort.proto)
 *   for the subset of DESIGN.md section 4. It knows the standard tables
 *   through the catalog (qr_catalog_*).
 * - Signing (qr_sign_*): the researcher signs a plan; an authority certifies
 *   keys. Pure functions of their inputs.
 * - The coordinator (qr_coord_*): one query's life in the untrusted service,
 *   as a state machine that does no I/O. A ServiceRequest comes in as bytes,
 *   a ServiceReply goes out as bytes; a tick moves time on. The simulator and
 *   the networked service drive this very code.
 * - Results (qr_result_*): check the finalizing token's signature, open the
 *   sealed table with the researcher's key, apply ORDER BY and LIMIT.
 *
 * Errors are 0 or a negative QR_ERR_*; qr_strerror() describes them.
 * Buffers returned through uint8_t ** are malloc'd; the caller frees them.
 */
#ifndef COHORT_QUERIER_H
#define COHORT_QUERIER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum qr_error_code {
    QR_OK = 0,
    QR_ERR_SQL = -1, /* the SQL does not parse or does not type-check */
    QR_ERR_NOMEM = -2,
    QR_ERR_MALFORMED = -3, /* a message that does not decode */
    QR_ERR_TOO_LARGE = -4, /* a message over its bound */
    QR_ERR_WRONG_QUERY = -5,
    QR_ERR_CLOSED = -6,     /* collection is over */
    QR_ERR_DUPLICATE = -7,  /* this token already contributed */
    QR_ERR_BAD_UPLOAD = -8, /* an upload of the wrong shape */
    QR_ERR_UNKNOWN_TASK = -9,
    QR_ERR_BAD_RESULT = -10, /* a task result of the wrong shape */
    QR_ERR_FAILED = -11,     /* the query failed; see qr_coord_stats().failure */
    QR_ERR_NOT_DONE = -12,
    QR_ERR_SIGNATURE = -13, /* a result or plan whose signature does not verify */
    QR_ERR_DECRYPT = -14,
    QR_ERR_ARG = -15, /* a bad argument from the caller */
    QR_ERR_CRYPTO = -16,
    QR_ERR_NOT_ADMITTED = -17, /* the connection has not proved which token it speaks for */
    QR_ERR_UNTRUSTED = -18,    /* a certificate that does not chain to a trusted authority */
    QR_ERR_CHALLENGE = -19,    /* an admission that answers no live challenge (replayed, stale) */
    QR_ERR_REFUSED = -20,      /* a plan no token would accept (see the message) */
    QR_ERR_FULL = -21,         /* the service holds as many queries as it may */
    QR_ERR_UNKNOWN_QUERY = -22,
};

const char *qr_strerror(int code);

/* ------------------------------------------------------------- limits */

#define QR_SQL_MAX 8192u /* bytes of SQL text (it travels in the plan) */
#define QR_NAME_MAX 63u  /* identifiers */
#define QR_TEXT_MAX 64u  /* text literals and text group values */
#define QR_GROUP_COLUMNS_MAX 8u
#define QR_AGGREGATES_MAX 16u
#define QR_PROGRAM_MAX 256u /* instructions in WHERE or HAVING */
#define QR_IN_LIST_MAX 64u
#define QR_MAX_GROUPS_LIMIT 65536u
#define QR_REQUEST_MAX (16u << 20) /* one ServiceRequest */

/* ------------------------------------------------------------ catalog */

/* Value types, as in proto's ValueType. */
enum qr_type {
    QR_NULL = 0,
    QR_INT = 1,
    QR_DECIMAL = 2,
    QR_TEXT = 3,
    QR_DATE = 4,
    QR_BOOL = 5,
    QR_DOUBLE = 6,
    QR_TIMESTAMP = 7,
};

struct qr_column {
    const char *name;
    enum qr_type type;
    unsigned scale;      /* DECIMAL digits after the point */
    uint32_t distinct;   /* estimated distinct values in a population */
    int per_participant; /* 1 if constant across one participant's rows */
    const char *doc;
};

struct qr_table {
    const char *name;
    const char *doc;
    size_t n_columns;
    const struct qr_column *columns;
};

#define QR_CATALOG_COLUMNS_MAX 32u /* columns of a catalog table: what a token holds */

const struct qr_table *qr_catalog_find(const char *name);
const struct qr_table *qr_catalog_table(size_t i);                 /* NULL past the end */
int qr_catalog_column(const struct qr_table *t, const char *name); /* index or -1 */

/*
 * The TableSchema message (proto/cohort.proto) a token stores a catalog
 * table under, serialized into *schema (malloc'd; the caller frees it).
 * Returns 0, QR_ERR_ARG or QR_ERR_NOMEM.
 */
int qr_catalog_schema(const struct qr_table *t, uint8_t **schema, size_t *schema_len);

/* ---------------------------------------------------------------- SQL */

struct qr_compile_opts {
    const char *study;       /* NULL: "default" */
    int64_t now;             /* Unix seconds: issued_at */
    int64_t collect_seconds; /* deadline = now + this unless DEADLINE is given; 0: 3600 */
    int64_t valid_seconds;   /* expires_at = deadline + this; 0: 86400 */
    /* Differential privacy for SQL that does not say (a WITH option of the
     * same name wins): 0 for none, as when the field is left out. */
    double epsilon;
    int64_t contribution_bound;
    uint32_t max_rows;
    /*
     * The grouping protocol, unless the SQL's WITH names one: NULL or
     * "auto" lets the cost model choose among those that leak no more than
     * max_leakage (qr_cost_choose), for `participants` expected
     * contributors (0: the SQL's SIZE or participants option, else
     * QR_COST_PARTICIPANTS), tokens of token_ram bytes (0: 64 KiB) and a
     * one-way latency of latency_ms (0: 20).
     */
    const char *protocol;
    int max_leakage; /* enum qr_leakage */
    uint64_t participants;
    size_t token_ram;
    uint32_t latency_ms;
};

struct qr_sql_error {
    size_t pos;         /* byte offset of the problem in the SQL */
    unsigned line, col; /* 1-based */
    char msg[256];      /* "expected X, found Y" */
};

/*
 * Compile SQL to a serialized Plan (malloc'd into *plan). On QR_ERR_SQL the
 * error says where and what was expected. Nothing is allocated on failure.
 */
int qr_sql_compile(uint8_t **plan, size_t *plan_len, const char *sql,
                   const struct qr_compile_opts *opts, struct qr_sql_error *err);

/* ---------------------------------------------------------- cost model */

/*
 * What the untrusted service can learn from a protocol's messages, in
 * increasing order (the leakage report of cohort-sim measures it):
 * - NONE: s_agg (random-looking ciphertexts) and c_noise (every
 *   participant sends every tag equally often);
 * - FREQUENCIES: shuffle (the groups' tuple frequencies, not who is in
 *   which group);
 * - BUCKETS: ed_hist and rnf_noise (which tags each participant sent: a
 *   link from a participant to a bucket of groups, blurred by fakes).
 */
enum qr_leakage {
    QR_LEAK_NONE = 0,
    QR_LEAK_FREQUENCIES = 1,
    QR_LEAK_BUCKETS = 2,
};

#define QR_COST_PARTICIPANTS 10000u /* expected contributors when nothing says */
#define QR_DEFAULT_FAKES 3u         /* rnf_noise: fakes per participant */
#define QR_DEFAULT_BATCH_MIN 32u    /* shuffle: the smallest batch a token mixes */

/* The leakage of a protocol (enum qr_leakage), or -1 for an unknown name. */
int qr_protocol_leakage(const char *protocol);
/* 0 when name is "auto" or a protocol this querier knows, else -1. */
int qr_protocol_valid(const char *name);

/*
 * What the model is given: the study's expected shape, the plan's protocol
 * parameters and the deployment. Nothing else: the model runs nothing, it
 * mirrors the layout the coordinator and the tokens derive from these.
 */
struct qr_cost_input {
    uint64_t participants; /* contributors (at least 1) */
    uint32_t groups;       /* the plan's max_groups, taken as the groups expected */
    uint32_t tuples;       /* tuples_per_participant (0: 1) */
    uint32_t buckets;      /* rnf_noise, c_noise, ed_hist (0: as the querier sets it) */
    uint32_t fakes;        /* rnf_noise (0 with has_fakes 0: the default) */
    int has_fakes;
    uint32_t rounds;             /* shuffle (0: qr_cost_shuffle_rounds) */
    uint32_t aggregates;         /* aggregates in the plan (0: 1) */
    size_t token_ram;            /* bytes of a token's RAM (0: 64 KiB) */
    uint32_t latency_ms;         /* one-way network latency (0: 20 ms) */
    uint32_t group_columns;      /* GROUP BY columns (0: none if groups <= 1, else one) */
    uint32_t group_text_columns; /* of those, TEXT ones (with group_columns 0: all) */
    uint32_t batch_min;          /* shuffle: the smallest batch (0: QR_DEFAULT_BATCH_MIN) */
    uint32_t collect_seconds;    /* the plan's issue to its deadline (0: the querier's
                                    default, an hour); a plan with SIZE may give when it
                                    expects SIZE contributions instead */
};

/* One study's share of a prediction (ed_hist's histogram study). */
struct qr_cost_part {
    double seconds;
    double token_seconds;
    uint64_t bytes;
    uint64_t ciphertexts;
    uint64_t tasks;
    uint32_t steps;
    size_t token_ram_needed;
};

/*
 * What the model predicts for one protocol, as cohort-sim measures it. For
 * ed_hist every figure includes the histogram study that runs first (an
 * s_agg COUNT(*) over the same groups, qr_hist_plan): seconds, work,
 * bytes, ciphertexts, tasks and steps are the two studies' sums, RAM their
 * maximum, and `histogram` holds the histogram's share (zeros for the
 * other protocols). When feasible is 0 the figures are what the study
 * would cost were it possible (token_ram_needed says how much RAM it
 * takes), all zero when no token can even lay the plan out.
 */
struct qr_cost {
    int feasible;            /* 0: the study cannot complete (tokens refuse a plan their RAM
                                cannot aggregate; a shuffle batch no token holds) */
    double seconds;          /* virtual time from the plan's issue to the sealed result */
    double token_seconds;    /* CPU seconds of the study, all tokens and the service together */
    uint64_t bytes;          /* through the service, in and out */
    uint64_t ciphertexts;    /* collected */
    uint64_t tasks;          /* aggregation tasks (partitions) */
    uint32_t steps;          /* aggregation steps, one after another */
    size_t token_ram_needed; /* the most arena one token call uses */
    struct qr_cost_part histogram;
};

/* Predict a protocol's cost. Returns 0, or QR_ERR_ARG (NULL pointers, an
 * unknown protocol, no participants, text columns beyond the group
 * columns, values beyond a plan's limits); *out is zeroed then. */
int qr_cost_predict(struct qr_cost *out, const char *protocol, const struct qr_cost_input *in);

/* The cheapest feasible protocol (by token_seconds) that leaks at most
 * max_leakage; ed_hist is never chosen (it needs a histogram first: the
 * researcher names it), and s_agg gives way only to a protocol at most half
 * as costly. s_agg when none is feasible or the input is bad. Its
 * prediction goes to *best when not NULL. */
const char *qr_cost_choose(const struct qr_cost_input *in, int max_leakage, struct qr_cost *best);

/* Rounds for the shuffle to mix `items` ciphertexts in batches of `batch`:
 * one past the first whose window b^r covers every item (see
 * querier/qr_coord.c), at least 2 and at most QR_ROUNDS_MAX. */
uint32_t qr_cost_shuffle_rounds(uint64_t items, uint32_t batch);

/*
 * ed_hist's histogram (qr_hist.c). qr_hist_plan: from an ed_hist plan
 * (serialized, not yet signed), the histogram study to run first: its
 * table, WHERE and GROUP BY, COUNT(*) per group, s_agg, the same privacy
 * clause and times, a fresh nonce. qr_hist_apply: from the same plan and
 * the histogram's result (group columns then the count), the ed_hist plan
 * to sign: equi-depth bucket bounds, at most the plan's tag_buckets
 * buckets, a fresh nonce. Both malloc *out; QR_ERR_ARG (not an ed_hist
 * plan, a result of another shape), QR_ERR_MALFORMED, QR_ERR_TOO_LARGE,
 * QR_ERR_NOMEM.
 */
int qr_hist_plan(uint8_t **out, size_t *out_len, const uint8_t *plan, size_t plan_len);
struct qr_result;
int qr_hist_apply(uint8_t **out, size_t *out_len, const uint8_t *plan, size_t plan_len,
                  const struct qr_result *hist);

/* A human-readable account of a serialized plan (malloc'd string). */
char *qr_plan_explain(const uint8_t *plan, size_t plan_len);

/* How many of a serialized plan's GROUP BY columns its schema types TEXT
 * (the cost model's group_text_columns); 0 for a plan that does not decode. */
uint32_t qr_plan_group_text_columns(const uint8_t *plan, size_t plan_len);

/* ------------------------------------------------------------ signing */

/* An Ed25519 + X25519 identity. sign_sk holds the public key too. */
struct qr_identity {
    uint8_t sign_pk[32];
    uint8_t sign_sk[64];
    uint8_t box_pk[32];
    uint8_t box_sk[32];
};

struct qr_scope {
    const char *const *tables;
    size_t n_tables;
    const char *const *columns;
    size_t n_columns; /* "table.column" */
    const char *const *studies;
    size_t n_studies;
    double max_epsilon;
};

int qr_identity_generate(struct qr_identity *id);
void qr_identity_wipe(struct qr_identity *id);

/*
 * Issue a serialized Certificate for subject keys, signed by issuer. role is
 * proto's Role; scope may be NULL. box_pk may be NULL.
 */
int qr_cert_issue(uint8_t **cert, size_t *cert_len, const struct qr_identity *issuer, int role,
                  const char *subject, const uint8_t sign_pk[32], const uint8_t *box_pk,
                  int64_t not_before, int64_t not_after, const struct qr_scope *scope);

/*
 * A CertRequest that was checked: who asks (NUL-terminated, 1 to 63 bytes)
 * and its keys.
 */
struct qr_cert_request {
    char subject[64];
    uint8_t sign_pk[32];
    uint8_t box_pk[32];
};

/*
 * Check a serialized CertRequest, a token's (cohort-participant init) or a
 * researcher's (cohort-querier keygen): at most 4096 bytes, a subject of 1
 * to 63 bytes, 32-byte keys, and a signature by its own signing key over
 * TK_SIG_CSR || subject || sign_pk || box_pk (proof of possession). On
 * success *out holds what it asks for. Returns 0, QR_ERR_TOO_LARGE,
 * QR_ERR_MALFORMED, QR_ERR_SIGNATURE, QR_ERR_NOMEM or QR_ERR_CRYPTO;
 * *out is written only on success.
 */
int qr_cert_request_check(struct qr_cert_request *out, const uint8_t *csr, size_t csr_len);

/*
 * Check a token's CertRequest (qr_cert_request_check) and certify it as a
 * token of this authority (role TOKEN, no scope).
 */
int qr_cert_issue_for_request(uint8_t **cert, size_t *cert_len, const struct qr_identity *issuer,
                              const uint8_t *csr, size_t csr_len, int64_t not_before,
                              int64_t not_after);

/* Sign a serialized plan into a SignedPlan with the researcher's chain. */
int qr_plan_sign(uint8_t **signed_plan, size_t *len, const uint8_t *plan, size_t plan_len,
                 const struct qr_identity *researcher, const uint8_t *const *chain,
                 const size_t *chain_lens, size_t n_chain);

/* ------------------------------------------------------- coordinator */

struct qr_coord_config {
    size_t token_ram;           /* bytes of a token's RAM: partitions are sized to it */
    int64_t task_timeout_ms;    /* a task not back by then is handed to another token */
    uint32_t max_task_attempts; /* tries per partition before the query fails */
    uint32_t retry_after_ms;    /* what an idle reply tells tokens to wait */
};

void qr_coord_config_default(struct qr_coord_config *cfg);

enum qr_state {
    QR_COLLECTING = 0,
    QR_AGGREGATING = 1,
    QR_DONE = 2,
    QR_FAILED = 3,
};

struct qr_coord_stats {
    enum qr_state state;
    uint64_t contributions; /* uploads accepted */
    uint64_t uploads_rejected;
    uint64_t ciphertexts_collected;
    uint32_t level;        /* current aggregation level (1-based), 0 while collecting */
    uint32_t levels;       /* levels completed */
    uint64_t partitions;   /* partitions created, all levels */
    uint64_t tasks_issued; /* including re-issues */
    uint64_t tasks_reassigned;
    uint64_t tasks_done;
    uint64_t aggregator_tokens; /* distinct tokens that returned a task */
    uint64_t messages_in, messages_out;
    uint64_t bytes_in, bytes_out;
    size_t ciphertext_sizes_distinct; /* distinct collection ciphertext sizes seen */
    size_t bytes_held; /* heap the coordinator holds now: ciphertexts, their index, tasks */
    int failure;       /* the token or coordinator error that failed the query */
    char failure_msg[160];
};

typedef struct qr_coord qr_coord;

/* Start coordinating a SignedPlan (bytes are copied). now_ms: the clock. */
int qr_coord_new(qr_coord **out, const uint8_t *signed_plan, size_t len,
                 const struct qr_coord_config *cfg, int64_t now_ms);
void qr_coord_free(qr_coord *c);

/*
 * Handle one ServiceRequest; *reply (malloc'd) receives the ServiceReply.
 * Returns the reply's status. Bad input gets an error reply and changes
 * nothing; a reply is produced even then (unless QR_ERR_NOMEM).
 */
int qr_coord_handle(qr_coord *c, int64_t now_ms, const uint8_t *req, size_t req_len,
                    uint8_t **reply, size_t *reply_len);

/* Move time on: closes collection at the deadline, reassigns late tasks. */
void qr_coord_tick(qr_coord *c, int64_t now_ms);

void qr_coord_stats(const qr_coord *c, struct qr_coord_stats *out);

/* The SealedResult once the state is QR_DONE (borrowed pointer). */
int qr_coord_result(const qr_coord *c, const uint8_t **sealed, size_t *len);

/* The token ids (32 bytes each) of accepted contributions, in upload order. */
size_t qr_coord_contributors(const qr_coord *c, const uint8_t (**ids)[32]);

/* Whether the reply of the last qr_coord_handle() handed out work (a plan
 * to collect or a task), for a caller that asks several coordinators. */
int qr_coord_gave_work(const qr_coord *c);

/* ----------------------------------------------------------- service */

/*
 * The querier service's core: every query it holds (one coordinator each),
 * the admission of connections, and the researcher's requests, without I/O.
 * The networked shell (cohort-querier serve) gives it each message with the
 * connection it came on and the time, persists the journal record it
 * returns before sending the reply, and replays the journal at start.
 *
 * Connections are the shell's opaque ids (nng pipe ids). A connection is
 * admitted for one token: Hello gets a fresh challenge, Admit answers it
 * with the token's Attestation (its device certificate, which must chain to
 * a trusted token authority, and its signature over the challenge). Work,
 * uploads and task results are accepted only on an admitted connection and
 * only for its token. Submit, StatusRequest and FetchResult need no
 * admission: a plan is judged by its own signatures (as a token would,
 * tk_plan_verify), and a result is sealed to its researcher.
 */
struct qr_service_config {
    struct qr_coord_config coord;
    const uint8_t (*token_authorities)[32]; /* roots a token's device certificate may chain to */
    size_t n_token_authorities;
    const uint8_t (*plan_authorities)[32]; /* roots a researcher's chain may end at */
    size_t n_plan_authorities;
    size_t max_queries;     /* held at once, finished ones included; 0: 64 */
    size_t max_connections; /* connections with a challenge or an admission; 0: 65536 */
    int64_t challenge_ms;   /* how long a challenge may be answered; 0: 60,000 */
};

typedef struct qr_service qr_service;

int qr_service_new(qr_service **out, const struct qr_service_config *cfg);
void qr_service_free(qr_service *s);

/*
 * Handle one ServiceRequest from connection conn at now_ms. *reply
 * (malloc'd) receives the ServiceReply; the return value is its status.
 * When the request changed a query (a plan accepted, an upload or a task
 * result taken), *record (malloc'd) receives the JournalRecord to append
 * and make durable before the reply is sent; otherwise *record is NULL.
 * Bad input gets an error reply and changes nothing.
 */
int qr_service_handle(qr_service *s, uint64_t conn, int64_t now_ms, const uint8_t *req,
                      size_t req_len, uint8_t **reply, size_t *reply_len, uint8_t **record,
                      size_t *record_len);

/* A connection closed: forget its challenge and its admission. */
void qr_service_disconnect(qr_service *s, uint64_t conn);

/* Move every query's time on (deadlines, task timeouts). */
void qr_service_tick(qr_service *s, int64_t now_ms);

/*
 * Rebuild state from one journal record, in journal order, before serving.
 * Returns 0, or an error for a record that does not decode or does not
 * apply (a journal written by something else).
 */
int qr_service_replay(qr_service *s, const uint8_t *record, size_t len);

struct qr_service_query {
    uint8_t query_id[32];
    char study[QR_NAME_MAX + 1];
    char researcher[64];
    int64_t submitted_ms;
    struct qr_coord_stats stats;
};

/* The i-th query held (submission order); 0 or QR_ERR_ARG past the end. */
size_t qr_service_queries(const qr_service *s);
int qr_service_query(const qr_service *s, size_t i, struct qr_service_query *out);

/* Connections with a live challenge or an admission. */
size_t qr_service_connections(const qr_service *s);

/* ------------------------------------------------------------ results */

struct qr_value {
    enum qr_type type;
    int64_t i;      /* INT, DECIMAL (scaled), DATE, BOOL, TIMESTAMP */
    double d;       /* DOUBLE */
    unsigned scale; /* DECIMAL */
    char s[QR_TEXT_MAX + 1];
};

#define QR_MECHANISM_MAX 255u /* bytes of a result's mechanism text */

struct qr_result {
    size_t n_columns;
    char (*labels)[QR_NAME_MAX + 1];
    size_t n_rows;
    struct qr_value *cells; /* n_rows * n_columns, row-major, SELECT order */
    uint64_t participants;
    uint64_t groups_suppressed; /* 0 under differential privacy: not released */
    /*
     * Differential privacy (epsilon 0: the result is exact). The token's
     * account of its noise, and for each column (SELECT order) the bound
     * the noise stays within with probability error_confidence, in the
     * column's units (0: none stated, as for group columns and AVG).
     */
    double epsilon;
    char mechanism[QR_MECHANISM_MAX + 1];
    double *error_bound; /* n_columns entries when epsilon > 0, else NULL */
    double error_confidence;
};

/*
 * Verify a SealedResult: its signer's certificate chains to one of the
 * trusted token authorities, its signature covers this query, and it opens
 * with the researcher's key. Then lay it out in SELECT order with the plan's
 * ORDER BY and LIMIT applied.
 */
int qr_result_open(struct qr_result *out, const uint8_t *sealed, size_t sealed_len,
                   const uint8_t *signed_plan, size_t signed_plan_len,
                   const struct qr_identity *researcher, const uint8_t (*token_authorities)[32],
                   size_t n_token_authorities, int64_t now);
void qr_result_free(struct qr_result *r);

/*
 * A footnote for a table printed from r: under differential privacy, the
 * mechanism and the error bounds (one or two lines, each ending in a
 * newline); an empty string for an exact result. Always NUL-terminated;
 * returns the length it needed (as snprintf).
 */
size_t qr_result_footnote(char *buf, size_t cap, const struct qr_result *r);

/* Format one value as text into buf (always NUL-terminated). */
void qr_value_format(char *buf, size_t cap, const struct qr_value *v);

/*
 * Print a result: an aligned table with its footnote, CSV (a header line,
 * CRLF line ends, NULL as an empty field) or one JSON object {columns,
 * rows, participants, groups_suppressed, dp}.
 */
void qr_print_table(FILE *f, const struct qr_result *r);
void qr_print_csv(FILE *f, const struct qr_result *r);
void qr_print_json(FILE *f, const struct qr_result *r);
void qr_print_json_string(FILE *f, const char *s);
void qr_print_json_value(FILE *f, const struct qr_value *v);

#endif
