/*
 * A token, wherever it is (participant/pt_token.h): a software token in a
 * directory, a token on USB (pt_usb.c, libusb) or an emulator on a local
 * socket (pt_emu.c). The three give the same struct pt_link; the two that
 * can go away say so, and can be waited for.
 *
 * The --token value is parsed strictly: a kind, then what that kind needs,
 * every field bounded (a vendor or product id is one to four hex digits and
 * not 0; a path is not empty and fits its buffer).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "participant/pt_emu.h"
#include "participant/pt_token.h"
#include "participant/pt_usb.h"

struct pt_token {
    enum pt_token_kind kind;
    struct pt_soft *soft;
    struct pt_usb *usb;
    struct pt_emu *emu;
};

#define SPEC_FORMS "usb, usb:VID:PID, emulator:PATH or soft:DIR"

static int bad(char *err, size_t err_len, const char *why, const char *text)
{
    if (err != NULL && err_len > 0)
        snprintf(err, err_len, "--token: %s (expected " SPEC_FORMS "), not '%.60s'", why, text);
    return PT_ERR_INPUT;
}

/* s[0..n) as an id: one to four hex digits, not all zero. */
static int hex16(const char *s, size_t n, uint16_t *out)
{
    unsigned v = 0;
    if (n == 0 || n > 4)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            return -1;
        v = v * 16 + d;
    }
    if (v == 0)
        return -1;
    *out = (uint16_t)v;
    return 0;
}

int pt_token_spec_parse(const char *text, struct pt_token_spec *out, char *err, size_t err_len)
{
    size_t n;

    memset(out, 0, sizeof *out);
    if (text == NULL || text[0] == '\0')
        return bad(err, err_len, "an empty value", "");
    n = strlen(text);
    if (strcmp(text, "usb") == 0) {
        out->kind = PT_TOKEN_USB;
        out->vid = TK_USB_VID;
        out->pid = TK_USB_PID;
        return PT_OK;
    }
    if (strncmp(text, "usb:", 4) == 0) {
        const char *v = text + 4, *colon = strchr(v, ':');
        out->kind = PT_TOKEN_USB;
        if (colon == NULL || hex16(v, (size_t)(colon - v), &out->vid) != 0 ||
            hex16(colon + 1, strlen(colon + 1), &out->pid) != 0)
            return bad(err, err_len, "a vendor and a product id are 1 to 4 hex digits each, not 0",
                       text);
        return PT_OK;
    }
    if (strncmp(text, "emulator:", 9) == 0) {
        out->kind = PT_TOKEN_EMULATOR;
        if (text[9] == '\0')
            return bad(err, err_len, "the emulator's socket path is missing", text);
        if (n - 9 > PT_EMU_PATH_MAX)
            return bad(err, err_len, "the emulator's socket path is longer than 107 bytes", text);
        memcpy(out->path, text + 9, n - 9 + 1);
        return PT_OK;
    }
    if (strncmp(text, "soft:", 5) == 0) {
        out->kind = PT_TOKEN_SOFT;
        if (text[5] == '\0')
            return bad(err, err_len, "the software token's directory is missing", text);
        if (n - 5 >= sizeof out->path)
            return bad(err, err_len, "the directory's path is too long", text);
        memcpy(out->path, text + 5, n - 5 + 1);
        return PT_OK;
    }
    return bad(err, err_len, "an unknown kind of token", text);
}

int pt_token_open(struct pt_token **out, const struct pt_token_spec *spec, bool create, char *err,
                  size_t err_len)
{
    struct pt_token *t;
    int rc = PT_OK;

    *out = NULL;
    if ((t = calloc(1, sizeof *t)) == NULL) {
        if (err != NULL && err_len > 0)
            snprintf(err, err_len, "out of memory");
        return PT_ERR_NOMEM;
    }
    t->kind = spec->kind;
    switch (spec->kind) {
    case PT_TOKEN_SOFT:
        rc = create ? pt_soft_create(&t->soft, spec->path, TK_ARENA_DEFAULT, err, err_len)
                    : pt_soft_open(&t->soft, spec->path, TK_ARENA_DEFAULT, err, err_len);
        break;
    case PT_TOKEN_USB: {
        struct pt_usb_config cfg = {spec->vid, spec->pid, 0, 0};
        rc = pt_usb_open(&t->usb, &cfg, err, err_len);
        if (rc != 0)
            rc = rc == PT_USB_E_BUSY ? PT_ERR_BUSY : PT_ERR_LINK;
        break;
    }
    case PT_TOKEN_EMULATOR: {
        struct pt_emu_config cfg = {spec->path, 0, 0};
        rc = pt_emu_open(&t->emu, &cfg, err, err_len);
        if (rc != 0)
            rc = rc == PT_USB_E_BUSY ? PT_ERR_BUSY : PT_ERR_LINK;
        break;
    }
    default:
        rc = PT_ERR_INPUT;
        if (err != NULL && err_len > 0)
            snprintf(err, err_len, "an unknown kind of token");
    }
    if (rc != PT_OK) {
        pt_token_close(t);
        return rc;
    }
    *out = t;
    return PT_OK;
}

void pt_token_close(struct pt_token *t)
{
    if (t == NULL)
        return;
    pt_soft_close(t->soft);
    pt_usb_close(t->usb);
    pt_emu_close(t->emu);
    free(t);
}

struct pt_link pt_token_link(struct pt_token *t)
{
    switch (t->kind) {
    case PT_TOKEN_USB:
        return pt_usb_link(t->usb);
    case PT_TOKEN_EMULATOR:
        return pt_emu_link(t->emu);
    default:
        return pt_soft_link(t->soft);
    }
}

enum pt_token_kind pt_token_kind_of(const struct pt_token *t)
{
    return t->kind;
}

static int link_error(const struct pt_token *t)
{
    if (t->kind == PT_TOKEN_USB)
        return pt_usb_error(t->usb);
    if (t->kind == PT_TOKEN_EMULATOR)
        return pt_emu_error(t->emu);
    return PT_USB_OK;
}

bool pt_token_gone(const struct pt_token *t)
{
    return link_error(t) == PT_USB_E_NO_DEVICE;
}

bool pt_token_may_recover(const struct pt_token *t)
{
    int e = link_error(t);
    return e == PT_USB_E_NO_DEVICE || e == PT_USB_E_TIMEOUT || e == PT_USB_E_IO ||
           e == PT_USB_E_PROTOCOL;
}

const char *pt_token_link_error(const struct pt_token *t)
{
    int e = link_error(t);
    return e == PT_USB_OK ? "" : pt_usb_strerror(e);
}

int pt_token_wait(struct pt_token *t, unsigned timeout_ms)
{
    int rc = 0;
    if (t->kind == PT_TOKEN_USB)
        rc = pt_usb_wait(t->usb, timeout_ms);
    else if (t->kind == PT_TOKEN_EMULATOR)
        rc = pt_emu_wait(t->emu, timeout_ms);
    return rc == 0 ? PT_OK : PT_ERR_LINK;
}
