/*
 * A token, wherever it is: the link the owner's commands and the agent
 * use, chosen on the command line with --token.
 *
 *   soft:DIR          a software token in DIR (pt_soft.c): the token core
 *                     in this process, its state in DIR
 *   usb               the token on USB, by the default vendor and product
 *                     id (1209:C07B, token/USB.md), through libusb-1.0
 *   usb:VID:PID       the same with other ids (four hex digits each)
 *   emulator:PATH     cohort-tokend's socket at PATH (pt_emu.h): the USB
 *                     protocol on a local socket
 *
 * A USB token or an emulator can go away while it is in use (unplugged,
 * stopped): a transact then returns PT_ERR_LINK, pt_token_gone() says so,
 * and pt_token_wait() waits for it to be back. A software token never
 * goes away.
 */
#ifndef COHORT_PT_TOKEN_H
#define COHORT_PT_TOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "participant/participant.h"

#define PT_TOKEN_SPEC_MAX 4096u /* bytes of a --token value */

enum pt_token_kind {
    PT_TOKEN_SOFT = 0,
    PT_TOKEN_USB = 1,
    PT_TOKEN_EMULATOR = 2,
};

struct pt_token_spec {
    enum pt_token_kind kind;
    uint16_t vid, pid;            /* PT_TOKEN_USB */
    char path[PT_TOKEN_SPEC_MAX]; /* PT_TOKEN_SOFT: DIR; PT_TOKEN_EMULATOR: the socket */
};

/* Parse a --token value. 0, or PT_ERR_INPUT with a sentence in err. */
int pt_token_spec_parse(const char *text, struct pt_token_spec *out, char *err, size_t err_len);

struct pt_token; /* opaque */

/*
 * Open the token. With create, a software token is made in its directory
 * (pt_soft_create); a USB token or an emulator is opened as it is (a
 * device is made by its maker, blank: init makes its keys). Returns 0 or a
 * PT_ERR_* (PT_ERR_LINK for a USB or emulator failure: no device,
 * permission denied, busy, version mismatch) with a sentence for the owner
 * in err. *out is NULL on failure.
 */
int pt_token_open(struct pt_token **out, const struct pt_token_spec *spec, bool create, char *err,
                  size_t err_len);
void pt_token_close(struct pt_token *t); /* NULL is fine */

struct pt_link pt_token_link(struct pt_token *t);
enum pt_token_kind pt_token_kind_of(const struct pt_token *t);

/* After a transact failed with PT_ERR_LINK: whether the token has gone
 * away (unplugged, the emulator stopped) and may come back. */
bool pt_token_gone(const struct pt_token *t);

/* After a transact failed with PT_ERR_LINK: whether the token may work
 * again later: it went away, or it did not answer, or broke the protocol
 * (a token that hung may answer after a RESET, or be plugged in again).
 * Not for what would fail again the same way (a request too large for
 * its link, a version mismatch, permissions, out of memory). */
bool pt_token_may_recover(const struct pt_token *t);

/* The last link error as a sentence ("" for a software token). */
const char *pt_token_link_error(const struct pt_token *t);

/* Wait up to timeout_ms for a token that went away to be back: 0 when it
 * is (at once when it has not gone away), or PT_ERR_LINK. */
int pt_token_wait(struct pt_token *t, unsigned timeout_ms);

#endif
