/*
 * Protobuf wire format, by hand, for the two places where protobuf-c's
 * whole-message model does not fit a device with a few KiB of RAM:
 *
 * - Responses are written field by field straight into the caller's
 *   response buffer, so that large outputs (partials, sealed results) are
 *   encrypted into place and never need a second copy in the arena. Only
 *   ciphertext and public data are ever written there.
 * - AggFeed requests are walked field by field, so that a feed is decoded
 *   one ciphertext at a time.
 * - Store records (row batches) are walked and written field by field, so
 *   that rows are decoded one at a time and a rewrite copies them as
 *   bytes; the secure image is written by hand (tk_log.c).
 *
 * Beside them, the fixed-size little-endian integers that record framing
 * and associated data use throughout the token.
 *
 * The writer never writes past cap: it sets `overflow` and the dispatcher
 * turns that into TK_ERR_RESPONSE_SPACE. The reader rejects any field that
 * runs past the end of its buffer.
 */
#include "token/tk_int.h"

size_t tk_varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

size_t tk_field_len(uint32_t field, size_t payload)
{
    return tk_varint_len((uint64_t)field << 3) + tk_varint_len(payload) + payload;
}

static void put(struct tk_wbuf *w, const uint8_t *p, size_t n)
{
    if (w->overflow || n > w->cap - w->len) {
        w->overflow = true;
        return;
    }
    if (n > 0)
        memcpy(w->p + w->len, p, n);
    w->len += n;
}

