/*
 * The USB framing, the device's side (token/tk_usb.h; token/USB.md is the
 * specification a firmware author implements, and this file one reading of
 * it).
 *
 * Receiving. Bytes from the OUT endpoint go through three states: the
 * header (24 bytes, kept until they check), the payload, the trailer CRC.
 * A header is believed only when its magic and its own CRC-32C hold and
 * its length is within TK_USB_PAYLOAD_MAX; otherwise its first byte is
 * dropped and the rest is scanned again for the magic, so that garbage
 * before a frame, a frame cut short or a corrupted header cost only the
 * bytes they occupy. Once a header is believed its payload is read in full,
 * and the frame counts only if the trailer CRC over header and payload
 * holds. A DATA payload is written straight into the reassembly buffer at
 * its offset, and the message's progress (rx_have) moves only when the
 * frame's CRC holds, so the device never holds a frame twice.
 *
 * The request. One is in flight at a time: DATA frames of sequence number
 * rx_seq arrive in order of offset; a FIRST frame always starts the message
 * afresh (the host abandoned what came before); a frame at another offset
 * or with a bad CRC is answered by one NAK naming rx_have, and later frames
 * of that message are dropped silently until the one at rx_have comes
 * (a bad CRC at rx_have is NAKed every time). When the last byte arrives
 * the device queues an ACK and, at the next tk_usb_poll, runs tk_dispatch
 * once. A request whose sequence number is that of the cached response is
 * a duplicate: it is ACKed and answered from the cache, not run again.
 *
 * Sending. tk_usb_poll hands out one frame per call: waiting control
 * frames first (ACK, NAK, HELLO, RESET, ERROR; a queue of
 * TK_USB_CONTROL_QUEUE, the oldest dropped when it overflows), then the response's DATA frames in
 * order. A NAK from the host with the response's sequence number restarts them from its offset.
 *
 * Trust: everything fed here comes from the host, which is not trusted:
 * every length is bounded before it is used (the payload by
 * TK_USB_PAYLOAD_MAX and the device's max_payload, a message by
 * request_max), every offset checked against the message, and nothing is
 * written outside the caller's region. The request's content is judged by
 * tk_dispatch, as on any link.
 */
#include <string.h>

#include "token/tk_usb.h"

#define TK_USB_STATE_MAGIC 0x55534244u /* "USBD" */
#define CTL_FRAME_MAX (TK_USB_OVERHEAD + TK_USB_CONTROL_MAX)

enum rx_state { RX_HEADER, RX_PAYLOAD, RX_TRAILER };
enum rx_mode { RXM_IDLE, RXM_RECV, RXM_DROP };
enum sink { SINK_DISCARD, SINK_MSG, SINK_CTL };

struct hdr {
    uint8_t version, type, flags;
    uint16_t seq, len;
    uint32_t offset, total;
};

struct tk_usb {
    uint32_t magic;
    struct tk_usb_config cfg;
    uint8_t *req;  /* request_max bytes: the reassembly buffer */
    uint8_t *resp; /* response_max bytes: the cached response */
    bool hello;    /* a HELLO was answered with our version */

    /* The frame being read. */
    enum rx_state rx;
    uint8_t hb[TK_USB_HEADER_LEN];
    uint32_t hn;
    struct hdr h;
    enum sink sink;
    uint32_t got;
    uint32_t crc;
    uint8_t tb[TK_USB_TRAILER_LEN];
    uint32_t tn;
    uint8_t ctl[TK_USB_CONTROL_MAX];

    /* The request being received. */
    enum rx_mode mode;
    uint16_t rx_seq;
    uint32_t rx_total;
    uint32_t rx_have;
    bool rx_naked; /* a NAK for rx_have went out: drop strays silently */

    /* The request received, waiting for tk_usb_poll to run it. */
    bool run_pending;
    uint16_t run_seq;
    uint32_t run_len;

    /* The cached response, and how much of it is sent. */
    bool have_resp;
    uint16_t resp_seq;
    uint32_t resp_len;
    bool tx_active;
    uint32_t tx_off;

