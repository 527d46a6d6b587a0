/*
 * What the USB tests share: the requests they send through a USB path
 * (the framing, the host driver, the libusb link, the emulator's socket,
 * the emulated device) and the checks every path must pass: GetInfo
 * answers as the token does directly, a blank token is provisioned through
 * it, and a document written through it reads back the same through it.
 *
 * A path is a function that sends one TokenRequest and returns the
 * TokenResponse unpacked (the caller frees it), asserting that the path
 * itself did not fail. Every test document is usb_document_plain's pattern
 * under the same metadata, so that a document written in one place (one
 * process, one run) can be checked in another.
 */
#ifndef COHORT_TESTS_USB_FIXTURE_H
#define COHORT_TESTS_USB_FIXTURE_H

#include <sys/types.h>
#include <sys/wait.h>

#include "tk_fixture.h"

typedef Cohort__TokenResponse *(*usb_through_fn)(void *ctx, const uint8_t *req, size_t len);

/* Waits for the child pid (a program under test) to end: its exit status,
 * as a shell gives it (128 + the signal that ended it). */
static inline int usb_wait_exit(pid_t pid)
{
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

/* The path through a link: ctx is a struct pt_link, whose transaction must succeed. */
static inline Cohort__TokenResponse *usb_through_link(void *ctx, const uint8_t *req, size_t len)
{
    const struct pt_link *l = ctx;
    const uint8_t *resp;
    size_t resp_len;
    Cohort__TokenResponse *out;
    assert_int_equal(l->transact(l->ctx, req, len, &resp, &resp_len), PT_OK);
    out = cohort__token_response__unpack(NULL, resp_len, resp);
    assert_non_null(out);
    return out;
}

/* req, made at FX_NOW, through the path. */
static inline Cohort__TokenResponse *usb_call(usb_through_fn through, void *ctx,
                                              Cohort__TokenRequest *req)
{
    size_t len;
    uint8_t *buf;
    Cohort__TokenResponse *resp;
    req->now = FX_NOW;
    buf = fx_pack_request(req, &len);
    resp = through(ctx, buf, len);
    free(buf);
    return resp;
}

static inline uint8_t *usb_info_request(size_t *len)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__GetInfo gi = COHORT__GET_INFO__INIT;
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_INFO;
    req.info = &gi;
    return fx_pack_request(&req, len);
}

/* A DocWrite (field 20) or DocRead (field 22) request. */
static inline uint8_t *usb_doc_stream_request(size_t *len, uint32_t field, const uint8_t *session,
                                              const uint8_t *data, size_t n, bool last)
{
    Cohort__DocWrite w = COHORT__DOC_WRITE__INIT; /* DocRead has the same fields */
    uint8_t *body, *req;
    size_t body_len;
    w.session = (ProtobufCBinaryData){TK_SESSION_ID_LEN, (uint8_t *)session};
    w.data = (ProtobufCBinaryData){n, (uint8_t *)data};
    w.last = last;
    body_len = cohort__doc_write__get_packed_size(&w);
    body = fx_alloc(body_len);
    cohort__doc_write__pack(&w, body);
    req = fx_raw_request(len, FX_NOW, field, body, body_len);
    free(body);
    return req;
}

/* GetInfo through the path answers what the token t answers directly. */
static inline void usb_get_info_matches(usb_through_fn through, void *ctx, struct fx_token *t)
{
    size_t len;
    uint8_t *req = usb_info_request(&len);
    Cohort__TokenResponse *resp = through(ctx, req, len), *direct;
    assert_int_equal(resp->status, TK_OK);
    assert_int_equal(resp->body_case, COHORT__TOKEN_RESPONSE__BODY_INFO);
    assert_true(resp->info->provisioned);
    assert_int_equal(fx_call_raw(t, req, len, &direct), TK_OK);
    assert_memory_equal(resp->info->sign_pk.data, direct->info->sign_pk.data, 32);
    cohort__token_response__free_unpacked(resp, NULL);
    cohort__token_response__free_unpacked(direct, NULL);
    free(req);
}

/*
 * The maker's ceremony through the path, as fx_provision does it directly
 * but without a consent policy: the blank token makes its keys, w's maker
 * certifies them for subject, and the token gets w's group secret sealed
 * to it and w's study authority to trust. The token's public signing key
 * goes to sign_pk unless it is NULL.
 */
