/*
 * qr_codec.c: the protobuf-c boundary of the coordinator.
 *
 * Everything the coordinator reads arrives from untrusted peers, so every
 * decode here is bounded twice: the input's size is checked before
 * unpacking, and the unpacking itself runs on a budgeted allocator that
 * refuses to spend more than QR_DECODE_FACTOR bytes of heap per input byte
 * (plus QR_DECODE_SLACK). protobuf-c can otherwise turn a request of empty
 * sub-messages into a hundred times its size in structs; with the budget, a
 * request that tries is refused as QR_ERR_TOO_LARGE.
 *
 * The state machine gets plain views (struct qr_request, struct
 * qr_wire_ct) and never a protobuf-c type. Accepted ciphertexts are packed
 * by protobuf-c into their canonical encoding, which is what the
 * coordinator stores and measures.
 *
 * Replies are written by hand as protobuf wire format: a ServiceReply
 * carries the SignedPlan and up to thousands of stored ciphertexts as
 * embedded messages, and an embedded message on the wire is exactly a
 * length-prefixed copy of its encoding. Writing them this way splices the
 * stored bytes in as they are, instead of unpacking each stored ciphertext
 * only to pack it again. Field numbers come from proto/cohort.proto; the
 * tests decode every reply with protobuf-c.
 */
#include <assert.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "proto/cohort.pb-c.h"
#include "querier/qr_coord_int.h"
#include "token/token.h"

_Static_assert(QR_PHASE_COLLECT == COHORT__PHASE__PHASE_COLLECT, "phase values");
_Static_assert(QR_PHASE_AGGREGATE == COHORT__PHASE__PHASE_AGGREGATE, "phase values");
_Static_assert(QR_QUERY_ID_LEN == TK_QUERY_ID_LEN, "query id length");

/* ------------------------------------------------ budgeted allocation */

/* Charged on top of every allocation, for the allocator's own headers. */
#define QR_DECODE_OVERHEAD 16u

struct decode_budget {
    size_t used;
    size_t limit;
    int over;  /* an allocation was refused for the budget */
    int nomem; /* malloc failed */
};

static void *budget_alloc(void *data, size_t size)
{
    struct decode_budget *b = data;
    void *p;

    if (size > b->limit - b->used || QR_DECODE_OVERHEAD > b->limit - b->used - size) {
        b->over = 1;
        return NULL;
    }
    b->used += size + QR_DECODE_OVERHEAD;
    p = malloc(size ? size : 1);
    if (p == NULL)
        b->nomem = 1;
    return p;
}

static void budget_free(void *data, void *p)
{
    (void)data;
    free(p);
}

int qr_codec_unpack(const void *descriptor, const uint8_t *p, size_t len, size_t max, void **msg)
{
    struct decode_budget budget = {0, 0, 0, 0};
    ProtobufCAllocator alloc = {budget_alloc, budget_free, &budget};

    *msg = NULL;
    if (len > max)
        return QR_ERR_TOO_LARGE;
    budget.limit = (size_t)QR_DECODE_FACTOR * len + QR_DECODE_SLACK;
    *msg = protobuf_c_message_unpack(descriptor, &alloc, len, p ? p : (const uint8_t *)"");
    if (*msg == NULL)
        return budget.nomem ? QR_ERR_NOMEM : budget.over ? QR_ERR_TOO_LARGE : QR_ERR_MALFORMED;
    return 0;
}

/* ---------------------------------------------------------------- plan */