    /* Control frames waiting to go IN, oldest first (co_head). */
    uint8_t co[TK_USB_CONTROL_QUEUE][CTL_FRAME_MAX];
    uint32_t co_len[TK_USB_CONTROL_QUEUE];
    uint32_t co_head, co_n;

    struct tk_usb_stats st;
};

/* ------------------------------------------------------------ CRC-32C */

/* Byte table: 1 KiB of ROM, one lookup per byte (a token with a CRC unit
 * would use it instead). */
static const uint32_t crc_table[256] = {
    0x00000000u, 0xF26B8303u, 0xE13B70F7u, 0x1350F3F4u, 0xC79A971Fu, 0x35F1141Cu, 0x26A1E7E8u,
    0xD4CA64EBu, 0x8AD958CFu, 0x78B2DBCCu, 0x6BE22838u, 0x9989AB3Bu, 0x4D43CFD0u, 0xBF284CD3u,
    0xAC78BF27u, 0x5E133C24u, 0x105EC76Fu, 0xE235446Cu, 0xF165B798u, 0x030E349Bu, 0xD7C45070u,
    0x25AFD373u, 0x36FF2087u, 0xC494A384u, 0x9A879FA0u, 0x68EC1CA3u, 0x7BBCEF57u, 0x89D76C54u,
    0x5D1D08BFu, 0xAF768BBCu, 0xBC267848u, 0x4E4DFB4Bu, 0x20BD8EDEu, 0xD2D60DDDu, 0xC186FE29u,
    0x33ED7D2Au, 0xE72719C1u, 0x154C9AC2u, 0x061C6936u, 0xF477EA35u, 0xAA64D611u, 0x580F5512u,
    0x4B5FA6E6u, 0xB93425E5u, 0x6DFE410Eu, 0x9F95C20Du, 0x8CC531F9u, 0x7EAEB2FAu, 0x30E349B1u,
    0xC288CAB2u, 0xD1D83946u, 0x23B3BA45u, 0xF779DEAEu, 0x05125DADu, 0x1642AE59u, 0xE4292D5Au,
    0xBA3A117Eu, 0x4851927Du, 0x5B016189u, 0xA96AE28Au, 0x7DA08661u, 0x8FCB0562u, 0x9C9BF696u,
    0x6EF07595u, 0x417B1DBCu, 0xB3109EBFu, 0xA0406D4Bu, 0x522BEE48u, 0x86E18AA3u, 0x748A09A0u,
    0x67DAFA54u, 0x95B17957u, 0xCBA24573u, 0x39C9C670u, 0x2A993584u, 0xD8F2B687u, 0x0C38D26Cu,
    0xFE53516Fu, 0xED03A29Bu, 0x1F682198u, 0x5125DAD3u, 0xA34E59D0u, 0xB01EAA24u, 0x42752927u,
    0x96BF4DCCu, 0x64D4CECFu, 0x77843D3Bu, 0x85EFBE38u, 0xDBFC821Cu, 0x2997011Fu, 0x3AC7F2EBu,
    0xC8AC71E8u, 0x1C661503u, 0xEE0D9600u, 0xFD5D65F4u, 0x0F36E6F7u, 0x61C69362u, 0x93AD1061u,
    0x80FDE395u, 0x72966096u, 0xA65C047Du, 0x5437877Eu, 0x4767748Au, 0xB50CF789u, 0xEB1FCBADu,
    0x197448AEu, 0x0A24BB5Au, 0xF84F3859u, 0x2C855CB2u, 0xDEEEDFB1u, 0xCDBE2C45u, 0x3FD5AF46u,
    0x7198540Du, 0x83F3D70Eu, 0x90A324FAu, 0x62C8A7F9u, 0xB602C312u, 0x44694011u, 0x5739B3E5u,
    0xA55230E6u, 0xFB410CC2u, 0x092A8FC1u, 0x1A7A7C35u, 0xE811FF36u, 0x3CDB9BDDu, 0xCEB018DEu,
    0xDDE0EB2Au, 0x2F8B6829u, 0x82F63B78u, 0x709DB87Bu, 0x63CD4B8Fu, 0x91A6C88Cu, 0x456CAC67u,
    0xB7072F64u, 0xA457DC90u, 0x563C5F93u, 0x082F63B7u, 0xFA44E0B4u, 0xE9141340u, 0x1B7F9043u,
    0xCFB5F4A8u, 0x3DDE77ABu, 0x2E8E845Fu, 0xDCE5075Cu, 0x92A8FC17u, 0x60C37F14u, 0x73938CE0u,
    0x81F80FE3u, 0x55326B08u, 0xA759E80Bu, 0xB4091BFFu, 0x466298FCu, 0x1871A4D8u, 0xEA1A27DBu,
    0xF94AD42Fu, 0x0B21572Cu, 0xDFEB33C7u, 0x2D80B0C4u, 0x3ED04330u, 0xCCBBC033u, 0xA24BB5A6u,
    0x502036A5u, 0x4370C551u, 0xB11B4652u, 0x65D122B9u, 0x97BAA1BAu, 0x84EA524Eu, 0x7681D14Du,
    0x2892ED69u, 0xDAF96E6Au, 0xC9A99D9Eu, 0x3BC21E9Du, 0xEF087A76u, 0x1D63F975u, 0x0E330A81u,
    0xFC588982u, 0xB21572C9u, 0x407EF1CAu, 0x532E023Eu, 0xA145813Du, 0x758FE5D6u, 0x87E466D5u,
    0x94B49521u, 0x66DF1622u, 0x38CC2A06u, 0xCAA7A905u, 0xD9F75AF1u, 0x2B9CD9F2u, 0xFF56BD19u,
    0x0D3D3E1Au, 0x1E6DCDEEu, 0xEC064EEDu, 0xC38D26C4u, 0x31E6A5C7u, 0x22B65633u, 0xD0DDD530u,
    0x0417B1DBu, 0xF67C32D8u, 0xE52CC12Cu, 0x1747422Fu, 0x49547E0Bu, 0xBB3FFD08u, 0xA86F0EFCu,
    0x5A048DFFu, 0x8ECEE914u, 0x7CA56A17u, 0x6FF599E3u, 0x9D9E1AE0u, 0xD3D3E1ABu, 0x21B862A8u,
    0x32E8915Cu, 0xC083125Fu, 0x144976B4u, 0xE622F5B7u, 0xF5720643u, 0x07198540u, 0x590AB964u,
    0xAB613A67u, 0xB831C993u, 0x4A5A4A90u, 0x9E902E7Bu, 0x6CFBAD78u, 0x7FAB5E8Cu, 0x8DC0DD8Fu,
    0xE330A81Au, 0x115B2B19u, 0x020BD8EDu, 0xF0605BEEu, 0x24AA3F05u, 0xD6C1BC06u, 0xC5914FF2u,
    0x37FACCF1u, 0x69E9F0D5u, 0x9B8273D6u, 0x88D28022u, 0x7AB90321u, 0xAE7367CAu, 0x5C18E4C9u,
    0x4F48173Du, 0xBD23943Eu, 0xF36E6F75u, 0x0105EC76u, 0x12551F82u, 0xE03E9C81u, 0x34F4F86Au,
    0xC69F7B69u, 0xD5CF889Du, 0x27A40B9Eu, 0x79B737BAu, 0x8BDCB4B9u, 0x988C474Du, 0x6AE7C44Eu,
    0xBE2DA0A5u, 0x4C4623A6u, 0x5F16D052u, 0xAD7D5351u,
};

