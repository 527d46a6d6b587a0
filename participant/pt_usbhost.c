/*
 * The host's USB transaction driver (participant/pt_usbhost.h), written
 * from token/USB.md section 4.
 *
 * A transaction has two phases. Sending: the request's DATA frames go out
 * from an offset (0, or what a NAK names), and the driver reads IN until an
 * ACK or a NAK of its seq, for at most T_frame. Receiving: after the ACK it
 * waits up to T_response for the first DATA frame and T_frame for each
 * further one, reassembling by offset; a corrupted frame, or one at the
 * wrong offset, is answered by one NAK(seq, have) per gap. A DATA frame of
 * the seq seen while sending means the ACK was lost: it is taken as one.
 *
 * Each wait that runs out is a failed try of its step: the request is sent
 * again whole with the same seq (or, in the middle of a response, the NAK
 * again). Progress (a frame accepted) starts the count over. After
 * PT_USBHOST_TRIES failed retries, RESET, read until its echo, and send the
 * request again; after PT_USBHOST_RESETS of those, give up. A response
 * that has arrived is never asked for again, so a RESET only ever reruns a
 * request whose answer the host did not get.
 *
 * The device is not trusted: frames of another seq, unknown types and
 * stray answers are dropped, every length is bounded (pt_usbframe), and a
 * device that keeps talking cannot hold a wait open past its deadline.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "participant/pt_usbhost.h"

const char *pt_usb_strerror(int code)
{
    switch (code) {
    case PT_USB_OK:
        return "ok";
    case PT_USB_E_NO_DEVICE:
        return "no token found (not plugged in, or unplugged)";
    case PT_USB_E_ACCESS:
        return "permission denied on the token's device node (install the udev rule)";
    case PT_USB_E_BUSY:
        return "the token is busy: another program holds its interface";
    case PT_USB_E_TIMEOUT:
        return "no answer from the token";
    case PT_USB_E_VERSION:
        return "protocol version mismatch between host and token";
    case PT_USB_E_PROTOCOL:
        return "the token broke the USB protocol";
    case PT_USB_E_TOO_LARGE:
        return "message too large for the token's USB link";
    case PT_USB_E_IO:
        return "USB transfer failed";
    case PT_USB_E_NOMEM:
        return "out of memory";
    default:
        return "unknown USB link error";
    }
}

static uint64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

void pt_usbhost_init(struct pt_usbhost *h, const struct pt_usbhost_io *io)
{
    memset(h, 0, sizeof *h);
    h->io = *io;
    h->t_frame_ms = PT_USBHOST_T_FRAME_MS;
    h->t_response_ms = PT_USBHOST_T_RESPONSE_MS;
    h->versions[0] = TK_USB_VERSION;
    h->n_versions = 1;
    h->seq = (uint16_t)(now_ms() * 2654435761u >> 7); /* not 0, not the last run's, most likely */
    pt_usbframe_rx_init(&h->rx);
}

void pt_usbhost_free(struct pt_usbhost *h)
{
    free(h->resp);
    h->resp = NULL;
    h->resp_cap = 0;
    h->ready = false;
}

/* Forget IN bytes not yet decoded (a new start: HELLO). */
static void drop_input(struct pt_usbhost *h)
{
    h->in_at = h->in_n = 0;
    pt_usbframe_rx_init(&h->rx);
}

static int send_frame(struct pt_usbhost *h, uint8_t type, uint16_t seq, uint32_t offset,
                      uint32_t total, const uint8_t *p, size_t n)
{
    size_t len = pt_usbframe_encode(h->out, sizeof h->out, TK_USB_VERSION, type, 0, seq, offset,
                                    total, p, n);
    if (len == 0)
        return PT_USB_E_PROTOCOL;
    return h->io.write(h->io.ctx, h->out, len, h->t_frame_ms);
}

/* The next IN frame before the deadline: PT_USBFRAME_OK, PT_USBFRAME_BAD,
 * or a negative PT_USB_E_* (PT_USB_E_TIMEOUT when the deadline passed). */
