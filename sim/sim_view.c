/*
 * sim_view.c: the querier service's view of a run, recorded message by
 * message.
 *
 * The service sees bytes: a ServiceRequest from a participant's agent and
 * the ServiceReply it sends back. This file is the one place where those
 * bytes are decoded for the leakage report; it keeps of them only what
 * matters to an observer that cannot open a box: the kind of exchange, its
 * peer and time, the task's coordinates, and each ciphertext's identity
 * (a hash of its packed bytes, so a copy forwarded from an upload into a
 * task is recognised), size and visible tag. A million-participant run
 * records millions of ciphertexts, so a ciphertext costs 32 bytes and no
 * message bytes are kept.
 *
 * Invariants: every event's ciphertexts are cts[first_ct .. first_ct +
 * n_ct), contiguous, in record order; a call that fails leaves the view as
 * it was (all space is reserved and every ciphertext hashed before n_ev
 * and n_cts move).
 *
 * Nothing decoded here is trusted: sizes are bounded before unpacking, and
 * a malformed message is refused whole.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "proto/cohort.pb-c.h"
#include "sim/sim_leak.h"

void sim_view_init(struct sim_view *v)
{
    if (v == NULL)
        return;
    memset(v, 0, sizeof *v);
}

void sim_view_free(struct sim_view *v)
{
    if (v == NULL)
        return;
    free(v->ev);
    free(v->cts);
    memset(v, 0, sizeof *v);
}

/* Make room for `more` elements beyond n in *arr (capacity *cap). */
static int reserve(void **arr, size_t *cap, size_t n, size_t more, size_t elem, size_t max)
{
    size_t want, ncap;
    void *p;

    if (more > max || n > max - more)
        return -1;
    want = n + more;
    if (want <= *cap)
        return 0;
    ncap = *cap ? *cap : 64;
    while (ncap < want)
        ncap = ncap > max / 2 ? max : ncap * 2;
    if (ncap > SIZE_MAX / elem)
        return -1;
    p = realloc(*arr, ncap * elem);
    if (p == NULL)
        return -1;
    *arr = p;
    *cap = ncap;
    return 0;
}

/* Fill one sim_view_ct from a decoded Ciphertext; *buf (capacity *buf_cap)
 * is scratch space for its packed bytes. */
static int ct_note(struct sim_view_ct *out, const Cohort__Ciphertext *ct, uint8_t **buf,
                   size_t *buf_cap)
{
    uint8_t h[crypto_generichash_BYTES];
    size_t n;

    if (ct == NULL)
        return -1;
    if (ct->tag.len != 0 && ct->tag.len != SIM_VIEW_TAG_LEN)
        return -1;
    n = cohort__ciphertext__get_packed_size(ct);
    if (n > UINT32_MAX)
        return -1;
    if (n > *buf_cap) {
        uint8_t *p = realloc(*buf, n);
        if (p == NULL)
            return -1;
        *buf = p;
        *buf_cap = n;
    }
    if (cohort__ciphertext__pack(ct, *buf) != n)
        return -1;
    crypto_generichash(h, sizeof h, *buf, n, NULL, 0);
    memset(out, 0, sizeof *out);
    for (int i = 7; i >= 0; i--)
        out->id = out->id << 8 | h[i];
    out->size = (uint32_t)n;
    if (ct->tag.len == SIM_VIEW_TAG_LEN) {
        out->has_tag = 1;
        memcpy(out->tag, ct->tag.data, SIM_VIEW_TAG_LEN);
    }
    return 0;
}

