/*
 * The token link on libusb-1.0 (participant/pt_usb.h).
 *
 * The device is found by walking libusb_get_device_list for the vendor and
 * product id, then its active configuration for the first interface of
 * class 0xFF with one bulk OUT and one bulk IN endpoint. Transfers are
 * synchronous bulk transfers on our own libusb context; the framing and
 * the protocol are pt_usbhost.c's, given two callbacks here.
 *
 * libusb's errors become PT_USB_E_*: NOT_FOUND and NO_DEVICE are "no
 * device", ACCESS "permission denied", BUSY "busy", TIMEOUT "timeout".
 * A NO_DEVICE during a transfer means the token was unplugged: the handle
 * is closed at once (it is useless), and the device is looked for again on
 * the next call or in pt_usb_wait. No control transfer is ever made, so
 * the link works with any device that has the two bulk endpoints.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libusb.h>

#include "participant/pt_usb.h"

#define PT_USB_RESCAN_MS 50u /* how often pt_usb_wait looks for the device */

struct pt_usb {
    libusb_context *ctx;
    libusb_device_handle *h;
    uint16_t vid, pid;
    int iface;
    uint8_t ep_out, ep_in;
    int last; /* the last outcome, a PT_USB_E_* */
    struct pt_usbhost host;
};

static int from_libusb(int e)
{
    switch (e) {
    case LIBUSB_SUCCESS:
        return PT_USB_OK;
    case LIBUSB_ERROR_NOT_FOUND:
    case LIBUSB_ERROR_NO_DEVICE:
        return PT_USB_E_NO_DEVICE;
    case LIBUSB_ERROR_ACCESS:
        return PT_USB_E_ACCESS;
    case LIBUSB_ERROR_BUSY:
        return PT_USB_E_BUSY;
    case LIBUSB_ERROR_TIMEOUT:
        return PT_USB_E_TIMEOUT;
    case LIBUSB_ERROR_NO_MEM:
        return PT_USB_E_NOMEM;
    default:
        return PT_USB_E_IO;
    }
}

static void disconnect(struct pt_usb *u)
{
    if (u->h != NULL) {
        libusb_release_interface(u->h, u->iface);
        libusb_close(u->h);
        u->h = NULL;
    }
    u->host.ready = false;
}

static int usb_write(void *ctx, const uint8_t *p, size_t n, unsigned timeout_ms)
{
    struct pt_usb *u = ctx;
    int done = 0, rc;
    if (u->h == NULL)
        return PT_USB_E_NO_DEVICE;
    rc = libusb_bulk_transfer(u->h, u->ep_out, (unsigned char *)p, (int)n, &done, timeout_ms);
    if (rc == 0 && (size_t)done != n)
        return PT_USB_E_IO;
    return from_libusb(rc);
}

static int usb_read(void *ctx, uint8_t *p, size_t cap, size_t *got, unsigned timeout_ms)
{
    struct pt_usb *u = ctx;
    int done = 0, rc;
    *got = 0;
    if (u->h == NULL)
        return PT_USB_E_NO_DEVICE;
    if (timeout_ms == 0)
        timeout_ms = 1; /* 0 is "forever" to libusb */
    rc = libusb_bulk_transfer(u->h, u->ep_in, p, (int)cap, &done, timeout_ms);
    if (done > 0 && (rc == 0 || rc == LIBUSB_ERROR_TIMEOUT || rc == LIBUSB_ERROR_OVERFLOW)) {
        *got = (size_t)done; /* what came before the timeout still counts */
        return PT_USB_OK;
    }
    if (rc == 0)
        return PT_USB_E_TIMEOUT; /* a zero-length packet: nothing to decode */
    return from_libusb(rc);
}

/* The interface of class 0xFF with a bulk OUT and a bulk IN endpoint. */
static int find_endpoints(struct pt_usb *u, libusb_device *dev)
{
    struct libusb_config_descriptor *c;
    int i, rc = libusb_get_active_config_descriptor(dev, &c);
    if (rc != 0)
        return from_libusb(rc);
    rc = PT_USB_E_PROTOCOL;
    for (i = 0; i < c->bNumInterfaces && rc != 0; i++) {
        const struct libusb_interface_descriptor *id;
        int e, out = -1, in = -1;
        if (c->interface[i].num_altsetting < 1)
            continue;
        id = &c->interface[i].altsetting[0];
        if (id->bInterfaceClass != TK_USB_CLASS)
            continue;
        for (e = 0; e < id->bNumEndpoints; e++) {
            const struct libusb_endpoint_descriptor *ep = &id->endpoint[e];
            if ((ep->bmAttributes & 3) != LIBUSB_TRANSFER_TYPE_BULK)
                continue;
            if (ep->bEndpointAddress & LIBUSB_ENDPOINT_IN)
                in = ep->bEndpointAddress;
            else
                out = ep->bEndpointAddress;
        }
        if (in >= 0 && out >= 0) {
            u->iface = id->bInterfaceNumber;
            u->ep_in = (uint8_t)in;
            u->ep_out = (uint8_t)out;
            rc = 0;
        }
    }
    libusb_free_config_descriptor(c);
    return rc;
}

