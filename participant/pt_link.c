/*
 * The in-process token link: the token core called as a function.
 *
 * It stands where a USB transfer or an emulator socket will stand, with
 * the same contract: one request in, one response out, in a buffer the
 * link owns. The response buffer starts small and grows when the token
 * reports that its response did not fit (TK_ERR_RESPONSE_SPACE), up to a
 * hard limit; the token keeps an aggregation session open in that case so
 * that the retry is safe. A document session is not kept (a DocWrite has
 * encrypted what it carried by then), so before each call the buffer is
 * grown to hold what a streamed request can make of its bytes: a DocWrite
 * answers its data as ciphertext, at most RESP_PER_REQUEST of it.
 */
#include <stdlib.h>
#include <string.h>

#include "participant/participant.h"

#define INPROC_RESP_START (64u << 10)
#define INPROC_RESP_MAX (64u << 20)
/* A DocWrite of n bytes answers less than n + n/64 + 8 KiB of ciphertext
 * and framing (21 bytes a 4 KiB chunk, the header, the chunk it held back
 * and a final one); this leaves room to spare. */
#define RESP_PER_REQUEST(n) ((n) + (n) / 8 + (8u << 10))

void pt_inproc_init(struct pt_inproc *l, struct tk_token *tk, uint8_t *arena, size_t arena_len)
{
    memset(l, 0, sizeof *l);
    l->tk = tk;
    l->arena = arena;
    l->arena_len = arena_len;
}

void pt_inproc_free(struct pt_inproc *l)
{
    free(l->resp);
    l->resp = NULL;
    l->resp_cap = 0;
}

static int inproc_transact(void *ctx, const uint8_t *req, size_t req_len, const uint8_t **resp,
                           size_t *resp_len)
{
    struct pt_inproc *l = ctx;
    for (;;) {
        size_t peak = 0;
        int rc;
        if (l->resp == NULL) {
            l->resp = malloc(INPROC_RESP_START);
            if (l->resp == NULL)
                return PT_ERR_NOMEM;
            l->resp_cap = INPROC_RESP_START;
        }
        if (l->resp_cap < RESP_PER_REQUEST(req_len) && l->resp_cap < INPROC_RESP_MAX) {
            size_t cap = l->resp_cap;
            uint8_t *bigger;
            while (cap < RESP_PER_REQUEST(req_len) && cap < INPROC_RESP_MAX)
                cap *= 4;
            if ((bigger = realloc(l->resp, cap)) == NULL)
                return PT_ERR_NOMEM;
            l->resp = bigger;
            l->resp_cap = cap;
        }
        rc = tk_dispatch(l->tk, l->arena, l->arena_len, req, req_len, l->resp, l->resp_cap,
                         resp_len, &peak);
        l->calls++;
        if (peak > l->peak)
            l->peak = peak;
        if (rc == TK_ERR_RESPONSE_SPACE && l->resp_cap < INPROC_RESP_MAX) {
            uint8_t *bigger = realloc(l->resp, l->resp_cap * 4);
            if (bigger == NULL)
                return PT_ERR_NOMEM;
            l->resp = bigger;
            l->resp_cap *= 4;
            continue;
        }
        if (*resp_len == 0)
            return PT_ERR_LINK;
        *resp = l->resp;
        return PT_OK;
    }
}

struct pt_link pt_inproc_link(struct pt_inproc *l)
{
    struct pt_link link = {l, inproc_transact};
    return link;
}
