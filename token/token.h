/*
 * libcohort_token: the trusted core of a Cohort secure token.
 *
 * A token is a tamper-resistant device with a few tens of KiB of RAM, a
 * device key it generated itself, and an untrusted store that holds only
 * ciphertext. This library is the code that runs inside it. It does no I/O:
 * the host hands it a request message (proto/cohort.proto, TokenRequest) and
 * a working arena that stands for the device's RAM, and gets a response
 * message (TokenResponse) back. Nothing here calls malloc, opens a file or a
 * socket, or includes stdio, nng or libusb; a test enforces it.
 *
 * State
 * - struct tk_token is the token's state at rest: keys, certificate, trusted
 *   authorities, small replay and verification caches, and where its log
 *   stands. It is the device's secure memory; the caller allocates it (it
 *   is plain data, about 1.5 KiB) and must not read or change it except
 *   through this interface.
 * - The owner's tables (and, with the policy module, the consent policy and
 *   the audit log; with the document module, each document revision's key
 *   and metadata, token/tk_doc.c; the app credentials, token/tk_cred.c)
 *   live in a log on host-provided flash (struct tk_flash) that only ever
 *   receives records encrypted and authenticated under the token's storage
 *   key and hash-chained (token/tk_log.c).
 * - Who asks: a request without a credential comes from the host link,
 *   which is the owner's. A request with one (TokenRequest.auth: an app's,
 *   or an owner credential for the agent's HTTP API) is authenticated
 *   (TK_ERR_AUTH) and judged by its rules (TK_ERR_DENIED) inside the token.
 * - After every change the token commits: it hands the host an image of
 *   its state (struct tk_secure's save(), at most TK_IMAGE_MAX bytes) that
 *   names the log's end and chain head, and advances a monotonic counter.
 *   tk_token_open() starts a token again from its image and refuses a
 *   flash or image that was tampered with or rolled back. A real token
 *   keeps image and counter in the chip; a software token keeps them in
 *   files (participant/pt_soft.c), the simulator nowhere (NULL functions).
 * - The arena is the device's RAM. Every request starts with an empty arena,
 *   except while an aggregation session is open: the session keeps its group
 *   table at the start of the arena, and the caller must pass the same
 *   arena, unchanged, to every call until AggEnd (as RAM would be). A
 *   document session (DocBegin to the last DocWrite, DocOpen to the DocRead
 *   that is done) keeps its stream state there the same way. Any other
 *   request closes an open session, of either kind.
 *
 * Thread safety: calls on one token must be serialised; distinct tokens may
 * be used from distinct threads at once (libsodium must have been
 * initialised first, by tk_library_init()).
 */
