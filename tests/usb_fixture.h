/*
 * What the USB tests share: the requests they send through a USB path
 * (the framing, the host driver, the libusb link) and the two checks every
 * path must pass: GetInfo answers as the token does directly, and a
 * document written through the path reads back the same through it.
 *
 * A path is a function that sends one TokenRequest and returns the
 * TokenResponse unpacked (the caller frees it), asserting that the path
 * itself did not fail.
 */
#ifndef COHORT_TESTS_USB_FIXTURE_H
#define COHORT_TESTS_USB_FIXTURE_H

#include "tk_fixture.h"

typedef Cohort__TokenResponse *(*usb_through_fn)(void *ctx, const uint8_t *req, size_t len);

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

/* A document of n bytes written and read back through the path. */
static inline void usb_document_round_trip(usb_through_fn through, void *ctx, size_t n)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__DocBegin b = COHORT__DOC_BEGIN__INIT;
    Cohort__DocMeta meta = COHORT__DOC_META__INIT;
    Cohort__DocOpen o = COHORT__DOC_OPEN__INIT;
    Cohort__TokenResponse *resp, *wr;
    uint8_t session[TK_SESSION_ID_LEN], *buf, *plain = fx_alloc(n);
    size_t len, i;
    for (i = 0; i < n; i++)
        plain[i] = (uint8_t)(i * 13 + 5);
    meta.type = "statement";
    meta.author = "bank";
    meta.subject = "statement";
    meta.created = FX_NOW;
    meta.modified = FX_NOW;
    b.meta = &meta;
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_DOC_BEGIN;
    req.doc_begin = &b;
    buf = fx_pack_request(&req, &len);
    resp = through(ctx, buf, len);
    free(buf);
    assert_int_equal(resp->status, TK_OK);
    memcpy(session, resp->doc_session->session.data, TK_SESSION_ID_LEN);
    cohort__token_response__free_unpacked(resp, NULL);

    buf = usb_doc_stream_request(&len, 20, session, plain, n, true);
    wr = through(ctx, buf, len);
    free(buf);
    assert_int_equal(wr->status, TK_OK);
    assert_int_equal(wr->body_case, COHORT__TOKEN_RESPONSE__BODY_DOC_CIPHER);

    o.doc_id = wr->doc_cipher->ref->doc_id;
    o.revision = wr->doc_cipher->ref->revision;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_DOC_OPEN;
    req.doc_open = &o;
    buf = fx_pack_request(&req, &len);
    resp = through(ctx, buf, len);
    free(buf);
    assert_int_equal(resp->status, TK_OK);
    memcpy(session, resp->doc_session->session.data, TK_SESSION_ID_LEN);
    cohort__token_response__free_unpacked(resp, NULL);

    buf = usb_doc_stream_request(&len, 22, session, wr->doc_cipher->data.data,
                                 wr->doc_cipher->data.len, true);
    resp = through(ctx, buf, len);
    free(buf);
    assert_int_equal(resp->status, TK_OK);
    assert_int_equal(resp->body_case, COHORT__TOKEN_RESPONSE__BODY_DOC_PLAIN);
    assert_int_equal(resp->doc_plain->data.len, n);
    assert_memory_equal(resp->doc_plain->data.data, plain, n);
    cohort__token_response__free_unpacked(resp, NULL);
    cohort__token_response__free_unpacked(wr, NULL);
    free(plain);
}

#endif
