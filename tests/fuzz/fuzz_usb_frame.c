/*
 * Fuzz target: the host's USB frame decoder (pt_usbframe_rx_next) and what
 * is built on it (pt_usbframe_hello_reply, pt_usbframe_msg_add), on an IN
 * byte stream from a device that is not trusted.
 *
 * The input is the stream, fed in pieces whose sizes come from a generator
 * seeded by the input. Invariants: every call consumes something while
 * there is input, and never more than it was given; no frame comes back
 * with a payload over TK_USB_PAYLOAD_MAX; a good frame has its payload and
 * a corrupted one has none; every byte fed is accounted for, as skipped,
 * as part of a frame returned, or as held for the next call (and what is
 * held fits the decoder's buffer); the frames found are exactly those a
 * plain reference scan of the whole input finds (USB.md 2,
 * resynchronisation), whatever the split; a good frame encoded again from
 * its fields decodes to the same; a HELLO answer that parses has limits in
 * USB.md's ranges; and a response reassembled from the DATA frames never
 * holds more than it may (its buffer's size, and its announced total).
 */
#include <string.h>

#include "participant/pt_usbframe.h"
#include "tests/fuzz/fuzz.h"
#include "token/tk_usb.h"

#define MSG_CAP 8192u /* the reassembly buffer: small, so that LARGE is reached */
#define REF_MAX 4096u /* frames the reference scan keeps */

static const uint8_t magic[4] = {TK_USB_MAGIC0, TK_USB_MAGIC1, TK_USB_MAGIC2, TK_USB_MAGIC3};

static uint32_t rd16(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8);
}

static uint32_t rd32(const uint8_t *p)
{
    return rd16(p) | (rd16(p + 2) << 16);
}

/* The reference: USB.md's rule applied to the whole input at once. */
struct ref_frame {
    size_t at, len; /* where the frame starts, and its length with the overhead */
    bool ok;
};
static struct ref_frame ref[REF_MAX];

