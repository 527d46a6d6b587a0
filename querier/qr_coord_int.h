/*
 * qr_coord_int.h: private to libcohort_querier. The limits of the messages
 * the coordinator and the signing code read, and the codec boundary between
 * the coordinator's state machine (qr_coord.c) and protobuf-c (qr_codec.c).
 *
 * The state machine never sees a protobuf-c type. The codec decodes a
 * ServiceRequest into a struct qr_request, whose pointers stay valid until
 * qr_codec_request_free(); ciphertexts inside it are read one at a time
 * through qr_codec_tuple()/qr_codec_partial() and, once accepted, packed
 * into bytes that the coordinator keeps. Replies go the other way: the
 * state machine fills a struct qr_reply, and the codec writes it as a
 * ServiceReply, splicing the stored ciphertext bytes in as they are.
 */
#ifndef COHORT_QR_COORD_INT_H
#define COHORT_QR_COORD_INT_H

#include <stddef.h>
#include <stdint.h>

#include "querier/querier.h"

/* ------------------------------------------------------------- limits */

#define QR_QUERY_ID_LEN 32u    /* BLAKE2b-256 of the packed Plan */
#define QR_QUERY_TAG_LEN 8u    /* Ciphertext.query: the id's first bytes */
#define QR_TOKEN_ID_LEN 32u    /* a token's Ed25519 public key */
#define QR_CONTRIB_KEY_LEN 16u /* Contribution.key */
#define QR_NONCE_LEN 24u       /* XChaCha20-Poly1305 */
#define QR_BOX_MAX 4096u       /* Ciphertext.box of a collected tuple */
#define QR_PARTIALS_MAX 65536u /* ciphertexts in one task result: a shuffle batch at most */
#define QR_SUBJECT_MAX 63u     /* bytes of a certificate subject */
#define QR_CERT_VERSION 1u
#define QR_CERT_MAX 4096u                   /* one serialized Certificate */
#define QR_CSR_MAX 4096u                    /* one serialized CertRequest */
#define QR_SIGNED_PLAN_MAX (1u << 20)       /* a SignedPlan: a token takes no more */
#define QR_SEALED_RESULT_MAX QR_REQUEST_MAX /* it arrives in a ServiceRequest */
#define QR_DECODE_FACTOR 8u                 /* decode heap per input byte (valid ones need < 5) */
#define QR_DECODE_SLACK (1u << 20)          /* ... plus this much */
#define QR_STORE_CHUNK (1u << 20)           /* ciphertext bytes are kept in chunks this big */

/* Ciphertext.phase, as in proto's Phase (checked in qr_codec.c). */
#define QR_PHASE_COLLECT 1
#define QR_PHASE_AGGREGATE 2

/* Proto's Role values (checked in qr_sign.c). */
#define QR_ROLE_AUTHORITY 1
#define QR_ROLE_TOKEN 2
#define QR_ROLE_RESEARCHER 3

/* -------------------------------------------------------------- plans */

/* The grouping protocols, as token/tk_int.h numbers them. */
enum qr_protocol {
    QR_PROTO_S_AGG = 0,
    QR_PROTO_RNF_NOISE = 1,
    QR_PROTO_C_NOISE = 2,
    QR_PROTO_ED_HIST = 3,
    QR_PROTO_SHUFFLE = 4,
};
/* A protocol's number from its name, or -1. */
int qr_protocol_of(const char *name);

/* Stages of a task, and phases of a ciphertext, as proto's Stage and Phase. */
#define QR_STAGE_MERGE 0
#define QR_STAGE_KEYS 1
#define QR_STAGE_SHUFFLE 2
#define QR_STAGE_TAGGED 3
#define QR_STAGE_FINAL 4
#define QR_PHASE_KEYS 3
#define QR_PHASE_KEYS_PARTIAL 4
#define QR_PHASE_SHUFFLE 5
#define QR_PHASE_TAGGED_PARTIAL 6
#define QR_TAG_LEN 16u

/* What the coordinator needs of a SignedPlan. */
struct qr_plan_info {
    uint8_t query_id[QR_QUERY_ID_LEN];
    uint64_t size;      /* 0: deadline only */
    int64_t deadline;   /* Unix seconds */
    int64_t expires_at; /* Unix seconds: tokens refuse the plan's work after it */
    uint32_t tuples_per_participant;
    uint32_t min_participants;
    int protocol;       /* enum qr_protocol */
    uint32_t emit;      /* ciphertexts per contribution */
    uint32_t rounds;    /* shuffle */
    uint32_t batch_min; /* shuffle */
};

/*
 * Decode a SignedPlan (at most QR_SIGNED_PLAN_MAX bytes) and its Plan.
 * QR_ERR_TOO_LARGE, QR_ERR_MALFORMED, QR_ERR_NOMEM or 0.
 */