#ifndef COHORT_TOKEN_H
#define COHORT_TOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Error codes: 0 or one of these, never anything else. */
enum tk_error {
    TK_OK = 0,
    TK_ERR_MALFORMED = -1,        /* a message that does not decode */
    TK_ERR_TRUNCATED = -2,        /* a message cut short */
    TK_ERR_TOO_LARGE = -3,        /* a message or field over its limit */
    TK_ERR_NO_MEMORY = -4,        /* the arena is too small for this work */
    TK_ERR_RESPONSE_SPACE = -5,   /* the caller's response buffer is too small */
    TK_ERR_NOT_PROVISIONED = -6,  /* keys or group secret missing */
    TK_ERR_PROVISIONED = -7,      /* provisioning happens once */
    TK_ERR_BAD_SIGNATURE = -8,    /* a plan signature that does not verify */
    TK_ERR_BAD_CERT = -9,         /* a certificate that does not verify or parse */
    TK_ERR_UNTRUSTED = -10,       /* a chain that ends at an unknown authority */
    TK_ERR_EXPIRED = -11,         /* a certificate or plan outside its validity */
    TK_ERR_SCOPE = -12,           /* a plan outside its researcher's scope */
    TK_ERR_ROLE = -13,            /* a certificate used for a role it lacks */
    TK_ERR_BAD_PLAN = -14,        /* a plan that is invalid for this token */
    TK_ERR_NO_TABLE = -15,        /* the plan's table is not on this token */
    TK_ERR_WRONG_QUERY = -16,     /* a ciphertext of another query */
    TK_ERR_BINDING = -17,         /* a ciphertext of another phase/level/partition */
    TK_ERR_DECRYPT = -18,         /* a ciphertext that fails authentication */
    TK_ERR_DUPLICATE = -19,       /* a tuple or partial given twice */
    TK_ERR_ORDER = -20,           /* inputs out of order or overlapping */
    TK_ERR_REPLAY = -21,          /* a partition this token already aggregated */
    TK_ERR_SESSION = -22,         /* no such aggregation session */
    TK_ERR_INCOMPLETE = -23,      /* a partial with missing chunks */
    TK_ERR_TOO_MANY_GROUPS = -24, /* more groups than the plan allows */
    TK_ERR_TOO_FEW = -25,         /* fewer participants than the plan requires */
    TK_ERR_UNSUPPORTED = -26,     /* a feature this token does not implement */
    TK_ERR_OVERFLOW = -27,        /* an aggregate that overflows int64 */
    TK_ERR_SCHEMA = -28,          /* rows that do not match their table */
    TK_ERR_STORE = -29,           /* the host flash failed (I/O) */
    TK_ERR_RANDOM = -30,          /* internal: randomness or crypto failure */
    TK_ERR_TAMPERED = -31,        /* the flash or secure image failed its integrity check */
    TK_ERR_ROLLBACK = -32,        /* the secure image is older than the monotonic counter */
    TK_ERR_POLICY = -33,          /* the owner's consent policy refuses the plan */
    TK_ERR_BUDGET = -34,          /* the owner's privacy budget would be exceeded */
    TK_ERR_NOT_FOUND = -35,       /* no such table or row */
    TK_ERR_CONFLICT = -36,        /* a document update on a stale revision */
    TK_ERR_AUTH = -37,   /* a credential that does not authenticate (unknown, expired, revoked) */
    TK_ERR_DENIED = -38, /* a credential whose rules do not allow the request */
};
#define TK_ERR_LAST TK_ERR_DENIED

/* Sizes and limits. */
#define TK_ARENA_DEFAULT (64u * 1024u)
#define TK_ARENA_MIN (16u * 1024u)
#define TK_REQUEST_MAX (1u << 20) /* no request above 1 MiB is even parsed */
#define TK_CERT_MAX 384u          /* serialized Certificate */
#define TK_MAX_AUTHORITIES 8u
#define TK_REPLAY_SLOTS 16u
#define TK_PLAN_CACHE 2u
#define TK_QUERY_ID_LEN 32u
#define TK_QUERY_TAG_LEN 8u
#define TK_SESSION_ID_LEN 16u
#define TK_CONTRIB_KEY_LEN 16u
#define TK_PK_LEN 32u

/*
 * The flash: untrusted storage the host provides, as numbered append-only
 * segments of bytes (a file each for a software token, memory in the
 * simulator). The token writes only authenticated ciphertext there and
 * trusts nothing it reads back. Every function returns 0 or a negative
 * value (any failure). size() of a missing segment is 0; remove() of a
 * missing segment succeeds; sync() makes what was appended durable (NULL
 * when the flash is memory).
 */
struct tk_flash {
    void *ctx;
    int (*append)(void *ctx, uint32_t seg, const uint8_t *data, size_t n);
    int (*read)(void *ctx, uint32_t seg, uint64_t off, uint8_t *out, size_t n);
    int (*size)(void *ctx, uint32_t seg, uint64_t *size);
    int (*truncate)(void *ctx, uint32_t seg, uint64_t size);
    int (*sync)(void *ctx, uint32_t seg);
    int (*remove)(void *ctx, uint32_t seg);
};

/*
 * The chip's own memory, as the host provides it. A real token keeps its
 * state image and a monotonic counter inside the chip; a software token
 * stands them in with two small files, the simulator with memory.
 * save() replaces the saved image atomically and durably (NULL: the image
 * is not kept anywhere but in struct tk_token, as in the simulator).
 * counter_get/counter_set read and advance the monotonic counter (NULL:
 * no counter, as in the simulator); counter_set never lowers it.
 * counter_get returns TK_ERR_TAMPERED when the counter's own integrity
 * check fails (a software token's counter file), any other negative value
 * when it cannot be read.
 */
