/*
 * Private declarations of libcohort_token.
 *
 * Memory. All working memory comes from one arena (struct tk_arena) laid
 * over the caller's RAM buffer. It has two ends: the low end holds what must
 * survive from one call to the next of an aggregation session (the session
 * header, the plan summary, the group table and its key heap); the high end
 * is scratch for the current call (decoded messages, plaintexts) and is
 * emptied when the call returns. When the two ends meet the work fails with
 * TK_ERR_NO_MEMORY: nothing is ever allocated anywhere else.
 *
 * Trust. Everything that reaches these functions from the request is
 * hostile until checked: sizes are bounded before anything is decoded,
 * every ciphertext is authenticated before its plaintext is used, and every
 * check happens before any state changes.
 */
#ifndef COHORT_TK_INT_H
#define COHORT_TK_INT_H

#include <stdbool.h>
#include <string.h>

#include <sodium.h>

#include "proto/cohort.pb-c.h"
#include "token/token.h"

#define TK_MAGIC 0x544b4331u /* "TKC1" */
#define TK_FLAG_KEYS 1u
#define TK_FLAG_PROVISIONED 2u

/* Limits of what the token accepts. */
#define TK_PLAN_MAX 16384u        /* serialized Plan */
#define TK_SIGNED_PLAN_MAX 20480u /* serialized SignedPlan */
#define TK_MAX_CHAIN 4u
#define TK_NAME_MAX 32u    /* table and column names */
#define TK_STUDY_MAX 63u   /* study names */
#define TK_REASON_MAX 159u /* a refusal's reason for the owner */
#define TK_TEXT_MAX 64u    /* text values */
#define TK_MAX_COLUMNS 32u
#define TK_MAX_GROUP_COLS 8u
#define TK_MAX_AGGS 16u
#define TK_PROGRAM_MAX 256u
#define TK_IN_LIST_MAX 64u
#define TK_STACK_MAX 32u
#define TK_MAX_TUPLES 64u        /* tuples_per_participant */
#define TK_MAX_EMIT 4096u        /* ciphertexts in one contribution (c_noise: buckets x tuples) */
#define TK_MAX_BUCKETS 4096u     /* tag_buckets, and ed_hist's bounds + 1 */
#define TK_MAX_FAKES 256u        /* rnf_noise fakes */
#define TK_MAX_ROUNDS 8u         /* shuffle_rounds */
#define TK_TAG_BYTES 16u         /* a det tag the service sees */
#define TK_ORIGIN_LEN 16u        /* a tuple's origin: keyed hash of (pseudonym, chunk) */
#define TK_MAX_GROUPS 65536u     /* max_groups */
#define TK_RECORD_MAX 8192u      /* plaintext of one store record */
#define TK_CHUNK_PLAIN_MAX 4096u /* plaintext of one partial chunk */
#define TK_RESULT_PART 4096u     /* plaintext of one sealed part of a result */
#define TK_MAX_CHUNKS 4096u
#define TK_KEY_LEN 20u /* contribution key: pseudonym (16) || chunk (4, big-endian) */
#define TK_GROUP_KEY_MAX (TK_MAX_GROUP_COLS * (2u + TK_TEXT_MAX))
#define TK_NONCE_LEN crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define TK_TAG_LEN crypto_aead_xchacha20poly1305_ietf_ABYTES

/* ------------------------------------------------------------- arena */

struct tk_arena {
    uint8_t *base;
    size_t cap;
    size_t lo;   /* bytes used from the bottom (session data) */
    size_t hi;   /* first byte used from the top (scratch); cap when empty */
    size_t peak; /* most bytes in use at once */
    bool exhausted;
};

void tk_arena_init(struct tk_arena *a, uint8_t *base, size_t cap, size_t lo);
void *tk_arena_scratch(struct tk_arena *a, size_t n); /* from the top, 8-aligned */
void *tk_arena_keep(struct tk_arena *a, size_t n);    /* from the bottom, 8-aligned */
size_t tk_arena_mark(const struct tk_arena *a);
void tk_arena_release(struct tk_arena *a, size_t mark);
ProtobufCAllocator tk_arena_allocator(struct tk_arena *a);
/* Unpack a message into scratch; NULL if it does not decode or fit. */
ProtobufCMessage *tk_unpack(struct tk_arena *a, const ProtobufCMessageDescriptor *d,
                            const uint8_t *data, size_t len, int *err);

/* ------------------------------------------------- protobuf wire writer */

struct tk_wbuf {
    uint8_t *p;
    size_t cap;
    size_t len;
    bool overflow;
};

void tk_w_varint(struct tk_wbuf *w, uint64_t v);
void tk_w_tag(struct tk_wbuf *w, uint32_t field, uint32_t wire_type);
void tk_w_uint(struct tk_wbuf *w, uint32_t field, uint64_t v);
void tk_w_sint(struct tk_wbuf *w, uint32_t field, int64_t v);
void tk_w_bytes(struct tk_wbuf *w, uint32_t field, const uint8_t *p, size_t n);
/* A length-delimited field whose n payload bytes the caller writes next. */
void tk_w_open(struct tk_wbuf *w, uint32_t field, size_t n);
/* Reserve n bytes to be filled later; NULL on overflow. */
uint8_t *tk_w_reserve(struct tk_wbuf *w, size_t n);
void tk_w_message(struct tk_wbuf *w, uint32_t field, const ProtobufCMessage *m);
size_t tk_varint_len(uint64_t v);
size_t tk_field_len(uint32_t field, size_t payload); /* tag + length + payload */

/* A reader over one level of protobuf fields (for streamed requests). */
struct tk_wfield {
    uint32_t field;
    uint32_t wire_type;
    uint64_t varint;
    const uint8_t *data;
    size_t len;
};
/* Next field of buf at *pos: 1 if one was read, 0 at the end, <0 on error. */
int tk_wire_next(const uint8_t *buf, size_t len, size_t *pos, struct tk_wfield *f);
/* One varint at buf[*pos]: 0, or TK_ERR_TRUNCATED / TK_ERR_MALFORMED. */
int tk_wire_varint(const uint8_t *buf, size_t len, size_t *pos, uint64_t *v);
/*
 * A length-delimited field whose length is not known yet: tk_w_begin
 * reserves room for its header and returns where it starts; the payload is
 * written next; tk_w_end writes the header and moves the payload down.
 * Fields up to 15 and payloads under 2^28 bytes.
 */
