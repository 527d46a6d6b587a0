/*
 * The token link over USB, on libusb-1.0 (token/USB.md).
 *
 * pt_usb_open finds the token by vendor and product id (1209:C07B unless
 * configured), opens it, claims its vendor-specific interface, finds its
 * bulk OUT and IN endpoints and says HELLO (pt_usbhost.c does the
 * protocol). pt_usb_link gives the struct pt_link the agent uses.
 *
 * Unplug: a transfer that fails with LIBUSB_ERROR_NO_DEVICE closes the
 * handle, and transact returns PT_ERR_LINK with pt_usb_error() =
 * PT_USB_E_NO_DEVICE. Each later transact looks for the device once more
 * (and fails the same way while it is absent); pt_usb_wait waits for it to
 * come back. A request whose answer was lost to the unplug may or may not
 * have run: the agent decides whether to send it again.
 *
 * Only this file and its users link libusb (target cohort_participant_usb).
 * One thread at a time.
 */
#ifndef COHORT_PT_USB_H
#define COHORT_PT_USB_H

#include <stddef.h>
#include <stdint.h>

#include "participant/participant.h"
#include "participant/pt_usbhost.h"

struct pt_usb_config {
    uint16_t vid, pid;      /* 0 and 0: TK_USB_VID, TK_USB_PID */
    unsigned t_frame_ms;    /* 0: PT_USBHOST_T_FRAME_MS */
    unsigned t_response_ms; /* 0: PT_USBHOST_T_RESPONSE_MS */
};

struct pt_usb; /* opaque */

/*
 * Open the token. Returns 0, or PT_USB_E_NO_DEVICE (none with those ids),
 * PT_USB_E_ACCESS (the node may not be opened: see the udev rule in
 * token/USB.md), PT_USB_E_BUSY (its interface is claimed elsewhere),
 * PT_USB_E_VERSION, PT_USB_E_TIMEOUT, PT_USB_E_PROTOCOL, PT_USB_E_IO or
 * PT_USB_E_NOMEM; err (if not NULL) gets a sentence for the owner. On
 * failure *out is NULL. pt_usb_close(*out) releases everything.
 */
int pt_usb_open(struct pt_usb **out, const struct pt_usb_config *cfg, char *err, size_t err_len);
void pt_usb_close(struct pt_usb *u); /* NULL is fine */

/* The link; transact returns 0 or PT_ERR_LINK (the reason in pt_usb_error). */
struct pt_link pt_usb_link(struct pt_usb *u);

/* The last transact's outcome: PT_USB_OK or a PT_USB_E_*. */
int pt_usb_error(const struct pt_usb *u);

/* Whether the device is open now (false after an unplug until it is back). */
int pt_usb_connected(const struct pt_usb *u);

/* Wait up to timeout_ms for the token to be back (re-plugged), then open it
 * and say HELLO: 0, or the error of the last attempt (PT_USB_E_NO_DEVICE
 * while it is absent). Returns 0 at once when it is connected. */
int pt_usb_wait(struct pt_usb *u, unsigned timeout_ms);

/* The driver's counters (resends, NAKs, RESETs, ...). */
struct pt_usbhost_stats pt_usb_stats(const struct pt_usb *u);

#endif
