/*
 * The host's USB transaction driver (token/USB.md, section 4), without
 * I/O of its own.
 *
 * struct pt_usbhost sits between a byte transport (two callbacks: write
 * bytes to the bulk OUT endpoint, read what arrives on bulk IN, each with a
 * timeout) and the token link: it says HELLO, then carries one TokenRequest
 * and brings back its TokenResponse. It frames with pt_usbframe.c, resends
 * from the offset a NAK names, NAKs a corrupted or missing IN frame, sends
 * the whole request again with the same seq when an answer does not come
 * within T_frame (the device answers a duplicate from its cache, without
 * running it again), and after PT_USBHOST_TRIES failed retries of one step
 * sends RESET and starts the request over. libusb is in pt_usb.c; the
 * tests give the driver in-memory callbacks in front of tk_usb.
 *
 * Errors are 0 or a negative PT_USB_E_*; pt_usb_strerror() describes them.
 * The driver is used by one thread at a time.
 */
#ifndef COHORT_PT_USBHOST_H
#define COHORT_PT_USBHOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "participant/pt_usbframe.h"

/* Errors of the USB link; below the PT_ERR_* range so they cannot be confused. */
enum pt_usb_error {
    PT_USB_OK = 0,
    PT_USB_E_NO_DEVICE = -100, /* no token with that vendor and product id, or it was unplugged */
    PT_USB_E_ACCESS = -101,    /* the device node may not be opened (no udev rule) */
    PT_USB_E_BUSY = -102,      /* another program or driver holds the interface */
    PT_USB_E_TIMEOUT = -103,   /* no answer from the token, even after a RESET */
    PT_USB_E_VERSION = -104,   /* the token speaks no protocol version the host does */
    PT_USB_E_PROTOCOL = -105,  /* the token broke the protocol, or refused a frame */
    PT_USB_E_TOO_LARGE = -106, /* a request over the token's request_max, or a response over ours */
    PT_USB_E_IO = -107,        /* another transport failure */
    PT_USB_E_NOMEM = -108,
};
const char *pt_usb_strerror(int code);

#define PT_USBHOST_TRIES 3  /* retries of one step before a RESET (USB.md 4) */
#define PT_USBHOST_RESETS 2 /* RESETs for one request before giving up */
#define PT_USBHOST_T_FRAME_MS 1000u
#define PT_USBHOST_T_RESPONSE_MS 120000u
#define PT_USBHOST_RESPONSE_CAP (64u << 20) /* the largest response buffer we allocate */
#define PT_USBHOST_READ_CHUNK 16384u        /* bytes asked of one IN read (a multiple of 512) */
#define PT_USBHOST_VERSIONS_MAX 16u

/*
 * The transport. write sends all n bytes within timeout_ms and returns 0,
 * PT_USB_E_TIMEOUT, PT_USB_E_NO_DEVICE or PT_USB_E_IO. read waits up to
 * timeout_ms for IN bytes and returns 0 with 1..cap bytes in *got, or
 * PT_USB_E_TIMEOUT when none came, PT_USB_E_NO_DEVICE or PT_USB_E_IO.
 */
struct pt_usbhost_io {
    void *ctx;
    int (*write)(void *ctx, const uint8_t *p, size_t n, unsigned timeout_ms);
    int (*read)(void *ctx, uint8_t *p, size_t cap, size_t *got, unsigned timeout_ms);
};

struct pt_usbhost_stats {
    uint64_t requests;   /* transactions completed */
    uint64_t resends;    /* requests sent again, whole or from a NAK's offset */
    uint64_t naks_got;   /* NAKs from the device */
    uint64_t naks_sent;  /* NAKs for corrupted or missing IN frames */
    uint64_t bad_frames; /* IN frames whose CRC failed */
    uint64_t timeouts;   /* waits that ran out */
    uint64_t resets;     /* RESETs sent */
    uint64_t hellos;     /* HELLOs answered */
};

struct pt_usbhost {
    struct pt_usbhost_io io;
    unsigned t_frame_ms, t_response_ms; /* USB.md's T_frame and T_response; tests shorten them */
    uint8_t versions[PT_USBHOST_VERSIONS_MAX]; /* offered in HELLO, most preferred first */
    size_t n_versions;
    uint8_t peer_versions[PT_USBHOST_VERSIONS_MAX]; /* the device's, after PT_USB_E_VERSION */
    size_t n_peer_versions;

    bool ready; /* a HELLO was answered and nothing has happened since that needs another */
    struct pt_usbframe_limits lim;
    uint16_t seq;
    struct pt_usbframe_rx rx;
    uint8_t in[PT_USBHOST_READ_CHUNK];
    size_t in_at, in_n;
    uint8_t out[TK_USB_FRAME_MAX];
    uint8_t *resp; /* malloc'd, resp_cap = min(response_max, PT_USBHOST_RESPONSE_CAP) */
    size_t resp_cap;
    struct pt_usbhost_stats st;
};

/* The caller owns h (it is large: put it on the heap) and the io's ctx.
 * Offers version TK_USB_VERSION; the timeouts are USB.md's. */
void pt_usbhost_init(struct pt_usbhost *h, const struct pt_usbhost_io *io);
/* Frees the response buffer; h can be initialised again. */
void pt_usbhost_free(struct pt_usbhost *h);

/* HELLO, with PT_USBHOST_TRIES retries. 0, PT_USB_E_TIMEOUT, PT_USB_E_VERSION
 * (h->peer_versions lists the device's), PT_USB_E_PROTOCOL, PT_USB_E_NOMEM or
 * a transport error. */
int pt_usbhost_hello(struct pt_usbhost *h);

/*
 * One request and its response (a HELLO first when none holds). On 0,
 * *resp points into h's buffer, valid until the next call. On an error
 * the request may or may not have run; the next call starts with HELLO.
 */
int pt_usbhost_transact(struct pt_usbhost *h, const uint8_t *req, size_t len, const uint8_t **resp,
                        size_t *resp_len);

#endif