int qr_codec_plan_info(struct qr_plan_info *out, const uint8_t *signed_plan, size_t len);

/* ----------------------------------------------------------- requests */

enum qr_req_kind {
    QR_REQ_WORK = 1,
    QR_REQ_UPLOAD = 2,
    QR_REQ_RESULT = 3,
};

/* A view of one Ciphertext of a request. */
struct qr_wire_ct {
    const uint8_t *query;
    size_t query_len;
    int phase;
    uint32_t level, partition, chunk, nchunks;
    const uint8_t *key;
    size_t key_len;
    size_t nonce_len;
    size_t box_len;
    const uint8_t *tag; /* tag_len bytes */
    size_t tag_len;
    size_t packed_len; /* bytes of its canonical encoding */
    const void *msg_;  /* the codec's message: for qr_codec_ct_pack */
};

/* A decoded ServiceRequest. Absent byte fields have length 0. */
struct qr_request {
    enum qr_req_kind kind;
    const uint8_t *token_id; /* all kinds */
    size_t token_id_len;

    /* QR_REQ_UPLOAD */
    int has_contribution;
    const uint8_t *query_id;
    size_t query_id_len;
    const uint8_t *key;
    size_t key_len;
    size_t n_tuples;

    /* QR_REQ_RESULT */
    uint64_t task_id;
    int32_t status;
    int has_output;
    size_t n_partials;
    int has_result;
    const uint8_t *result_query_id;
    size_t result_query_id_len;
    size_t result_packed_len; /* bytes of the SealedResult's encoding */

    void *msg_; /* the codec's message */
};

/*
 * Decode a ServiceRequest. QR_ERR_TOO_LARGE over QR_REQUEST_MAX bytes, or
 * when its decoded form would need more than QR_DECODE_FACTOR times its
 * size in heap; QR_ERR_MALFORMED if it does not decode or has no body;
 * QR_ERR_NOMEM. On success the caller frees *out with
 * qr_codec_request_free(); on failure there is nothing to free.
 */
int qr_codec_request_decode(struct qr_request *out, const uint8_t *req, size_t len);
void qr_codec_request_free(struct qr_request *r);

/* Views of the i-th tuple of an upload, and of the i-th partial of a result. */
void qr_codec_tuple(struct qr_wire_ct *out, const struct qr_request *r, size_t i);
void qr_codec_partial(struct qr_wire_ct *out, const struct qr_request *r, size_t i);

/* The packed Ciphertext of a pseudonym in a contributor list (STAGE_KEYS
 * level 1): query tag, PHASE_KEYS and the key. Returns its length; with
 * out NULL, only measures. */
size_t qr_codec_key_record(uint8_t *out, const uint8_t query_tag[QR_QUERY_TAG_LEN],
                           const uint8_t key[QR_CONTRIB_KEY_LEN]);

/* Pack a ciphertext (ct->packed_len bytes) or a result's SealedResult. */
void qr_codec_ct_pack(const struct qr_wire_ct *ct, uint8_t *out);
void qr_codec_result_pack(const struct qr_request *r, uint8_t *out);

/*
 * Unpack any message (descriptor: a ProtobufCMessageDescriptor) under the
 * same budget as a ServiceRequest; free it with
 * protobuf_c_message_free_unpacked(msg, NULL). QR_ERR_TOO_LARGE over
 * `max` bytes or over the heap budget, QR_ERR_MALFORMED, QR_ERR_NOMEM.
 */
int qr_codec_unpack(const void *descriptor, const uint8_t *p, size_t len, size_t max, void **msg);

/* ------------------------------------------------------------ replies */

enum qr_work_kind {
    QR_WORK_NONE = 0, /* no WorkReply at all */
    QR_WORK_IDLE,     /* a WorkReply with retry_after_ms only */
    QR_WORK_COLLECT,
    QR_WORK_TASK,
};

struct qr_reply {
    int status;
    const char *error; /* NULL or a constant string */
    enum qr_work_kind work;
    uint32_t retry_after_ms;
    const uint8_t *plan; /* the SignedPlan, for COLLECT and TASK */
    size_t plan_len;
    uint64_t task_id;
    uint32_t level, partition;
    int final;
    int stage;               /* QR_STAGE_* */
    const uint8_t *query_id; /* QR_QUERY_ID_LEN bytes, or NULL */
    size_t n_inputs;
    /* The i-th input of a task: packed Ciphertext bytes. */
    void (*input)(const void *ctx, size_t i, const uint8_t **bytes, size_t *len);
    const void *input_ctx;
};

/* Encode a ServiceReply into *out (malloc'd). 0 or QR_ERR_NOMEM. */
int qr_codec_reply_encode(uint8_t **out, size_t *out_len, const struct qr_reply *r);

#endif
