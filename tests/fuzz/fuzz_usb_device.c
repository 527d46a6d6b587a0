/*
 * Fuzz target: the device side of the USB framing (token/tk_usb.c) over a
 * real, provisioned token core in RAM, as a token's firmware runs it.
 *
 * The first byte of an input picks what the rest is. Even: the OUT byte
 * stream itself, fed in pieces whose sizes come from a generator seeded by
 * the input, with every IN frame polled out after each piece. Odd: a list
 * of frames for the harness to encode with good CRCs (so that mutations
 * reach the state machine behind the CRC check): each record is a header
 * (type, flags, seq, offset, total, length), its payload, and a byte that
 * says whether to break the frame's CRC, send it as another version, and
 * split it in two with a poll in between.
 *
 * A new device starts for every input over the same token. Invariants: the
 * device polls with the least room its limits allow (max_payload + the
 * overhead) and never asks for more, nor writes past it; every IN frame is
 * exactly one frame that pt_usbframe (the host's independent reading of
 * USB.md) decodes with good CRCs; its fields are those USB.md allows for
 * its type (a well-formed DATA frame within response_max; an ACK within
 * request_max; control payloads within TK_USB_CONTROL_MAX; a HELLO answer
 * with the configured limits; no ERROR code a device may not send); every
 * response reassembled from its DATA frames decodes as a TokenResponse;
 * and the device goes quiet after a bounded number of frames when no more
 * input comes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <string.h>

#include <cmocka.h>

#include "participant/pt_usbframe.h"
#include "tests/fuzz/fuzz.h"
#include "tests/tk_fixture.h"
#include "token/tk_usb.h"

#define REQ_MAX (64u * 1024u)
#define RESP_MAX (64u * 1024u)
#define PAYLOAD 256u
#define IN_CAP (PAYLOAD + TK_USB_OVERHEAD)
#define RECORD_LEN 16u /* type, flags, seq 2, offset 4, total 4, len 2, how, spare */
/* The most frames one drain may give: a whole response, the control queue, and slack. */
#define DRAIN_MAX (RESP_MAX / PAYLOAD + TK_USB_CONTROL_QUEUE + 4u)

static struct fx_world world;
static struct fx_token tok;
static void *region;
static size_t region_len;
static uint8_t *resp_buf;
static struct tk_usb *dev;
static int ready;

/* The host's view of the response being sent. */
static struct pt_usbframe_msg msg;
static bool msg_live;

/* FUZZ_STATS=1: what the inputs reached. */
static unsigned long seen_type[8], seen_error[8], responses, dispatched, duplicates;

static void report(void)
{
    static const char *const types[8] = {"?", "DATA", "ACK", "NAK", "RESET", "HELLO", "ERROR", "?"};
    int i;
    for (i = 1; i < 7; i++)
        fprintf(stderr, "IN %-6s %lu\n", types[i], seen_type[i]);
    for (i = 1; i < 6; i++)
        fprintf(stderr, "ERROR code %d: %lu\n", i, seen_error[i]);
    fprintf(stderr, "responses whole: %lu, requests run: %lu, answered again: %lu\n", responses,
            dispatched, duplicates);
}

static void setup(void)
{
    if (ready) {
        /* Requests that got through may make the store grow: start again now and then. */
        if (fx_flash_size(&tok) > (64u << 10)) {
            fx_token_free(&tok);
            fx_token_init(&tok, TK_ARENA_DEFAULT);
            fx_provision(&tok, &world, "fuzzed-usb");
        }
        return;
    }
    fx_world_init(&world);
    fx_token_init(&tok, TK_ARENA_DEFAULT);
    fx_provision(&tok, &world, "fuzzed-usb");
    if (getenv("FUZZ_STATS") != NULL)
        atexit(report);
    region_len = tk_usb_region_size(REQ_MAX, RESP_MAX);
    FUZZ_CHECK(region_len > 0);
    region = fx_alloc(region_len); /* malloc's alignment is at least 8 */
    resp_buf = fx_alloc(RESP_MAX);
    ready = 1;
}

static uint32_t rd16(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8);
}

static uint32_t rd32(const uint8_t *p)
{
    return rd16(p) | (rd16(p + 2) << 16);
}

