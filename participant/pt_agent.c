/*
 * The participant agent: service replies in, token calls, service requests
 * out.
 *
 * For a collection, the agent hands the signed plan to its token and
 * uploads the contribution the token returns. For an aggregation task, it
 * streams the task's inputs through the token in AggFeed messages of at
 * most PT_FEED_MAX bytes (or less, if the token asks for less) and returns
 * what AggEnd produces. The agent never holds a key or a plaintext: what
 * it moves is what the service already saw or may see.
 *
 * Every reply from the service is bounded (PT_REPLY_MAX) before it is
 * decoded. A token that refuses an aggregation task yields a TaskResult
 * with the token's status, so the service learns at once to hand the
 * partition to someone else.
 */
#include <stdlib.h>
#include <string.h>

#include "participant/participant.h"
#include "proto/cohort.pb-c.h"

const char *pt_strerror(int code)
{
    switch (code) {
    case PT_OK:
        return "success";
    case PT_ERR_NOMEM:
        return "out of memory";
    case PT_ERR_MALFORMED:
        return "malformed reply from the service";
    case PT_ERR_SERVICE:
        return "the service answered with an error";
    case PT_ERR_LINK:
        return "the token link failed";
    case PT_ERR_TOO_LARGE:
        return "message over its size limit";
    case PT_ERR_IO:
        return "a file operation failed";
    case PT_ERR_TOKEN:
        return "the token refused (see its status)";
    case PT_ERR_EXISTS:
        return "the directory exists and is not empty";
    case PT_ERR_BUSY:
        return "the token is in use by another process";
    case PT_ERR_INPUT:
        return "the owner's input is invalid";
    default:
        return "unknown error";
    }
}

void pt_agent_init(struct pt_agent *ag, const struct pt_link *link, const uint8_t token_id[32])
{
    memset(ag, 0, sizeof *ag);
    memcpy(ag->token_id, token_id, 32);
    ag->link = *link;
}

/* Pack any message into a fresh malloc'd buffer. */
static int pack(const ProtobufCMessage *m, uint8_t **out, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *p = malloc(n ? n : 1);
    if (p == NULL)
        return PT_ERR_NOMEM;
    protobuf_c_message_pack(m, p);
    *out = p;
    *len = n;
    return PT_OK;
}

/* Send a TokenRequest and decode the response (caller frees it). */
/* The token's reason, cut to fit and kept to printable ASCII: it is shown
 * to the owner and may be logged. */
static void keep_reason(struct pt_agent *ag, const char *r)
{
    size_t n = 0;
    for (; r != NULL && *r != '\0' && n + 1 < sizeof ag->last_reason; r++)
        ag->last_reason[n++] = (*r >= 0x20 && *r < 0x7f) ? *r : '?';
    ag->last_reason[n] = '\0';
}

static int call(struct pt_agent *ag, Cohort__TokenRequest *req, Cohort__TokenResponse **out)
{
    uint8_t *buf;
    size_t len, resp_len;
    const uint8_t *resp;
    int rc;

    if ((rc = pack(&req->base, &buf, &len)) != PT_OK)
        return rc;
    rc = ag->link.transact(ag->link.ctx, buf, len, &resp, &resp_len);
    free(buf);
    ag->token_calls++;
    if (rc != 0)
        return PT_ERR_LINK;
    *out = cohort__token_response__unpack(NULL, resp_len, resp);
    if (*out == NULL)
        return PT_ERR_LINK;
    ag->last_token_status = (*out)->status;
    keep_reason(ag, (*out)->reason);
    return PT_OK;
}

int pt_agent_work_request(struct pt_agent *ag, uint8_t **req, size_t *req_len)
{
    Cohort__ServiceRequest sr;
    Cohort__WorkRequest wr;
    cohort__service_request__init(&sr);
    cohort__work_request__init(&wr);
    ProtobufCBinaryData declined[PT_DECLINED_MAX];

    wr.token_id.data = ag->token_id;
    wr.token_id.len = sizeof ag->token_id;
    for (uint32_t i = 0; i < ag->n_declined; i++) {
        declined[i].data = ag->declined[i];
        declined[i].len = 32;
    }
    wr.n_declined = ag->n_declined;
    wr.declined = declined;
    sr.body_case = COHORT__SERVICE_REQUEST__BODY_WORK;
    sr.work = &wr;
    return pack(&sr.base, req, req_len);
}

