/*
 * The USB framing, the host's side (participant/pt_usbframe.h).
 *
 * Written from token/USB.md rather than from the device's code, and tested
 * against it (tests/test_usb_frame.c), so that the two readings of the
 * specification check each other; only the constants and the CRC-32C
 * (tk_usb_crc32c, checked against its known answer) are shared.
 *
 * The decoder holds at most one frame (TK_USB_FRAME_MAX bytes). It believes
 * a header only when the magic, the header CRC and the length bound hold;
 * otherwise it drops one byte and scans on for the magic. The device is not
 * trusted more than any peer: every length is bounded before use.
 */
#include <string.h>

#include "participant/pt_usbframe.h"

static const uint8_t magic[4] = {TK_USB_MAGIC0, TK_USB_MAGIC1, TK_USB_MAGIC2, TK_USB_MAGIC3};

static void le16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void le32(uint8_t *p, uint32_t v)
{
    le16(p, v);
    le16(p + 2, v >> 16);
}

static uint32_t rd16(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8);
}

static uint32_t rd32(const uint8_t *p)
{
    return rd16(p) | (rd16(p + 2) << 16);
}

size_t pt_usbframe_encode(uint8_t *out, size_t cap, uint8_t version, uint8_t type, uint8_t flags,
                          uint16_t seq, uint32_t offset, uint32_t total, const uint8_t *payload,
                          size_t len)
{
    if (len > TK_USB_PAYLOAD_MAX || cap < TK_USB_OVERHEAD + len)
        return 0;
    memcpy(out, magic, 4);
    out[4] = version;
    out[5] = type;
    out[6] = flags;
    out[7] = 0;
    le16(out + 8, seq);
    le16(out + 10, (uint32_t)len);
    le32(out + 12, offset);
    le32(out + 16, total);
    le32(out + 20, tk_usb_crc32c(0, out, 20));
    if (len > 0)
        memcpy(out + TK_USB_HEADER_LEN, payload, len);
    le32(out + TK_USB_HEADER_LEN + len, tk_usb_crc32c(0, out, TK_USB_HEADER_LEN + len));
    return TK_USB_OVERHEAD + len;
}

size_t pt_usbframe_data(uint8_t *out, size_t cap, uint16_t seq, const uint8_t *msg, size_t total,
                        size_t *offset, size_t max_payload)
{
    size_t at = *offset, n, len;
    uint8_t flags = 0;
    if (total > TK_REQUEST_MAX || at > total || (at == total && total != 0) || max_payload == 0 ||
        max_payload > TK_USB_PAYLOAD_MAX)
        return 0;
    n = total - at < max_payload ? total - at : max_payload;
    if (at == 0)
        flags |= TK_USB_FIRST;
    if (at + n == total)
        flags |= TK_USB_LAST;
    len = pt_usbframe_encode(out, cap, TK_USB_VERSION, TK_USB_DATA, flags, seq, (uint32_t)at,
                             (uint32_t)total, msg + at, n);
    if (len > 0)
        *offset = at + n;
    return len;
}

size_t pt_usbframe_hello(uint8_t *out, size_t cap, uint16_t seq, const uint8_t *versions, size_t n)
{
    uint8_t p[TK_USB_CONTROL_MAX];
    if (n == 0 || n + 1 > sizeof p)
        return 0;
    p[0] = (uint8_t)n;
    memcpy(p + 1, versions, n);
    return pt_usbframe_encode(out, cap, 1, TK_USB_HELLO, 0, seq, 0, 0, p, n + 1);
}

int pt_usbframe_hello_reply(struct pt_usbframe_limits *out, const struct pt_usbframe *f)
{
    const uint8_t *p = f->payload;
    memset(out, 0, sizeof *out);
    if (f->type != TK_USB_HELLO || p == NULL || f->len < TK_USB_HELLO_REPLY_LEN)
        return -1;
    out->version = p[0];
    out->max_payload = (uint16_t)rd16(p + 2);
    out->request_max = rd32(p + 4);
    out->response_max = rd32(p + 8);
    if (out->max_payload < TK_USB_PAYLOAD_MIN || out->max_payload > TK_USB_PAYLOAD_MAX ||
        out->request_max == 0 || out->response_max < TK_USB_RESPONSE_MIN)
        return -1;
    return 0;
}