/* One IN frame of n bytes: the invariants above. */
static void check_in(const uint8_t *frame, size_t n)
{
    struct pt_usbframe_rx rx;
    struct pt_usbframe f;
    struct pt_usbframe_limits lim;
    size_t used = 0;
    int rc;

    FUZZ_CHECK(n >= TK_USB_OVERHEAD && n <= IN_CAP);
    pt_usbframe_rx_init(&rx);
    rc = pt_usbframe_rx_next(&rx, frame, n, &used, &f);
    FUZZ_CHECK(rc == PT_USBFRAME_OK);
    FUZZ_CHECK(used == n && rx.skipped == 0 && n == TK_USB_OVERHEAD + (size_t)f.len);
    FUZZ_CHECK(f.version == TK_USB_VERSION);
    FUZZ_CHECK(frame[7] == 0); /* reserved */
    seen_type[f.type & 7]++;
    if (f.type != TK_USB_DATA) {
        FUZZ_CHECK(f.flags == 0);
        FUZZ_CHECK(f.len <= TK_USB_CONTROL_MAX);
    }
    switch (f.type) {
    case TK_USB_DATA:
        FUZZ_CHECK(f.len <= PAYLOAD);
        FUZZ_CHECK(f.total <= RESP_MAX);
        FUZZ_CHECK(f.offset <= f.total && f.total - f.offset >= f.len);
        FUZZ_CHECK((f.flags & ~(unsigned)(TK_USB_FIRST | TK_USB_LAST)) == 0);
        FUZZ_CHECK(((f.flags & TK_USB_FIRST) != 0) == (f.offset == 0));
        FUZZ_CHECK(((f.flags & TK_USB_LAST) != 0) == (f.offset + f.len == f.total));
        FUZZ_CHECK(f.len >= 1 || f.total == 0);
        /* Reassemble as a host would; a whole response must decode. */
        if (f.flags & TK_USB_FIRST) {
            pt_usbframe_msg_init(&msg, resp_buf, RESP_MAX, f.seq);
            msg_live = true;
        }
        if (msg_live && pt_usbframe_msg_add(&msg, &f) == 1) {
            Cohort__TokenResponse *r = cohort__token_response__unpack(NULL, msg.total, msg.buf);
            FUZZ_CHECK(r != NULL);
            cohort__token_response__free_unpacked(r, NULL);
            responses++;
            msg_live = false;
        }
        break;
    case TK_USB_ACK:
        FUZZ_CHECK(f.len == 0 && f.offset == f.total && f.total <= REQ_MAX);
        break;
    case TK_USB_NAK:
        FUZZ_CHECK(f.len == 1);
        FUZZ_CHECK(f.payload[0] == TK_USB_NAK_CRC || f.payload[0] == TK_USB_NAK_GAP);
        FUZZ_CHECK(f.offset <= REQ_MAX);
        break;
    case TK_USB_RESET:
        FUZZ_CHECK(f.len == 0 && f.offset == 0 && f.total == 0);
        break;
    case TK_USB_HELLO:
        FUZZ_CHECK(pt_usbframe_hello_reply(&lim, &f) == 0);
        FUZZ_CHECK(lim.version == TK_USB_VERSION && lim.max_payload == PAYLOAD &&
                   lim.request_max == REQ_MAX && lim.response_max == RESP_MAX);
        FUZZ_CHECK(f.len == TK_USB_HELLO_REPLY_LEN && f.offset == 0 && f.total == 0);
        break;
    case TK_USB_ERROR:
        FUZZ_CHECK(f.len >= 1 && f.offset == 0);
        FUZZ_CHECK(f.payload[0] >= TK_USB_E_VERSION && f.payload[0] <= TK_USB_E_INTERNAL);
        seen_error[f.payload[0]]++;
        if (f.payload[0] == TK_USB_E_VERSION)
            FUZZ_CHECK(f.len == 3 && f.payload[1] == 1 && f.payload[2] == TK_USB_VERSION);
        break;
    default:
        FUZZ_CHECK(!"an IN frame of a type the device may not send");
    }
}

/* Every IN frame the device has now, into a buffer of exactly IN_CAP bytes
 * with a guard after it. */