size_t tk_w_begin(struct tk_wbuf *w);
void tk_w_end(struct tk_wbuf *w, uint32_t field, size_t start);
/* The same for any field number (a response's body, fields over 15):
 * tk_w_begin_wide reserves TK_W_WIDE_ROOM bytes, room for a 2-byte tag
 * and a 5-byte length. tk_w_end_wide does nothing once w has overflowed. */
#define TK_W_WIDE_ROOM 7u
size_t tk_w_begin_wide(struct tk_wbuf *w);
void tk_w_end_wide(struct tk_wbuf *w, uint32_t field, size_t start);
/* Bytes still free in w. */
size_t tk_w_room(const struct tk_wbuf *w);

/* Fixed-size little-endian integers (record framing, associated data). */
void tk_put_le32(uint8_t p[4], uint32_t v);
void tk_put_le64(uint8_t p[8], uint64_t v);
uint32_t tk_get_le32(const uint8_t p[4]);
uint64_t tk_get_le64(const uint8_t p[8]);

/* ------------------------------------------------------------ values */

struct tk_value {
    uint8_t type;  /* COHORT__VALUE_TYPE__* */
    uint8_t scale; /* DECIMAL */
    uint16_t len;  /* TEXT */
    int64_t i;
    double d;
    const uint8_t *s;
};

int tk_value_from_pb(struct tk_value *v, const Cohort__Value *pb);
void tk_value_to_pb(Cohort__Value *pb, const struct tk_value *v);
/* Three-way compare of two non-NULL values of comparable types; 2 if not comparable. */
int tk_value_cmp(const struct tk_value *a, const struct tk_value *b);
/* Canonical group-key encoding: type byte, then 8 bytes LE or length + text. */
size_t tk_key_put(uint8_t *out, const struct tk_value *v);
/* Text without stdio: append s (or v in decimal) to out[at..cap), keeping
 * it NUL-terminated and cutting what does not fit; returns the new length. */
size_t tk_text_put(char *out, size_t at, size_t cap, const char *s);
size_t tk_text_u64(char *out, size_t at, size_t cap, uint64_t v);
/* Whether s is in list (n names); an empty list holds every name. */
bool tk_name_listed(char *const *list, size_t n, const char *s);
/* Decode one value at key[*pos]; returns 0 or TK_ERR_MALFORMED. */
int tk_key_get(struct tk_value *v, const uint8_t *key, size_t key_len, size_t *pos);

/* ------------------------------------------------------------- plans */

struct tk_instr {
    uint8_t op;
    uint16_t index; /* column: plan schema index; HAVING column: group index; aggregate */
    struct tk_value value;
    const struct tk_value *list;
    uint16_t n_list;
};

struct tk_column {
    char name[TK_NAME_MAX + 1];
    uint8_t type;
    uint8_t scale;
};

struct tk_agg {
    uint8_t func;
    int16_t col; /* plan schema index, -1 for COUNT(*) and COUNT(DISTINCT participant) */
};

/* A verified plan in the token's own terms (all pointers into the arena). */
/* The grouping protocols (Plan.protocol). */
enum tk_protocol {
    TK_PROTO_S_AGG = 0,
    TK_PROTO_RNF_NOISE = 1,
    TK_PROTO_C_NOISE = 2,
    TK_PROTO_ED_HIST = 3,
    TK_PROTO_SHUFFLE = 4,
};

struct tk_plan {
    uint8_t query_id[TK_QUERY_ID_LEN];
    /*
     * The grouping protocol and its parameters. `emit` is the number of
     * ciphertexts every contribution carries (s_agg and shuffle: tuples;
     * rnf_noise: tuples + fakes; c_noise: buckets x tuples; ed_hist:
     * tuples). ed_hist's bounds point into the decoded plan in scratch:
     * valid only during the call that loaded it (collection).
     */
    uint8_t protocol;
    uint8_t rounds;
    uint16_t batch_min;
    uint16_t buckets; /* rnf_noise, c_noise: hash buckets; ed_hist: n_bounds + 1 */
    uint16_t fakes;
    uint16_t emit;
    uint16_t n_bounds;
    const ProtobufCBinaryData *bounds;
    char table[TK_NAME_MAX + 1];
    int64_t issued_at, deadline, expires_at;
    uint32_t tuples; /* per participant */
    uint32_t max_groups;
    uint32_t min_participants, min_group_size;
    uint16_t n_columns;
    struct tk_column columns[TK_MAX_COLUMNS];
    uint16_t n_group;
    uint16_t group_col[TK_MAX_GROUP_COLS];
    uint16_t n_aggs;
    struct tk_agg aggs[TK_MAX_AGGS];
    uint16_t n_where, n_having;
    const struct tk_instr *where;
    const struct tk_instr *having;
    uint8_t researcher_box_pk[32];
    /* Who asks, for the owner's policy and audit log: pointers into the
     * decoded plan and chain in scratch, valid only during the call that
     * loaded the plan (an aggregation session keeps none of them). */
    const uint8_t *researcher_pk; /* TK_PK_LEN bytes */
    const uint8_t *root_pk;       /* the trusted authority the chain ends at */
    const char *researcher;       /* the researcher certificate's subject */
    const char *study;
    const char *sql; /* the plan's SQL text, sql_len bytes */
    size_t sql_len;
    /*
     * Differential privacy (epsilon 0: none; see tk_noise.c). Under it a
     * participant adds to at most `tuples` groups, at most max_rows rows to
     * each, and every SUM or AVG argument is clamped into [-clamp, clamp]
     * (aggregate i, the column's scaled units). The budget is split equally
     * between n_noisy quantities.
     */
    double epsilon;
    uint32_t max_rows;
    uint16_t n_noisy;
    int64_t clamp[TK_MAX_AGGS];
    /* The fixed sizes every token derives alike from the plan. */
    size_t group_bound;     /* encoded GroupPartial, at most */
    size_t tuple_plain_len; /* framed TuplePlain */
    size_t chunk_plain_len; /* framed PartialPlain */
    uint32_t groups_per_chunk;
    uint32_t nchunks;
    size_t aggregate_ram; /* arena an aggregation session needs, estimated */
};

enum tk_plan_use { TK_PLAN_COLLECT, TK_PLAN_AGGREGATE };

/*
 * Verify a SignedPlan (signature, chain to a trusted authority, validity,
 * scope) and decode it into *plan (arena scratch). Caches the verdict.
 */
int tk_plan_load(struct tk_token *tk, struct tk_arena *a, struct tk_plan *plan,
                 const Cohort__SignedPlan *sp, int64_t now, enum tk_plan_use use);
/* Decode and check a WHERE (having = false) or HAVING program against
 * plan's columns; the program lives in arena scratch. */