void pt_usbframe_rx_init(struct pt_usbframe_rx *rx)
{
    rx->n = 0;
    rx->skipped = 0;
}

/* Whether buf[0..n) can begin a frame: the magic so far, and once the
 * header is whole, its CRC and length bound. */
static bool could_begin(const struct pt_usbframe_rx *rx)
{
    size_t i;
    for (i = 0; i < rx->n && i < 4; i++)
        if (rx->buf[i] != magic[i])
            return false;
    if (rx->n < TK_USB_HEADER_LEN)
        return true;
    return rd32(rx->buf + 20) == tk_usb_crc32c(0, rx->buf, 20) &&
           rd16(rx->buf + 10) <= TK_USB_PAYLOAD_MAX;
}

int pt_usbframe_rx_next(struct pt_usbframe_rx *rx, const uint8_t *in, size_t len, size_t *used,
                        struct pt_usbframe *f)
{
    size_t i = 0;
    while (i < len) {
        size_t need;
        if (rx->n < TK_USB_HEADER_LEN) {
            rx->buf[rx->n++] = in[i++];
            /* Only bytes of a header are ever dropped, so rescanning them is enough. */
            while (rx->n > 0 && !could_begin(rx)) {
                memmove(rx->buf, rx->buf + 1, --rx->n);
                rx->skipped++;
            }
            continue;
        }
        need = TK_USB_OVERHEAD + rd16(rx->buf + 10) - rx->n;
        if (need > len - i)
            need = len - i;
        memcpy(rx->buf + rx->n, in + i, need);
        rx->n += need;
        i += need;
        if (rx->n == TK_USB_OVERHEAD + rd16(rx->buf + 10)) {
            size_t plen = rd16(rx->buf + 10);
            bool ok = rd32(rx->buf + TK_USB_HEADER_LEN + plen) ==
                      tk_usb_crc32c(0, rx->buf, TK_USB_HEADER_LEN + plen);
            f->version = rx->buf[4];
            f->type = rx->buf[5];
            f->flags = rx->buf[6];
            f->seq = (uint16_t)rd16(rx->buf + 8);
            f->len = (uint16_t)plen;
            f->offset = rd32(rx->buf + 12);
            f->total = rd32(rx->buf + 16);
            f->payload = ok ? rx->buf + TK_USB_HEADER_LEN : NULL;
            rx->n = 0;
            *used = i;
            return ok ? PT_USBFRAME_OK : PT_USBFRAME_BAD;
        }
    }
    *used = i;
    return PT_USBFRAME_MORE;
}

void pt_usbframe_msg_init(struct pt_usbframe_msg *m, uint8_t *buf, size_t cap, uint16_t seq)
{
    m->buf = buf;
    m->cap = cap;
    m->started = false;
    m->seq = seq;
    m->total = 0;
    m->have = 0;
}

int pt_usbframe_msg_add(struct pt_usbframe_msg *m, const struct pt_usbframe *f)
{
    bool first = (f->flags & TK_USB_FIRST) != 0, last = (f->flags & TK_USB_LAST) != 0;
    if (f->type != TK_USB_DATA || f->payload == NULL || f->seq != m->seq)
        return PT_USBFRAME_GAP;
    if (f->offset > f->total || f->total - f->offset < f->len || first != (f->offset == 0) ||
        last != (f->offset + f->len == f->total))
        return PT_USBFRAME_GAP;
    if (first) {
        if (f->total > m->cap)
            return PT_USBFRAME_LARGE;
        m->started = true;
        m->total = f->total;
        m->have = 0;
    }
    if (!m->started || f->total != m->total || f->offset != m->have)
        return PT_USBFRAME_GAP;
    if (f->len > 0)
        memcpy(m->buf + m->have, f->payload, f->len);
    m->have += f->len;
    return m->have == m->total ? 1 : 0;
}