struct tk_secure {
    void *ctx;
    int (*save)(void *ctx, const uint8_t *image, size_t n);
    int (*counter_get)(void *ctx, uint64_t *value);
    int (*counter_set)(void *ctx, uint64_t value);
};

struct tk_replay_slot {
    uint8_t query[TK_QUERY_TAG_LEN];
    uint32_t level;
    uint32_t partition;
};

struct tk_plan_slot {
    uint8_t digest[32]; /* of the exact SignedPlan bytes verified */
    int64_t expires_at;
};

/* Where the log stands: segment, bytes and records, and hash-chain head. */
struct tk_log_state {
    uint32_t segment;
    uint64_t length;
    uint64_t records;
    uint8_t head[32];
};

/* The token's state at rest. Private: use only through the functions below. */
struct tk_token {
    uint32_t magic;
    uint32_t flags;
    uint8_t sign_sk[64]; /* Ed25519 secret key (holds the public key too) */
    uint8_t sign_pk[TK_PK_LEN];
    uint8_t box_sk[32];
    uint8_t box_pk[32];
    uint8_t group_secret[32];
    uint8_t storage_key[32];
    uint16_t cert_len;
    uint8_t cert[TK_CERT_MAX];
    uint8_t n_authorities;
    uint8_t authorities[TK_MAX_AUTHORITIES][TK_PK_LEN];
    struct tk_replay_slot replay[TK_REPLAY_SLOTS];
    uint32_t replay_next;
    struct tk_plan_slot plans[TK_PLAN_CACHE];
    uint32_t plan_next;
    uint8_t session[TK_SESSION_ID_LEN]; /* open aggregation session, or zeros */
    struct tk_log_state log;            /* what is committed */
    struct tk_log_state work;           /* what is appended, committed or not */
    uint64_t counter;                   /* of the last committed image */
    uint64_t next_row_id;
    uint64_t audit_seq;
    bool tampered;            /* the flash failed a check: refuse to answer from it */
    bool batch_open;          /* a LoadTable batch with `more` is pending */
    bool store_failed;        /* a commit failed after the image may have been saved: reopen */
    uint64_t batch_row_id;    /* next_row_id when the pending batch began */
    uint8_t known_schema[32]; /* digest of a schema known to be declared in the log, or zeros */
    struct tk_flash flash;
    struct tk_secure secure;
};

/* Initialise libsodium once per process. Returns 0 or TK_ERR_RANDOM. */
int tk_library_init(void);

/*
 * Make a new token over an empty flash: its storage keys are generated
 * inside, an empty log is started in segment 0 and the first image is
 * committed (saved, counter set to 1). The caller owns tk, the flash and
 * the secure memory; tk_token_wipe() erases the secrets before the memory
 * is reused. Returns 0, TK_ERR_STORE (the flash is not empty or failed) or
 * TK_ERR_MALFORMED (a missing interface).
 */
int tk_token_init(struct tk_token *tk, const struct tk_flash *flash, const struct tk_secure *secure,
                  uint8_t *arena, size_t arena_len);

/*
 * Reopen a token from its saved image (the caller owns tk and the
 * interfaces, as for tk_token_init; the arena is wiped before this
 * returns). Checks the image's digest
 * (TK_ERR_TAMPERED), its counter against the monotonic counter
 * (TK_ERR_ROLLBACK when the image is older; an image exactly one ahead
 * finishes a commit that was interrupted), then reads the whole log
 * through the arena and checks every record and the hash chain against
 * the image (TK_ERR_TAMPERED: truncated, reordered, substituted,
 * duplicated or rolled-back flash). Bytes past the committed end are an
 * interrupted write: they are cut off. Segments other than the live one
 * are removed (an interrupted compaction). The caller owns tk and the
 * interfaces, as for tk_token_init; the arena is wiped before this
 * returns. Returns 0 or that error (TK_ERR_STORE when the host's flash or
 * counter fails); on an error tk is wiped. Once open, every read checks the
 * flash again: a token that finds it changed answers TK_ERR_TAMPERED to
 * every request until it is reopened.
 */
int tk_token_open(struct tk_token *tk, const uint8_t *image, size_t image_len,
                  const struct tk_flash *flash, const struct tk_secure *secure, uint8_t *arena,
                  size_t arena_len);