int tk_program_load(const struct tk_instr **out, uint16_t *n_out, struct tk_arena *a,
                    const struct tk_plan *plan, Cohort__Instr *const *in, size_t n, bool having);
/* Copy the HAVING program (and its constants) to the arena's low end. */
int tk_plan_keep_having(struct tk_arena *a, struct tk_plan *plan);

/* ------------------------------------------------------------ crypto */

struct tk_query_keys {
    uint8_t ndet[32];
    uint8_t pseudonym[32];
    uint8_t tag[32];   /* det tags and the hash that buckets groups */
    uint8_t check[32]; /* tuple origins (two SipHash keys) */
};

void tk_query_keys(struct tk_query_keys *k, const uint8_t group_secret[32],
                   const uint8_t query_id[TK_QUERY_ID_LEN]);
void tk_query_keys_wipe(struct tk_query_keys *k);

/* The fields a ciphertext is bound to. */
struct tk_binding {
    const uint8_t *query_id;
    uint32_t phase, level, partition, chunk, nchunks;
    const uint8_t *key;
    size_t key_len;
    const uint8_t *tag; /* TK_TAG_BYTES, or NULL */
};

/*
 * Tags and origins of the tagged protocols (tk_crypto.c). A det tag is a
 * keyed BLAKE2b-128 under the query's tag key of a bucket number (rnf_noise,
 * c_noise, ed_hist), of a group key (shuffle) or of the word "dummy"
 * (shuffle's dummies); equal inputs give equal tags within a query, and
 * nothing else can be learnt from them without the key. A tuple's origin is
 * a 128-bit SipHash of (pseudonym, chunk) under the query's check key: the
 * element of the multiset the filtering token checks.
 */
void tk_tag_bucket(uint8_t tag[TK_TAG_BYTES], const struct tk_query_keys *k, uint32_t bucket);
void tk_tag_group(uint8_t tag[TK_TAG_BYTES], const struct tk_query_keys *k, const uint8_t *key,
                  size_t key_len);
void tk_tag_dummy(uint8_t tag[TK_TAG_BYTES], const struct tk_query_keys *k);
void tk_origin(uint8_t out[TK_ORIGIN_LEN], const struct tk_query_keys *k,
               const uint8_t pseudonym[TK_CONTRIB_KEY_LEN], uint32_t chunk);
/* Canonical group keys in byte order, a shorter prefix first (ed_hist's
 * bucket order): <0, 0 or >0. */
int tk_key_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl);
/* The bucket of a canonical group key: rnf_noise and c_noise hash it into
 * plan->buckets; ed_hist counts the bounds at or below it. */
uint32_t tk_bucket_of(const struct tk_plan *plan, const struct tk_query_keys *k, const uint8_t *key,
                      size_t key_len);

/* nDet encryption into out (plain_len + TK_TAG_LEN bytes); nonce is generated. */
void tk_ndet_seal(uint8_t *out, uint8_t nonce[TK_NONCE_LEN], const uint8_t *plain, size_t plain_len,
                  const struct tk_binding *b, const uint8_t key[32]);
int tk_ndet_open(uint8_t *plain, const uint8_t *box, size_t box_len,
                 const uint8_t nonce[TK_NONCE_LEN], const struct tk_binding *b,
                 const uint8_t key[32]);

/* Certificates: decode, check the signature by issuer_pk (skipped when
 * issuer_pk is NULL: shape and validity only) and the validity period. */
int tk_cert_check(Cohort__CertBody **body, struct tk_arena *a, const Cohort__Certificate *c,
                  const uint8_t *issuer_pk, int64_t now);
/* Sign "prefix || parts..." with the device key. */
int tk_sign_parts(uint8_t sig[64], const uint8_t sk[64], const char *prefix,
                  const uint8_t *const *parts, const size_t *lens, size_t n);
/* Verify sig over prefix || msg (msg of any size; copied into scratch). */
int tk_verify_signed(struct tk_arena *a, const uint8_t sig[64], const uint8_t pk[32],
                     const char *prefix, const uint8_t *msg, size_t len);

/* ------------------------------------------------------- expressions */

/* Evaluate a program over a row (WHERE) or a group (HAVING). *out is
 * 1 for true, 0 for false or unknown. */
struct tk_eval_ctx {
    const struct tk_value *columns; /* WHERE: row values by plan schema index */
    const struct tk_value *groups;  /* HAVING: group values */
    const struct tk_value *aggs;    /* HAVING: aggregate values */
};
int tk_eval(int *out, const struct tk_instr *prog, size_t n, const struct tk_eval_ctx *ctx);
/* Static check: types, stack depth, one boolean left. */
int tk_program_check(const struct tk_instr *prog, size_t n, const struct tk_plan *plan,
                     bool having);

/* ------------------------------------------------------ group tables */

struct tk_agg_state {
    int64_t count;
    int64_t value;
};

struct tk_group {
    uint32_t hash;
    uint16_t key_len;
    uint16_t pad;
    uint32_t key_off; /* into the key heap */
    uint32_t unused;
    uint64_t participants;
    uint64_t rows;
    struct tk_agg_state aggs[];
};

struct tk_groups {
    uint32_t cap; /* most groups */
    uint32_t n;
    uint32_t n_aggs;
    uint32_t slots;  /* index size: a power of two >= 2 * cap */
    uint32_t *index; /* slot -> group number + 1, 0 empty */
    uint8_t *entries;
    size_t stride;
    uint8_t *keys; /* key heap; NULL: keys grow at the arena's low end */
    size_t keys_len, keys_cap;
    struct tk_arena *arena; /* for a growing key heap: set at every call */
};

/* keep: entries at the arena's low end and keys growing there (key_heap
 * ignored); else everything in scratch with a fixed key heap. */
int tk_groups_init(struct tk_groups *g, struct tk_arena *a, uint32_t cap, uint32_t n_aggs,
                   size_t key_heap, bool keep);
struct tk_group *tk_groups_at(const struct tk_groups *g, uint32_t i);
const uint8_t *tk_groups_key(const struct tk_groups *g, const struct tk_group *e);
/* Find or insert a group by canonical key. */
int tk_groups_get(struct tk_group **out, struct tk_groups *g, const uint8_t *key, size_t key_len);
/* Merge a GroupPartial (decoded) into the table. */
int tk_groups_merge_pb(struct tk_groups *g, const struct tk_plan *plan,
                       const Cohort__GroupPartial *p);
/* Merge every GroupPartial of a PartialPlain's fields (field 4, the others
 * skipped), decoding one at a time in scratch. */
