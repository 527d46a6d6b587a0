/*
 * The token's RAM: a two-ended bump allocator over the caller's buffer.
 *
 * The low end keeps aggregation-session data across calls; the high end is
 * per-call scratch, released wholesale (or back to a mark) when the work
 * that needed it is done. Nothing is freed piecemeal: protobuf-c's free hook
 * is a no-op, and a message's memory goes back with the scratch mark.
 * Every allocation is 8-aligned and fails cleanly when the ends would meet.
 */
#include "token/tk_int.h"

#define TK_ALIGN 8u

static void note_peak(struct tk_arena *a)
{
    size_t used = a->lo + (a->cap - a->hi);
    if (used > a->peak)
        a->peak = used;
}

void tk_arena_init(struct tk_arena *a, uint8_t *base, size_t cap, size_t lo)
{
    /* The top end must be aligned too. */
    size_t top = cap - (((uintptr_t)(base + cap)) % TK_ALIGN);
    a->base = base;
    a->cap = top;
    a->lo = lo;
    a->hi = top;
    a->peak = 0;
    a->exhausted = false;
    note_peak(a);
}

void *tk_arena_scratch(struct tk_arena *a, size_t n)
{
    size_t need = (n + TK_ALIGN - 1) & ~(size_t)(TK_ALIGN - 1);
    if (need < n || need > a->hi || a->hi - need < a->lo) {
        a->exhausted = true;
        return NULL;
    }
    a->hi -= need;
    note_peak(a);
    return a->base + a->hi;
}

void *tk_arena_keep(struct tk_arena *a, size_t n)
{
    size_t start = (a->lo + TK_ALIGN - 1) & ~(size_t)(TK_ALIGN - 1);
    if (n > a->cap || start > a->hi || a->hi - start < n) {
        a->exhausted = true;
        return NULL;
    }
    a->lo = start + n;
    note_peak(a);
    return a->base + start;
}

size_t tk_arena_mark(const struct tk_arena *a)
{
    return a->hi;
}

void tk_arena_release(struct tk_arena *a, size_t mark)
{
    if (mark >= a->hi && mark <= a->cap)
        a->hi = mark;
}

static void *pb_alloc(void *data, size_t n)
{
    return tk_arena_scratch(data, n);
}

static void pb_free(void *data, void *p)
{
    (void)data;
    (void)p;
}

ProtobufCAllocator tk_arena_allocator(struct tk_arena *a)
{
    ProtobufCAllocator al = {.alloc = pb_alloc, .free = pb_free, .allocator_data = a};
    return al;
}

ProtobufCMessage *tk_unpack(struct tk_arena *a, const ProtobufCMessageDescriptor *d,
                            const uint8_t *data, size_t len, int *err)
{
    ProtobufCAllocator al = tk_arena_allocator(a);
    size_t mark = tk_arena_mark(a);
    bool was = a->exhausted;
    ProtobufCMessage *m;

    a->exhausted = false;
    m = protobuf_c_message_unpack(d, &al, len, data);
    if (m == NULL) {
        *err = a->exhausted ? TK_ERR_NO_MEMORY : TK_ERR_MALFORMED;
        tk_arena_release(a, mark);
    }
    a->exhausted = a->exhausted || was;
    return m;
}
