/*
 * The host's USB transaction driver (participant/pt_usbhost.c) against the
 * device side (token/tk_usb.c) of a provisioned token, through in-memory
 * callbacks: what the driver writes goes to tk_usb_feed, what it reads
 * comes from tk_usb_poll. The pipe between them can corrupt or drop chosen
 * frames each way, go silent, or lose the device, and every outcome is
 * checked against what USB.md section 4 says, with exact error codes and
 * counts of what ran on the token.
 */
#include "usb_fixture.h"

#include "participant/pt_usbhost.h"
#include "token/tk_usb.h"

#define REQ_MAX (96u * 1024u)
#define RESP_MAX (96u * 1024u)
#define PAYLOAD 256u

/* The pipe: frames are counted per direction, DATA and ACK apart, from 1. */
struct pipe {
    struct tk_usb *dev;
    unsigned out_data, in_data, in_acks, writes;
    unsigned corrupt_out, drop_out; /* the nth OUT DATA frame */
    unsigned corrupt_in, drop_in;   /* the nth IN DATA frame */
    unsigned drop_ack;              /* the nth ACK */
    bool in_dead_until_reset;       /* every IN frame lost until the host sends RESET */
    bool silent;                    /* the device takes everything and answers nothing */
    bool gone;                      /* unplugged */
};

struct rig {
    struct fx_world w;
    struct fx_token t;
    void *region;
    struct pipe p;
    struct pt_usbhost h;
};

static int pipe_write(void *ctx, const uint8_t *p, size_t n, unsigned timeout_ms)
{
    struct pipe *pp = ctx;
    uint8_t frame[TK_USB_FRAME_MAX];
    (void)timeout_ms;
    if (pp->gone)
        return PT_USB_E_NO_DEVICE;
    pp->writes++;
    assert_true(n >= TK_USB_OVERHEAD && n <= sizeof frame);
    memcpy(frame, p, n);
    if (frame[TK_USB_OFF_TYPE] == TK_USB_RESET)
        pp->in_dead_until_reset = false;
    if (frame[TK_USB_OFF_TYPE] == TK_USB_DATA) {
        pp->out_data++;
        if (pp->out_data == pp->drop_out)
            return 0;
        if (pp->out_data == pp->corrupt_out)
            frame[TK_USB_HEADER_LEN] ^= 0x10; /* the header still holds; the CRC does not */
    }
    if (!pp->silent)
        tk_usb_feed(pp->dev, frame, n);
    return 0;
}

/* As many IN frames as fit, as one piece of the byte stream. */
static int pipe_read(void *ctx, uint8_t *p, size_t cap, size_t *got, unsigned timeout_ms)
{
    struct pipe *pp = ctx;
    size_t at = 0;
    (void)timeout_ms;
    if (pp->gone)
        return PT_USB_E_NO_DEVICE;
    while (!pp->silent && cap - at >= TK_USB_FRAME_MAX) {
        size_t n = 0;
        uint8_t type;
        assert_int_equal(tk_usb_poll(pp->dev, p + at, cap - at, &n), TK_OK);
        if (n == 0)
            break;
        type = p[at + TK_USB_OFF_TYPE];
        if (pp->in_dead_until_reset && type != TK_USB_RESET)
            continue;
        if (type == TK_USB_ACK && ++pp->in_acks == pp->drop_ack)
            continue;
        if (type == TK_USB_DATA) {
            pp->in_data++;
            if (pp->in_data == pp->drop_in)
                continue;
            if (pp->in_data == pp->corrupt_in)
                p[at + TK_USB_HEADER_LEN + 1] ^= 0x01;
        }
        at += n;
    }
    *got = at;
    return at > 0 ? 0 : PT_USB_E_TIMEOUT;
}