int tk_groups_merge_fields(struct tk_groups *g, const struct tk_plan *plan, struct tk_arena *a,
                           const uint8_t *body, size_t len);
/* The canonical key of a GroupPartial's values. */
int tk_group_key_from_pb(uint8_t *key, size_t *key_len, const struct tk_plan *plan,
                         const Cohort__GroupPartial *p);
/* Fill a GroupPartial (scratch) from a table entry. */
int tk_group_to_pb(Cohort__GroupPartial *out, struct tk_arena *a, const struct tk_plan *plan,
                   const struct tk_groups *g, const struct tk_group *e);
/* An aggregate's final value (NULL when it saw no rows). */
void tk_agg_final(struct tk_value *out, const struct tk_plan *plan, uint32_t i,
                  const struct tk_agg_state *s);
int tk_agg_merge(struct tk_agg_state *into, const struct tk_agg_state *from, uint8_t func);

/* Fixed-size plaintext frames: 2-byte length, message, zeros. */
int tk_frame_pack(uint8_t *out, size_t frame_len, const ProtobufCMessage *m);
int tk_frame_body(const uint8_t **body, size_t *body_len, const uint8_t *frame, size_t frame_len);

/* --------------------------------------------------------- log store */

/*
 * The log (tk_log.c): authenticated, encrypted, hash-chained records on the
 * host's flash. Appends go to tk->work; tk_log_commit makes them durable
 * and moves tk->log up to tk->work (sync the flash, save the image with the
 * next counter value, advance the monotonic counter); tk_log_abort forgets
 * whatever was appended since the last commit (the bytes are cut off at
 * once when the flash allows it, else before the next append). Nothing
 * appended is visible to the owner or a study before its commit returns 0.
 *
 * A record on flash is [box length: 4 bytes LE][nonce: 24][box], the box
 * being XChaCha20-Poly1305 of a packed StoreRecord of at most TK_RECORD_MAX
 * bytes. The token writes row batches of at most TK_RECORD_FILL bytes, so
 * that a rewrite can hold one record read and one being written in the
 * least arena.
 */
#define TK_RECORD_MAX_PLAIN TK_RECORD_MAX
#define TK_RECORD_FILL 4096u /* row batches the token writes, at most */
#define TK_REC_HDR (4u + TK_NONCE_LEN)
#define TK_MAX_TABLES 64u
#define TK_SCAN_STOP 1 /* a scan callback's "seen enough" */

int tk_log_append(struct tk_token *tk, struct tk_arena *a, const Cohort__StoreRecord *rec);
/*
 * Append the plaintext at buf + TK_REC_HDR (plain_len bytes; the buffer
 * has TK_REC_HDR bytes before it and TK_TAG_LEN after it to spare): it is
 * sealed in place, so the caller's plaintext is gone when this returns.
 */
int tk_log_append_sealed(struct tk_token *tk, uint8_t *buf, size_t plain_len);
/* Commit: also for a change of the token's own state that appended no
 * record (provisioning, a cache): the image is saved with the next counter. */
int tk_log_commit(struct tk_token *tk, struct tk_arena *a);
void tk_log_abort(struct tk_token *tk);

/*
 * Stream every committed record (plus, when include_work, those appended
 * since) through fn, one at a time: each record's plaintext is decrypted
 * into arena scratch, checked against its place in the hash chain, and
 * released (with whatever fn allocated in scratch) before the next. At the
 * end the chain head must match the image's: a scan that returns 0 has
 * seen exactly the committed log. A failed check is TK_ERR_TAMPERED (and
 * sets tk->tampered). fn returns 0 to go on, TK_SCAN_STOP when it has seen
 * enough (the rest of the log is then only hashed, not decrypted, and the
 * scan still returns 0 only if the chain holds), or an error, which stops
 * the scan at once and is returned.
 */
typedef int (*tk_record_fn)(void *ctx, struct tk_arena *a, const uint8_t *plain, size_t len,
                            uint64_t index);
int tk_log_scan(struct tk_token *tk, struct tk_arena *a, bool include_work, tk_record_fn fn,
                void *ctx);

/*
 * Compaction: write a new segment (segment + 1, a fresh chain) with what
 * keep() decides for each committed record, commit it, then remove the old
 * segment. keep() sets *keep to copy the record as it is; whatever else it
 * wants written in its place it appends itself (tk_log_append or
 * tk_log_append_sealed go to the new segment during a rewrite). keep() is
 * called once more at the end of the pass with plain == NULL, to flush; if
 * it sets *keep then, the old log is read again from the start for another
 * pass (compaction writes one table per pass). The old
 * segment stays intact until the new one is committed: a crash at any
 * point leaves either the old log or the new one. There must be nothing
 * appended and not committed when it is called.
 */
typedef int (*tk_keep_fn)(void *ctx, struct tk_arena *a, const uint8_t *plain, size_t len,
                          bool *keep);
int tk_log_rewrite(struct tk_token *tk, struct tk_arena *a, tk_keep_fn keep, void *ctx);

/* The oneof field of a StoreRecord's plaintext (a TK_REC_* kind, 1 to
 * TK_REC_LAST) and its payload, without decoding it; TK_ERR_TAMPERED if the
 * plaintext is not one StoreRecord of a known kind. */
int tk_record_body(const uint8_t *plain, size_t len, uint32_t *kind, const uint8_t **body,
                   size_t *body_len);
/* The same for scans that want one kind: 1 with the payload of a record of
 * that kind, 0 for a record of another kind, or TK_ERR_TAMPERED. */
int tk_record_kind(const uint8_t *plain, size_t len, uint32_t kind, const uint8_t **body,
                   size_t *body_len);
#define TK_REC_TABLE 1u
#define TK_REC_ROWS 2u
#define TK_REC_POLICY 3u
#define TK_REC_AUDIT 4u
#define TK_REC_DOC 5u
#define TK_REC_CRED 6u
#define TK_REC_SHARE 7u
#define TK_REC_SHARE_READ 8u
#define TK_REC_BACKUP_KEY 9u
#define TK_REC_SHARE_WRITE 10u
#define TK_REC_LAST TK_REC_SHARE_WRITE /* the highest kind this token knows */

/* ------------------------------------------------------------ tables */

/*
 * The owner's tables on the log (tk_table.c). Handlers for LoadTable,
 * ReadRows, DeleteRows, UpdateRows, ListTables and Compact, and the scans
 * the collection phase uses.
 */
/* Call fn for every row of `table`, one at a time, in id order; stops at
 * the first non-zero return. */
