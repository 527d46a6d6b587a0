/*
 * The USB framing, the host's side, without I/O (token/USB.md is the
 * specification; token/tk_usb.h has its constants and the device's side).
 *
 * The libusb link writes what pt_usbframe_encode and pt_usbframe_data make
 * to the bulk OUT endpoint, and passes what it reads from bulk IN through a
 * decoder (struct pt_usbframe_rx: frames out of a byte stream, garbage
 * skipped by scanning for the magic) and a reassembler (struct
 * pt_usbframe_msg: a response out of DATA frames). Nothing here allocates;
 * every buffer is the caller's.
 */
#ifndef COHORT_PT_USBFRAME_H
#define COHORT_PT_USBFRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "token/tk_usb.h"

/* A decoded frame; payload points into the decoder's buffer (valid until
 * its next call), NULL when the frame failed its CRC. */
struct pt_usbframe {
    uint8_t version, type, flags;
    uint16_t seq, len;
    uint32_t offset, total;
    const uint8_t *payload;
};

/* One frame into out; returns its length, 0 when cap is too small or len
 * is over TK_USB_PAYLOAD_MAX. version is TK_USB_VERSION but for tests. */
size_t pt_usbframe_encode(uint8_t *out, size_t cap, uint8_t version, uint8_t type, uint8_t flags,
                          uint16_t seq, uint32_t offset, uint32_t total, const uint8_t *payload,
                          size_t len);

/* The DATA frame of message msg (total bytes) that starts at *offset, with
 * at most max_payload bytes; *offset moves past it. Returns the frame's
 * length, 0 on bad arguments. A message of 0 bytes is one empty frame. */
size_t pt_usbframe_data(uint8_t *out, size_t cap, uint16_t seq, const uint8_t *msg, size_t total,
                        size_t *offset, size_t max_payload);

/* A HELLO offering n versions (most preferred first). */
size_t pt_usbframe_hello(uint8_t *out, size_t cap, uint16_t seq, const uint8_t *versions, size_t n);

/* What the device answered to a HELLO. */
struct pt_usbframe_limits {
    uint8_t version;
    uint16_t max_payload;
    uint32_t request_max;
    uint32_t response_max;
};
/* 0, or -1 when f is not a well-formed HELLO answer. */
int pt_usbframe_hello_reply(struct pt_usbframe_limits *out, const struct pt_usbframe *f);

/* The decoder of an IN byte stream. */
struct pt_usbframe_rx {
    uint8_t buf[TK_USB_FRAME_MAX];
    size_t n;
    uint64_t skipped; /* bytes dropped while scanning for a header */
};
enum pt_usbframe_rc {
    PT_USBFRAME_MORE = 0, /* every byte consumed; no frame yet */
    PT_USBFRAME_OK = 1,   /* *f is a frame whose CRCs held */
    PT_USBFRAME_BAD = 2,  /* *f's header held but its CRC did not (payload NULL) */
};
void pt_usbframe_rx_init(struct pt_usbframe_rx *rx);
/* Consume in[0..len) up to the end of the next frame; *used says how far. */
int pt_usbframe_rx_next(struct pt_usbframe_rx *rx, const uint8_t *in, size_t len, size_t *used,
                        struct pt_usbframe *f);

/* The reassembler of one message from its DATA frames, into the caller's buffer. */
struct pt_usbframe_msg {
    uint8_t *buf;
    size_t cap;
    bool started;
    uint16_t seq;
    uint32_t total;
    uint32_t have;
};
enum pt_usbframe_msg_rc {
    PT_USBFRAME_GAP = -1,   /* not the next frame: NAK (seq, have) to have the rest again */
    PT_USBFRAME_LARGE = -2, /* a message over cap */
};
void pt_usbframe_msg_init(struct pt_usbframe_msg *m, uint8_t *buf, size_t cap, uint16_t seq);
/* Add a DATA frame of message m->seq: 1 when the message is whole, 0 when
 * more is to come, or a negative pt_usbframe_msg_rc. */
int pt_usbframe_msg_add(struct pt_usbframe_msg *m, const struct pt_usbframe *f);

#endif