static struct rig *rig_new(void)
{
    struct rig *r = fx_alloc(sizeof *r);
    struct tk_usb_config cfg;
    struct pt_usbhost_io io = {NULL, pipe_write, pipe_read};
    size_t need = tk_usb_region_size(REQ_MAX, RESP_MAX);
    memset(r, 0, sizeof *r);
    fx_world_init(&r->w);
    fx_token_init(&r->t, TK_ARENA_DEFAULT);
    fx_provision(&r->t, &r->w, "token-usbhost");
    cfg = (struct tk_usb_config){&r->t.tk, r->t.arena, r->t.arena_len, REQ_MAX, RESP_MAX, PAYLOAD};
    r->region = fx_alloc(need);
    assert_int_equal(tk_usb_init(&r->p.dev, r->region, need, &cfg), TK_OK);
    io.ctx = &r->p;
    pt_usbhost_init(&r->h, &io);
    r->h.t_frame_ms = 50;
    r->h.t_response_ms = 200;
    return r;
}

static void rig_free(struct rig *r)
{
    pt_usbhost_free(&r->h);
    fx_token_free(&r->t);
    free(r->region);
    free(r);
}

static struct tk_usb_stats dev_stats(const struct rig *r)
{
    struct tk_usb_stats s;
    tk_usb_get_stats(r->p.dev, &s);
    return s;
}

/* A transaction through the driver; the response unpacked. */
static Cohort__TokenResponse *through(struct rig *r, const uint8_t *req, size_t len)
{
    const uint8_t *resp;
    size_t resp_len;
    Cohort__TokenResponse *out;
    assert_int_equal(pt_usbhost_transact(&r->h, req, len, &resp, &resp_len), PT_USB_OK);
    out = cohort__token_response__unpack(NULL, resp_len, resp);
    assert_non_null(out);
    return out;
}

static Cohort__TokenResponse *through_rig(void *ctx, const uint8_t *req, size_t len)
{
    return through(ctx, req, len);
}

static void get_info_matches(struct rig *r)
{
    usb_get_info_matches(through_rig, r, &r->t);
}

static void document_round_trip(struct rig *r, size_t n)
{
    usb_document_round_trip(through_rig, r, n);
}

/* ------------------------------------------------------------ tests */

static void a_hello_learns_the_device_limits(void **state)
{
    struct rig *r = rig_new();
    (void)state;
    assert_int_equal(pt_usbhost_hello(&r->h), PT_USB_OK);
    assert_true(r->h.ready);
    assert_int_equal(r->h.lim.version, TK_USB_VERSION);
    assert_int_equal(r->h.lim.max_payload, PAYLOAD);
    assert_int_equal(r->h.lim.request_max, REQ_MAX);
    assert_int_equal(r->h.lim.response_max, RESP_MAX);
    assert_int_equal(r->h.resp_cap, RESP_MAX);
    rig_free(r);
}

static void get_info_and_a_document_go_through_the_driver(void **state)
{
    struct rig *r = rig_new();
    (void)state;
    get_info_matches(r); /* the HELLO comes first, unasked */
    document_round_trip(r, 20000);
    assert_int_equal(r->h.st.hellos, 1);
    assert_int_equal(r->h.st.requests, 5);
    assert_int_equal(r->h.st.resends, 0);
    assert_int_equal(dev_stats(r).dispatched, 5);
    assert_int_equal(dev_stats(r).naks, 0);
    rig_free(r);
}

static void a_corrupted_out_frame_is_naked_and_resent_from_its_offset(void **state)
{
    struct rig *r = rig_new();
    (void)state;
    r->p.corrupt_out = 3; /* inside the DocWrite of 20000 bytes (frame 1 is DocBegin) */
    document_round_trip(r, 20000);
    assert_int_equal(dev_stats(r).bad_crc, 1);
    assert_int_equal(dev_stats(r).naks, 1);
    assert_int_equal(r->h.st.naks_got, 1);
    assert_int_equal(r->h.st.resends, 1);
    assert_int_equal(dev_stats(r).dispatched, 4); /* each request ran once */
    rig_free(r);
}

static void a_dropped_out_frame_is_a_gap_the_device_naks(void **state)
{
    struct rig *r = rig_new();
    (void)state;
    r->p.drop_out = 4;
    document_round_trip(r, 20000);
    assert_int_equal(dev_stats(r).naks, 1);
    assert_int_equal(r->h.st.naks_got, 1);
    assert_int_equal(dev_stats(r).dispatched, 4);
    rig_free(r);
}