uint32_t tk_usb_crc32c(uint32_t crc, const uint8_t *p, size_t n)
{
    size_t i;
    crc = ~crc;
    for (i = 0; i < n; i++)
        crc = (crc >> 8) ^ crc_table[(crc ^ p[i]) & 0xFFu];
    return ~crc;
}

/* ------------------------------------------------------------ bytes */

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static const uint8_t magic[4] = {TK_USB_MAGIC0, TK_USB_MAGIC1, TK_USB_MAGIC2, TK_USB_MAGIC3};

/* Write a whole frame to out (room for TK_USB_OVERHEAD + len); returns its length. */
static size_t frame_put(uint8_t *out, uint8_t type, uint8_t flags, uint16_t seq, uint32_t offset,
                        uint32_t total, const uint8_t *payload, uint16_t len)
{
    uint32_t crc;
    memcpy(out, magic, 4);
    out[TK_USB_OFF_VERSION] = TK_USB_VERSION;
    out[TK_USB_OFF_TYPE] = type;
    out[TK_USB_OFF_FLAGS] = flags;
    out[7] = 0;
    put16(out + TK_USB_OFF_SEQ, seq);
    put16(out + TK_USB_OFF_LEN, len);
    put32(out + TK_USB_OFF_OFFSET, offset);
    put32(out + TK_USB_OFF_TOTAL, total);
    put32(out + TK_USB_OFF_HCRC, tk_usb_crc32c(0, out, TK_USB_OFF_HCRC));
    if (len)
        memcpy(out + TK_USB_HEADER_LEN, payload, len);
    crc = tk_usb_crc32c(0, out, TK_USB_HEADER_LEN + (size_t)len);
    put32(out + TK_USB_HEADER_LEN + len, crc);
    return TK_USB_OVERHEAD + (size_t)len;
}