static void note_declined(struct pt_agent *ag, const uint8_t query_id[32])
{
    for (uint32_t i = 0; i < ag->n_declined; i++)
        if (memcmp(ag->declined[i], query_id, 32) == 0)
            return;
    memcpy(ag->declined[ag->declined_next], query_id, 32);
    ag->declined_next = (ag->declined_next + 1) % PT_DECLINED_MAX;
    if (ag->n_declined < PT_DECLINED_MAX)
        ag->n_declined++;
}

static int do_collect(struct pt_agent *ag, int64_t now, const Cohort__CollectWork *work,
                      enum pt_action *action, uint8_t **next, size_t *next_len)
{
    Cohort__TokenRequest tr;
    Cohort__Collect col;
    Cohort__TokenResponse *resp = NULL;
    Cohort__ServiceRequest sr;
    Cohort__Upload up;
    int rc;

    cohort__token_request__init(&tr);
    cohort__collect__init(&col);
    col.plan = work->plan;
    tr.now = now;
    tr.body_case = COHORT__TOKEN_REQUEST__BODY_COLLECT;
    tr.collect = &col;
    if (work->plan->plan.len > 0)
        tk_query_id(ag->last_query, work->plan->plan.data, work->plan->plan.len);
    if ((rc = call(ag, &tr, &resp)) != PT_OK)
        return rc;
    if (resp->status != 0 || resp->body_case != COHORT__TOKEN_RESPONSE__BODY_CONTRIBUTION) {
        *action = PT_REFUSED;
        /* A verdict on the plan is final; trouble of the token's own
         * (its store, its memory, its randomness) may pass: ask again. */
        if (resp->status != TK_ERR_STORE && resp->status != TK_ERR_NO_MEMORY &&
            resp->status != TK_ERR_RESPONSE_SPACE && resp->status != TK_ERR_RANDOM &&
            resp->status != TK_ERR_TAMPERED && resp->status != TK_ERR_ROLLBACK)
            note_declined(ag, ag->last_query);
        if (resp->status == 0)
            ag->last_token_status = TK_ERR_MALFORMED;
        cohort__token_response__free_unpacked(resp, NULL);
        return PT_OK;
    }
    cohort__service_request__init(&sr);
    cohort__upload__init(&up);
    up.token_id.data = ag->token_id;
    up.token_id.len = sizeof ag->token_id;
    up.contribution = resp->contribution;
    sr.body_case = COHORT__SERVICE_REQUEST__BODY_UPLOAD;
    sr.upload = &up;
    rc = pack(&sr.base, next, next_len);
    cohort__token_response__free_unpacked(resp, NULL);
    if (rc == PT_OK)
        *action = PT_COLLECTED;
    return rc;
}