int qr_codec_plan_info(struct qr_plan_info *out, const uint8_t *signed_plan, size_t len)
{
    Cohort__SignedPlan *sp = NULL;
    Cohort__Plan *plan = NULL;
    int rc = 0;

    memset(out, 0, sizeof *out);
    if (len > QR_SIGNED_PLAN_MAX)
        return QR_ERR_TOO_LARGE;
    sp = cohort__signed_plan__unpack(NULL, len, signed_plan);
    if (sp == NULL) {
        rc = QR_ERR_MALFORMED;
        goto cleanup;
    }
    plan = cohort__plan__unpack(NULL, sp->plan.len, sp->plan.data);
    if (plan == NULL) {
        rc = QR_ERR_MALFORMED;
        goto cleanup;
    }
    tk_query_id(out->query_id, sp->plan.data, sp->plan.len);
    out->size = plan->size;
    out->deadline = plan->deadline;
    out->expires_at = plan->expires_at;
    out->tuples_per_participant = plan->tuples_per_participant;
    out->min_participants = plan->privacy ? plan->privacy->min_participants : 0;
    out->protocol = qr_protocol_of(plan->protocol);
    out->emit =
        tk_plan_emit(plan->protocol, plan->tuples_per_participant, plan->tag_buckets, plan->fakes);
    out->rounds = plan->shuffle_rounds;
    out->batch_min = plan->shuffle_batch_min;
    if (out->protocol < 0 || out->emit == 0 ||
        (out->protocol == QR_PROTO_SHUFFLE && (out->rounds == 0 || out->batch_min < 2)))
        rc = QR_ERR_MALFORMED; /* no token would take it */

cleanup:
    cohort__plan__free_unpacked(plan, NULL);
    cohort__signed_plan__free_unpacked(sp, NULL);
    return rc;
}

/* ------------------------------------------------------------ requests */

int qr_codec_request_decode(struct qr_request *out, const uint8_t *req, size_t len)
{
    struct decode_budget budget = {0, 0, 0, 0};
    ProtobufCAllocator alloc = {budget_alloc, budget_free, &budget};
    Cohort__ServiceRequest *m;

    memset(out, 0, sizeof *out);
    if (len > QR_REQUEST_MAX)
        return QR_ERR_TOO_LARGE;
    budget.limit = (size_t)QR_DECODE_FACTOR * len + QR_DECODE_SLACK;
    m = cohort__service_request__unpack(&alloc, len, req);
    if (m == NULL) {
        if (budget.nomem)
            return QR_ERR_NOMEM;
        return budget.over ? QR_ERR_TOO_LARGE : QR_ERR_MALFORMED;
    }

    switch (m->body_case) {
    case COHORT__SERVICE_REQUEST__BODY_WORK:
        out->kind = QR_REQ_WORK;
        out->token_id = m->work->token_id.data;
        out->token_id_len = m->work->token_id.len;
        break;
    case COHORT__SERVICE_REQUEST__BODY_UPLOAD: {
        const Cohort__Contribution *ct = m->upload->contribution;

        out->kind = QR_REQ_UPLOAD;
        out->token_id = m->upload->token_id.data;
        out->token_id_len = m->upload->token_id.len;
        if (ct != NULL) {
            out->has_contribution = 1;
            out->query_id = ct->query_id.data;
            out->query_id_len = ct->query_id.len;
            out->key = ct->key.data;
            out->key_len = ct->key.len;
            out->n_tuples = ct->n_tuples;
        }
        break;
    }
    case COHORT__SERVICE_REQUEST__BODY_RESULT: {
        const Cohort__AggOutput *o = m->result->output;

        out->kind = QR_REQ_RESULT;
        out->token_id = m->result->token_id.data;
        out->token_id_len = m->result->token_id.len;
        out->task_id = m->result->task_id;
        out->status = m->result->status;
        if (o != NULL) {
            out->has_output = 1;
            out->n_partials = o->n_partials;
            if (o->result != NULL) {
                out->has_result = 1;
                out->result_query_id = o->result->query_id.data;
                out->result_query_id_len = o->result->query_id.len;
                out->result_packed_len = cohort__sealed_result__get_packed_size(o->result);
            }
        }
        break;
    }
    default:
        cohort__service_request__free_unpacked(m, NULL);
        memset(out, 0, sizeof *out);
        return QR_ERR_MALFORMED;
    }
    out->msg_ = m;
    return 0;
}

void qr_codec_request_free(struct qr_request *r)
{
    if (r == NULL)
        return;
    cohort__service_request__free_unpacked(r->msg_, NULL);
    memset(r, 0, sizeof *r);
}

static void ct_view(struct qr_wire_ct *out, const Cohort__Ciphertext *c)
{
    out->query = c->query.data;
    out->query_len = c->query.len;
    out->phase = (int)c->phase;
    out->level = c->level;
    out->partition = c->partition;
    out->chunk = c->chunk;
    out->nchunks = c->nchunks;
    out->key = c->key.data;
    out->key_len = c->key.len;
    out->nonce_len = c->nonce.len;
    out->box_len = c->box.len;
    out->tag = c->tag.data;
    out->tag_len = c->tag.len;
    out->packed_len = cohort__ciphertext__get_packed_size(c);
    out->msg_ = c;
}