/* Find, open and claim the device, and say HELLO. */
static int usb_connect(struct pt_usb *u)
{
    libusb_device **list;
    libusb_device *dev = NULL;
    ssize_t n = libusb_get_device_list(u->ctx, &list), i;
    int rc;
    if (n < 0)
        return from_libusb((int)n);
    for (i = 0; i < n && dev == NULL; i++) {
        struct libusb_device_descriptor d;
        if (libusb_get_device_descriptor(list[i], &d) == 0 && d.idVendor == u->vid &&
            d.idProduct == u->pid)
            dev = list[i];
    }
    /* Open first: a node the user may not open is "permission denied" whatever else holds. */
    rc = dev == NULL ? PT_USB_E_NO_DEVICE : from_libusb(libusb_open(dev, &u->h));
    if (rc == 0 && (rc = find_endpoints(u, dev)) != 0) {
        libusb_close(u->h);
        u->h = NULL;
    }
    libusb_free_device_list(list, 1);
    if (rc != 0)
        goto fail;
    if ((rc = from_libusb(libusb_claim_interface(u->h, u->iface))) != 0) {
        libusb_close(u->h);
        u->h = NULL;
        goto fail;
    }
    if ((rc = pt_usbhost_hello(&u->host)) != 0)
        disconnect(u);
fail:
    u->h = rc == 0 ? u->h : NULL;
    return rc;
}

static void set_err(char *err, size_t err_len, const struct pt_usb *u, int rc)
{
    if (err == NULL || err_len == 0)
        return;
    if (rc == PT_USB_E_VERSION && u->host.n_peer_versions > 0)
        snprintf(err, err_len, "token %04x:%04x: %s (host speaks %u, token %u)", u->vid, u->pid,
                 pt_usb_strerror(rc), (unsigned)u->host.versions[0],
                 (unsigned)u->host.peer_versions[0]);
    else
        snprintf(err, err_len, "token %04x:%04x: %s", u->vid, u->pid, pt_usb_strerror(rc));
}

int pt_usb_open(struct pt_usb **out, const struct pt_usb_config *cfg, char *err, size_t err_len)
{
    struct pt_usb *u = calloc(1, sizeof *u);
    struct pt_usbhost_io io = {NULL, usb_write, usb_read};
    int rc;
    *out = NULL;
    if (u == NULL) {
        if (err != NULL && err_len > 0)
            snprintf(err, err_len, "%s", pt_usb_strerror(PT_USB_E_NOMEM));
        return PT_USB_E_NOMEM;
    }
    u->vid = cfg != NULL && (cfg->vid || cfg->pid) ? cfg->vid : TK_USB_VID;
    u->pid = cfg != NULL && (cfg->vid || cfg->pid) ? cfg->pid : TK_USB_PID;
    io.ctx = u;
    pt_usbhost_init(&u->host, &io);
    if (cfg != NULL && cfg->t_frame_ms > 0)
        u->host.t_frame_ms = cfg->t_frame_ms;
    if (cfg != NULL && cfg->t_response_ms > 0)
        u->host.t_response_ms = cfg->t_response_ms;
    if ((rc = from_libusb(libusb_init(&u->ctx))) != 0) {
        u->ctx = NULL;
        goto fail;
    }
    if ((rc = usb_connect(u)) != 0)
        goto fail;
    *out = u;
    return 0;
fail:
    set_err(err, err_len, u, rc);
    pt_usb_close(u);
    return rc;
}

void pt_usb_close(struct pt_usb *u)
{
    if (u == NULL)
        return;
    disconnect(u);
    pt_usbhost_free(&u->host);
    if (u->ctx != NULL)
        libusb_exit(u->ctx);
    free(u);
}

static int usb_transact(void *ctx, const uint8_t *req, size_t req_len, const uint8_t **resp,
                        size_t *resp_len)
{
    struct pt_usb *u = ctx;
    int rc = 0;
    if (u->h == NULL)
        rc = usb_connect(u);
    if (rc == 0)
        rc = pt_usbhost_transact(&u->host, req, req_len, resp, resp_len);
    if (rc == PT_USB_E_NO_DEVICE)
        disconnect(u);
    u->last = rc;
    return rc == 0 ? PT_OK : PT_ERR_LINK;
}

struct pt_link pt_usb_link(struct pt_usb *u)
{
    struct pt_link l = {u, usb_transact};
    return l;
}

int pt_usb_error(const struct pt_usb *u)
{
    return u->last;
}

int pt_usb_connected(const struct pt_usb *u)
{
    return u->h != NULL;
}

static void sleep_ms(unsigned ms)
{
    struct timespec t = {ms / 1000u, (long)(ms % 1000u) * 1000000L};
    nanosleep(&t, NULL);
}

int pt_usb_wait(struct pt_usb *u, unsigned timeout_ms)
{
    unsigned waited = 0;
    int rc;
    if (u->h != NULL)
        return 0;
    for (;;) {
        rc = usb_connect(u);
        if (rc == 0 || waited >= timeout_ms)
            break;
        sleep_ms(PT_USB_RESCAN_MS);
        waited += PT_USB_RESCAN_MS;
    }
    u->last = rc;
    return rc;
}

struct pt_usbhost_stats pt_usb_stats(const struct pt_usb *u)
{
    return u->host.st;
}
