/*
 * The token's USB framing (token/USB.md): the device's side
 * (token/tk_usb.c) driven by the host's (participant/pt_usbframe.c), with
 * a provisioned token behind it.
 *
 * - Whole exchanges: GetInfo, and a document written and read back, go
 *   through frames and tk_dispatch and come back whole.
 * - The OUT stream is fed in every split into two pieces, and byte by
 *   byte: the IN stream is the same each time.
 * - Recovery: a corrupted frame is NAKed with the offset to resend from
 *   and the resend completes the request; a duplicate is answered from the
 *   cached response without running again; a RESET drops a message half
 *   received; a corrupted IN frame is asked for again by the host.
 * - Hostile input, each with its exact outcome: a version no side shares,
 *   DATA before HELLO, oversized lengths and totals, bad magic, garbage
 *   before a frame (found again by scanning for the magic).
 */
#include "usb_fixture.h"

#include "participant/pt_usbframe.h"
#include "token/tk_usb.h"

#define REQ_MAX (96u * 1024u)
#define RESP_MAX (96u * 1024u)
#define PAYLOAD 256u
#define STREAM_MAX (1u << 20)

struct bytes {
    uint8_t *p;
    size_t n;
};

static void bytes_put(struct bytes *b, const uint8_t *p, size_t n)
{
    assert_true(b->n + n <= STREAM_MAX);
    if (b->p == NULL)
        b->p = fx_alloc(STREAM_MAX);
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

static void bytes_free(struct bytes *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

struct rig {
    struct fx_world w;
    struct fx_token t;
    void *region;
    struct tk_usb *dev;
    struct pt_usbframe_rx rx;
};

static void rig_device(struct rig *r, uint16_t max_payload)
{
    struct tk_usb_config cfg = {&r->t.tk, r->t.arena, r->t.arena_len,
                                REQ_MAX,  RESP_MAX,   max_payload};
    size_t need = tk_usb_region_size(REQ_MAX, RESP_MAX);
    assert_true(need > 0);
    free(r->region);
    r->region = fx_alloc(need);
    assert_int_equal(tk_usb_init(&r->dev, r->region, need - 1, &cfg), TK_ERR_NO_MEMORY);
    assert_int_equal(tk_usb_init(&r->dev, r->region, need, &cfg), TK_OK);
    pt_usbframe_rx_init(&r->rx);
}

static struct rig *rig_new(uint16_t max_payload)
{
    struct rig *r = fx_alloc(sizeof *r);
    fx_world_init(&r->w);
    fx_token_init(&r->t, TK_ARENA_DEFAULT);
    fx_provision(&r->t, &r->w, "token-usb");
    rig_device(r, max_payload);
    return r;
}

static void rig_free(struct rig *r)
{
    fx_token_free(&r->t);
    free(r->region);
    free(r);
}

static struct tk_usb_stats stats(const struct rig *r)
{
    struct tk_usb_stats s;
    tk_usb_get_stats(r->dev, &s);
    return s;
}

/* Everything the device has to send, as one IN byte stream. */
static void drain(struct rig *r, struct bytes *in)
{
    uint8_t frame[TK_USB_FRAME_MAX];
    size_t n;
    for (;;) {
        assert_int_equal(tk_usb_poll(r->dev, frame, sizeof frame, &n), TK_OK);
        if (n == 0)
            return;
        bytes_put(in, frame, n);
    }
}

/* The frames of an IN stream (payloads copied out). */
struct frames {
    struct pt_usbframe f[512];
    uint8_t payload[512][TK_USB_PAYLOAD_MAX];
    size_t n;
};

static struct frames *decode(struct rig *r, const struct bytes *in)
{
    struct frames *fs = fx_alloc(sizeof *fs);
    size_t at = 0, used;
    while (at < in->n) {
        struct pt_usbframe f;
        int rc = pt_usbframe_rx_next(&r->rx, in->p + at, in->n - at, &used, &f);
        at += used;
        if (rc == PT_USBFRAME_MORE)
            break;
        assert_true(fs->n < 512);
        if (f.payload != NULL) {
            memcpy(fs->payload[fs->n], f.payload, f.len);
            f.payload = fs->payload[fs->n];
        }
        fs->f[fs->n++] = f;
    }
    return fs;
}

/* Frame a message and send all of it; the max payload is the host's choice. */
static void send_msg(struct rig *r, uint16_t seq, const uint8_t *msg, size_t len, size_t payload)
{
    uint8_t frame[TK_USB_FRAME_MAX];
    size_t off = 0, n;
    do {
        n = pt_usbframe_data(frame, sizeof frame, seq, msg, len, &off, payload);
        assert_true(n > 0);
        tk_usb_feed(r->dev, frame, n);
    } while (off < len);
}

static void send_control(struct rig *r, uint8_t type, uint16_t seq, uint32_t offset,
                         const uint8_t *p, size_t n)
{
    uint8_t frame[TK_USB_FRAME_MAX];
    size_t len =
        pt_usbframe_encode(frame, sizeof frame, TK_USB_VERSION, type, 0, seq, offset, 0, p, n);
    assert_true(len > 0);
    tk_usb_feed(r->dev, frame, len);
}

static void hello(struct rig *r, uint16_t max_payload)
{
    uint8_t frame[64], v = TK_USB_VERSION;
    struct bytes in = {0};
    struct frames *fs;
    struct pt_usbframe_limits lim;
    size_t n = pt_usbframe_hello(frame, sizeof frame, 7, &v, 1);
    tk_usb_feed(r->dev, frame, n);
    drain(r, &in);
    fs = decode(r, &in);
    assert_int_equal(fs->n, 1);
    assert_int_equal(fs->f[0].type, TK_USB_HELLO);
    assert_int_equal(fs->f[0].seq, 7);
    assert_int_equal(pt_usbframe_hello_reply(&lim, &fs->f[0]), 0);
    assert_int_equal(lim.version, TK_USB_VERSION);
    assert_int_equal(lim.max_payload, max_payload);
    assert_int_equal(lim.request_max, REQ_MAX);
    assert_int_equal(lim.response_max, RESP_MAX);
    free(fs);
    bytes_free(&in);
}

/* The IN frames that answer a request: an ACK, then the response's DATA
 * frames, reassembled into resp (malloc'd). */
static void expect_response(struct rig *r, uint16_t seq, size_t req_len, uint8_t **resp,
                            size_t *resp_len)
{
    struct bytes in = {0};
    struct frames *fs;
    struct pt_usbframe_msg m;
    uint8_t *buf = fx_alloc(RESP_MAX);
    size_t i;
    int rc = 0;
    drain(r, &in);
    fs = decode(r, &in);
    assert_true(fs->n >= 2);
    assert_int_equal(fs->f[0].type, TK_USB_ACK);
    assert_int_equal(fs->f[0].seq, seq);
    assert_int_equal(fs->f[0].offset, req_len);
    assert_int_equal(fs->f[0].total, req_len);
    pt_usbframe_msg_init(&m, buf, RESP_MAX, seq);
    for (i = 1; i < fs->n; i++) {
        assert_int_equal(rc, 0);
        rc = pt_usbframe_msg_add(&m, &fs->f[i]);
    }
    assert_int_equal(rc, 1);
    *resp = buf;
    *resp_len = m.total;
    free(fs);
    bytes_free(&in);
}

/* A whole exchange: the request framed and sent, the response decoded. */
static Cohort__TokenResponse *exchange(struct rig *r, uint16_t seq, const uint8_t *req, size_t len)
{
    uint8_t *resp;
    size_t resp_len;
    Cohort__TokenResponse *out;
    send_msg(r, seq, req, len, PAYLOAD);
    expect_response(r, seq, len, &resp, &resp_len);
    out = cohort__token_response__unpack(NULL, resp_len, resp);
    assert_non_null(out);
    free(resp);
    return out;
}

/* The single control frame the device answers with; its payload goes to
 * payload_copy, which holds TK_USB_PAYLOAD_MAX bytes. */
static struct pt_usbframe one_frame(struct rig *r, uint8_t *payload_copy)
{
    struct bytes in = {0};
    struct frames *fs;
    struct pt_usbframe f;
    drain(r, &in);
    fs = decode(r, &in);
    assert_int_equal(fs->n, 1);
    f = fs->f[0];
    assert_true(f.len <= TK_USB_PAYLOAD_MAX);
    if (payload_copy != NULL && f.len > 0)
        memcpy(payload_copy, fs->payload[0], f.len);
    f.payload = NULL;
    free(fs);
    bytes_free(&in);
    return f;
}

static void nothing_to_send(struct rig *r)
{
    uint8_t frame[TK_USB_FRAME_MAX];
    size_t n = 1;
    assert_int_equal(tk_usb_poll(r->dev, frame, sizeof frame, &n), TK_OK);
    assert_int_equal(n, 0);
}

/* ------------------------------------------------------------ tests */

static void crc32c_gives_its_known_answer_and_chains(void **state)
{
    const uint8_t s[] = "123456789";
    (void)state;
    assert_int_equal(tk_usb_crc32c(0, s, 9), 0xE3069283u);
    assert_int_equal(tk_usb_crc32c(tk_usb_crc32c(0, s, 4), s + 4, 5), 0xE3069283u);
    assert_int_equal(tk_usb_crc32c(0, s, 0), 0);
}

static void get_info_goes_through_frames_and_the_token(void **state)
{
    struct rig *r = rig_new(PAYLOAD);
    uint8_t *req;
    size_t len;
    Cohort__TokenResponse *resp, *direct;
    (void)state;
    hello(r, PAYLOAD);
    req = usb_info_request(&len);
    resp = exchange(r, 1, req, len);
    assert_int_equal(resp->status, TK_OK);
    assert_int_equal(resp->body_case, COHORT__TOKEN_RESPONSE__BODY_INFO);
    assert_true(resp->info->provisioned);
    assert_int_equal(fx_call_raw(&r->t, req, len, &direct), TK_OK);
    assert_memory_equal(resp->info->sign_pk.data, direct->info->sign_pk.data, 32);
    assert_int_equal(stats(r).dispatched, 1);
    assert_int_equal(stats(r).naks, 0);
    cohort__token_response__free_unpacked(resp, NULL);
    cohort__token_response__free_unpacked(direct, NULL);
    free(req);
    rig_free(r);
}

/* A path for usb_fixture.h's requests: each exchanged under the next
 * sequence number. */
struct framed {
    struct rig *r;
    uint16_t *seq;
};

static Cohort__TokenResponse *through_frames(void *ctx, const uint8_t *req, size_t len)
{
    struct framed *f = ctx;
    return exchange(f->r, (*f->seq)++, req, len);
}

/* Begin a document and write `plain` in one DocWrite; returns the
 * DocWrite request (for a duplicate) and the cipher file. */
static Cohort__TokenResponse *doc_write_through(struct rig *r, uint16_t *seq, const uint8_t *plain,
                                                size_t n, uint8_t **write_req, size_t *write_len)
{
    struct framed path = {r, seq};
    Cohort__TokenResponse *resp;
    uint8_t session[TK_SESSION_ID_LEN];
    usb_document_begin(through_frames, &path, session);
    *write_req = usb_doc_stream_request(write_len, 20, session, plain, n, true);
    resp = exchange(r, (*seq)++, *write_req, *write_len);
    assert_int_equal(resp->status, TK_OK);
    assert_int_equal(resp->body_case, COHORT__TOKEN_RESPONSE__BODY_DOC_CIPHER);
    assert_non_null(resp->doc_cipher->ref);
    return resp;
}

static void a_document_is_written_and_read_back_through_frames(void **state)
{
    struct rig *r = rig_new(PAYLOAD);
    Cohort__TokenResponse *wr;
    uint8_t plain[20000], *wreq;
    size_t wlen;
    uint16_t seq = 65530; /* the sequence numbers wrap around on the way */
    struct framed path = {r, &seq};
    (void)state;
    usb_document_plain(plain, sizeof plain);
    hello(r, PAYLOAD);
    wr = doc_write_through(r, &seq, plain, sizeof plain, &wreq, &wlen);
    assert_true(wlen > sizeof plain);
    assert_true(wr->doc_cipher->data.len > sizeof plain);
    usb_document_read_back(through_frames, &path, wr->doc_cipher, sizeof plain);
    assert_int_equal(seq, 65534 + 0u);
    assert_int_equal(stats(r).dispatched, 4);
    assert_int_equal(stats(r).naks, 0);
    cohort__token_response__free_unpacked(wr, NULL);
    free(wreq);
    rig_free(r);
}

/* HELLO and a GetInfo cut into 3-byte frames, as one OUT stream. */
static void split_stream(struct bytes *out, size_t *req_len)
{
    uint8_t frame[TK_USB_FRAME_MAX], v = TK_USB_VERSION, *req;
    size_t len, off = 0, n;
    n = pt_usbframe_hello(frame, sizeof frame, 1, &v, 1);
    bytes_put(out, frame, n);
    req = usb_info_request(&len);
    do {
        n = pt_usbframe_data(frame, sizeof frame, 2, req, len, &off, 3);
        bytes_put(out, frame, n);
    } while (off < len);
    *req_len = len;
    free(req);
}

static void every_split_of_the_out_stream_gives_the_same_in_stream(void **state)
{
    struct rig *r = rig_new(TK_USB_PAYLOAD_MIN);
    struct bytes out = {0}, ref = {0};
    size_t req_len, k, i;
    (void)state;
    split_stream(&out, &req_len);
    assert_true(req_len >= 7); /* three frames at least */
    tk_usb_feed(r->dev, out.p, out.n);
    drain(r, &ref);
    assert_true(ref.n > 0);
    for (k = 0; k <= out.n; k++) {
        struct bytes in = {0};
        tk_usb_feed(r->dev, out.p, k);
        drain(r, &in);
        tk_usb_feed(r->dev, out.p + k, out.n - k);
        drain(r, &in);
        assert_int_equal(in.n, ref.n);
        assert_memory_equal(in.p, ref.p, ref.n);
        bytes_free(&in);
    }
    {
        struct bytes in = {0};
        for (i = 0; i < out.n; i++) {
            tk_usb_feed(r->dev, out.p + i, 1);
            drain(r, &in);
        }
        assert_int_equal(in.n, ref.n);
        assert_memory_equal(in.p, ref.p, ref.n);
        bytes_free(&in);
    }
    /* A HELLO drops the cached response: every pass ran the request. */
    assert_int_equal(stats(r).dispatched, out.n + 3);
    assert_int_equal(stats(r).duplicates, 0);
    assert_int_equal(stats(r).skipped, 0);
    bytes_free(&out);
    bytes_free(&ref);
    rig_free(r);
}

static void a_corrupted_frame_is_naked_and_the_resend_completes_the_request(void **state)
{
    struct rig *r = rig_new(PAYLOAD);
    uint8_t frames[3][TK_USB_FRAME_MAX], *req, *resp, payload[TK_USB_PAYLOAD_MAX];
    size_t len, n[3], off = 0, i, resp_len, second;
    struct pt_usbframe f;
    Cohort__TokenResponse *pb;
    (void)state;
    hello(r, PAYLOAD);
    req = usb_info_request(&len);
    for (i = 0; i < 3; i++)
        n[i] = pt_usbframe_data(frames[i], sizeof frames[i], 9, req, len, &off, (len + 2) / 3);
    assert_int_equal(off, len);
    second = n[0] - TK_USB_OVERHEAD;
    frames[1][TK_USB_HEADER_LEN] ^= 0x40; /* a payload bit flips on the way */
    for (i = 0; i < 3; i++)
        tk_usb_feed(r->dev, frames[i], n[i]);
    f = one_frame(r, payload);
    assert_int_equal(f.type, TK_USB_NAK);
    assert_int_equal(f.seq, 9);
    assert_int_equal(f.offset, second);
    assert_int_equal(f.total, len);
    assert_int_equal(f.len, 1);
    assert_int_equal(payload[0], TK_USB_NAK_CRC);
    assert_int_equal(stats(r).bad_crc, 1);
    assert_int_equal(stats(r).naks, 1); /* the third frame was dropped without a second NAK */

    /* The host resends from the offset named. */
    off = f.offset;
    while (off < len) {
        uint8_t frame[TK_USB_FRAME_MAX];
        size_t m = pt_usbframe_data(frame, sizeof frame, 9, req, len, &off, (len + 2) / 3);
        tk_usb_feed(r->dev, frame, m);
    }
    expect_response(r, 9, len, &resp, &resp_len);
    pb = cohort__token_response__unpack(NULL, resp_len, resp);
    assert_non_null(pb);
    assert_int_equal(pb->status, TK_OK);
    assert_int_equal(stats(r).dispatched, 1);
    cohort__token_response__free_unpacked(pb, NULL);
    free(resp);
    free(req);
    rig_free(r);
}

static void a_duplicate_request_is_answered_from_the_cache_without_running_twice(void **state)
{
    struct rig *r = rig_new(PAYLOAD);
    Cohort__TokenResponse *wr, *again;
    uint8_t plain[3000], *wreq, *resp1, *resp2;
    size_t wlen, flash, l1, l2;
    uint16_t seq = 40;
    (void)state;
    memset(plain, 'x', sizeof plain);
    hello(r, PAYLOAD);
    wr = doc_write_through(r, &seq, plain, sizeof plain, &wreq, &wlen);
    flash = fx_flash_size(&r->t);
    assert_int_equal(stats(r).dispatched, 2);

    /* The host lost the response to the DocWrite (seq 41) and sends it again. */
    send_msg(r, 41, wreq, wlen, PAYLOAD);
    expect_response(r, 41, wlen, &resp1, &l1);
    again = cohort__token_response__unpack(NULL, l1, resp1);
    assert_non_null(again);
    assert_int_equal(again->status, TK_OK); /* from the cache: run again, it would be refused */
    assert_int_equal(again->doc_cipher->data.len, wr->doc_cipher->data.len);
    assert_memory_equal(again->doc_cipher->data.data, wr->doc_cipher->data.data,
                        wr->doc_cipher->data.len);
    assert_int_equal(stats(r).dispatched, 2);
    assert_int_equal(stats(r).duplicates, 1);
    assert_int_equal(fx_flash_size(&r->t), flash);

    /* The same bytes under a new number are a new request: refused, the session is closed. */
    send_msg(r, 42, wreq, wlen, PAYLOAD);
    expect_response(r, 42, wlen, &resp2, &l2);
    cohort__token_response__free_unpacked(again, NULL);
    again = cohort__token_response__unpack(NULL, l2, resp2);
    assert_non_null(again);
    assert_int_equal(again->status, TK_ERR_SESSION);
    assert_int_equal(stats(r).dispatched, 3);
    cohort__token_response__free_unpacked(again, NULL);
    cohort__token_response__free_unpacked(wr, NULL);
    free(resp1);
    free(resp2);
    free(wreq);
    rig_free(r);
}

static void a_reset_in_the_middle_of_a_message_drops_it(void **state)
{
    struct rig *r = rig_new(TK_USB_PAYLOAD_MIN);
    uint8_t frame[TK_USB_FRAME_MAX], *req, *resp, payload[TK_USB_PAYLOAD_MAX];
    size_t len, off = 0, n, resp_len, at;
    struct pt_usbframe f;
    (void)state;
    hello(r, TK_USB_PAYLOAD_MIN);
    req = usb_info_request(&len);
    n = pt_usbframe_data(frame, sizeof frame, 3, req, len, &off, 3);
    tk_usb_feed(r->dev, frame, n);
    send_control(r, TK_USB_RESET, 77, 0, NULL, 0);
    f = one_frame(r, NULL);
    assert_int_equal(f.type, TK_USB_RESET);
    assert_int_equal(f.seq, 77);
    /* The rest of the message has no beginning any more: one NAK for offset 0. */
    at = off;
    while (off < len) {
        n = pt_usbframe_data(frame, sizeof frame, 3, req, len, &off, 3);
        tk_usb_feed(r->dev, frame, n);
    }
    f = one_frame(r, payload);
    assert_int_equal(f.type, TK_USB_NAK);
    assert_int_equal(f.seq, 3);
    assert_int_equal(f.offset, 0);
    assert_int_equal(payload[0], TK_USB_NAK_GAP);
    assert_true(at > 0);
    assert_int_equal(stats(r).dispatched, 0);
    send_msg(r, 3, req, len, 3);
    expect_response(r, 3, len, &resp, &resp_len);
    assert_int_equal(stats(r).dispatched, 1);
    free(resp);

    /* A RESET drops the cached response too: asking for it again is an error. */
    send_control(r, TK_USB_RESET, 78, 0, NULL, 0);
    assert_int_equal(one_frame(r, NULL).type, TK_USB_RESET);
    send_control(r, TK_USB_NAK, 3, 0, NULL, 0);
    f = one_frame(r, payload);
    assert_int_equal(f.type, TK_USB_ERROR);
    assert_int_equal(payload[0], TK_USB_E_BAD_FRAME);
    free(req);
    rig_free(r);
}

static void a_corrupted_in_frame_is_asked_for_again_by_the_host(void **state)
{
    struct rig *r = rig_new(TK_USB_PAYLOAD_MIN);
    struct bytes in = {0};
    struct pt_usbframe_msg m;
    uint8_t *req, *buf = fx_alloc(RESP_MAX), frame[TK_USB_FRAME_MAX];
    size_t len, at = 0, used, n, bad = 0;
    int rc = 0;
    (void)state;
    hello(r, TK_USB_PAYLOAD_MIN);
    req = usb_info_request(&len);
    send_msg(r, 5, req, len, PAYLOAD);
    drain(r, &in);
    /* Flip a bit in the third IN frame's payload (ACK, DATA 0, DATA 1). */
    in.p[TK_USB_OVERHEAD + (TK_USB_OVERHEAD + TK_USB_PAYLOAD_MIN) + TK_USB_HEADER_LEN + 5] ^= 1;
    pt_usbframe_msg_init(&m, buf, RESP_MAX, 5);
    while (at < in.n) {
        struct pt_usbframe f;
        int got = pt_usbframe_rx_next(&r->rx, in.p + at, in.n - at, &used, &f);
        at += used;
        if (got == PT_USBFRAME_BAD) {
            bad++;
            assert_int_equal(f.offset, TK_USB_PAYLOAD_MIN);
            break;
        }
        assert_int_equal(got, PT_USBFRAME_OK);
        if (f.type == TK_USB_DATA)
            assert_int_equal(pt_usbframe_msg_add(&m, &f), 0);
    }
    assert_int_equal(bad, 1);
    assert_int_equal(m.have, TK_USB_PAYLOAD_MIN);
    /* The host NAKs (seq, have); the device sends again from there. */
    send_control(r, TK_USB_NAK, 5, m.have, NULL, 0);
    bytes_free(&in);
    drain(r, &in);
    for (at = 0; at < in.n && rc != 1;) {
        struct pt_usbframe f;
        assert_int_equal(pt_usbframe_rx_next(&r->rx, in.p + at, in.n - at, &used, &f),
                         PT_USBFRAME_OK);
        at += used;
        rc = pt_usbframe_msg_add(&m, &f);
        assert_true(rc >= 0);
    }
    assert_int_equal(rc, 1);
    assert_int_equal(at, in.n);
    assert_int_equal(stats(r).resends, 1);
    assert_int_equal(stats(r).dispatched, 1);
    {
        Cohort__TokenResponse *pb = cohort__token_response__unpack(NULL, m.total, buf);
        assert_non_null(pb);
        assert_int_equal(pb->status, TK_OK);
        cohort__token_response__free_unpacked(pb, NULL);
    }
    /* A message the host asks for with a stale number is not there. */
    n = pt_usbframe_encode(frame, sizeof frame, 1, TK_USB_NAK, 0, 4, 0, 0, NULL, 0);
    tk_usb_feed(r->dev, frame, n);
    assert_int_equal(one_frame(r, NULL).type, TK_USB_ERROR);
    bytes_free(&in);
    free(buf);
    free(req);
    rig_free(r);
}

static void a_version_no_side_shares_is_refused_and_data_waits_for_hello(void **state)
{
    struct rig *r = rig_new(PAYLOAD);
    uint8_t frame[TK_USB_FRAME_MAX], payload[TK_USB_PAYLOAD_MAX], vs[2] = {3, 2}, *req;
    size_t n, len;
    struct pt_usbframe f;
    (void)state;
    req = usb_info_request(&len);
    /* DATA before any HELLO. */
    send_msg(r, 1, req, len, PAYLOAD);
    f = one_frame(r, payload);
    assert_int_equal(f.type, TK_USB_ERROR);
    assert_int_equal(f.seq, 1);
    assert_int_equal(payload[0], TK_USB_E_NO_HELLO);

    n = pt_usbframe_hello(frame, sizeof frame, 2, vs, 2);
    tk_usb_feed(r->dev, frame, n);
    f = one_frame(r, payload);
    assert_int_equal(f.type, TK_USB_ERROR);
    assert_int_equal(f.seq, 2);
    assert_int_equal(f.len, 3);
    assert_int_equal(payload[0], TK_USB_E_VERSION);
    assert_int_equal(payload[1], 1);
    assert_int_equal(payload[2], TK_USB_VERSION);
    send_msg(r, 3, req, len, PAYLOAD);
    assert_int_equal(one_frame(r, payload).type, TK_USB_ERROR);
    assert_int_equal(payload[0], TK_USB_E_NO_HELLO);

    /* Offered along with others, version 1 is chosen. */
    vs[1] = 1;
    n = pt_usbframe_hello(frame, sizeof frame, 4, vs, 2);
    tk_usb_feed(r->dev, frame, n);
    assert_int_equal(one_frame(r, payload).type, TK_USB_HELLO);
    assert_int_equal(payload[0], 1);

    /* A DATA frame of version 2 after that. */
    n = pt_usbframe_encode(frame, sizeof frame, 2, TK_USB_DATA, TK_USB_FIRST | TK_USB_LAST, 5, 0,
                           (uint32_t)len, req, len);
    tk_usb_feed(r->dev, frame, n);
    f = one_frame(r, payload);
    assert_int_equal(f.type, TK_USB_ERROR);
    assert_int_equal(payload[0], TK_USB_E_VERSION);
    assert_int_equal(stats(r).dispatched, 0);
    free(req);
    rig_free(r);
}

static void oversized_lengths_are_refused_each_in_its_way(void **state)
{
    struct rig *r = rig_new(PAYLOAD);
    uint8_t frame[TK_USB_FRAME_MAX + 64], payload[TK_USB_PAYLOAD_MAX], *req, *resp, *big;
    size_t n, len, resp_len;
    struct pt_usbframe f;
    (void)state;
    hello(r, PAYLOAD);
    req = usb_info_request(&len);

    /* A header claiming 4097 bytes, with a good header CRC: not believed,
     * its 24 bytes skipped; the frame after it is served. */
    n = pt_usbframe_encode(frame, sizeof frame, 1, TK_USB_DATA, 3, 1, 0, 4097, req, 0);
    frame[10] = 0x01;
    frame[11] = 0x10; /* len = 4097 */
    {
        uint32_t h = tk_usb_crc32c(0, frame, 20);
        frame[20] = (uint8_t)h;
        frame[21] = (uint8_t)(h >> 8);
        frame[22] = (uint8_t)(h >> 16);
        frame[23] = (uint8_t)(h >> 24);
    }
    tk_usb_feed(r->dev, frame, TK_USB_HEADER_LEN);
    nothing_to_send(r);
    assert_int_equal(stats(r).skipped, TK_USB_HEADER_LEN);
    send_msg(r, 1, req, len, PAYLOAD);
    expect_response(r, 1, len, &resp, &resp_len);
    free(resp);

    /* A frame over the device's max_payload, under the absolute bound. */
    big = fx_alloc(REQ_MAX + 1);
    n = pt_usbframe_encode(frame, sizeof frame, 1, TK_USB_DATA, TK_USB_FIRST, 2, 0, 4000, big,
                           PAYLOAD + 1);
    tk_usb_feed(r->dev, frame, n);
    f = one_frame(r, payload);
    assert_int_equal(f.type, TK_USB_ERROR);
    assert_int_equal(payload[0], TK_USB_E_BAD_FRAME);

    /* A message over request_max: refused at its first frame, the rest
     * dropped without another word. */
    send_msg(r, 3, big, REQ_MAX + 1, PAYLOAD);
    f = one_frame(r, payload);
    assert_int_equal(f.type, TK_USB_ERROR);
    assert_int_equal(f.seq, 3);
    assert_int_equal(f.total, REQ_MAX + 1);
    assert_int_equal(payload[0], TK_USB_E_TOO_LARGE);

    /* Flags that disagree with offset and total. */
    n = pt_usbframe_encode(frame, sizeof frame, 1, TK_USB_DATA, TK_USB_FIRST, 4, 0, (uint32_t)len,
                           req, len);
    tk_usb_feed(r->dev, frame, n);
    f = one_frame(r, payload);
    assert_int_equal(f.type, TK_USB_ERROR);
    assert_int_equal(payload[0], TK_USB_E_BAD_FRAME);
    assert_int_equal(stats(r).dispatched, 1);

    /* The host's decoder refuses a message over its buffer. */
    {
        struct pt_usbframe_msg m;
        struct pt_usbframe d = {1, TK_USB_DATA, TK_USB_FIRST, 1, 1, 0, 100, big};
        pt_usbframe_msg_init(&m, big, 99, 1);
        assert_int_equal(pt_usbframe_msg_add(&m, &d), PT_USBFRAME_LARGE);
    }
    free(big);
    free(req);
    rig_free(r);
}

static void bad_magic_and_garbage_are_skipped_up_to_the_next_frame(void **state)
{
    struct rig *r = rig_new(PAYLOAD);
    uint8_t frame[TK_USB_FRAME_MAX], *req, *resp;
    /* Garbage with false starts: partial magics, a whole magic with a bad header after it. */
    static const uint8_t garbage[] = "xxCOTCOCOTKzzzzzzzzzzzzzzzzzzzzzzzzzzC\x00O";
    size_t n, len, resp_len;
    uint64_t skipped;
    (void)state;
    hello(r, PAYLOAD);
    req = usb_info_request(&len);

    /* A whole frame under a wrong magic: every one of its bytes skipped. */
    n = pt_usbframe_encode(frame, sizeof frame, 1, TK_USB_DATA, 3, 1, 0, (uint32_t)len, req, len);
    frame[3] = 'X';
    tk_usb_feed(r->dev, frame, n);
    nothing_to_send(r);
    assert_int_equal(stats(r).skipped, n);

    /* Garbage, then a good frame in the same feed. */
    n = pt_usbframe_encode(frame, sizeof frame, 1, TK_USB_DATA, 3, 2, 0, (uint32_t)len, req, len);
    skipped = stats(r).skipped;
    tk_usb_feed(r->dev, garbage, sizeof garbage - 1);
    tk_usb_feed(r->dev, frame, n);
    expect_response(r, 2, len, &resp, &resp_len);
    assert_int_equal(stats(r).skipped - skipped, sizeof garbage - 1);
    assert_int_equal(stats(r).bad_crc, 0);
    free(resp);

    /* The host's decoder finds its frames behind the same garbage. */
    {
        struct bytes in = {0};
        struct pt_usbframe f;
        size_t used;
        bytes_put(&in, garbage, sizeof garbage - 1);
        n = pt_usbframe_encode(frame, sizeof frame, 1, TK_USB_ACK, 0, 9, 4, 4, NULL, 0);
        bytes_put(&in, frame, n);
        pt_usbframe_rx_init(&r->rx);
        assert_int_equal(pt_usbframe_rx_next(&r->rx, in.p, in.n, &used, &f), PT_USBFRAME_OK);
        assert_int_equal(used, in.n);
        assert_int_equal(f.type, TK_USB_ACK);
        assert_int_equal(f.seq, 9);
        assert_int_equal(r->rx.skipped, sizeof garbage - 1);
        bytes_free(&in);
    }
    assert_int_equal(stats(r).dispatched, 1);
    free(req);
    rig_free(r);
}

static void a_device_refuses_parameters_out_of_range(void **state)
{
    struct tk_token tk;
    uint8_t arena[16];
    uint64_t region[64];
    struct tk_usb *u;
    struct tk_usb_config cfg = {&tk, arena, sizeof arena, 1024, 1024, 32};
    (void)state;
    assert_int_equal(tk_usb_init(&u, region, sizeof region, &cfg), TK_ERR_MALFORMED);
    cfg.max_payload = TK_USB_PAYLOAD_MAX + 1;
    assert_int_equal(tk_usb_init(&u, region, sizeof region, &cfg), TK_ERR_MALFORMED);
    cfg.max_payload = 64;
    cfg.request_max = TK_REQUEST_MAX + 1;
    assert_int_equal(tk_usb_init(&u, region, sizeof region, &cfg), TK_ERR_MALFORMED);
    cfg.request_max = 1024;
    assert_int_equal(tk_usb_init(&u, (uint8_t *)region + 1, sizeof region - 1, &cfg),
                     TK_ERR_MALFORMED);
    assert_int_equal(tk_usb_init(&u, region, sizeof region, &cfg), TK_ERR_NO_MEMORY);
    assert_null(u);
    assert_int_equal(tk_usb_region_size(1024, 100), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(crc32c_gives_its_known_answer_and_chains),
        cmocka_unit_test(get_info_goes_through_frames_and_the_token),
        cmocka_unit_test(a_document_is_written_and_read_back_through_frames),
        cmocka_unit_test(every_split_of_the_out_stream_gives_the_same_in_stream),
        cmocka_unit_test(a_corrupted_frame_is_naked_and_the_resend_completes_the_request),
        cmocka_unit_test(a_duplicate_request_is_answered_from_the_cache_without_running_twice),
        cmocka_unit_test(a_reset_in_the_middle_of_a_message_drops_it),
        cmocka_unit_test(a_corrupted_in_frame_is_asked_for_again_by_the_host),
        cmocka_unit_test(a_version_no_side_shares_is_refused_and_data_waits_for_hello),
        cmocka_unit_test(oversized_lengths_are_refused_each_in_its_way),
        cmocka_unit_test(bad_magic_and_garbage_are_skipped_up_to_the_next_frame),
        cmocka_unit_test(a_device_refuses_parameters_out_of_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