/* Queue a control frame; when the queue is full the oldest is dropped. */
static void control(struct tk_usb *u, uint8_t type, uint16_t seq, uint32_t offset, uint32_t total,
                    const uint8_t *payload, uint16_t len)
{
    uint32_t slot;
    if (u->co_n == TK_USB_CONTROL_QUEUE) {
        u->co_head = (u->co_head + 1) % TK_USB_CONTROL_QUEUE;
        u->co_n--;
    }
    slot = (u->co_head + u->co_n) % TK_USB_CONTROL_QUEUE;
    u->co_len[slot] = (uint32_t)frame_put(u->co[slot], type, 0, seq, offset, total, payload, len);
    u->co_n++;
    if (type == TK_USB_NAK)
        u->st.naks++;
}

static void error(struct tk_usb *u, uint16_t seq, uint8_t code, uint32_t total)
{
    uint8_t p[3] = {code, 1, TK_USB_VERSION};
    control(u, TK_USB_ERROR, seq, 0, total, p, code == TK_USB_E_VERSION ? 3 : 1);
}

static void nak(struct tk_usb *u, uint8_t reason)
{
    control(u, TK_USB_NAK, u->rx_seq, u->rx_have, u->rx_total, &reason, 1);
    u->rx_naked = true;
}

/* Drop the request in progress, the one waiting to run, the cached response
 * and anything waiting to go IN. */
static void drop_all(struct tk_usb *u)
{
    u->mode = RXM_IDLE;
    u->rx_naked = false;
    u->run_pending = false;
    u->have_resp = false;
    u->tx_active = false;
    u->co_n = 0;
}

/* ------------------------------------------------------------ receiving */

static bool prefix_ok(const struct tk_usb *u)
{
    uint32_t i;
    for (i = 0; i < u->hn && i < 4; i++)
        if (u->hb[i] != magic[i])
            return false;
    return true;
}

/* Drop the first held byte, then every further one until the held bytes
 * could begin a frame. */
static void resync(struct tk_usb *u)
{
    do {
        memmove(u->hb, u->hb + 1, --u->hn);
        u->st.skipped++;
    } while (u->hn > 0 && !prefix_ok(u));
}

static bool header_believed(struct tk_usb *u)
{
    const uint8_t *b = u->hb;
    if (get32(b + TK_USB_OFF_HCRC) != tk_usb_crc32c(0, b, TK_USB_OFF_HCRC))
        return false;
    u->h.version = b[TK_USB_OFF_VERSION];
    u->h.type = b[TK_USB_OFF_TYPE];
    u->h.flags = b[TK_USB_OFF_FLAGS];
    u->h.seq = get16(b + TK_USB_OFF_SEQ);
    u->h.len = get16(b + TK_USB_OFF_LEN);
    u->h.offset = get32(b + TK_USB_OFF_OFFSET);
    u->h.total = get32(b + TK_USB_OFF_TOTAL);
    return u->h.len <= TK_USB_PAYLOAD_MAX;
}