void qr_codec_tuple(struct qr_wire_ct *out, const struct qr_request *r, size_t i)
{
    const Cohort__ServiceRequest *m = r->msg_;

    assert(r->kind == QR_REQ_UPLOAD && i < r->n_tuples);
    ct_view(out, m->upload->contribution->tuples[i]);
}

void qr_codec_partial(struct qr_wire_ct *out, const struct qr_request *r, size_t i)
{
    const Cohort__ServiceRequest *m = r->msg_;

    assert(r->kind == QR_REQ_RESULT && i < r->n_partials);
    ct_view(out, m->result->output->partials[i]);
}

size_t qr_codec_key_record(uint8_t *out, const uint8_t query_tag[QR_QUERY_TAG_LEN],
                           const uint8_t key[QR_CONTRIB_KEY_LEN])
{
    Cohort__Ciphertext c;

    cohort__ciphertext__init(&c);
    c.query.data = (uint8_t *)(uintptr_t)query_tag;
    c.query.len = QR_QUERY_TAG_LEN;
    c.phase = COHORT__PHASE__PHASE_KEYS;
    c.key.data = (uint8_t *)(uintptr_t)key;
    c.key.len = QR_CONTRIB_KEY_LEN;
    if (out == NULL)
        return cohort__ciphertext__get_packed_size(&c);
    return cohort__ciphertext__pack(&c, out);
}

int qr_protocol_of(const char *name)
{
    static const char *const names[] = {"s_agg", "rnf_noise", "c_noise", "ed_hist", "shuffle"};
    for (size_t i = 0; name != NULL && i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i]) == 0)
            return (int)i;
    return -1;
}

void qr_codec_ct_pack(const struct qr_wire_ct *ct, uint8_t *out)
{
    size_t n = cohort__ciphertext__pack(ct->msg_, out);

    assert(n == ct->packed_len);
    (void)n;
}

void qr_codec_result_pack(const struct qr_request *r, uint8_t *out)
{
    const Cohort__ServiceRequest *m = r->msg_;
    size_t n;

    assert(r->has_result);
    n = cohort__sealed_result__pack(m->result->output->result, out);
    assert(n == r->result_packed_len);
    (void)n;
}

/* ------------------------------------------------------------- replies */

/* Wire types. */
#define WT_VARINT 0u
#define WT_LEN 2u