typedef int (*tk_row_fn)(void *ctx, const Cohort__TableSchema *schema, const Cohort__Row *row);
int tk_table_scan(struct tk_token *tk, struct tk_arena *a, const char *table, tk_row_fn fn,
                  void *ctx);
/* Whether the token holds a table of that name (even without rows). */
int tk_table_exists(struct tk_token *tk, struct tk_arena *a, const char *table, bool *found);
/* Names of the tables on the token (up to max). */
int tk_table_names(struct tk_token *tk, struct tk_arena *a, char **names, size_t max, size_t *n);

/*
 * The documents table (tk_table.c): one row per current document of the
 * owner's, with its metadata, which the token keeps in step with the
 * documents so that studies can aggregate over it (the owner's policy
 * decides whether they may) and the owner can search it. The owner cannot
 * load, update or delete its rows (TK_ERR_DENIED): only the documents do.
 *
 * tk_docs_declared says whether the committed log declares the table
 * (known_schema caches that it does); tk_docs_row appends (not commits) a
 * document's row, after the table's declaration when `declare`. A rewrite that must drop a
 * document's row runs its records through tk_docs_edit_keep: the table's row batches are written
 * again without that row (*keep false), anything else is kept as it is (*keep true), after whatever
 * rows were pending; at the end of the pass (plain NULL) the pending rows are written.
 * tk_docs_edit_init takes the document's id (TK_DOC_ID_LEN bytes) and allocates in scratch.
 */
#define TK_DOCS_TABLE "documents"
int tk_docs_declared(struct tk_token *tk, struct tk_arena *a, bool *declared);
int tk_docs_row(struct tk_token *tk, struct tk_arena *a, bool declare, const uint8_t *doc_id,
                uint64_t revision, const Cohort__DocMeta *m);
struct tk_docs_edit;
int tk_docs_edit_init(struct tk_docs_edit **out, struct tk_token *tk, struct tk_arena *a,
                      const uint8_t *doc_id);
int tk_docs_edit_keep(struct tk_docs_edit *e, struct tk_arena *a, const uint8_t *plain, size_t len,
                      bool *keep);
/* Whether the documents table was met in the rewrite so far. */
bool tk_docs_edit_declared(const struct tk_docs_edit *e);

/* ----------------------------------------------------- owner's policy */

/*
 * What the owner's consent policy says of a verified plan (tk_policy.c).
 * tk_policy_check reads the policy and the audit log and decides, without
 * changing anything: TK_OK, or TK_ERR_POLICY / TK_ERR_BUDGET with the
 * reason in c->reason. tk_policy_record appends the plan's audit entry
 * (accepted with status 0, which debits adm->epsilon from the budgets,
 * or refused with its status) and commits it: the contribution may only
 * leave the token after this returned 0.
 */
struct tk_call;
struct tk_admission {
    double epsilon;     /* what this plan will debit (0 when a repeat) */
    double spent_study; /* spent on the plan's study before it */
    double spent_total;
    bool repeat;     /* the query was accepted before: no new debit */
    int last_status; /* the last audit status logged for this query, 1 if none */
};
int tk_policy_check(struct tk_call *c, const struct tk_plan *plan, struct tk_admission *adm);
int tk_policy_record(struct tk_call *c, const struct tk_plan *plan, const struct tk_admission *adm,
                     int status);

/* ----------------------------------------------------------- handlers */

struct tk_call {
    struct tk_token *tk;
    struct tk_arena *arena;
    int64_t now;
    struct tk_wbuf *out;               /* the TokenResponse being written (status already in) */
    char reason[TK_REASON_MAX + 1];    /* why a request was refused, for the owner; "" if none */
    const Cohort__AppCredential *auth; /* the request's credential; NULL: the host link (owner) */
};

int tk_do_info(struct tk_call *c, const Cohort__GetInfo *req);
int tk_do_provision_begin(struct tk_call *c, const Cohort__ProvisionBegin *req);
int tk_do_provision_finish(struct tk_call *c, const Cohort__ProvisionFinish *req);
int tk_do_attest(struct tk_call *c, const Cohort__Attest *req);
int tk_do_load_table(struct tk_call *c, const Cohort__LoadTable *req);
int tk_do_collect(struct tk_call *c, const Cohort__Collect *req);
int tk_do_agg_begin(struct tk_call *c, const Cohort__AggBegin *req);
/* AggFeed is streamed: body is the AggFeed message's bytes. */
int tk_do_agg_feed(struct tk_call *c, const uint8_t *body, size_t len);
int tk_do_agg_end(struct tk_call *c, const Cohort__AggEnd *req);
int tk_do_read_rows(struct tk_call *c, const Cohort__ReadRows *req);
int tk_do_delete_rows(struct tk_call *c, const Cohort__DeleteRows *req);
int tk_do_update_rows(struct tk_call *c, const Cohort__UpdateRows *req);
int tk_do_list_tables(struct tk_call *c, const Cohort__ListTables *req);
int tk_do_compact(struct tk_call *c, const Cohort__Compact *req);
/* The owner's consent policy and audit log (tk_policy.c). */
/* Append an audit entry (seq and time are set here); not committed. */
int tk_audit_append(struct tk_call *c, Cohort__AuditEntry *e);
int tk_do_set_policy(struct tk_call *c, const Cohort__SetPolicy *req);
int tk_do_get_policy(struct tk_call *c, const Cohort__GetPolicy *req);
int tk_do_read_audit(struct tk_call *c, const Cohort__ReadAudit *req);

/* Helpers shared by the handlers. */
bool tk_has_flag(const struct tk_token *tk, uint32_t f);
void tk_write_ciphertext(struct tk_wbuf *w, uint32_t field, const struct tk_binding *b,
                         const uint8_t *plain, size_t plain_len, const uint8_t key[32]);
size_t tk_ciphertext_len(const struct tk_binding *b, size_t plain_len);
/* Replay slots name (query, stage, level, partition): `level` here is
 * TK_REPLAY_LEVEL(stage, level). */
#define TK_REPLAY_LEVEL(stage, level) ((uint32_t)(stage) << 16 | (level))
int tk_replay_seen(const struct tk_token *tk, const uint8_t *query, uint32_t level,
                   uint32_t partition);
void tk_replay_note(struct tk_token *tk, const uint8_t *query, uint32_t level, uint32_t partition);
void tk_session_close(struct tk_token *tk, uint8_t *arena, size_t arena_len);
size_t tk_session_size(void);
size_t tk_groups_size(uint32_t cap, uint32_t n_aggs);
size_t tk_session_extent(const struct tk_token *tk, const uint8_t *arena, size_t arena_len);