static size_t ref_scan(const uint8_t *p, size_t n)
{
    size_t i = 0, k = 0;
    while (i + TK_USB_HEADER_LEN <= n && k < REF_MAX) {
        size_t len;
        if (memcmp(p + i, magic, 4) != 0 || rd32(p + i + 20) != tk_usb_crc32c(0, p + i, 20) ||
            rd16(p + i + 10) > TK_USB_PAYLOAD_MAX) {
            i++;
            continue;
        }
        len = TK_USB_OVERHEAD + rd16(p + i + 10);
        if (i + len > n)
            break; /* held by the decoder, not returned */
        ref[k].at = i;
        ref[k].len = len;
        ref[k].ok = rd32(p + i + len - 4) == tk_usb_crc32c(0, p + i, len - 4);
        k++;
        i += len;
    }
    return k;
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static void check_frame(const uint8_t *data, const struct ref_frame *r, const struct pt_usbframe *f,
                        int rc)
{
    const uint8_t *h = data + r->at;
    FUZZ_CHECK(f->len <= TK_USB_PAYLOAD_MAX);
    FUZZ_CHECK(r->len == TK_USB_OVERHEAD + (size_t)f->len);
    FUZZ_CHECK((rc == PT_USBFRAME_OK) == r->ok);
    FUZZ_CHECK(f->version == h[4] && f->type == h[5] && f->flags == h[6]);
    FUZZ_CHECK(f->seq == rd16(h + 8) && f->offset == rd32(h + 12) && f->total == rd32(h + 16));
    if (rc == PT_USBFRAME_BAD) {
        FUZZ_CHECK(f->payload == NULL);
        return;
    }
    FUZZ_CHECK(f->payload != NULL);
    FUZZ_CHECK(f->len == 0 || memcmp(f->payload, h + TK_USB_HEADER_LEN, f->len) == 0);
    {
        /* Encoded again from its fields, it decodes to the same. */
        static uint8_t again[TK_USB_FRAME_MAX];
        struct pt_usbframe_rx rx;
        struct pt_usbframe g;
        size_t n = pt_usbframe_encode(again, sizeof again, f->version, f->type, f->flags, f->seq,
                                      f->offset, f->total, f->payload, f->len),
               used = 0;
        FUZZ_CHECK(n == r->len);
        pt_usbframe_rx_init(&rx);
        FUZZ_CHECK(pt_usbframe_rx_next(&rx, again, n, &used, &g) == PT_USBFRAME_OK);
        FUZZ_CHECK(used == n && g.len == f->len && g.seq == f->seq && g.offset == f->offset &&
                   g.total == f->total && g.type == f->type && g.flags == f->flags);
    }
}

void fuzz_one(const uint8_t *data, size_t size)
{
    static struct pt_usbframe_rx rx;
    static uint8_t msg_buf[MSG_CAP];
    struct pt_usbframe_msg m;
    uint64_t s = mix(size + 1), framed = 0;
    size_t at = 0, k = 0, n_ref = ref_scan(data, size);
    bool msg_on = false;

    if (size > 0)
        s = mix(s ^ data[0] ^ ((uint64_t)data[size - 1] << 8));
    pt_usbframe_rx_init(&rx);
    while (at < size) {
        size_t piece = 1 + (size_t)((s = mix(s + 0x9e3779b97f4a7c15ull)) % 5000), used = 0;
        struct pt_usbframe f;
        int rc;
        if (piece > size - at)
            piece = size - at;
        rc = pt_usbframe_rx_next(&rx, data + at, piece, &used, &f);
        FUZZ_CHECK(used <= piece);
        FUZZ_CHECK(rx.n < TK_USB_FRAME_MAX);
        FUZZ_CHECK(rc == PT_USBFRAME_MORE || rc == PT_USBFRAME_OK || rc == PT_USBFRAME_BAD);
        FUZZ_CHECK(rc != PT_USBFRAME_MORE || used == piece);
        FUZZ_CHECK(used > 0); /* a frame ends on a byte of this call */
        at += used;
        if (rc == PT_USBFRAME_MORE)
            continue;
        FUZZ_CHECK(k < n_ref || n_ref == REF_MAX);
        if (k < n_ref)
            check_frame(data, &ref[k], &f, rc);
        k++;
        framed += TK_USB_OVERHEAD + f.len;
        if (rc != PT_USBFRAME_OK)
            continue;
        if (f.type == TK_USB_HELLO) {
            struct pt_usbframe_limits lim;
            if (pt_usbframe_hello_reply(&lim, &f) == 0)
                FUZZ_CHECK(lim.max_payload >= TK_USB_PAYLOAD_MIN &&
                           lim.max_payload <= TK_USB_PAYLOAD_MAX && lim.request_max > 0 &&
                           lim.response_max >= TK_USB_RESPONSE_MIN);
        }
        if (f.type == TK_USB_DATA) {
            int mr;
            if (!msg_on) {
                pt_usbframe_msg_init(&m, msg_buf, sizeof msg_buf, f.seq);
                msg_on = true;
            }
            mr = pt_usbframe_msg_add(&m, &f);
            FUZZ_CHECK(mr >= PT_USBFRAME_LARGE && mr <= 1);
            FUZZ_CHECK(!m.started || (m.have <= m.total && m.total <= m.cap));
            FUZZ_CHECK(mr != 1 || m.have == m.total);
            if (mr == 1 || mr == PT_USBFRAME_LARGE)
                msg_on = false;
        }
    }
    /* Every byte: skipped, in a frame, or held. */
    FUZZ_CHECK(rx.skipped + framed + rx.n == size);
    FUZZ_CHECK(k == n_ref || n_ref == REF_MAX);
}

void fuzz_seeds(void (*add)(const uint8_t *data, size_t size))
{
    /* USB.md's worked examples: the HELLO answer, ACK, a NAK, and DATA frames. */
    static const uint8_t hello_reply[] = {
        0x43, 0x4f, 0x54, 0x4b, 0x01, 0x05, 0x00, 0x00, 0x01, 0x00, 0x0c, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x61, 0x3a, 0xf3, 0xdd, 0x01, 0x00, 0x00, 0x01,
        0x00, 0x80, 0x01, 0x00, 0x00, 0x80, 0x01, 0x00, 0x4b, 0x12, 0xe4, 0x05};
    static const uint8_t info[8] = {0x08, 0xc0, 0xe0, 0x93, 0xd3, 0x06, 0x12, 0x00};
    static uint8_t buf[32u << 10];
    uint8_t big[6000], v = TK_USB_VERSION, why = TK_USB_NAK_CRC;
    size_t o = 0, off = 0, i;

    for (i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 29 + 1);
    memcpy(buf, hello_reply, sizeof hello_reply);
    add(buf, sizeof hello_reply);

    /* Garbage, a HELLO answer, an ACK, a response in frames, a NAK, a corrupted frame. */
    memcpy(buf, "COTK\x01\x05junkCOTK\x02", 15);
    o = 15;
    memcpy(buf + o, hello_reply, sizeof hello_reply);
    o += sizeof hello_reply;
    o += pt_usbframe_encode(buf + o, sizeof buf - o, 1, TK_USB_ACK, 0, 0x102, 8, 8, NULL, 0);
    do
        o += pt_usbframe_data(buf + o, sizeof buf - o, 0x102, info, sizeof info, &off, 3);
    while (off < sizeof info);
    o += pt_usbframe_encode(buf + o, sizeof buf - o, 1, TK_USB_NAK, 0, 0x102, 3, 8, &why, 1);
    o += pt_usbframe_encode(buf + o, sizeof buf - o, 1, TK_USB_ERROR, 0, 5, 0, 0, &why, 1);
    buf[o - 2] ^= 0x10; /* its CRC fails; its header holds */
    o += pt_usbframe_hello(buf + o, sizeof buf - o, 9, &v, 1);
    add(buf, o);

    /* A response of 6000 bytes in frames of 4096 and of 1000. */
    o = 0;
    off = 0;
    do
        o += pt_usbframe_data(buf + o, sizeof buf - o, 3, big, sizeof big, &off, 4096);
    while (off < sizeof big);
    off = 0;
    do
        o += pt_usbframe_data(buf + o, sizeof buf - o, 4, big, sizeof big, &off, 1000);
    while (off < sizeof big);
    add(buf, o);

    /* An empty message, and a frame whose header claims the most payload. */
    o = 0;
    off = 0;
    o += pt_usbframe_data(buf + o, sizeof buf - o, 6, info, 0, &off, 64);
    o += pt_usbframe_encode(buf + o, sizeof buf - o, 1, TK_USB_DATA, 1, 7, 0, 9000, big, 4096);
    add(buf, o);
}