static void a_corrupted_in_frame_is_naked_by_the_host(void **state)
{
    struct rig *r = rig_new();
    (void)state;
    r->p.corrupt_in = 3;
    document_round_trip(r, 20000);
    assert_int_equal(r->h.st.bad_frames, 1);
    assert_int_equal(r->h.st.naks_sent, 1);
    assert_int_equal(dev_stats(r).resends, 1);
    assert_int_equal(dev_stats(r).dispatched, 4);
    rig_free(r);
}

static void a_dropped_in_frame_is_a_gap_the_host_naks(void **state)
{
    struct rig *r = rig_new();
    (void)state;
    r->p.drop_in = 5;
    document_round_trip(r, 20000);
    assert_int_equal(r->h.st.naks_sent, 1);
    assert_int_equal(dev_stats(r).resends, 1);
    assert_int_equal(dev_stats(r).dispatched, 4);
    rig_free(r);
}

static void a_lost_ack_and_response_are_resent_from_the_cache_without_running_twice(void **state)
{
    struct rig *r = rig_new();
    (void)state;
    assert_int_equal(pt_usbhost_hello(&r->h), PT_USB_OK);
    r->p.drop_ack = 1;
    r->p.drop_in = 1; /* the whole response of one frame */
    get_info_matches(r);
    assert_int_equal(r->h.st.resends, 1);
    assert_int_equal(dev_stats(r).dispatched, 1);
    assert_int_equal(dev_stats(r).duplicates, 1);
    rig_free(r);
}

static void a_device_deaf_to_three_retries_gets_a_reset_and_runs_the_request_again(void **state)
{
    struct rig *r = rig_new();
    (void)state;
    assert_int_equal(pt_usbhost_hello(&r->h), PT_USB_OK);
    r->p.in_dead_until_reset = true;
    get_info_matches(r);
    assert_int_equal(r->h.st.resets, 1);
    assert_int_equal(r->h.st.resends, 4); /* 3 retries, then one after the RESET */
    /* The first copy ran before the RESET emptied the cache; the last ran again. */
    assert_int_equal(dev_stats(r).dispatched, 2);
    assert_int_equal(dev_stats(r).duplicates, 3);
    rig_free(r);
}

static void a_silent_device_is_no_answer_after_the_hello_retries(void **state)
{
    struct rig *r = rig_new();
    const uint8_t *resp;
    size_t resp_len, len;
    uint8_t *req = usb_info_request(&len);
    (void)state;
    r->p.silent = true;
    assert_int_equal(pt_usbhost_transact(&r->h, req, len, &resp, &resp_len), PT_USB_E_TIMEOUT);
    assert_int_equal(r->p.writes, 1 + PT_USBHOST_TRIES);
    assert_false(r->h.ready);
    /* It speaks again: the next call starts with HELLO and goes through. */
    r->p.silent = false;
    get_info_matches(r);
    free(req);
    rig_free(r);
}

static void a_device_that_stops_mid_request_is_no_answer_after_the_resets(void **state)
{
    struct rig *r = rig_new();
    const uint8_t *resp;
    size_t resp_len, len;
    uint8_t *req = usb_info_request(&len);
    (void)state;
    assert_int_equal(pt_usbhost_hello(&r->h), PT_USB_OK);
    r->p.silent = true;
    assert_int_equal(pt_usbhost_transact(&r->h, req, len, &resp, &resp_len), PT_USB_E_TIMEOUT);
    assert_false(r->h.ready);
    free(req);
    rig_free(r);
}

static void a_version_no_side_shares_is_a_mismatch_naming_both(void **state)
{
    struct rig *r = rig_new();
    const uint8_t *resp;
    size_t resp_len, len;
    uint8_t *req = usb_info_request(&len);
    (void)state;
    r->h.versions[0] = 3;
    r->h.versions[1] = 2;
    r->h.n_versions = 2;
    assert_int_equal(pt_usbhost_transact(&r->h, req, len, &resp, &resp_len), PT_USB_E_VERSION);
    assert_int_equal(r->h.n_peer_versions, 1);
    assert_int_equal(r->h.peer_versions[0], TK_USB_VERSION);
    assert_int_equal(dev_stats(r).dispatched, 0);
    assert_string_equal(pt_usb_strerror(PT_USB_E_VERSION),
                        "protocol version mismatch between host and token");
    free(req);
    rig_free(r);
}

