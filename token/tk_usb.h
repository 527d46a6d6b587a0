/*
 * The token's USB framing, device side (token/USB.md is the specification).
 *
 * A token on USB is a vendor-specific interface with one bulk OUT and one
 * bulk IN endpoint. Both carry a byte stream of frames: a 24-byte header
 * (magic "COTK", version, type, flags, sequence number, payload length,
 * offset and total of the message the payload belongs to, and a CRC-32C of
 * the header), the payload, and a CRC-32C over header and payload. A
 * TokenRequest travels OUT as DATA frames, a TokenResponse IN the same way;
 * ACK, NAK, RESET, HELLO and ERROR frames keep the two sides in step.
 *
 * struct tk_usb is the firmware's side of it: a state machine with no I/O.
 * The hardware layer feeds it the bytes of the OUT endpoint as they arrive,
 * in any split (tk_usb_feed), and asks it for the next IN frame to send
 * (tk_usb_poll); when a whole request has arrived, tk_usb_poll calls
 * tk_dispatch on the token, once, and keeps the response until the next
 * request, so that a duplicated request is answered again without running.
 * Everything it holds is in a region the caller gives (the token's RAM):
 * its state, the reassembly buffer (request_max bytes) and the response
 * buffer (response_max bytes). The arena tk_dispatch works in is the
 * caller's too, passed at tk_usb_init and used only inside tk_usb_poll.
 *
 * Thread safety: one struct tk_usb is driven by one thread at a time, and
 * nothing else calls the token while it is in use.
 */
#ifndef COHORT_TK_USB_H
#define COHORT_TK_USB_H

#include <stddef.h>
#include <stdint.h>

#include "token/token.h"

/* The USB identity a token presents (the host's defaults). */
#define TK_USB_VID 0x1209u /* pid.codes open-source vendor id */
#define TK_USB_PID 0xC07Bu
#define TK_USB_CLASS 0xFFu /* vendor-specific interface */

/* Frame layout (little-endian). */
#define TK_USB_VERSION 1u
#define TK_USB_MAGIC0 0x43u /* 'C' */
#define TK_USB_MAGIC1 0x4Fu /* 'O' */
#define TK_USB_MAGIC2 0x54u /* 'T' */
#define TK_USB_MAGIC3 0x4Bu /* 'K' */
#define TK_USB_HEADER_LEN 24u
#define TK_USB_TRAILER_LEN 4u
#define TK_USB_OVERHEAD (TK_USB_HEADER_LEN + TK_USB_TRAILER_LEN)
#define TK_USB_PAYLOAD_MAX 4096u /* no frame of any version carries more */
#define TK_USB_PAYLOAD_MIN 64u   /* the least a device may announce */
#define TK_USB_FRAME_MAX (TK_USB_OVERHEAD + TK_USB_PAYLOAD_MAX)
#define TK_USB_CONTROL_MAX 32u  /* payload of a control frame (not DATA), at most */
#define TK_USB_CONTROL_QUEUE 4u /* control frames a device keeps waiting to go IN */
#define TK_USB_HELLO_REPLY_LEN 12u
#define TK_USB_RESPONSE_MIN 256u /* the least response buffer a device may have */

/* Header offsets. */
#define TK_USB_OFF_VERSION 4u
#define TK_USB_OFF_TYPE 5u
#define TK_USB_OFF_FLAGS 6u
#define TK_USB_OFF_SEQ 8u
#define TK_USB_OFF_LEN 10u
#define TK_USB_OFF_OFFSET 12u
#define TK_USB_OFF_TOTAL 16u
#define TK_USB_OFF_HCRC 20u

enum tk_usb_type {
    TK_USB_DATA = 1,  /* a piece of a message: a request OUT, a response IN */
    TK_USB_ACK = 2,   /* IN: the whole request `seq` arrived (offset = total = its length) */
    TK_USB_NAK = 3,   /* send message `seq` again from `offset` (payload: a reason byte) */
    TK_USB_RESET = 4, /* OUT: drop everything in progress; IN: the device did */
    TK_USB_HELLO = 5, /* OUT: versions the host speaks; IN: the one chosen and the limits */
    TK_USB_ERROR = 6, /* IN: a refusal (payload: a code byte, then its details) */
};