/* The image of the token's committed state, as save() receives it (for
 * tests and hosts without save()): the replay and plan caches as they are
 * now, the rest as of the last commit (a pending LoadTable batch is not
 * in it). Returns 0, TK_ERR_RESPONSE_SPACE or TK_ERR_NOT_PROVISIONED. */
int tk_token_image(const struct tk_token *tk, uint8_t *out, size_t cap, size_t *len);
#define TK_IMAGE_MAX 2048u

void tk_token_wipe(struct tk_token *tk);

/*
 * The entry point. Decodes a TokenRequest of req_len bytes, does the work
 * inside arena[0..arena_len), and writes a TokenResponse into resp (at most
 * resp_cap bytes; *resp_len is set). Returns the response's status: 0 or a
 * negative TK_ERR_*. On an error the token's state is unchanged and the
 * response carries the status alone; if even that does not fit in resp,
 * TK_ERR_RESPONSE_SPACE is returned and *resp_len is 0. *arena_peak, if not
 * NULL, receives the bytes of the arena the call used.
 */
int tk_dispatch(struct tk_token *tk, uint8_t *arena, size_t arena_len, const uint8_t *req,
                size_t req_len, uint8_t *resp, size_t resp_cap, size_t *resp_len,
                size_t *arena_peak);

/* A short constant description of a code, and its symbolic name. */
const char *tk_strerror(int code);
const char *tk_errname(int code);

/*
 * Host-side helpers that are pure functions of public data, shared so that
 * certificate and result checks exist in one place only.
 *
 * tk_cert_verify checks that cert (a serialized Certificate) parses, is
 * signed by issuer_pk (32 bytes), and is valid at `now`; on success it
 * copies the subject's keys and role out. scratch is working memory (2 KiB
 * is plenty).
 */
struct tk_cert_info {
    int role;
    uint8_t sign_pk[TK_PK_LEN];
    uint8_t box_pk[32];
    uint8_t issuer_pk[TK_PK_LEN];
    int64_t not_before;
    int64_t not_after;
    char subject[64];
};
int tk_cert_verify(struct tk_cert_info *out, const uint8_t *cert, size_t cert_len,
                   const uint8_t issuer_pk[TK_PK_LEN], int64_t now, uint8_t *scratch,
                   size_t scratch_len);

/*
 * tk_plan_verify judges a SignedPlan (serialized) as a token trusting these
 * authorities would at `now` for collection: chain, signatures, validity,
 * the plan itself and the researcher's scope; not any owner's consent. A
 * querier service uses it to refuse a plan no token would take, with the
 * token's own error code. scratch must hold the decoded plan (64 KiB is
 * plenty for the largest plan). *researcher receives the researcher
 * certificate's subject (NUL-terminated) when it is not NULL.
 */
int tk_plan_verify(const uint8_t *signed_plan, size_t len, const uint8_t (*authorities)[TK_PK_LEN],
                   size_t n_authorities, int64_t now, uint8_t *scratch, size_t scratch_len,
                   char researcher[64]);

/* The digest a result signature covers: BLAKE2b-256 of the sealed parts in
 * order, each preceded by its length as 8 bytes little-endian. */
void tk_result_digest(uint8_t out[32], const uint8_t *const *parts, const size_t *lens, size_t n);

/*
 * The grouping protocols' shapes, for hosts that lay their work out as
 * tokens will check it (the querier's coordinator):
 * - tk_plan_emit: ciphertexts in one contribution for a plan's protocol
 *   name and parameters (0 for an unknown protocol or out-of-range values);
 * - tk_shuffle_capacity: the largest shuffle batch a token with an arena
 *   of arena_len bytes holds, for collected ciphertexts whose box is
 *   box_len bytes.
 */
uint32_t tk_plan_emit(const char *protocol, uint32_t tuples, uint32_t buckets, uint32_t fakes);
uint32_t tk_shuffle_capacity(size_t arena_len, size_t box_len);