/* A DATA header whose fields agree with each other and with our limits
 * (not yet with the message in progress). */
static bool data_fields_ok(const struct tk_usb *u)
{
    const struct hdr *h = &u->h;
    bool first = h->offset == 0, last;
    if (h->len > u->cfg.max_payload || h->offset > h->total || h->total - h->offset < h->len)
        return false;
    last = h->offset + h->len == h->total;
    if (h->len == 0 && h->total != 0)
        return false;
    return ((h->flags & TK_USB_FIRST) != 0) == first && ((h->flags & TK_USB_LAST) != 0) == last;
}

/* Where the payload of the frame whose header was just believed goes. A
 * FIRST frame starts its message here: its header's CRC held, so the host
 * did send it and has abandoned whatever came before. */
static enum sink choose_sink(struct tk_usb *u)
{
    const struct hdr *h = &u->h;
    if (h->type != TK_USB_DATA)
        return h->len <= TK_USB_CONTROL_MAX ? SINK_CTL : SINK_DISCARD;
    if (h->version != TK_USB_VERSION || !u->hello || !data_fields_ok(u))
        return SINK_DISCARD;
    if (h->offset == 0) {
        if (h->total > u->cfg.request_max)
            return SINK_DISCARD;
        u->mode = RXM_RECV;
        u->rx_seq = h->seq;
        u->rx_total = h->total;
        u->rx_have = 0;
        u->rx_naked = false;
        u->tx_active = false; /* the host has the previous response, or gave it up */
        u->run_pending = false;
        return SINK_MSG;
    }
    if (u->mode == RXM_RECV && h->seq == u->rx_seq && h->total == u->rx_total &&
        h->offset == u->rx_have)
        return SINK_MSG;
    return SINK_DISCARD;
}

static void data_done(struct tk_usb *u, bool crc_ok)
{
    const struct hdr *h = &u->h;
    if (crc_ok && h->version != TK_USB_VERSION) {
        error(u, h->seq, TK_USB_E_VERSION, h->total);
        return;
    }
    if (crc_ok && !u->hello) {
        error(u, h->seq, TK_USB_E_NO_HELLO, h->total);
        return;
    }
    if (crc_ok && !data_fields_ok(u)) {
        error(u, h->seq, TK_USB_E_BAD_FRAME, h->total);
        return;
    }
    if (h->offset == 0 && h->total > u->cfg.request_max) {
        if (crc_ok) {
            error(u, h->seq, TK_USB_E_TOO_LARGE, h->total);
            u->mode = RXM_DROP;
            u->rx_seq = h->seq;
        }
        return;
    }
    if (u->mode == RXM_DROP && h->seq == u->rx_seq)
        return;
    if (u->mode != RXM_RECV || h->seq != u->rx_seq) {
        /* A piece of a message whose beginning we do not have. */
        if (!crc_ok)
            return;
        u->mode = RXM_RECV;
        u->rx_seq = h->seq;
        u->rx_total = h->total;
        u->rx_have = 0;
        nak(u, TK_USB_NAK_GAP);
        return;
    }
    if (crc_ok && u->sink == SINK_MSG) {
        u->rx_have += h->len;
        u->rx_naked = false;
        if (u->rx_have == u->rx_total) {
            u->mode = RXM_IDLE;
            u->run_pending = true;
            u->run_seq = u->rx_seq;
            u->run_len = u->rx_total;
            control(u, TK_USB_ACK, u->rx_seq, u->rx_total, u->rx_total, NULL, 0);
        }
        return;
    }
    if (!crc_ok && h->offset == u->rx_have)
        nak(u, TK_USB_NAK_CRC);
    else if (!u->rx_naked)
        nak(u, crc_ok ? TK_USB_NAK_GAP : TK_USB_NAK_CRC);
}