/* Run the session; on a token refusal *status is set and *output is NULL. */
static int run_task(struct pt_agent *ag, int64_t now, const Cohort__AggTask *task, int *status,
                    Cohort__TokenResponse **output)
{
    Cohort__TokenRequest tr;
    Cohort__AggBegin begin;
    Cohort__AggFeed feed;
    Cohort__AggEnd end;
    Cohort__TokenResponse *resp = NULL;
    uint8_t session[TK_SESSION_ID_LEN];
    size_t max_feed = PT_FEED_MAX, i = 0;
    int rc;

    *status = 0;
    *output = NULL;
    cohort__token_request__init(&tr);
    tr.now = now;
    cohort__agg_begin__init(&begin);
    begin.plan = task->plan;
    begin.level = task->level;
    begin.partition = task->partition;
    begin.final = task->final;
    begin.stage = task->stage;
    tr.body_case = COHORT__TOKEN_REQUEST__BODY_AGG_BEGIN;
    tr.agg_begin = &begin;
    if ((rc = call(ag, &tr, &resp)) != PT_OK)
        return rc;
    if (resp->status != 0 || resp->body_case != COHORT__TOKEN_RESPONSE__BODY_SESSION ||
        resp->session->session.len != sizeof session) {
        *status = resp->status ? resp->status : TK_ERR_MALFORMED;
        cohort__token_response__free_unpacked(resp, NULL);
        return PT_OK;
    }
    memcpy(session, resp->session->session.data, sizeof session);
    if (resp->session->max_feed_bytes > 0 && resp->session->max_feed_bytes < max_feed)
        max_feed = resp->session->max_feed_bytes;
    cohort__token_response__free_unpacked(resp, NULL);

    while (i < task->n_inputs) {
        size_t start = i, bytes = 0;
        while (i < task->n_inputs) {
            size_t n = cohort__ciphertext__get_packed_size(task->inputs[i]) + 8;
            if (i > start && bytes + n > max_feed)
                break;
            bytes += n;
            i++;
        }
        cohort__agg_feed__init(&feed);
        feed.session.data = session;
        feed.session.len = sizeof session;
        feed.n_inputs = i - start;
        feed.inputs = task->inputs + start;
        cohort__token_request__init(&tr);
        tr.now = now;
        tr.body_case = COHORT__TOKEN_REQUEST__BODY_AGG_FEED;
        tr.agg_feed = &feed;
        if ((rc = call(ag, &tr, &resp)) != PT_OK)
            return rc;
        *status = resp->status;
        cohort__token_response__free_unpacked(resp, NULL);
        if (*status != 0)
            return PT_OK;
    }

    cohort__agg_end__init(&end);
    end.session.data = session;
    end.session.len = sizeof session;
    cohort__token_request__init(&tr);
    tr.now = now;
    tr.body_case = COHORT__TOKEN_REQUEST__BODY_AGG_END;
    tr.agg_end = &end;
    if ((rc = call(ag, &tr, &resp)) != PT_OK)
        return rc;
    if (resp->status != 0 || resp->body_case != COHORT__TOKEN_RESPONSE__BODY_OUTPUT) {
        *status = resp->status ? resp->status : TK_ERR_MALFORMED;
        cohort__token_response__free_unpacked(resp, NULL);
        return PT_OK;
    }
    *output = resp;
    return PT_OK;
}

static int do_task(struct pt_agent *ag, int64_t now, const Cohort__AggTask *task,
                   enum pt_action *action, uint8_t **next, size_t *next_len)
{
    Cohort__TokenResponse *out = NULL;
    Cohort__ServiceRequest sr;
    Cohort__TaskResult res;
    int status = 0, rc;

    if ((rc = run_task(ag, now, task, &status, &out)) != PT_OK)
        return rc;
    cohort__service_request__init(&sr);
    cohort__task_result__init(&res);
    res.task_id = task->task_id;
    res.token_id.data = ag->token_id;
    res.token_id.len = sizeof ag->token_id;
    res.status = status;
    res.output = out ? out->output : NULL;
    res.query_id = task->query_id;
    if (task->query_id.len == 32)
        memcpy(ag->last_query, task->query_id.data, 32);
    sr.body_case = COHORT__SERVICE_REQUEST__BODY_RESULT;
    sr.result = &res;
    rc = pack(&sr.base, next, next_len);
    if (out)
        cohort__token_response__free_unpacked(out, NULL);
    ag->last_token_status = status;
    if (rc == PT_OK)
        *action = PT_AGGREGATED;
    return rc;
}

int pt_agent_handle(struct pt_agent *ag, int64_t now, const uint8_t *reply, size_t reply_len,
                    enum pt_action *action, uint8_t **next, size_t *next_len)
{
    Cohort__ServiceReply *r;
    int rc = PT_OK;

    *action = PT_IDLE;
    *next = NULL;
    *next_len = 0;
    if (reply_len > PT_REPLY_MAX)
        return PT_ERR_TOO_LARGE;
    r = cohort__service_reply__unpack(NULL, reply_len, reply);
    if (r == NULL)
        return PT_ERR_MALFORMED;
    if (r->status != 0) {
        cohort__service_reply__free_unpacked(r, NULL);
        return PT_ERR_SERVICE;
    }
    ag->retry_after_ms = r->work ? r->work->retry_after_ms : 1000;
    if (r->work != NULL && r->work->work_case == COHORT__WORK_REPLY__WORK_COLLECT &&
        r->work->collect->plan != NULL)
        rc = do_collect(ag, now, r->work->collect, action, next, next_len);
    else if (r->work != NULL && r->work->work_case == COHORT__WORK_REPLY__WORK_TASK &&
             r->work->task->plan != NULL)
        rc = do_task(ag, now, r->work->task, action, next, next_len);
    cohort__service_reply__free_unpacked(r, NULL);
    return rc;
}