static inline void usb_provision(usb_through_fn through, void *ctx, const struct fx_world *w,
                                 const char *subject, uint8_t *sign_pk)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__ProvisionBegin pb = COHORT__PROVISION_BEGIN__INIT;
    Cohort__ProvisionFinish pf = COHORT__PROVISION_FINISH__INIT;
    Cohort__Certificate c;
    Cohort__TokenResponse *resp;
    ProtobufCBinaryData trusted = {32, (uint8_t *)w->authority.pk};
    uint8_t sealed[32 + crypto_box_SEALBYTES];
    struct fx_cert cert;

    pb.subject = (char *)subject;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_PROVISION_BEGIN;
    req.provision_begin = &pb;
    resp = usb_call(through, ctx, &req);
    assert_int_equal(resp->status, TK_OK);
    assert_int_equal(resp->body_case, COHORT__TOKEN_RESPONSE__BODY_CERT_REQUEST);
    assert_int_equal(resp->cert_request->sign_pk.len, 32);
    assert_int_equal(resp->cert_request->box_pk.len, 32);
    if (sign_pk != NULL)
        memcpy(sign_pk, resp->cert_request->sign_pk.data, 32);
    fx_cert_issue(&cert, COHORT__ROLE__ROLE_TOKEN, subject, resp->cert_request->sign_pk.data,
                  resp->cert_request->box_pk.data, &w->maker, FX_NOW - FX_DAY,
                  FX_NOW + 365 * FX_DAY, NULL);
    crypto_box_seal(sealed, w->secret, 32, resp->cert_request->box_pk.data);
    cohort__token_response__free_unpacked(resp, NULL);

    fx_cert_pb(&c, &cert);
    pf.device_cert = &c;
    pf.sealed_group_secret = (ProtobufCBinaryData){sizeof sealed, sealed};
    pf.n_trusted_authorities = 1;
    pf.trusted_authorities = &trusted;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_PROVISION_FINISH;
    req.provision_finish = &pf;
    resp = usb_call(through, ctx, &req);
    assert_int_equal(resp->status, TK_OK);
    cohort__token_response__free_unpacked(resp, NULL);
}

/* The n bytes of a test document. */
static inline void usb_document_plain(uint8_t *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 7 + 3);
}

/* A DocBegin (a bank statement) through the path: the new session's id in session. */
static inline void usb_document_begin(usb_through_fn through, void *ctx,
                                      uint8_t session[TK_SESSION_ID_LEN])
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__DocBegin b = COHORT__DOC_BEGIN__INIT;
    Cohort__DocMeta meta = COHORT__DOC_META__INIT;
    Cohort__TokenResponse *resp;
    meta.type = "statement";
    meta.author = "bank";
    meta.subject = "statement";
    meta.created = FX_NOW;
    meta.modified = FX_NOW;
    b.meta = &meta;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_DOC_BEGIN;
    req.doc_begin = &b;
    resp = usb_call(through, ctx, &req);
    assert_int_equal(resp->status, TK_OK);
    assert_int_equal(resp->body_case, COHORT__TOKEN_RESPONSE__BODY_DOC_SESSION);
    memcpy(session, resp->doc_session->session.data, TK_SESSION_ID_LEN);
    cohort__token_response__free_unpacked(resp, NULL);
}

/* A new document of n bytes (usb_document_plain's) written through the
 * path in one DocWrite. Returns its DocCipher response: where the document
 * is, and its ciphertext (free it with cohort__token_response__free_unpacked). */
static inline Cohort__TokenResponse *usb_document_write(usb_through_fn through, void *ctx, size_t n)
{
    Cohort__TokenResponse *wr;
    uint8_t session[TK_SESSION_ID_LEN], *buf, *plain = fx_alloc(n);
    size_t len;
    usb_document_plain(plain, n);
    usb_document_begin(through, ctx, session);
    buf = usb_doc_stream_request(&len, 20, session, plain, n, true);
    wr = through(ctx, buf, len);
    free(buf);
    free(plain);
    assert_int_equal(wr->status, TK_OK);
    assert_int_equal(wr->body_case, COHORT__TOKEN_RESPONSE__BODY_DOC_CIPHER);
    return wr;
}

/* The document dc names, read back through the path in one DocRead, is
 * the n bytes usb_document_write wrote. */
static inline void usb_document_read_back(usb_through_fn through, void *ctx,
                                          const Cohort__DocCipher *dc, size_t n)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__DocOpen o = COHORT__DOC_OPEN__INIT;
    Cohort__TokenResponse *resp;
    uint8_t session[TK_SESSION_ID_LEN], *buf, *plain = fx_alloc(n);
    size_t len;
    usb_document_plain(plain, n);
    o.doc_id = dc->ref->doc_id;
    o.revision = dc->ref->revision;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_DOC_OPEN;
    req.doc_open = &o;
    resp = usb_call(through, ctx, &req);
    assert_int_equal(resp->status, TK_OK);
    memcpy(session, resp->doc_session->session.data, TK_SESSION_ID_LEN);
    cohort__token_response__free_unpacked(resp, NULL);

    buf = usb_doc_stream_request(&len, 22, session, dc->data.data, dc->data.len, true);
    resp = through(ctx, buf, len);
    free(buf);
    assert_int_equal(resp->status, TK_OK);
    assert_int_equal(resp->body_case, COHORT__TOKEN_RESPONSE__BODY_DOC_PLAIN);
    assert_true(resp->doc_plain->done);
    assert_int_equal(resp->doc_plain->data.len, n);
    assert_memory_equal(resp->doc_plain->data.data, plain, n);
    cohort__token_response__free_unpacked(resp, NULL);
    free(plain);
}

/* A document of n bytes written and read back through the path. */
static inline void usb_document_round_trip(usb_through_fn through, void *ctx, size_t n)
{
    Cohort__TokenResponse *wr = usb_document_write(through, ctx, n);
    usb_document_read_back(through, ctx, wr->doc_cipher, n);
    cohort__token_response__free_unpacked(wr, NULL);
}

#endif
