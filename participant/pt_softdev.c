/*
 * An emulated token device (participant/pt_softdev.h): pt_soft's token
 * core, an arena for tk_dispatch and tk_usb's region, all on the heap.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "participant/participant.h"
#include "participant/pt_softdev.h"

struct pt_softdev {
    struct pt_soft *soft;
    uint8_t *arena; /* tk_dispatch's, for requests that come over the device side */
    size_t arena_len;
    void *region; /* tk_usb's state and buffers */
    size_t region_len;
    struct tk_usb *u;
};

static int start(struct pt_softdev *d)
{
    struct tk_usb_config cfg = {
        pt_soft_token(d->soft),  d->arena,          d->arena_len, PT_SOFTDEV_REQUEST_MAX,
        PT_SOFTDEV_RESPONSE_MAX, PT_SOFTDEV_PAYLOAD};
    return tk_usb_init(&d->u, d->region, d->region_len, &cfg);
}

int pt_softdev_open(struct pt_softdev **out, const char *dir, bool create, char *err,
                    size_t err_len)
{
    struct pt_softdev *d;
    int rc;

    *out = NULL;
    if ((d = calloc(1, sizeof *d)) == NULL)
        goto nomem;
    d->arena_len = TK_ARENA_DEFAULT;
    d->region_len = tk_usb_region_size(PT_SOFTDEV_REQUEST_MAX, PT_SOFTDEV_RESPONSE_MAX);
    /* The region is 8-aligned (malloc's alignment is at least that). */
    if ((d->arena = calloc(1, d->arena_len)) == NULL ||
        (d->region = calloc(1, d->region_len)) == NULL) {
        pt_softdev_close(d);
        goto nomem;
    }
    if (create && pt_soft_can_create(dir))
        rc = pt_soft_create(&d->soft, dir, TK_ARENA_DEFAULT, err, err_len);
    else
        rc = pt_soft_open(&d->soft, dir, TK_ARENA_DEFAULT, err, err_len);
    if (rc != PT_OK) {
        pt_softdev_close(d);
        return rc;
    }
    if (start(d) != TK_OK) {
        pt_softdev_close(d);
        if (err != NULL && err_len > 0)
            snprintf(err, err_len, "the device side would not start");
        return PT_ERR_NOMEM;
    }
    *out = d;
    return PT_OK;
nomem:
    if (err != NULL && err_len > 0)
        snprintf(err, err_len, "out of memory");
    return PT_ERR_NOMEM;
}

void pt_softdev_feed(struct pt_softdev *d, const uint8_t *p, size_t n)
{
    tk_usb_feed(d->u, p, n);
}

void pt_softdev_poll(struct pt_softdev *d, uint8_t *out, size_t cap, size_t *n)
{
    *n = 0;
    if (tk_usb_poll(d->u, out, cap, n) != TK_OK)
        *n = 0;
}

void pt_softdev_restart(struct pt_softdev *d)
{
    /* The region is the device's RAM: a power cycle loses it. */
    sodium_memzero(d->region, d->region_len);
    sodium_memzero(d->arena, d->arena_len);
    (void)start(d); /* the same parameters that started it once */
}

void pt_softdev_stats(const struct pt_softdev *d, struct tk_usb_stats *out)
{
    tk_usb_get_stats(d->u, out);
}

void pt_softdev_token_id(const struct pt_softdev *d, uint8_t id[32])
{
    memcpy(id, pt_soft_token(d->soft)->sign_pk, 32);
}

void pt_softdev_close(struct pt_softdev *d)
{
    if (d == NULL)
        return;
    pt_soft_close(d->soft);
    if (d->region != NULL)
        sodium_memzero(d->region, d->region_len);
    if (d->arena != NULL)
        sodium_memzero(d->arena, d->arena_len);
    free(d->region);
    free(d->arena);
    free(d);
}