static void hello_done(struct tk_usb *u)
{
    const struct hdr *h = &u->h;
    uint8_t reply[TK_USB_HELLO_REPLY_LEN];
    uint32_t n, i;
    if (h->len < 1 || (n = u->ctl[0]) == 0 || n + 1 > h->len) {
        error(u, h->seq, TK_USB_E_BAD_FRAME, 0);
        return;
    }
    for (i = 0; i < n; i++)
        if (u->ctl[1 + i] == TK_USB_VERSION)
            break;
    drop_all(u);
    if (i == n) {
        u->hello = false;
        error(u, h->seq, TK_USB_E_VERSION, 0);
        return;
    }
    u->hello = true;
    reply[0] = TK_USB_VERSION;
    reply[1] = 0;
    put16(reply + 2, u->cfg.max_payload);
    put32(reply + 4, u->cfg.request_max);
    put32(reply + 8, u->cfg.response_max);
    control(u, TK_USB_HELLO, h->seq, 0, 0, reply, sizeof reply);
}

static void control_done(struct tk_usb *u)
{
    const struct hdr *h = &u->h;
    if (u->sink != SINK_CTL) {
        error(u, h->seq, TK_USB_E_BAD_FRAME, 0);
        return;
    }
    switch (h->type) {
    case TK_USB_HELLO:
        hello_done(u);
        break;
    case TK_USB_RESET:
        drop_all(u);
        control(u, TK_USB_RESET, h->seq, 0, 0, NULL, 0);
        break;
    case TK_USB_NAK:
        /* The host asks for the response again from an offset. */
        if (u->have_resp && !u->run_pending && h->seq == u->resp_seq && h->offset < u->resp_len) {
            u->tx_active = true;
            u->tx_off = h->offset;
            u->st.resends++;
        } else {
            error(u, h->seq, TK_USB_E_BAD_FRAME, 0);
        }
        break;
    case TK_USB_ACK:
        break; /* reserved from host to device: ignored */
    default:
        error(u, h->seq, TK_USB_E_BAD_FRAME, 0);
        break;
    }
}

static void frame_done(struct tk_usb *u)
{
    bool crc_ok = get32(u->tb) == u->crc;
    if (crc_ok)
        u->st.frames++;
    else
        u->st.bad_crc++;
    if (u->h.type == TK_USB_DATA)
        data_done(u, crc_ok);
    else if (crc_ok)
        control_done(u);
    /* A control frame with a bad CRC is dropped: the host times out and sends it again. */
}

void tk_usb_feed(struct tk_usb *u, const uint8_t *data, size_t len)
{
    while (len > 0) {
        if (u->rx == RX_HEADER) {
            u->hb[u->hn++] = *data++;
            len--;
            if (!prefix_ok(u)) {
                resync(u);
            } else if (u->hn == TK_USB_HEADER_LEN) {
                if (!header_believed(u)) {
                    resync(u);
                    continue;
                }
                u->sink = choose_sink(u);
                u->crc = tk_usb_crc32c(0, u->hb, TK_USB_HEADER_LEN);
                u->got = 0;
                u->tn = 0;
                u->hn = 0;
                u->rx = u->h.len ? RX_PAYLOAD : RX_TRAILER;
            }
        } else if (u->rx == RX_PAYLOAD) {
            size_t n = u->h.len - u->got;
            if (n > len)
                n = len;
            if (u->sink == SINK_MSG)
                memcpy(u->req + u->h.offset + u->got, data, n);
            else if (u->sink == SINK_CTL)
                memcpy(u->ctl + u->got, data, n);
            u->crc = tk_usb_crc32c(u->crc, data, n);
            u->got += (uint32_t)n;
            data += n;
            len -= n;
            if (u->got == u->h.len)
                u->rx = RX_TRAILER;
        } else {
            u->tb[u->tn++] = *data++;
            len--;
            if (u->tn == TK_USB_TRAILER_LEN) {
                frame_done(u);
                u->rx = RX_HEADER;
            }
        }
    }
}

/* ------------------------------------------------------------ sending */