static size_t varint_len(uint64_t v)
{
    size_t n = 1;

    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

static uint32_t zigzag32(int32_t v)
{
    return v < 0 ? (((uint32_t)(-(v + 1))) << 1) | 1u : ((uint32_t)v) << 1;
}

/* Bytes of a varint field, omitted when zero as proto3 does. */
static size_t varint_field_len(uint32_t field, uint64_t v)
{
    return v ? varint_len((uint64_t)field << 3) + varint_len(v) : 0;
}

static size_t len_field_len(uint32_t field, size_t len)
{
    return varint_len((uint64_t)field << 3) + varint_len(len) + len;
}

static uint8_t *put_varint_field(uint8_t *p, uint32_t field, uint64_t v)
{
    if (v == 0)
        return p;
    p = put_varint(p, ((uint64_t)field << 3) | WT_VARINT);
    return put_varint(p, v);
}

/* The header of a length-delimited field; the caller writes len bytes next. */
static uint8_t *put_len_header(uint8_t *p, uint32_t field, size_t len)
{
    p = put_varint(p, ((uint64_t)field << 3) | WT_LEN);
    return put_varint(p, len);
}

static uint8_t *put_bytes_field(uint8_t *p, uint32_t field, const uint8_t *b, size_t len)
{
    p = put_len_header(p, field, len);
    if (len)
        memcpy(p, b, len);
    return p + len;
}

/* Field numbers of proto/cohort.proto. */
enum {
    F_REPLY_STATUS = 1,
    F_REPLY_ERROR = 2,
    F_REPLY_WORK = 3,
    F_WORK_RETRY = 1,
    F_WORK_COLLECT = 2,
    F_WORK_TASK = 3,
    F_COLLECT_PLAN = 1,
    F_TASK_ID = 1,
    F_TASK_PLAN = 2,
    F_TASK_LEVEL = 3,
    F_TASK_PARTITION = 4,
    F_TASK_FINAL = 5,
    F_TASK_INPUTS = 6,
    F_TASK_QUERY_ID = 7,
    F_TASK_STAGE = 8,
};

static size_t task_len(const struct qr_reply *r)
{
    size_t n = varint_field_len(F_TASK_ID, r->task_id) + len_field_len(F_TASK_PLAN, r->plan_len) +
               varint_field_len(F_TASK_LEVEL, r->level) +
               varint_field_len(F_TASK_PARTITION, r->partition) +
               varint_field_len(F_TASK_FINAL, r->final ? 1 : 0) +
               (r->query_id ? len_field_len(F_TASK_QUERY_ID, QR_QUERY_ID_LEN) : 0) +
               (r->stage ? varint_field_len(F_TASK_STAGE, (uint64_t)r->stage) : 0);

    for (size_t i = 0; i < r->n_inputs; i++) {
        const uint8_t *b;
        size_t len;

        r->input(r->input_ctx, i, &b, &len);
        n += len_field_len(F_TASK_INPUTS, len);
    }
    return n;
}

int qr_codec_reply_encode(uint8_t **out, size_t *out_len, const struct qr_reply *r)
{
    size_t error_len = r->error ? strlen(r->error) : 0;
    size_t collect_len = 0, tlen = 0, work_len = 0, total;
    uint8_t *buf, *p;

    *out = NULL;
    *out_len = 0;
    if (r->work == QR_WORK_COLLECT)
        collect_len = len_field_len(F_COLLECT_PLAN, r->plan_len);
    if (r->work == QR_WORK_TASK)
        tlen = task_len(r);
    if (r->work != QR_WORK_NONE) {
        work_len = varint_field_len(F_WORK_RETRY, r->retry_after_ms);
        if (r->work == QR_WORK_COLLECT)
            work_len += len_field_len(F_WORK_COLLECT, collect_len);
        if (r->work == QR_WORK_TASK)
            work_len += len_field_len(F_WORK_TASK, tlen);
    }
    total = varint_field_len(F_REPLY_STATUS, zigzag32(r->status)) +
            (error_len ? len_field_len(F_REPLY_ERROR, error_len) : 0) +
            (r->work != QR_WORK_NONE ? len_field_len(F_REPLY_WORK, work_len) : 0);

    buf = malloc(total ? total : 1);
    if (buf == NULL)
        return QR_ERR_NOMEM;
    p = put_varint_field(buf, F_REPLY_STATUS, zigzag32(r->status));
    if (error_len)
        p = put_bytes_field(p, F_REPLY_ERROR, (const uint8_t *)r->error, error_len);
    if (r->work != QR_WORK_NONE) {
        p = put_len_header(p, F_REPLY_WORK, work_len);
        p = put_varint_field(p, F_WORK_RETRY, r->retry_after_ms);
        if (r->work == QR_WORK_COLLECT) {
            p = put_len_header(p, F_WORK_COLLECT, collect_len);
            p = put_bytes_field(p, F_COLLECT_PLAN, r->plan, r->plan_len);
        } else if (r->work == QR_WORK_TASK) {
            p = put_len_header(p, F_WORK_TASK, tlen);
            p = put_varint_field(p, F_TASK_ID, r->task_id);
            p = put_bytes_field(p, F_TASK_PLAN, r->plan, r->plan_len);
            p = put_varint_field(p, F_TASK_LEVEL, r->level);
            p = put_varint_field(p, F_TASK_PARTITION, r->partition);
            p = put_varint_field(p, F_TASK_FINAL, r->final ? 1 : 0);
            for (size_t i = 0; i < r->n_inputs; i++) {
                const uint8_t *b;
                size_t len;

                r->input(r->input_ctx, i, &b, &len);
                p = put_bytes_field(p, F_TASK_INPUTS, b, len);
            }
            if (r->query_id)
                p = put_bytes_field(p, F_TASK_QUERY_ID, r->query_id, QR_QUERY_ID_LEN);
            if (r->stage)
                p = put_varint_field(p, F_TASK_STAGE, (uint64_t)r->stage);
        }
    }
    assert((size_t)(p - buf) == total);
    *out = buf;
    *out_len = total;
    return 0;
}