static int next_frame(struct pt_usbhost *h, uint64_t deadline, struct pt_usbframe *f)
{
    for (;;) {
        uint64_t t;
        size_t got = 0;
        int rc;
        if (h->in_at < h->in_n) {
            size_t used = 0;
            rc = pt_usbframe_rx_next(&h->rx, h->in + h->in_at, h->in_n - h->in_at, &used, f);
            h->in_at += used;
            if (rc != PT_USBFRAME_MORE) {
                if (rc == PT_USBFRAME_BAD)
                    h->st.bad_frames++;
                return rc;
            }
        }
        t = now_ms();
        if (t >= deadline) {
            h->st.timeouts++;
            return PT_USB_E_TIMEOUT;
        }
        rc = h->io.read(h->io.ctx, h->in, sizeof h->in, &got, (unsigned)(deadline - t));
        if (rc == PT_USB_E_TIMEOUT) {
            h->st.timeouts++;
            return rc;
        }
        if (rc != 0)
            return rc;
        if (got == 0 || got > sizeof h->in)
            return PT_USB_E_IO;
        h->in_at = 0;
        h->in_n = got;
    }
}

/* A HELLO answer or ERROR VERSION for seq: 0, 1 (not it: read on) or an error. */
static int hello_answer(struct pt_usbhost *h, const struct pt_usbframe *f, uint16_t seq)
{
    size_t i;
    if (f->seq != seq)
        return 1;
    if (f->type == TK_USB_ERROR) {
        if (f->len >= 1 && f->payload[0] == TK_USB_E_VERSION) {
            size_t n = f->len >= 2 ? f->payload[1] : 0;
            if (n > f->len - 2u)
                n = f->len - 2u;
            if (n > PT_USBHOST_VERSIONS_MAX)
                n = PT_USBHOST_VERSIONS_MAX;
            memcpy(h->peer_versions, f->payload + 2, n);
            h->n_peer_versions = n;
            return PT_USB_E_VERSION;
        }
        if (f->len >= 1 && f->payload[0] == TK_USB_E_BUSY)
            return PT_USB_E_BUSY;
        return PT_USB_E_PROTOCOL;
    }
    if (f->type != TK_USB_HELLO)
        return 1;
    if (pt_usbframe_hello_reply(&h->lim, f) != 0)
        return PT_USB_E_PROTOCOL;
    for (i = 0; i < h->n_versions; i++)
        if (h->versions[i] == h->lim.version)
            break;
    if (i == h->n_versions) {
        h->peer_versions[0] = h->lim.version;
        h->n_peer_versions = 1;
        return PT_USB_E_VERSION;
    }
    return 0;
}

int pt_usbhost_hello(struct pt_usbhost *h)
{
    int tries, rc = PT_USB_E_TIMEOUT;
    h->ready = false;
    h->n_peer_versions = 0;
    drop_input(h);
    for (tries = 0; tries <= PT_USBHOST_TRIES; tries++) {
        uint16_t seq = ++h->seq;
        uint8_t p[1 + PT_USBHOST_VERSIONS_MAX];
        uint64_t deadline;
        p[0] = (uint8_t)h->n_versions;
        memcpy(p + 1, h->versions, h->n_versions);
        rc = send_frame(h, TK_USB_HELLO, seq, 0, 0, p, 1 + h->n_versions);
        if (rc == PT_USB_E_TIMEOUT)
            continue;
        if (rc != 0)
            return rc;
        deadline = now_ms() + h->t_frame_ms;
        for (;;) {
            struct pt_usbframe f;
            rc = next_frame(h, deadline, &f);
            if (rc == PT_USBFRAME_BAD)
                continue;
            if (rc < 0)
                break;
            rc = hello_answer(h, &f, seq);
            if (rc <= 0)
                break;
        }
        if (rc == PT_USB_E_TIMEOUT)
            continue;
        if (rc != 0)
            return rc;
        {
            size_t cap = h->lim.response_max < PT_USBHOST_RESPONSE_CAP ? h->lim.response_max
                                                                       : PT_USBHOST_RESPONSE_CAP;
            if (cap != h->resp_cap) {
                uint8_t *b = realloc(h->resp, cap);
                if (b == NULL)
                    return PT_USB_E_NOMEM;
                h->resp = b;
                h->resp_cap = cap;
            }
        }
        h->st.hellos++;
        h->ready = true;
        return 0;
    }
    return rc;
}