static int token_info_cert(struct pt_agent *ag, int64_t now, Cohort__TokenResponse **out)
{
    Cohort__TokenRequest tr;
    Cohort__GetInfo gi;
    int rc;

    cohort__token_request__init(&tr);
    cohort__get_info__init(&gi);
    tr.now = now;
    tr.body_case = COHORT__TOKEN_REQUEST__BODY_INFO;
    tr.info = &gi;
    if ((rc = call(ag, &tr, out)) != PT_OK)
        return rc;
    if ((*out)->status != 0 || (*out)->body_case != COHORT__TOKEN_RESPONSE__BODY_INFO ||
        !(*out)->info->provisioned || (*out)->info->device_cert == NULL) {
        cohort__token_response__free_unpacked(*out, NULL);
        *out = NULL;
        return PT_ERR_TOKEN;
    }
    return PT_OK;
}

int pt_agent_hello(struct pt_agent *ag, int64_t now, uint8_t **req, size_t *req_len)
{
    Cohort__TokenResponse *info = NULL;
    Cohort__ServiceRequest sr;
    Cohort__Hello hello;
    int rc;

    *req = NULL;
    *req_len = 0;
    if ((rc = token_info_cert(ag, now, &info)) != PT_OK)
        return rc;
    cohort__service_request__init(&sr);
    cohort__hello__init(&hello);
    hello.device_cert = info->info->device_cert;
    sr.body_case = COHORT__SERVICE_REQUEST__BODY_HELLO;
    sr.hello = &hello;
    rc = pack(&sr.base, req, req_len);
    cohort__token_response__free_unpacked(info, NULL);
    return rc;
}

int pt_agent_admit(struct pt_agent *ag, int64_t now, const uint8_t *reply, size_t reply_len,
                   uint8_t **req, size_t *req_len)
{
    Cohort__ServiceReply *r;
    Cohort__TokenResponse *resp = NULL;
    Cohort__TokenRequest tr;
    Cohort__Attest at;
    Cohort__ServiceRequest sr;
    Cohort__Admit admit;
    int rc;

    *req = NULL;
    *req_len = 0;
    if (reply_len > PT_REPLY_MAX)
        return PT_ERR_TOO_LARGE;
    r = cohort__service_reply__unpack(NULL, reply_len, reply);
    if (r == NULL)
        return PT_ERR_MALFORMED;
    if (r->status != 0) {
        keep_reason(ag, r->error);
        cohort__service_reply__free_unpacked(r, NULL);
        return PT_ERR_SERVICE;
    }
    if (r->challenge.len < TK_CHALLENGE_MIN || r->challenge.len > TK_CHALLENGE_MAX) {
        cohort__service_reply__free_unpacked(r, NULL);
        return PT_ERR_MALFORMED;
    }
    cohort__token_request__init(&tr);
    cohort__attest__init(&at);
    at.challenge = r->challenge;
    tr.now = now;
    tr.body_case = COHORT__TOKEN_REQUEST__BODY_ATTEST;
    tr.attest = &at;
    rc = call(ag, &tr, &resp);
    if (rc == PT_OK &&
        (resp->status != 0 || resp->body_case != COHORT__TOKEN_RESPONSE__BODY_ATTESTATION))
        rc = PT_ERR_TOKEN;
    if (rc == PT_OK) {
        cohort__service_request__init(&sr);
        cohort__admit__init(&admit);
        admit.challenge = r->challenge;
        admit.attestation = resp->attestation;
        sr.body_case = COHORT__SERVICE_REQUEST__BODY_ADMIT;
        sr.admit = &admit;
        rc = pack(&sr.base, req, req_len);
    }
    if (resp)
        cohort__token_response__free_unpacked(resp, NULL);
    cohort__service_reply__free_unpacked(r, NULL);
    return rc;
}
