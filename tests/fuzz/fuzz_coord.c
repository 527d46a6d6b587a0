/*
 * Fuzz target: the coordinator's entry point, qr_coord_handle, on any
 * request bytes.
 *
 * Invariants: it always answers with a ServiceReply that decodes and
 * carries the returned status (0 or a QR_ERR_*), and a refused request
 * changes nothing but the message counters and the count of rejected
 * uploads.
 */
#include <string.h>

#include "proto/cohort.pb-c.h"
#include "querier/querier.h"
#include "tests/fuzz/fuzz.h"
#include "token/token.h"

#define NOW_MS 1785000000000ll

static qr_coord *coord;
static uint8_t query_id[32];

static void setup(void)
{
    struct qr_identity authority, researcher;
    struct qr_compile_opts opts = {
        .study = "fuzz", .now = NOW_MS / 1000, .collect_seconds = 3600, .valid_seconds = 86400};
    struct qr_sql_error err;
    uint8_t *plan, *cert, *sp;
    size_t plan_len, cert_len, sp_len;
    const uint8_t *chain[1];
    size_t chain_len[1];

    if (coord != NULL)
        return;
    FUZZ_CHECK(tk_library_init() == TK_OK);
    FUZZ_CHECK(qr_identity_generate(&authority) == 0 && qr_identity_generate(&researcher) == 0);
    FUZZ_CHECK(qr_cert_issue(&cert, &cert_len, &authority, COHORT__ROLE__ROLE_RESEARCHER, "r",
                             researcher.sign_pk, researcher.box_pk, 0, NOW_MS / 1000 + 86400,
                             NULL) == 0);
    FUZZ_CHECK(qr_sql_compile(&plan, &plan_len,
                              "SELECT COUNT(*) FROM health WITH (min_participants = 1)", &opts,
                              &err) == 0);
    chain[0] = cert;
    chain_len[0] = cert_len;
    FUZZ_CHECK(qr_plan_sign(&sp, &sp_len, plan, plan_len, &researcher, chain, chain_len, 1) == 0);
    tk_query_id(query_id, plan, plan_len);
    FUZZ_CHECK(qr_coord_new(&coord, sp, sp_len, NULL, NOW_MS) == 0);
    free(plan);
    free(cert);
    free(sp);
    qr_identity_wipe(&authority);
    qr_identity_wipe(&researcher);
}

void fuzz_one(const uint8_t *data, size_t size)
{
    struct qr_coord_stats a, b;
    Cohort__ServiceReply *r;
    uint8_t *reply = NULL;
    size_t reply_len = 0;
    int rc;

    setup();
    qr_coord_stats(coord, &a);
    rc = qr_coord_handle(coord, NOW_MS + 1000, data, size, &reply, &reply_len);
    qr_coord_stats(coord, &b);
    FUZZ_CHECK(rc <= 0);
    FUZZ_CHECK(reply != NULL);
    r = cohort__service_reply__unpack(NULL, reply_len, reply);
    FUZZ_CHECK(r != NULL && r->status == rc);
    cohort__service_reply__free_unpacked(r, NULL);
    free(reply);
    if (rc != 0) {
        FUZZ_CHECK(a.state == b.state && a.contributions == b.contributions &&
                   a.ciphertexts_collected == b.ciphertexts_collected &&
                   a.tasks_issued == b.tasks_issued && a.tasks_done == b.tasks_done);
    }
}

static void add_request(void (*add)(const uint8_t *, size_t), Cohort__ServiceRequest *req)
{
    size_t len = cohort__service_request__get_packed_size(req);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL)
        return;
    cohort__service_request__pack(req, buf);
    add(buf, len);
    free(buf);
}

void fuzz_seeds(void (*add)(const uint8_t *data, size_t size))
{
    uint8_t token[32] = {7}, key[16] = {9}, nonce[24] = {1}, box[120] = {2};
    Cohort__ServiceRequest req;
    Cohort__WorkRequest wr;
    Cohort__Upload up;
    Cohort__Contribution c;
    Cohort__Ciphertext ct, *cts[1] = {&ct};
    Cohort__TaskResult tr;

    setup();
    cohort__service_request__init(&req);
    cohort__work_request__init(&wr);
    wr.token_id = (ProtobufCBinaryData){sizeof token, token};
    req.body_case = COHORT__SERVICE_REQUEST__BODY_WORK;
    req.work = &wr;
    add_request(add, &req);

    cohort__ciphertext__init(&ct);
    ct.query = (ProtobufCBinaryData){8, query_id};
    ct.phase = COHORT__PHASE__PHASE_COLLECT;
    ct.nchunks = 1;
    ct.key = (ProtobufCBinaryData){sizeof key, key};
    ct.nonce = (ProtobufCBinaryData){sizeof nonce, nonce};
    ct.box = (ProtobufCBinaryData){sizeof box, box};
    cohort__contribution__init(&c);
    c.query_id = (ProtobufCBinaryData){32, query_id};
    c.key = ct.key;
    c.n_tuples = 1;
    c.tuples = cts;
    cohort__upload__init(&up);
    up.token_id = wr.token_id;
    up.contribution = &c;
    cohort__service_request__init(&req);
    req.body_case = COHORT__SERVICE_REQUEST__BODY_UPLOAD;
    req.upload = &up;
    add_request(add, &req);

    cohort__task_result__init(&tr);
    tr.task_id = 1;
    tr.token_id = wr.token_id;
    cohort__service_request__init(&req);
    req.body_case = COHORT__SERVICE_REQUEST__BODY_RESULT;
    req.result = &tr;
    add_request(add, &req);
}

#ifdef COHORT_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_one(data, size);
    return 0;
}
#endif
