/*
 * An emulated token device: a software token (pt_soft) behind the
 * device side of the USB protocol (token/tk_usb.h, token/USB.md).
 *
 * It is what a token's firmware runs, on the host: the OUT byte stream is
 * fed in (pt_softdev_feed), and the IN frames come out (pt_softdev_poll),
 * with the token core answering each request inside. cohort-tokend serves
 * it on a local socket; the tests' emulated USB device (umockdev) serves
 * it at the kernel interface, to the real libusb. The token's state is a
 * software token's directory (flash, secure image, counter): see pt_soft.c
 * for what that protects and what it does not.
 *
 * One thread at a time.
 */
#ifndef COHORT_PT_SOFTDEV_H
#define COHORT_PT_SOFTDEV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "token/tk_usb.h"

/* The device's limits (HELLO announces them): a request up to the token's
 * TK_REQUEST_MAX, a response up to 8 MiB, DATA frames of 4 KiB. */
#define PT_SOFTDEV_REQUEST_MAX TK_REQUEST_MAX
#define PT_SOFTDEV_RESPONSE_MAX (8u << 20)
#define PT_SOFTDEV_PAYLOAD TK_USB_PAYLOAD_MAX

struct pt_softdev; /* opaque */

/*
 * Open the software token in dir and start its device side, waiting for a
 * HELLO. With create, a directory that does not exist or is empty gets a
 * new, blank token first (as a device fresh from its maker: it makes its
 * keys when the owner runs init). Returns 0, or a PT_ERR_* with a sentence
 * in err (not a token, busy, tampered, ...); *out is NULL on failure.
 */
int pt_softdev_open(struct pt_softdev **out, const char *dir, bool create, char *err,
                    size_t err_len);

/* OUT bytes, in any split. */
void pt_softdev_feed(struct pt_softdev *d, const uint8_t *p, size_t n);

/* The next IN frame into out (cap at least TK_USB_FRAME_MAX); *n is 0 when
 * there is nothing to send. A whole request is run by the token here. */
void pt_softdev_poll(struct pt_softdev *d, uint8_t *out, size_t cap, size_t *n);

/* A power cycle of the device side: what was in flight is lost, and it
 * waits for a HELLO again. The token's committed state is kept. */
void pt_softdev_restart(struct pt_softdev *d);

void pt_softdev_stats(const struct pt_softdev *d, struct tk_usb_stats *out);

/* The token's public key (to name it in logs); all zero before init. */
void pt_softdev_token_id(const struct pt_softdev *d, uint8_t id[32]);

void pt_softdev_close(struct pt_softdev *d); /* NULL is fine; wipes the token */

#endif