int sim_view_record(struct sim_view *v, uint64_t who, int64_t t_ms, const uint8_t *req,
                    size_t req_len, const uint8_t *reply, size_t reply_len)
{
    Cohort__ServiceRequest *rq = NULL;
    Cohort__ServiceReply *rp = NULL;
    Cohort__Ciphertext **cts = NULL;
    struct sim_view_event ev;
    uint8_t *buf = NULL;
    size_t buf_cap = 0, n = 0;
    int rc = -1;

    if (v == NULL || (req == NULL && req_len != 0) || (reply == NULL && reply_len != 0) ||
        req_len > SIM_VIEW_MESSAGE_MAX || reply_len > SIM_VIEW_MESSAGE_MAX)
        return -1;
    if (sodium_init() < 0)
        return -1;
    rq = cohort__service_request__unpack(NULL, req_len, req);
    if (rq == NULL)
        goto cleanup;
    rp = cohort__service_reply__unpack(NULL, reply_len, reply);
    if (rp == NULL)
        goto cleanup;

    memset(&ev, 0, sizeof ev);
    ev.t_ms = t_ms;
    ev.who = who;
    if (rq->body_case == COHORT__SERVICE_REQUEST__BODY_UPLOAD) {
        if (rq->upload == NULL || rq->upload->contribution == NULL)
            goto cleanup;
        ev.kind = SIM_VIEW_UPLOAD;
        ev.status = rp->status;
        ev.bytes = (uint32_t)req_len;
        cts = rq->upload->contribution->tuples;
        n = rq->upload->contribution->n_tuples;
    } else if (rq->body_case == COHORT__SERVICE_REQUEST__BODY_RESULT) {
        const Cohort__TaskResult *r = rq->result;
        if (r == NULL)
            goto cleanup;
        ev.kind = SIM_VIEW_RESULT;
        ev.status = r->status != 0 ? r->status : rp->status;
        ev.task_id = r->task_id;
        ev.bytes = (uint32_t)req_len;
        if (r->output != NULL) {
            cts = r->output->partials;
            n = r->output->n_partials;
        }
    } else if (rp->work != NULL && rp->work->work_case == COHORT__WORK_REPLY__WORK_TASK) {
        const Cohort__AggTask *t = rp->work->task;
        if (t == NULL)
            goto cleanup;
        ev.kind = SIM_VIEW_TASK;
        ev.task_id = t->task_id;
        ev.stage = (int)t->stage;
        ev.level = t->level;
        ev.partition = t->partition;
        ev.final = t->final ? 1 : 0;
        ev.bytes = (uint32_t)reply_len;
        cts = t->inputs;
        n = t->n_inputs;
    } else {
        rc = 0; /* nothing the report needs */
        goto cleanup;
    }

    if (reserve((void **)&v->ev, &v->cap_ev, v->n_ev, 1, sizeof *v->ev, SIZE_MAX / 2) != 0 ||
        reserve((void **)&v->cts, &v->cap_cts, v->n_cts, n, sizeof *v->cts, SIM_VIEW_CTS_MAX) != 0)
        goto cleanup;
    for (size_t i = 0; i < n; i++)
        if (ct_note(&v->cts[v->n_cts + i], cts[i], &buf, &buf_cap) != 0)
            goto cleanup;
    ev.first_ct = v->n_cts;
    ev.n_ct = n;
    v->ev[v->n_ev++] = ev;
    v->n_cts += n;
    rc = 0;

cleanup:
    free(buf);
    if (rp != NULL)
        cohort__service_reply__free_unpacked(rp, NULL);
    if (rq != NULL)
        cohort__service_request__free_unpacked(rq, NULL);
    return rc;
}

static const char *kind_name(int kind)
{
    switch (kind) {
    case SIM_VIEW_UPLOAD:
        return "upload";
    case SIM_VIEW_TASK:
        return "task";
    case SIM_VIEW_RESULT:
        return "result";
    default:
        return "unknown";
    }
}

int sim_view_write_csv(const struct sim_view *v, FILE *f)
{
    static const char hex[] = "0123456789abcdef";

    if (v == NULL || f == NULL)
        return -1;
    if (fputs("event,t_ms,who,kind,task_id,stage,level,partition,final,ct_id,size,tag\n", f) < 0)
        return -1;
    for (size_t e = 0; e < v->n_ev; e++) {
        const struct sim_view_event *ev = &v->ev[e];

        if (ev->first_ct > v->n_cts || ev->n_ct > v->n_cts - ev->first_ct)
            return -1;
        for (size_t i = 0; i < ev->n_ct; i++) {
            const struct sim_view_ct *ct = &v->cts[ev->first_ct + i];
            char tag[2 * SIM_VIEW_TAG_LEN + 1];

            tag[0] = '\0';
            if (ct->has_tag) {
                for (unsigned k = 0; k < SIM_VIEW_TAG_LEN; k++) {
                    tag[2 * k] = hex[ct->tag[k] >> 4];
                    tag[2 * k + 1] = hex[ct->tag[k] & 15];
                }
                tag[2 * SIM_VIEW_TAG_LEN] = '\0';
            }
            if (fprintf(f,
                        "%zu,%" PRId64 ",%" PRIu64 ",%s,%" PRIu64 ",%d,%" PRIu32 ",%" PRIu32
                        ",%d,%016" PRIx64 ",%" PRIu32 ",%s\n",
                        e, ev->t_ms, ev->who, kind_name(ev->kind), ev->task_id, ev->stage,
                        ev->level, ev->partition, ev->final, ct->id, ct->size, tag) < 0)
                return -1;
        }
    }
    return ferror(f) ? -1 : 0;
}