static void run(struct tk_usb *u)
{
    size_t resp_len = 0;
    u->run_pending = false;
    if (u->have_resp && u->resp_seq == u->run_seq) {
        u->st.duplicates++;
    } else {
        u->have_resp = false;
        (void)tk_dispatch(u->cfg.tk, u->cfg.arena, u->cfg.arena_len, u->req, u->run_len, u->resp,
                          u->cfg.response_max, &resp_len, NULL);
        u->st.dispatched++;
        if (resp_len == 0) {
            error(u, u->run_seq, TK_USB_E_INTERNAL, 0);
            return;
        }
        u->have_resp = true;
        u->resp_seq = u->run_seq;
        u->resp_len = (uint32_t)resp_len;
    }
    u->tx_active = true;
    u->tx_off = 0;
}

int tk_usb_poll(struct tk_usb *u, uint8_t *out, size_t cap, size_t *out_len)
{
    uint32_t n;
    uint8_t flags = 0;
    *out_len = 0;
    if (u->co_n > 0) {
        uint32_t h = u->co_head;
        if (cap < u->co_len[h])
            return TK_ERR_RESPONSE_SPACE;
        memcpy(out, u->co[h], u->co_len[h]);
        *out_len = u->co_len[h];
        u->co_head = (h + 1) % TK_USB_CONTROL_QUEUE;
        u->co_n--;
        return TK_OK;
    }
    if (cap < (size_t)u->cfg.max_payload + TK_USB_OVERHEAD)
        return TK_ERR_RESPONSE_SPACE;
    if (u->run_pending) {
        run(u);
        if (u->co_n > 0)
            return tk_usb_poll(u, out, cap, out_len);
    }
    if (!u->tx_active)
        return TK_OK;
    n = u->resp_len - u->tx_off;
    if (n > u->cfg.max_payload)
        n = u->cfg.max_payload;
    if (u->tx_off == 0)
        flags |= TK_USB_FIRST;
    if (u->tx_off + n == u->resp_len)
        flags |= TK_USB_LAST;
    *out_len = frame_put(out, TK_USB_DATA, flags, u->resp_seq, u->tx_off, u->resp_len,
                         u->resp + u->tx_off, (uint16_t)n);
    u->tx_off += n;
    if (u->tx_off == u->resp_len)
        u->tx_active = false;
    return TK_OK;
}

/* ------------------------------------------------------------ setup */

static size_t align8(size_t n)
{
    return (n + 7u) & ~(size_t)7u;
}

size_t tk_usb_region_size(uint32_t request_max, uint32_t response_max)
{
    if (request_max == 0 || request_max > TK_REQUEST_MAX || response_max < TK_USB_RESPONSE_MIN)
        return 0;
    return align8(sizeof(struct tk_usb)) + align8(request_max) + response_max;
}

int tk_usb_init(struct tk_usb **out, void *region, size_t region_len,
                const struct tk_usb_config *cfg)
{
    struct tk_usb *u = region;
    size_t need;
    *out = NULL;
    if (region == NULL || cfg == NULL || cfg->tk == NULL || cfg->arena == NULL ||
        ((uintptr_t)region & 7u) != 0 || cfg->max_payload < TK_USB_PAYLOAD_MIN ||
        cfg->max_payload > TK_USB_PAYLOAD_MAX)
        return TK_ERR_MALFORMED;
    need = tk_usb_region_size(cfg->request_max, cfg->response_max);
    if (need == 0)
        return TK_ERR_MALFORMED;
    if (region_len < need)
        return TK_ERR_NO_MEMORY;
    memset(u, 0, sizeof *u);
    u->magic = TK_USB_STATE_MAGIC;
    u->cfg = *cfg;
    u->req = (uint8_t *)region + align8(sizeof *u);
    u->resp = u->req + align8(cfg->request_max);
    u->rx = RX_HEADER;
    u->mode = RXM_IDLE;
    *out = u;
    return TK_OK;
}

void tk_usb_get_stats(const struct tk_usb *u, struct tk_usb_stats *out)
{
    *out = u->st;
}