/* ---------------------------------------------------------- documents */

/*
 * The owner's documents (tk_doc.c). A document session (writing or
 * reading one revision) lives at the arena's low end between calls, like
 * an aggregation session, and shares tk->session with it: only one session
 * of either kind is open at a time. Both start with the magic and the id.
 */
#define TK_DOC_MAGIC 0x444f4331u /* "DOC1" */
#define TK_CRED_ID_LEN 16u
#define TK_CRED_NAME_MAX 64u
#define TK_DOC_ID_LEN 16u
#define TK_SHARE_ID_LEN 16u
#define TK_DOC_CHUNK 4096u     /* plaintext of a file chunk (the last: 0..4096) */
#define TK_DOC_DATA_MAX 65536u /* bytes of one DocWrite or DocRead */
#define TK_DOC_HASH_LEN 32u    /* BLAKE2b-256 of the file */
#define TK_DOC_TYPE_MAX 64u
#define TK_DOC_TEXT_MAX 128u /* author, subject */
#define TK_DOC_TAGS_MAX 16u
#define TK_DOC_TAG_MAX 32u
#define TK_DOC_META_MAX 1024u   /* a packed DocMeta within those bounds, at most */
#define TK_DOC_RECORD_MAX 1280u /* a packed DocRecord, at most */
#define TK_DOC_LIST_MAX 64u     /* documents per DocList page */
#define TK_DOC_FRAME_LEN 4u     /* a chunk's length prefix */
#define TK_DOC_BOX_MAX (TK_DOC_CHUNK + crypto_secretstream_xchacha20poly1305_ABYTES)

struct tk_doc_session {
    uint32_t magic;
    uint8_t id[TK_SESSION_ID_LEN];
    size_t arena_lo;
    bool writing;
    bool started; /* writing: the header has been emitted */
    bool finished;
    uint8_t doc_id[TK_DOC_ID_LEN];
    uint64_t revision;
    uint8_t key[crypto_secretstream_xchacha20poly1305_KEYBYTES];
    crypto_secretstream_xchacha20poly1305_state st;
    uint8_t hash_room[sizeof(crypto_generichash_state) + 64]; /* aligned in place */
    uint64_t plain_bytes, cipher_bytes;
    /* Reading: what the record promises. */
    uint64_t cipher_size;
    uint8_t content_hash[TK_DOC_HASH_LEN];
    /* Writing: who began it (DocWrite carries no credential), for the
     * audit line: by_app, the credential's id and name. */
    bool by_app;
    bool docs_declared; /* the documents table is declared (DocBegin's finding) */
    uint8_t cred_id[TK_CRED_ID_LEN];
    char app[TK_CRED_NAME_MAX + 1];
    /* Writing a received document back through a read-write share: the
     * share, and the content hash of the base revision (revision - 1). */
    bool shared;
    uint8_t share_id[TK_SHARE_ID_LEN];
    uint8_t base_hash[TK_DOC_HASH_LEN];
    /* Writing: the DocMeta to store (packed). */
    size_t meta_len;
    uint8_t meta[TK_DOC_META_MAX];
    /* Writing: plaintext waiting for a full chunk; reading: the header or
     * the chunk being assembled (framing included). */
    size_t buf_len;
    uint8_t buf[TK_DOC_FRAME_LEN + TK_DOC_BOX_MAX];
};

size_t tk_doc_extent(const uint8_t *arena, size_t arena_len);
void tk_doc_wipe(uint8_t *arena, size_t arena_len);
int tk_do_doc_begin(struct tk_call *c, const Cohort__DocBegin *req);
int tk_do_doc_write(struct tk_call *c, const uint8_t *body, size_t len);
int tk_do_doc_open(struct tk_call *c, const Cohort__DocOpen *req);
/* A document's metadata within its bounds: TK_ERR_MALFORMED for a missing
 * meta or a bad type, TK_ERR_TOO_LARGE for a field, list or the whole over
 * its limit (TK_DOC_META_MAX packed). */
int tk_doc_meta_check(const Cohort__DocMeta *m);
/* The session, data and last flag of a streamed request (DocWrite, DocRead,
 * RestoreFeed), read without decoding it; data over max: TK_ERR_TOO_LARGE. */
int tk_stream_parse(const uint8_t *body, size_t len, size_t max, const uint8_t **sid,
                    size_t *sid_len, const uint8_t **data, size_t *data_len, bool *last);
int tk_do_doc_read(struct tk_call *c, const uint8_t *body, size_t len);
int tk_do_doc_list(struct tk_call *c, const Cohort__DocList *req);
int tk_do_doc_delete(struct tk_call *c, const Cohort__DocDelete *req);
/* The id and revision (fields 1 and 2) of a DocRecord, or of a SharedDoc,
 * which starts the same, read without decoding it: TK_ERR_TAMPERED when
 * either is missing or the framing is broken. */
int tk_doc_ident(const uint8_t *rec, size_t len, const uint8_t **id, uint64_t *rev);
/* A DocRef (id, revision, content hash, size, ciphertext size) as field
 * `field` of w, and the length of its payload. */
size_t tk_doc_ref_len(uint64_t rev, uint64_t size, uint64_t cipher_size);
void tk_doc_ref_write(struct tk_wbuf *w, uint32_t field, const uint8_t *doc_id, uint64_t rev,
                      const uint8_t *hash, uint64_t size, uint64_t cipher_size);

/* A revision of a document, as a DocRecord holds it (meta packed, its
 * size set). */
struct tk_doc_rev {
    uint8_t doc_id[TK_DOC_ID_LEN];
    uint64_t revision;
    uint8_t key[crypto_secretstream_xchacha20poly1305_KEYBYTES];
    uint8_t hash[TK_DOC_HASH_LEN];
    uint64_t size, cipher_size;
    size_t meta_len;
    uint8_t meta[TK_DOC_META_MAX];
};
/* Store a new revision (> 1) of one of the owner's documents that was
 * written elsewhere (tk_share.c: a read-write share's recipient wrote it):
 * its record, its row of the documents table and the audit line `audit`
 * (seq and time set here), committed. The caller checked it is the next. */
int tk_doc_store(struct tk_call *c, const struct tk_doc_rev *r, Cohort__AuditEntry *audit);
/* -------------------------------------------------------- permissions */