void tk_w_varint(struct tk_wbuf *w, uint64_t v)
{
    uint8_t b[10];
    size_t n = 0;
    while (v >= 0x80) {
        b[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    b[n++] = (uint8_t)v;
    put(w, b, n);
}

void tk_w_tag(struct tk_wbuf *w, uint32_t field, uint32_t wire_type)
{
    tk_w_varint(w, ((uint64_t)field << 3) | wire_type);
}

void tk_w_uint(struct tk_wbuf *w, uint32_t field, uint64_t v)
{
    tk_w_tag(w, field, 0);
    tk_w_varint(w, v);
}

void tk_w_sint(struct tk_wbuf *w, uint32_t field, int64_t v)
{
    tk_w_tag(w, field, 0);
    tk_w_varint(w, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

void tk_w_bytes(struct tk_wbuf *w, uint32_t field, const uint8_t *p, size_t n)
{
    tk_w_open(w, field, n);
    put(w, p, n);
}

void tk_w_open(struct tk_wbuf *w, uint32_t field, size_t n)
{
    tk_w_tag(w, field, 2);
    tk_w_varint(w, n);
}

uint8_t *tk_w_reserve(struct tk_wbuf *w, size_t n)
{
    uint8_t *p;
    if (w->overflow || n > w->cap - w->len) {
        w->overflow = true;
        return NULL;
    }
    p = w->p + w->len;
    w->len += n;
    return p;
}

void tk_w_message(struct tk_wbuf *w, uint32_t field, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *p;
    tk_w_open(w, field, n);
    p = tk_w_reserve(w, n);
    if (p != NULL)
        protobuf_c_message_pack(m, p);
}

#define BEGIN_ROOM 5u /* one tag byte (fields up to 15) and a 4-byte length */

size_t tk_w_begin(struct tk_wbuf *w)
{
    size_t start = w->len;
    tk_w_reserve(w, BEGIN_ROOM);
    return start;
}

void tk_w_end(struct tk_wbuf *w, uint32_t field, size_t start)
{
    struct tk_wbuf h;
    uint8_t hdr[BEGIN_ROOM];
    size_t n;
    if (w->overflow || field > 15 || w->len < start + BEGIN_ROOM) {
        w->overflow = true;
        return;
    }
    n = w->len - start - BEGIN_ROOM;
    if (n >= (1u << 28)) {
        w->overflow = true;
        return;
    }
    h = (struct tk_wbuf){hdr, sizeof hdr, 0, false};
    tk_w_open(&h, field, n);
    memcpy(w->p + start, hdr, h.len);
    memmove(w->p + start + h.len, w->p + start + BEGIN_ROOM, n);
    w->len = start + h.len + n;
}

size_t tk_w_begin_wide(struct tk_wbuf *w)
{
    size_t start = w->len;
    tk_w_reserve(w, TK_W_WIDE_ROOM);
    return start;
}

void tk_w_end_wide(struct tk_wbuf *w, uint32_t field, size_t start)
{
    uint8_t hdr[TK_W_WIDE_ROOM];
    struct tk_wbuf h = {hdr, sizeof hdr, 0, false};
    size_t n;
    if (w->overflow)
        return;
    n = w->len - start - TK_W_WIDE_ROOM;
    tk_w_open(&h, field, n);
    if (h.overflow) {
        w->overflow = true;
        return;
    }
    memcpy(w->p + start, hdr, h.len);
    memmove(w->p + start + h.len, w->p + start + TK_W_WIDE_ROOM, n);
    w->len = start + h.len + n;
}

size_t tk_w_room(const struct tk_wbuf *w)
{
    return w->overflow ? 0 : w->cap - w->len;
}

void tk_put_le32(uint8_t p[4], uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

void tk_put_le64(uint8_t p[8], uint64_t v)
{
    tk_put_le32(p, (uint32_t)v);
    tk_put_le32(p + 4, (uint32_t)(v >> 32));
}

uint32_t tk_get_le32(const uint8_t p[4])
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint64_t tk_get_le64(const uint8_t p[8])
{
    return (uint64_t)tk_get_le32(p) | (uint64_t)tk_get_le32(p + 4) << 32;
}

static int get_varint(const uint8_t *buf, size_t len, size_t *pos, uint64_t *v)
{
    uint64_t r = 0;
    unsigned shift = 0;
    while (*pos < len) {
        uint8_t b = buf[(*pos)++];
        if (shift == 63 && b > 1)
            return TK_ERR_MALFORMED;
        r |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *v = r;
            return 0;
        }
        shift += 7;
        if (shift > 63)
            return TK_ERR_MALFORMED;
    }
    return TK_ERR_TRUNCATED;
}

int tk_wire_next(const uint8_t *buf, size_t len, size_t *pos, struct tk_wfield *f)
{
    uint64_t key, n;
    int rc;

    if (*pos >= len)
        return 0;
    if ((rc = get_varint(buf, len, pos, &key)) != 0)
        return rc;
    if ((key >> 3) == 0 || (key >> 3) > 0x1fffffff)
        return TK_ERR_MALFORMED;
    f->field = (uint32_t)(key >> 3);
    f->wire_type = (uint32_t)(key & 7);
    f->data = NULL;
    f->len = 0;
    f->varint = 0;
    switch (f->wire_type) {
    case 0:
        return get_varint(buf, len, pos, &f->varint) == 0 ? 1 : TK_ERR_TRUNCATED;
    case 1:
        if (len - *pos < 8)
            return TK_ERR_TRUNCATED;
        f->data = buf + *pos;
        f->len = 8;
        *pos += 8;
        return 1;
    case 5:
        if (len - *pos < 4)
            return TK_ERR_TRUNCATED;
        f->data = buf + *pos;
        f->len = 4;
        *pos += 4;
        return 1;
    case 2:
        if ((rc = get_varint(buf, len, pos, &n)) != 0)
            return rc;
        if (n > len - *pos)
            return TK_ERR_TRUNCATED;
        f->data = buf + *pos;
        f->len = (size_t)n;
        *pos += (size_t)n;
        return 1;
    default:
        return TK_ERR_MALFORMED;
    }
}

int tk_wire_varint(const uint8_t *buf, size_t len, size_t *pos, uint64_t *v)
{
    return get_varint(buf, len, pos, v);
}