/* RESET and read until its echo, dropping everything else. */
static int reset(struct pt_usbhost *h)
{
    int tries, rc = PT_USB_E_TIMEOUT;
    for (tries = 0; tries <= PT_USBHOST_TRIES; tries++) {
        uint16_t seq = ++h->seq;
        uint64_t deadline;
        h->st.resets++;
        rc = send_frame(h, TK_USB_RESET, seq, 0, 0, NULL, 0);
        if (rc == PT_USB_E_TIMEOUT)
            continue;
        if (rc != 0)
            return rc;
        deadline = now_ms() + h->t_frame_ms;
        for (;;) {
            struct pt_usbframe f;
            rc = next_frame(h, deadline, &f);
            if (rc == PT_USBFRAME_OK && f.type == TK_USB_RESET && f.seq == seq)
                return 0;
            if (rc < 0)
                break;
        }
        if (rc != PT_USB_E_TIMEOUT)
            return rc;
    }
    return rc;
}

static int send_data(struct pt_usbhost *h, uint16_t seq, const uint8_t *req, size_t len,
                     size_t from)
{
    size_t off = from;
    do {
        size_t n = pt_usbframe_data(h->out, sizeof h->out, seq, req, len, &off, h->lim.max_payload);
        int rc;
        if (n == 0)
            return PT_USB_E_PROTOCOL;
        rc = h->io.write(h->io.ctx, h->out, n, h->t_frame_ms);
        if (rc != 0)
            return rc;
    } while (off < len);
    return 0;
}

/*
 * NAK the response from what has arrived of it (why: TK_USB_NAK_*), so
 * that the device sends the rest again. A NAK that times out is not an
 * error: the wait that follows settles it.
 */
static int send_nak(struct pt_usbhost *h, uint16_t seq, const struct pt_usbframe_msg *m,
                    uint8_t why)
{
    int rc;

    h->st.naks_sent++;
    rc = send_frame(h, TK_USB_NAK, seq, m->have, m->started ? m->total : 0, &why, 1);
    return rc == PT_USB_E_TIMEOUT ? 0 : rc;
}

static int error_code(const struct pt_usbframe *f)
{
    uint8_t code = f->len >= 1 ? f->payload[0] : 0;
    if (code == TK_USB_E_VERSION)
        return PT_USB_E_VERSION;
    if (code == TK_USB_E_TOO_LARGE)
        return PT_USB_E_TOO_LARGE;
    if (code == TK_USB_E_BUSY)
        return PT_USB_E_BUSY;
    return PT_USB_E_PROTOCOL;
}

/* What a step's outcome makes the transaction do next. */
enum step {
    STEP_SEND,  /* send the request's DATA frames from `from` */
    STEP_WAIT,  /* read IN for an ACK, a NAK or DATA */
    STEP_RETRY, /* a try failed: resend (whole), or RESET after too many */
};