/*
 * App credentials (tk_cred.c). tk_cred_allow decides whether the call's
 * credential (c->auth) may apply `verb` (a Verb bit) to a document whose
 * packed DocMeta is meta: TK_OK when c->auth is NULL (the host link, the
 * owner's) or an owner credential, or when one of the credential's rules
 * allows it; TK_ERR_AUTH when the credential does not authenticate (unknown,
 * wrong secret, expired, revoked, or one up its chain is); TK_ERR_DENIED
 * otherwise. tk_cred_owner: TK_OK for the host link or an owner
 * credential, else TK_ERR_AUTH or TK_ERR_DENIED.
 */
int tk_cred_allow(struct tk_call *c, uint32_t verb, const uint8_t *meta, size_t meta_len);
int tk_cred_owner(struct tk_call *c);

#define TK_CRED_SECRET_LEN 32u
#define TK_CRED_HASH_LEN 32u
#define TK_CRED_RULES_MAX 16u
#define TK_CRED_VALUES_MAX 16u
#define TK_CRED_VALUE_MAX 128u
#define TK_CRED_DEPTH 8u         /* ancestors of a delegated credential, at most */
#define TK_CRED_RECORD_MAX 2048u /* a packed CredRecord */
#define TK_CRED_LIST_MAX 64u     /* credentials per CredList page */

/*
 * A credential that authenticated (tk_cred_load): its id and its latest
 * CredInfo, decoded in the call's scratch, with its ancestors. For
 * handlers that ask more than once in one request (DocBegin's update,
 * DocList's every document), so that the log is searched once.
 */
struct tk_cred {
    uint8_t id[TK_CRED_ID_LEN];
    const Cohort__CredInfo *info;
    uint8_t chain[TK_CRED_DEPTH][TK_CRED_ID_LEN]; /* parent first */
    uint32_t depth;
};
/* The call's credential: *out NULL for the host link (the owner's), else
 * the credential, which authenticated (TK_ERR_AUTH otherwise). */
int tk_cred_load(struct tk_call *c, const struct tk_cred **out);
/* TK_OK if cr (NULL: the host link) may apply verb to a document with
 * metadata m: an owner credential may do anything; else one of its rules
 * must allow it (TK_ERR_DENIED). */
int tk_cred_match(const struct tk_cred *cr, uint32_t verb, const Cohort__DocMeta *m);
/* Whether rule r matches m, verbs aside (DocList's filter). */
bool tk_rule_matches(const Cohort__PermRule *r, const Cohort__DocMeta *m);
/* A filter's or a rule's bounds: TK_OK, TK_ERR_MALFORMED or TK_ERR_TOO_LARGE;
 * with_verbs: verbs must be 1..15 (a credential's rule). */
int tk_rule_check(const Cohort__PermRule *r, bool with_verbs);
/*
 * Append (not commit) an audit line of an owner's-cloud event: `event`
 * ("doc.read", "cred.issue", ...), the object concerned (a document's or a
 * credential's id; NULL for none), who asked (cr NULL: the host link) and
 * whether it was allowed (a denial carries TK_ERR_DENIED as its status).
 */
int tk_audit_event(struct tk_call *c, const char *event, const uint8_t *object, size_t object_len,
                   const struct tk_cred *cr, bool allowed);
/* The same, for who is named by id and name (a document session's writer). */
int tk_audit_event_by(struct tk_call *c, const char *event, const uint8_t *object,
                      size_t object_len, const uint8_t *cred_id, const char *app, bool allowed);
int tk_do_cred_issue(struct tk_call *c, const Cohort__CredIssue *req);
int tk_do_cred_list(struct tk_call *c, const Cohort__CredList *req);
int tk_do_cred_revoke(struct tk_call *c, const Cohort__CredRevoke *req);
int tk_do_cred_check(struct tk_call *c, const Cohort__CredCheck *req);

/* ------------------------------------------------------------ sharing */

#define TK_SHARE_DOCS_MAX 32u     /* documents in one grant */
#define TK_SHARE_GRANT_MAX 16384u /* a serialized ShareGrant */
/* ShareAccept.sealed: the grant, its signature and framing, the seal. */
#define TK_SHARE_SEALED_MAX (TK_SHARE_GRANT_MAX + 128u)
#define TK_SHARE_HOLDERS 16u    /* received shares that ever held one document id */
#define TK_SHARE_LIST_MAX 16u   /* shares per ShareList page */
#define TK_SHARE_VALUES_MAX 16u /* values of a selector */
#define TK_SHARE_BATCH 8u       /* sent shares ShareSync examines per scan */
#define TK_SHARE_WRITES_MAX 8u  /* a recipient's revisions of one document awaiting a grant */

/*
 * Shares (tk_share.c). tk_share_find_doc looks for doc_id (revision rev,
 * 0: the latest) among the received shares in force and fills *out with
 * its SharedDoc fields: key, hash, sizes, packed meta. TK_ERR_NOT_FOUND when
 * no share has it; TK_ERR_EXPIRED, TK_ERR_DENIED (reads used up, revoked)
 * when its policy refuses. `count_read` appends a ShareRead record.
 */
struct tk_shared_doc {
    uint8_t doc_id[TK_DOC_ID_LEN];
    uint64_t revision;
    uint8_t key[crypto_secretstream_xchacha20poly1305_KEYBYTES];
    uint8_t content_hash[TK_DOC_HASH_LEN];
    uint64_t size, cipher_size;
    size_t meta_len;
    uint8_t meta[TK_DOC_META_MAX];
    bool read_write;
};
int tk_share_find_doc(struct tk_call *c, const uint8_t *doc_id, uint64_t rev, bool count_read,
                      struct tk_shared_doc *out);
/*
 * Writing a received document (DocBegin on a document that is not one of
 * the owner's own). tk_share_write_begin finds the read-write share in
 * force that holds doc_id and fills *w with the share and its current
 * revision of the document (the only base a new revision may have):
 * TK_ERR_NOT_FOUND when no received share holds it, TK_ERR_DENIED when
 * those that do are read-only or revoked, TK_ERR_EXPIRED, TK_ERR_TOO_LARGE
 * when TK_SHARE_WRITES_MAX revisions of it already wait for a grant.
 * tk_share_meta_kept: whether a written revision's metadata keeps what
 * the owner's said (all but modified and size). tk_share_write_back, at
 * the last DocWrite of such a session: writes DocCipher's reply (the
 * return grant, sealed to the sender) into c->out, appends the ShareWrite
 * and the audit line, and commits.
 */