/*
 * The fixed sizes every token derives from a plan, as a pure function of
 * the plan's shape, for hosts that predict what a study costs (the
 * querier's cost model): the protocol's name, the GROUP BY columns and how
 * many of them are TEXT (a group key's bound depends only on that), the
 * aggregates, max_groups (taken as 1 without GROUP BY), the shuffle's
 * batch_min (0 for other protocols) and the HAVING program's length. A
 * token that loads a plan of that shape computes exactly these.
 * - group_bound: an encoded group, at most;
 * - tuple_plain_len: the plaintext of every collected tuple (a collected
 *   ciphertext's box is 16 bytes more);
 * - chunk_plain_len, groups_per_chunk: every partial chunk's plaintext,
 *   and the groups one holds;
 * - nchunks: the chunks of every s_agg partial (tagged partials have as
 *   many as the groups they hold need, at least one);
 * - aggregate_ram: the arena a token needs to aggregate the plan; a token
 *   whose arena is smaller refuses to contribute (TK_ERR_NO_MEMORY);
 * - shuffle_item_len, shuffle_overhead: a shuffle session's arena per item
 *   of its batch (tk_shuffle_capacity divides by it) and besides its items;
 *   a shuffling token also holds a 4-byte index per item.
 * Returns TK_OK; TK_ERR_MALFORMED for an unknown protocol or values out of
 * a plan's limits (text_columns > group_columns among them);
 * TK_ERR_BAD_PLAN when tokens would refuse the shape (a partial of more
 * than their chunk limit). *out is zeroed on an error.
 */
struct tk_layout {
    size_t group_bound;
    size_t tuple_plain_len;
    size_t chunk_plain_len;
    uint32_t groups_per_chunk;
    uint32_t nchunks;
    size_t aggregate_ram;
    size_t shuffle_item_len;
    size_t shuffle_overhead;
};
int tk_layout_of(struct tk_layout *out, const char *protocol, uint32_t group_columns,
                 uint32_t text_columns, uint32_t n_aggs, uint32_t max_groups, uint32_t batch_min,
                 uint32_t n_having);

/*
 * Group keys and tags, as tokens make them, for hosts that must agree with
 * them: the querier's ed_hist bounds, and the simulator's leakage report,
 * which grants its attacker the tag of every group (a worst case).
 * - tk_key_encode: one value's canonical key (type is proto's ValueType;
 *   text up to 64 bytes); a group's key is its columns' keys in GROUP BY
 *   order. Writes at most TK_KEY_VALUE_MAX bytes; returns the length, or 0
 *   for a value no token encodes.
 * - tk_group_tag: the tag the real tuples of the group with that key carry
 *   under a plan (serialized Plan): their bucket's for rnf_noise, c_noise
 *   and ed_hist, the group's own for shuffle. tk_dummy_tag: the tag of the
 *   shuffle's dummies. group_secret is the deployment's. scratch (64 KiB
 *   is plenty) holds the decoded plan. 0, TK_ERR_MALFORMED or
 *   TK_ERR_UNSUPPORTED (s_agg: no tags).
 */
#define TK_KEY_VALUE_MAX 66u
size_t tk_key_encode(uint8_t *out, int type, unsigned scale, int64_t i, const uint8_t *s,
                     size_t len);
int tk_group_tag(uint8_t tag[16], const uint8_t group_secret[32], const uint8_t *plan,
                 size_t plan_len, const uint8_t *key, size_t key_len, uint8_t *scratch,
                 size_t scratch_len);
void tk_dummy_tag(uint8_t tag[16], const uint8_t group_secret[32], const uint8_t query_id[32]);

/* The query id of a plan: BLAKE2b-256 of the serialized Plan bytes. */
void tk_query_id(uint8_t out[TK_QUERY_ID_LEN], const uint8_t *plan, size_t plan_len);

/* Domain-separation prefixes of every signature Cohort makes. */
#define TK_SIG_CERT "cohort-cert-v1"
#define TK_SIG_PLAN "cohort-plan-v1"
#define TK_SIG_CSR "cohort-csr-v1"
#define TK_SIG_RESULT "cohort-result-v1"
#define TK_SIG_ADMIT "cohort-admit-v1"
#define TK_SIG_SHARE "cohort-share-v1"
#define TK_SIG_SHARE_WRITE "cohort-share-write-v1"
#define TK_CHALLENGE_MIN 16u /* bytes of a service's admission challenge */
#define TK_CHALLENGE_MAX 64u

#endif