static int transact(struct pt_usbhost *h, uint16_t seq, const uint8_t *req, size_t len,
                    const uint8_t **resp, size_t *resp_len)
{
    struct pt_usbframe_msg m;
    enum step step = STEP_SEND;
    size_t from = 0;
    int tries = 0, resets = 0, rc;
    bool acked = false, naked = false;
    uint64_t deadline = 0;

    pt_usbframe_msg_init(&m, h->resp, h->resp_cap, seq);
    for (;;) {
        struct pt_usbframe f;
        if (step == STEP_RETRY) {
            if (tries >= PT_USBHOST_TRIES) {
                if (resets >= PT_USBHOST_RESETS)
                    return PT_USB_E_TIMEOUT;
                resets++;
                if ((rc = reset(h)) != 0)
                    return rc;
                tries = 0;
            } else {
                tries++;
            }
            h->st.resends++;
            from = 0;
            step = STEP_SEND;
        }
        if (step == STEP_SEND) {
            rc = send_data(h, seq, req, len, from);
            if (rc == PT_USB_E_TIMEOUT) {
                step = STEP_RETRY;
                continue;
            }
            if (rc != 0)
                return rc;
            pt_usbframe_msg_init(&m, h->resp, h->resp_cap, seq);
            acked = naked = false;
            deadline = now_ms() + h->t_frame_ms;
            step = STEP_WAIT;
        }

        rc = next_frame(h, deadline, &f);
        if (rc == PT_USB_E_TIMEOUT) {
            if (!m.started) {
                step = STEP_RETRY;
                continue;
            }
            /* In the middle of the response: ask for the rest again. */
            if (tries >= PT_USBHOST_TRIES) {
                step = STEP_RETRY;
                continue;
            }
            tries++;
            h->st.naks_sent++;
            {
                uint8_t why = TK_USB_NAK_GAP;
                if ((rc = send_frame(h, TK_USB_NAK, seq, m.have, m.total, &why, 1)) != 0 &&
                    rc != PT_USB_E_TIMEOUT)
                    return rc;
            }
            naked = true;
            deadline = now_ms() + h->t_frame_ms;
            continue;
        }
        if (rc < 0)
            return rc;
        if (f.seq != seq)
            continue; /* a stale frame of an earlier request */
        if (rc == PT_USBFRAME_BAD) {
            /* The header held: a piece of our response went bad. */
            if (f.type == TK_USB_DATA && (acked || m.started) && !naked) {
                if ((rc = send_nak(h, seq, &m, TK_USB_NAK_CRC)) != 0)
                    return rc;
                naked = true;
                deadline = now_ms() + h->t_frame_ms;
            }
            continue;
        }
        switch (f.type) {
        case TK_USB_ACK:
            if (f.offset != len || f.total != len)
                return PT_USB_E_PROTOCOL;
            if (!m.started)
                deadline = now_ms() + h->t_response_ms;
            acked = true;
            break;
        case TK_USB_NAK:
            if (acked || m.started)
                break; /* a NAK of an older copy of the request: the ACK settled it */
            if (f.offset > len)
                return PT_USB_E_PROTOCOL;
            h->st.naks_got++;
            if (tries >= PT_USBHOST_TRIES) {
                step = STEP_RETRY;
                break;
            }
            tries++;
            h->st.resends++;
            from = f.offset;
            step = STEP_SEND;
            break;
        case TK_USB_ERROR:
            if (f.len >= 1 && f.payload[0] == TK_USB_E_NO_HELLO) {
                /* The device lost its state (a reboot): say HELLO, then send again. */
                if ((rc = pt_usbhost_hello(h)) != 0)
                    return rc;
                step = STEP_RETRY;
                break;
            }
            return error_code(&f);
        case TK_USB_DATA:
            if (m.started && f.total == m.total && f.offset + f.len <= m.have)
                break; /* already have it: a resend overlapping what arrived */
            rc = pt_usbframe_msg_add(&m, &f);
            if (rc == 1) {
                *resp = m.buf;
                *resp_len = m.total;
                return 0;
            }
            if (rc == 0) {
                acked = true;
                naked = false;
                tries = 0;
                deadline = now_ms() + h->t_frame_ms;
            } else if (rc == PT_USBFRAME_LARGE) {
                return PT_USB_E_TOO_LARGE;
            } else if (!naked) {
                if ((rc = send_nak(h, seq, &m, TK_USB_NAK_GAP)) != 0)
                    return rc;
                naked = true;
                deadline = now_ms() + h->t_frame_ms;
            }
            break;
        default:
            break; /* RESET or HELLO echoes of earlier tries */
        }
    }
}

int pt_usbhost_transact(struct pt_usbhost *h, const uint8_t *req, size_t len, const uint8_t **resp,
                        size_t *resp_len)
{
    int rc;
    if (!h->ready && (rc = pt_usbhost_hello(h)) != 0)
        return rc;
    if (len > h->lim.request_max)
        return PT_USB_E_TOO_LARGE; /* refused locally; the link stays as it was */
    rc = transact(h, ++h->seq, req, len, resp, resp_len);
    if (rc == 0)
        h->st.requests++;
    else if (rc != PT_USB_E_TOO_LARGE)
        h->ready = false;
    return rc;
}