struct tk_share_write {
    uint8_t share_id[TK_SHARE_ID_LEN];
    uint64_t revision;
    uint8_t hash[TK_DOC_HASH_LEN];
    size_t meta_len;
    uint8_t meta[TK_DOC_META_MAX];
};
int tk_share_write_begin(struct tk_call *c, const uint8_t *doc_id, struct tk_share_write *w);
bool tk_share_meta_kept(const Cohort__DocMeta *was, const Cohort__DocMeta *now);
int tk_share_write_back(struct tk_call *c, const struct tk_doc_rev *r, const uint8_t *share_id,
                        const uint8_t *base_hash, const uint8_t *cred_id, const char *app);
int tk_do_share_create(struct tk_call *c, const Cohort__ShareCreate *req);
int tk_do_share_sync(struct tk_call *c, const Cohort__ShareSync *req);
int tk_do_share_revoke(struct tk_call *c, const Cohort__ShareRevoke *req);
int tk_do_share_accept(struct tk_call *c, const Cohort__ShareAccept *req);
int tk_do_share_list(struct tk_call *c, const Cohort__ShareList *req);
int tk_do_share_update(struct tk_call *c, const Cohort__ShareUpdate *req);

/* ------------------------------------------------- backup and recovery */

/*
 * tk_backup.c. Its sessions (making a backup, restoring one) live at the
 * arena's low end like a document session's: tk_backup_extent is what one
 * keeps there, tk_backup_wipe erases it when a session closes, and then
 * also drops a restore's appended but uncommitted records (the only ones
 * that outlive a call without a LoadTable batch open).
 */
#define TK_BACKUP_MAGIC 0x42414b31u /* "BAK1" */
#define TK_BACKUP_SECRET_LEN 20u    /* the phrase's 160 bits */
#define TK_BACKUP_PHRASE_LEN 44u    /* 9 groups of 4 symbols and 8 '-' */
#define TK_BACKUP_PHRASE_MAX 128u   /* what RestoreBegin accepts, spaces included */
#define TK_BACKUP_HEADER_LEN 108u
#define TK_BACKUP_CHUNK 2048u     /* stream bytes in a full chunk */
#define TK_BACKUP_TRAILER_LEN 24u /* the final chunk's plaintext */
#define TK_BACKUP_DATA_MAX 65536u /* file bytes in one BackupNext or RestoreFeed */
size_t tk_backup_extent(const struct tk_token *tk, const uint8_t *arena, size_t arena_len);
void tk_backup_wipe(struct tk_token *tk, uint8_t *arena, size_t arena_len);
int tk_do_backup_begin(struct tk_call *c, const Cohort__BackupBegin *req);
int tk_do_backup_next(struct tk_call *c, const Cohort__BackupNext *req);
int tk_do_restore_begin(struct tk_call *c, const Cohort__RestoreBegin *req);
int tk_do_restore_feed(struct tk_call *c, const uint8_t *body, size_t len);

/* ------------------------------------------------ aggregation sessions */

#define TK_SESSION_MAGIC 0x53455331u /* "SES1" */

/*
 * An open aggregation session (tk_aggregate.c), at the low end of the
 * arena. `stage` is the task's proto Stage. s_agg's merge uses the range
 * fields; the tagged protocols' stages (tk_stage.c) keep their state in a
 * struct tk_tagged after it, so that s_agg's sessions stay as small:
 * - KEYS: the contributor list's range, count, tuples and digest (k_*);
 * - TAGGED and FINAL: the tuples merged and their digest, and each source
 *   partial's chunk sequence (src_* here and there); FINAL also k_*;
 * - SHUFFLE: the batch, kept as items of item_len bytes (origin, then the
 *   framed TuplePlain) right after it.
 */
struct tk_tagged {
    struct tk_query_keys keys;
    uint64_t tuples;
    uint8_t digest[TK_ORIGIN_LEN];
    uint32_t src_level;
    uint64_t src_tuples;
    uint8_t src_digest[TK_ORIGIN_LEN];
    bool keys_started;
    uint64_t k_contributors, k_tuples;
    uint8_t k_digest[TK_ORIGIN_LEN];
    uint8_t k_lo[TK_CONTRIB_KEY_LEN], k_hi[TK_CONTRIB_KEY_LEN];
    /* Shuffle. */
    uint8_t *items;
    uint32_t n_items, cap_items;
    size_t item_len;
};

struct tk_session {
    uint32_t magic;
    uint8_t id[TK_SESSION_ID_LEN];
    uint32_t level, partition;
    uint8_t stage;
    bool final;
    bool started;
    size_t arena_lo; /* the low end's extent after the last call */
    uint8_t ndet[32];
    struct tk_plan plan;
    struct tk_groups groups;
    uint64_t contributors;
    uint64_t inputs;
    uint8_t lo[TK_KEY_LEN], hi[TK_KEY_LEN];
    uint8_t last[TK_KEY_LEN]; /* level 1: the last input's key */
    uint32_t src_partition, src_next, src_n;
    uint8_t src_lo[TK_KEY_LEN], src_hi[TK_KEY_LEN];
    uint8_t noise_key[32]; /* final, under DP: see tk_dp_noise_key */
    struct tk_tagged *t;   /* the tagged protocols' stages, or NULL */
};

/* Set up the stage-specific part of a session that tk_do_agg_begin has
 * made (plan, level, partition, stage and final set, group table made for
 * the stages that merge groups): its struct tk_tagged at the arena's low
 * end, with the query's keys. TK_OK or an error, the session then being
 * discarded. */
int tk_stage_begin(struct tk_session *s, struct tk_arena *a, const uint8_t group_secret[32]);
size_t tk_tagged_size(void);
/* One input ciphertext of a tagged protocol's stage (authenticated here). */
int tk_stage_take(struct tk_session *s, struct tk_arena *a, const Cohort__Ciphertext *ct);
/* The session's output at AggEnd, for the stages other than s_agg's merge
 * and the filtering (FINAL's checks are tk_stage_final_check). */
int tk_stage_emit(struct tk_call *c, struct tk_session *s);
/* A session's groups as n padded partial chunks (tk_aggregate.c): S_Agg's
 * (PHASE_AGGREGATE, with the range they cover) or a tagged stage's
 * (PHASE_TAGGED_PARTIAL, with the tuples merged and their digest). */
int tk_emit_partial_chunks(struct tk_call *c, struct tk_session *s, uint32_t phase, uint32_t n);
/* FINAL: the contributor list and the tagged partials must account for the
 * same tuples; sets contributors, lo and hi from the list. */
int tk_stage_final_check(struct tk_session *s);
/* The slot one item of a shuffle batch takes at the arena's low end (its
 * place in the permutation takes 4 more bytes, in scratch at AggEnd). */
size_t tk_shuffle_item_len(size_t tuple_plain_len);

#endif