static void drain(void)
{
    uint8_t buf[IN_CAP + 16];
    unsigned frames = 0;
    for (;;) {
        size_t n = 0;
        memset(buf + IN_CAP, 0xA5, 16);
        FUZZ_CHECK(tk_usb_poll(dev, buf, IN_CAP, &n) == TK_OK);
        for (size_t i = 0; i < 16; i++)
            FUZZ_CHECK(buf[IN_CAP + i] == 0xA5);
        if (n == 0)
            return;
        check_in(buf, n);
        FUZZ_CHECK(++frames <= DRAIN_MAX);
    }
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

/* The raw stream, in pieces of 1..600 bytes. */
static void run_stream(const uint8_t *p, size_t n)
{
    uint64_t s = mix(n + 1);
    size_t at = 0;
    if (n > 0)
        s = mix(s ^ p[0] ^ ((uint64_t)p[n - 1] << 8));
    while (at < n) {
        size_t k = 1 + (size_t)((s = mix(s + 0x9e3779b97f4a7c15ull)) % 600);
        if (k > n - at)
            k = n - at;
        tk_usb_feed(dev, p + at, k);
        at += k;
        drain();
    }
}

/* The records, encoded with good CRCs but for the ones marked. */
static void run_records(const uint8_t *p, size_t n)
{
    static uint8_t frame[TK_USB_FRAME_MAX];
    size_t at = 0;
    while (n - at >= RECORD_LEN) {
        const uint8_t *r = p + at;
        uint8_t type = r[0] & 7, how = r[14];
        size_t len = rd16(r + 12) % (TK_USB_PAYLOAD_MAX + 1), fl;
        at += RECORD_LEN;
        if (len > n - at)
            len = n - at;
        fl = pt_usbframe_encode(frame, sizeof frame, (how & 2) ? 2 : TK_USB_VERSION, type, r[1],
                                (uint16_t)rd16(r + 2), rd32(r + 4), rd32(r + 8), p + at, len);
        FUZZ_CHECK(fl == TK_USB_OVERHEAD + len);
        at += len;
        if (how & 1)
            frame[fl - 1 - (how >> 4) % 4] ^= (uint8_t)(1u << ((how >> 2) & 3));
        if (how & 4) {
            size_t cut = 1 + (size_t)r[15] % (fl - 1);
            tk_usb_feed(dev, frame, cut);
            drain();
            tk_usb_feed(dev, frame + cut, fl - cut);
        } else {
            tk_usb_feed(dev, frame, fl);
        }
        drain();
    }
    /* What is left is stray bytes. */
    if (at < n) {
        tk_usb_feed(dev, p + at, n - at);
        drain();
    }
}

void fuzz_one(const uint8_t *data, size_t size)
{
    struct tk_usb_config cfg;
    setup();
    cfg = (struct tk_usb_config){&tok.tk, tok.arena, tok.arena_len, REQ_MAX, RESP_MAX, PAYLOAD};
    FUZZ_CHECK(tk_usb_init(&dev, region, region_len, &cfg) == TK_OK);
    msg_live = false;
    if (size == 0)
        return;
    if (data[0] & 1)
        run_records(data + 1, size - 1);
    else
        run_stream(data + 1, size - 1);
    {
        struct tk_usb_stats st;
        tk_usb_get_stats(dev, &st);
        dispatched += st.dispatched;
        duplicates += st.duplicates;
    }
}

/* ------------------------------------------------------------ seeds */

static size_t put_record(uint8_t *out, uint8_t type, uint8_t flags, uint16_t seq, uint32_t offset,
                         uint32_t total, const uint8_t *payload, size_t len, uint8_t how)
{
    out[0] = type;
    out[1] = flags;
    out[2] = (uint8_t)seq;
    out[3] = (uint8_t)(seq >> 8);
    for (int i = 0; i < 4; i++) {
        out[4 + i] = (uint8_t)(offset >> (8 * i));
        out[8 + i] = (uint8_t)(total >> (8 * i));
    }
    out[12] = (uint8_t)len;
    out[13] = (uint8_t)(len >> 8);
    out[14] = how;
    out[15] = 5;
    if (len > 0)
        memcpy(out + RECORD_LEN, payload, len);
    return RECORD_LEN + len;
}

/* A request of n bytes as DATA records of `piece` bytes. */
static size_t put_request(uint8_t *out, uint16_t seq, const uint8_t *req, size_t n, size_t piece,
                          uint8_t how)
{
    size_t at = 0, o = 0;
    do {
        size_t k = n - at < piece ? n - at : piece;
        uint8_t flags = (uint8_t)((at == 0 ? TK_USB_FIRST : 0) | (at + k == n ? TK_USB_LAST : 0));
        o += put_record(out + o, TK_USB_DATA, flags, seq, (uint32_t)at, (uint32_t)n, req + at, k,
                        how);
        at += k;
    } while (at < n);
    return o;
}

void fuzz_seeds(void (*add)(const uint8_t *data, size_t size))
{
    /* GetInfo, from USB.md's worked example. */
    static const uint8_t info[8] = {0x08, 0xc0, 0xe0, 0x93, 0xd3, 0x06, 0x12, 0x00};
    static const uint8_t hello[2] = {1, TK_USB_VERSION}, hello9[3] = {2, 9, 3};
    static const uint8_t nak[1] = {TK_USB_NAK_GAP};
    static uint8_t buf[64u << 10];
    uint8_t frame[TK_USB_FRAME_MAX], big[3000];
    size_t n, o, off;

    for (n = 0; n < sizeof big; n++)
        big[n] = (uint8_t)(n * 31);

    /* Records: HELLO, GetInfo in three pieces, its duplicate, a NAK for the response. */
    buf[0] = 1;
    o = 1;
    o += put_record(buf + o, TK_USB_HELLO, 0, 1, 0, 0, hello, sizeof hello, 0);
    o += put_request(buf + o, 0x102, info, sizeof info, 3, 0);
    o += put_request(buf + o, 0x102, info, sizeof info, 8, 4);
    o += put_record(buf + o, TK_USB_NAK, 0, 0x102, 0, 0, nak, 1, 0);
    add(buf, o);

    /* Records: a corrupted piece, the rest, a RESET in the middle, a new request. */
    o = 1;
    o += put_record(buf + o, TK_USB_HELLO, 0, 1, 0, 0, hello, sizeof hello, 0);
    o += put_request(buf + o, 7, big, sizeof big, 500, 0);
    buf[1 + RECORD_LEN + 2 + RECORD_LEN + 14] = 1; /* the first DATA record's CRC breaks */
    o += put_request(buf + o, 8, info, sizeof info, 2, 0);
    o += put_record(buf + o, TK_USB_RESET, 0, 77, 0, 0, NULL, 0, 0);
    o += put_request(buf + o, 8, info, sizeof info, 8, 0);
    add(buf, o);

    /* Records: DATA before HELLO, a foreign version, a too large request, a version-2 frame. */
    o = 1;
    o += put_request(buf + o, 3, info, sizeof info, 8, 0);
    o += put_record(buf + o, TK_USB_HELLO, 0, 4, 0, 0, hello9, sizeof hello9, 0);
    o += put_record(buf + o, TK_USB_HELLO, 0, 5, 0, 0, hello, sizeof hello, 0);
    o += put_record(buf + o, TK_USB_DATA, TK_USB_FIRST, 6, 0, REQ_MAX + 1, big, 256, 0);
    o += put_request(buf + o, 9, info, sizeof info, 8, 2);
    o += put_record(buf + o, 7, 0, 10, 0, 0, NULL, 0, 0);
    add(buf, o);

    /* The stream: garbage, HELLO, GetInfo, a NAK for the response. */
    buf[0] = 0;
    o = 1;
    memcpy(buf + o, "COTKCOT\x01garbage", 15);
    o += 15;
    o += pt_usbframe_hello(buf + o, sizeof buf - o, 1, hello + 1, 1);
    off = 0;
    do {
        n = pt_usbframe_data(frame, sizeof frame, 2, info, sizeof info, &off, 3);
        memcpy(buf + o, frame, n);
        o += n;
    } while (off < sizeof info);
    o +=
        pt_usbframe_encode(buf + o, sizeof buf - o, TK_USB_VERSION, TK_USB_NAK, 0, 2, 0, 0, nak, 1);
    add(buf, o);

    /* The stream: a request of 3000 bytes in frames of 256. */
    o = 1;
    o += pt_usbframe_hello(buf + o, sizeof buf - o, 1, hello + 1, 1);
    off = 0;
    do {
        n = pt_usbframe_data(frame, sizeof frame, 2, big, sizeof big, &off, PAYLOAD);
        memcpy(buf + o, frame, n);
        o += n;
    } while (off < sizeof big);
    add(buf, o);
}
