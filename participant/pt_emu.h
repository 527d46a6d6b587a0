/*
 * The token link to an emulator (cohort-tokend) on a local socket.
 *
 * cohort-tokend serves a software token behind the device side of the USB
 * protocol (participant/pt_softdev.h) on a unix stream socket: the bytes
 * the host writes are the bulk OUT stream, the bytes it reads the bulk IN
 * stream, exactly as on USB (token/USB.md). This link is pt_usb's twin:
 * the same driver (pt_usbhost.c: HELLO, framing, NAKs, resends, RESET),
 * the same errors, with a socket instead of libusb's bulk transfers; so a
 * developer without a token runs the code a hardware token runs, up to
 * the endpoints.
 *
 * Errors, as PT_USB_E_*: no socket at PATH, or nothing listening, is "no
 * device"; a socket the user may not open (EACCES) is "permission
 * denied"; an emulator already serving another host (it answers ERROR
 * code TK_USB_E_BUSY and closes) is "busy"; an emulator that goes away
 * (its socket closes) is an unplug: transact returns PT_ERR_LINK with
 * pt_emu_error() = PT_USB_E_NO_DEVICE, later calls try to connect again,
 * and pt_emu_wait waits for the emulator to be back.
 *
 * One thread at a time.
 */
#ifndef COHORT_PT_EMU_H
#define COHORT_PT_EMU_H

#include <stddef.h>
#include <stdint.h>

#include "participant/participant.h"
#include "participant/pt_usbhost.h"

#define PT_EMU_PATH_MAX 107u /* the longest unix socket path (sun_path less its NUL) */

struct pt_emu_config {
    const char *path;       /* the emulator's socket */
    unsigned t_frame_ms;    /* 0: PT_USBHOST_T_FRAME_MS */
    unsigned t_response_ms; /* 0: PT_USBHOST_T_RESPONSE_MS */
};

struct pt_emu; /* opaque */

/* Connect and say HELLO. 0 or a PT_USB_E_* with a sentence in err (if not
 * NULL): PT_USB_E_NO_DEVICE, PT_USB_E_ACCESS, PT_USB_E_BUSY,
 * PT_USB_E_VERSION, PT_USB_E_TIMEOUT, PT_USB_E_PROTOCOL, PT_USB_E_NOMEM, or
 * PT_USB_E_IO (also for a missing path, or one over PT_EMU_PATH_MAX bytes).
 * *out is NULL on failure; pt_emu_close(*out) releases everything. */
int pt_emu_open(struct pt_emu **out, const struct pt_emu_config *cfg, char *err, size_t err_len);
void pt_emu_close(struct pt_emu *e); /* NULL is fine */

/* The link; transact returns 0 or PT_ERR_LINK (the reason in pt_emu_error). */
struct pt_link pt_emu_link(struct pt_emu *e);
int pt_emu_error(const struct pt_emu *e);
int pt_emu_connected(const struct pt_emu *e);
/* Wait up to timeout_ms for the emulator to be back, connect and say HELLO:
 * 0, or the last attempt's error. 0 at once when connected. */
int pt_emu_wait(struct pt_emu *e, unsigned timeout_ms);
struct pt_usbhost_stats pt_emu_stats(const struct pt_emu *e);

#endif
