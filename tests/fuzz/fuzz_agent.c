/*
 * Fuzz target: the participant agent's handling of a service reply,
 * pt_agent_handle, on any bytes, over a real token.
 *
 * Invariants: it returns 0 or a PT_ERR_*; it produces a next request
 * exactly when it says it collected or aggregated, and that request
 * decodes as a ServiceRequest of the matching kind.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <string.h>

#include <cmocka.h>

#include "participant/participant.h"
#include "tests/fuzz/fuzz.h"
#include "tests/tk_fixture.h"

static struct fx_world world;
static struct fx_token tok;
static struct fx_signed plan;
static struct pt_inproc link_state;
static struct pt_agent agent;
static int ready;

static void setup(void)
{
    struct fx_row rows[8];
    struct fx_plan_spec spec;
    struct pt_link link;
    size_t n;
    if (ready)
        return;
    fx_world_init(&world);
    fx_token_init(&tok, TK_ARENA_DEFAULT);
    fx_provision(&tok, &world, "agent");
    n = fx_gen_rows(rows, 8, 4);
    fx_load_health(&tok, rows, n);
    fx_plan_default(&spec);
    fx_plan_sign(&plan, &spec, &world.researcher);
    pt_inproc_init(&link_state, &tok.tk, tok.arena, tok.arena_len);
    link = pt_inproc_link(&link_state);
    pt_agent_init(&agent, &link, tok.tk.sign_pk);
    ready = 1;
}

void fuzz_one(const uint8_t *data, size_t size)
{
    enum pt_action action;
    uint8_t *next = NULL;
    size_t next_len = 0;
    int rc;

    setup();
    rc = pt_agent_handle(&agent, FX_NOW, data, size, &action, &next, &next_len);
    FUZZ_CHECK(rc <= 0);
    if (rc == PT_OK && (action == PT_COLLECTED || action == PT_AGGREGATED)) {
        Cohort__ServiceRequest *r = cohort__service_request__unpack(NULL, next_len, next);
        FUZZ_CHECK(r != NULL);
        FUZZ_CHECK(r->body_case == (action == PT_COLLECTED ? COHORT__SERVICE_REQUEST__BODY_UPLOAD
                                                           : COHORT__SERVICE_REQUEST__BODY_RESULT));
        cohort__service_request__free_unpacked(r, NULL);
    } else {
        FUZZ_CHECK(next == NULL && next_len == 0);
    }
    free(next);
}

static void add_reply(void (*add)(const uint8_t *, size_t), Cohort__WorkReply *work)
{
    Cohort__ServiceReply reply;
    size_t len;
    uint8_t *buf;
    cohort__service_reply__init(&reply);
    reply.work = work;
    len = cohort__service_reply__get_packed_size(&reply);
    buf = malloc(len ? len : 1);
    if (buf == NULL)
        return;
    cohort__service_reply__pack(&reply, buf);
    add(buf, len);
    free(buf);
}

void fuzz_seeds(void (*add)(const uint8_t *data, size_t size))
{
    Cohort__WorkReply work;
    Cohort__CollectWork cw;
    Cohort__AggTask task;
    struct fx_cts cts = {0};

    setup();
    cohort__work_reply__init(&work);
    work.retry_after_ms = 1000;
    add_reply(add, &work);

    cohort__collect_work__init(&cw);
    cw.plan = plan.sp;
    work.work_case = COHORT__WORK_REPLY__WORK_COLLECT;
    work.collect = &cw;
    add_reply(add, &work);

    if (fx_collect_into(&tok, FX_NOW, plan.sp, &cts) == TK_OK) {
        cohort__agg_task__init(&task);
        task.task_id = 1;
        task.plan = plan.sp;
        task.level = 1;
        task.final = true;
        task.n_inputs = cts.n;
        task.inputs = cts.v;
        work.work_case = COHORT__WORK_REPLY__WORK_TASK;
        work.task = &task;
        add_reply(add, &work);
    }
    fx_cts_free(&cts);
}

#ifdef COHORT_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_one(data, size);
    return 0;
}
#endif