static void a_gone_device_is_no_device(void **state)
{
    struct rig *r = rig_new();
    const uint8_t *resp;
    size_t resp_len, len;
    uint8_t *req = usb_info_request(&len);
    (void)state;
    r->p.gone = true;
    assert_int_equal(pt_usbhost_transact(&r->h, req, len, &resp, &resp_len), PT_USB_E_NO_DEVICE);
    r->p.gone = false;
    get_info_matches(r);
    r->p.gone = true;
    assert_int_equal(pt_usbhost_transact(&r->h, req, len, &resp, &resp_len), PT_USB_E_NO_DEVICE);
    assert_false(r->h.ready);
    free(req);
    rig_free(r);
}

static void a_request_over_request_max_is_refused_locally(void **state)
{
    struct rig *r = rig_new();
    const uint8_t *resp;
    size_t resp_len;
    uint8_t *big = fx_alloc(REQ_MAX + 1);
    unsigned writes;
    (void)state;
    memset(big, 0, REQ_MAX + 1);
    assert_int_equal(pt_usbhost_hello(&r->h), PT_USB_OK);
    writes = r->p.writes;
    assert_int_equal(pt_usbhost_transact(&r->h, big, REQ_MAX + 1, &resp, &resp_len),
                     PT_USB_E_TOO_LARGE);
    assert_int_equal(r->p.writes, writes);
    assert_true(r->h.ready);
    get_info_matches(r);
    free(big);
    rig_free(r);
}

static void a_device_that_lost_its_hello_is_greeted_again(void **state)
{
    struct rig *r = rig_new();
    struct tk_usb_config cfg;
    size_t need = tk_usb_region_size(REQ_MAX, RESP_MAX);
    (void)state;
    get_info_matches(r);
    /* The firmware restarts: a fresh device side that has seen no HELLO. */
    cfg = (struct tk_usb_config){&r->t.tk, r->t.arena, r->t.arena_len, REQ_MAX, RESP_MAX, PAYLOAD};
    assert_int_equal(tk_usb_init(&r->p.dev, r->region, need, &cfg), TK_OK);
    get_info_matches(r);
    assert_int_equal(r->h.st.hellos, 2);
    assert_int_equal(dev_stats(r).dispatched, 1);
    rig_free(r);
}

static void every_error_has_a_sentence(void **state)
{
    int c;
    (void)state;
    for (c = PT_USB_E_NOMEM; c <= PT_USB_E_NO_DEVICE; c++)
        assert_string_not_equal(pt_usb_strerror(c), "unknown USB link error");
    assert_string_equal(pt_usb_strerror(-1), "unknown USB link error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_hello_learns_the_device_limits),
        cmocka_unit_test(get_info_and_a_document_go_through_the_driver),
        cmocka_unit_test(a_corrupted_out_frame_is_naked_and_resent_from_its_offset),
        cmocka_unit_test(a_dropped_out_frame_is_a_gap_the_device_naks),
        cmocka_unit_test(a_corrupted_in_frame_is_naked_by_the_host),
        cmocka_unit_test(a_dropped_in_frame_is_a_gap_the_host_naks),
        cmocka_unit_test(a_lost_ack_and_response_are_resent_from_the_cache_without_running_twice),
        cmocka_unit_test(a_device_deaf_to_three_retries_gets_a_reset_and_runs_the_request_again),
        cmocka_unit_test(a_silent_device_is_no_answer_after_the_hello_retries),
        cmocka_unit_test(a_device_that_stops_mid_request_is_no_answer_after_the_resets),
        cmocka_unit_test(a_version_no_side_shares_is_a_mismatch_naming_both),
        cmocka_unit_test(a_gone_device_is_no_device),
        cmocka_unit_test(a_request_over_request_max_is_refused_locally),
        cmocka_unit_test(a_device_that_lost_its_hello_is_greeted_again),
        cmocka_unit_test(every_error_has_a_sentence),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
