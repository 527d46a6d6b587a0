/*
 * Fuzz target: the token's entry point, tk_dispatch, on any request bytes.
 *
 * A provisioned token with a table stands ready; each input is dispatched
 * to it. Invariants: the call returns 0 or a known TK_ERR_*; the response
 * decodes as a TokenResponse carrying that status; the arena's peak stays
 * within the arena; and a refused request leaves the token as it was (its
 * state and its flash), but for an open aggregation session, which an
 * error closes, and a pending LoadTable batch, which an error drops.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <string.h>

#include <cmocka.h>

#include "tests/fuzz/fuzz.h"
#include "tests/tk_fixture.h"

static struct fx_world world;
static struct fx_token tok;
static struct fx_signed plan;
static int ready;
static uint8_t resp[1u << 20];
static unsigned long seen[-TK_ERR_LAST + 1];

/* FUZZ_STATS=1: how many inputs ended with each status. */
static void report(void)
{
    int i;
    for (i = 0; i <= -TK_ERR_LAST; i++)
        if (seen[i])
            fprintf(stderr, "%-24s %lu\n", tk_errname(-i), seen[i]);
}

static void fresh_token(void)
{
    struct fx_row rows[8];
    size_t n = fx_gen_rows(rows, 8, 3);
    fx_token_init(&tok, TK_ARENA_DEFAULT);
    fx_provision(&tok, &world, "fuzzed");
    fx_load_health(&tok, rows, n);
}

static void setup(void)
{
    struct fx_plan_spec spec;
    if (ready) {
        /* Accepted LoadTables make the store grow: start again now and then. */
        if (fx_flash_size(&tok) > (64u << 10)) {
            fx_token_free(&tok);
            fresh_token();
        }
        return;
    }
    fx_world_init(&world);
    fresh_token();
    if (getenv("FUZZ_STATS") != NULL)
        atexit(report);
    fx_plan_default(&spec);
    fx_plan_sign(&plan, &spec, &world.researcher);
    ready = 1;
}

void fuzz_one(const uint8_t *data, size_t size)
{
    struct tk_token before;
    uint64_t store_before;
    size_t resp_len = 0, peak = 0;
    Cohort__TokenResponse *r;
    int rc;

    setup();
    before = tok.tk;
    store_before = fx_flash_size(&tok);
    rc = tk_dispatch(&tok.tk, tok.arena, tok.arena_len, data, size, resp, sizeof resp, &resp_len,
                     &peak);
    FUZZ_CHECK(rc <= 0 && rc >= TK_ERR_LAST);
    seen[-rc]++;
    FUZZ_CHECK(peak <= tok.arena_len);
    FUZZ_CHECK(resp_len > 0);
    r = cohort__token_response__unpack(NULL, resp_len, resp);
    FUZZ_CHECK(r != NULL);
    FUZZ_CHECK(r->status == rc);
    cohort__token_response__free_unpacked(r, NULL);
    if (rc != TK_OK && before.batch_open) {
        /* The pending batch is dropped, and nothing else changes. */
        FUZZ_CHECK(!tok.tk.batch_open);
        FUZZ_CHECK(memcmp(&tok.tk.work, &tok.tk.log, sizeof tok.tk.log) == 0);
        FUZZ_CHECK(fx_flash_size(&tok) == tok.tk.log.length);
    } else if (rc != TK_OK) {
        memcpy(before.session, tok.tk.session, sizeof before.session);
        FUZZ_CHECK(memcmp(&before, &tok.tk, sizeof before) == 0);
        FUZZ_CHECK(fx_flash_size(&tok) == store_before);
    }
}

void fuzz_seeds(void (*add)(const uint8_t *data, size_t size))
{
    struct fx_row rows[8];
    struct fx_rows_pb pb;
    struct fx_schema h;
    Cohort__TokenRequest req;
    Cohort__LoadTable lt;
    Cohort__GetInfo info;
    uint8_t *bytes, session[TK_SESSION_ID_LEN] = {1};
    size_t len, n;

    setup();
    bytes = fx_collect_request(&len, FX_NOW, plan.sp);
    add(bytes, len);
    free(bytes);
    bytes = fx_agg_begin_request(&len, FX_NOW, plan.sp, 1, 0, false);
    add(bytes, len);
    free(bytes);
    bytes = fx_agg_end_request(&len, FX_NOW, session, sizeof session);
    add(bytes, len);
    free(bytes);

    n = fx_gen_rows(rows, 8, 9);
    fx_health_schema(&h);
    fx_rows_pb(&pb, rows, n);
    cohort__token_request__init(&req);
    cohort__load_table__init(&lt);
    lt.schema = &h.s;
    lt.rows = pb.ptrs;
    lt.n_rows = n;
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_LOAD_TABLE;
    req.load_table = &lt;
    bytes = fx_pack_request(&req, &len);
    add(bytes, len);
    free(bytes);
    fx_rows_pb_free(&pb);

    cohort__token_request__init(&req);
    cohort__get_info__init(&info);
    req.body_case = COHORT__TOKEN_REQUEST__BODY_INFO;
    req.info = &info;
    bytes = fx_pack_request(&req, &len);
    add(bytes, len);
    free(bytes);
}

#ifdef COHORT_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_one(data, size);
    return 0;
}
#endif