enum tk_usb_flag {
    TK_USB_FIRST = 1u, /* offset is 0 */
    TK_USB_LAST = 2u,  /* offset + len is total */
};

/* NAK reasons. */
enum tk_usb_nak {
    TK_USB_NAK_CRC = 1, /* the frame at offset failed its CRC */
    TK_USB_NAK_GAP = 2, /* a frame came whose offset is not the one expected */
};

/* ERROR codes. */
enum tk_usb_errcode {
    TK_USB_E_VERSION = 1,   /* no common version: the device's follow (count, versions) */
    TK_USB_E_TOO_LARGE = 2, /* the request's total is over request_max */
    TK_USB_E_NO_HELLO = 3,  /* DATA before a HELLO was answered */
    TK_USB_E_BAD_FRAME = 4, /* a frame whose CRCs hold but whose fields do not */
    TK_USB_E_INTERNAL = 5,  /* the token gave no response at all */
    TK_USB_E_BUSY = 6,      /* an emulator serving another host (on USB the kernel says EBUSY) */
};

/* CRC-32C (Castagnoli, reflected 0x82F63B78). Start with crc = 0; feed
 * pieces by passing the previous result: crc32c("123456789") = 0xE3069283. */
uint32_t tk_usb_crc32c(uint32_t crc, const uint8_t *p, size_t n);

/* The device's parameters. request_max is at most TK_REQUEST_MAX;
 * response_max at least TK_USB_RESPONSE_MIN; max_payload, the payload of
 * the DATA frames it sends and accepts, in [TK_USB_PAYLOAD_MIN,
 * TK_USB_PAYLOAD_MAX]. tk, arena and arena_len are what tk_dispatch gets. */
struct tk_usb_config {
    struct tk_token *tk;
    uint8_t *arena;
    size_t arena_len;
    uint32_t request_max;
    uint32_t response_max;
    uint16_t max_payload;
};

/* Counters, for the firmware's diagnostics and the tests. */
struct tk_usb_stats {
    uint64_t frames;     /* frames whose CRCs held */
    uint64_t bad_crc;    /* frames with a good header and a bad CRC */
    uint64_t skipped;    /* bytes dropped while scanning for a header */
    uint64_t naks;       /* NAKs sent */
    uint64_t dispatched; /* requests run by tk_dispatch */
    uint64_t duplicates; /* requests answered again from the cached response */
    uint64_t resends;    /* responses sent again from an offset on the host's NAK */
};

struct tk_usb; /* opaque; it lives at the start of the caller's region */

/* The region tk_usb_init needs for these limits (state and both buffers),
 * 0 when they are out of range. */
size_t tk_usb_region_size(uint32_t request_max, uint32_t response_max);

/*
 * Lay a device out in region[0..region_len) (8-aligned, at least
 * tk_usb_region_size bytes) and start it waiting for a HELLO. The caller
 * owns the region, the token and the arena, and keeps them for as long as
 * the device is used; nothing needs freeing. Returns 0, TK_ERR_MALFORMED
 * (a parameter out of range, a misaligned region) or TK_ERR_NO_MEMORY (the
 * region is too small).
 */
int tk_usb_init(struct tk_usb **out, void *region, size_t region_len,
                const struct tk_usb_config *cfg);

/* Bytes from the OUT endpoint, any number, any split of the stream. All of
 * them are consumed; frames that need an answer queue it for tk_usb_poll
 * (up to TK_USB_CONTROL_QUEUE control frames wait; beyond that the oldest
 * is dropped). */
void tk_usb_feed(struct tk_usb *u, const uint8_t *data, size_t len);

/*
 * The next IN frame, written to out (cap at least the device's max_payload
 * + TK_USB_OVERHEAD); *out_len is 0 when there is nothing to send.
 * Waiting control frames go first, oldest first; then, once a complete request has been
 * ACKed, this call runs tk_dispatch (which may take long) and starts the
 * response; then the response's DATA frames, one per call. Returns 0, or
 * TK_ERR_RESPONSE_SPACE when cap is too small (nothing is lost).
 */
int tk_usb_poll(struct tk_usb *u, uint8_t *out, size_t cap, size_t *out_len);

void tk_usb_get_stats(const struct tk_usb *u, struct tk_usb_stats *out);

#endif
