/*
 * Typed values: conversion from the wire, comparison, and the canonical
 * byte encoding of group keys.
 *
 * A group key is the concatenation of its values, each as a type byte and
 * then either 8 bytes little-endian (INT, DECIMAL, DATE, BOOL, TIMESTAMP),
 * a length byte and the text (TEXT), or nothing (NULL). Equal keys mean
 * equal groups; the encoding is what the group table hashes and compares.
 *
 * Numbers compare by value across INT, DECIMAL and DOUBLE (HAVING compares
 * an AVG with a literal); other types compare only with their own kind.
 */
#include "token/tk_int.h"

static bool is_numeric(uint8_t t)
{
    return t == COHORT__VALUE_TYPE__VT_INT || t == COHORT__VALUE_TYPE__VT_DECIMAL ||
           t == COHORT__VALUE_TYPE__VT_DOUBLE;
}

int tk_value_from_pb(struct tk_value *v, const Cohort__Value *pb)
{
    memset(v, 0, sizeof *v);
    if (pb == NULL)
        return TK_OK; /* NULL */
    v->type = (uint8_t)pb->type;
    switch (pb->type) {
    case COHORT__VALUE_TYPE__VT_NULL:
        return TK_OK;
    case COHORT__VALUE_TYPE__VT_INT:
    case COHORT__VALUE_TYPE__VT_DATE:
    case COHORT__VALUE_TYPE__VT_TIMESTAMP:
        v->i = pb->i;
        return TK_OK;
    case COHORT__VALUE_TYPE__VT_BOOL:
        if (pb->i != 0 && pb->i != 1)
            return TK_ERR_MALFORMED;
        v->i = pb->i;
        return TK_OK;
    case COHORT__VALUE_TYPE__VT_DECIMAL:
        if (pb->scale > 18)
            return TK_ERR_MALFORMED;
        v->i = pb->i;
        v->scale = (uint8_t)pb->scale;
        return TK_OK;
    case COHORT__VALUE_TYPE__VT_DOUBLE:
        v->d = pb->d;
        return TK_OK;
    case COHORT__VALUE_TYPE__VT_TEXT:
        if (pb->s.len > TK_TEXT_MAX)
            return TK_ERR_TOO_LARGE;
        v->s = pb->s.data;
        v->len = (uint16_t)pb->s.len;
        return TK_OK;
    default:
        return TK_ERR_MALFORMED;
    }
}

void tk_value_to_pb(Cohort__Value *pb, const struct tk_value *v)
{
    cohort__value__init(pb);
    pb->type = (Cohort__ValueType)v->type;
    switch (v->type) {
    case COHORT__VALUE_TYPE__VT_TEXT:
        pb->s.data = (uint8_t *)(uintptr_t)v->s;
        pb->s.len = v->len;
        break;
    case COHORT__VALUE_TYPE__VT_DOUBLE:
        pb->d = v->d;
        break;
    case COHORT__VALUE_TYPE__VT_DECIMAL:
        pb->scale = v->scale;
        pb->i = v->i;
        break;
    case COHORT__VALUE_TYPE__VT_NULL:
        break;
    default:
        pb->i = v->i;
        break;
    }
}

static double as_double(const struct tk_value *v)
{
    double d;
    unsigned s;
    if (v->type == COHORT__VALUE_TYPE__VT_DOUBLE)
        return v->d;
    d = (double)v->i;
    if (v->type == COHORT__VALUE_TYPE__VT_DECIMAL)
        for (s = 0; s < v->scale; s++)
            d /= 10.0;
    return d;
}

/* An exact comparison of two scaled integers. */
static int cmp_scaled(int64_t a, unsigned sa, int64_t b, unsigned sb)
{
    __int128 x = a, y = b;
    while (sa < sb) {
        x *= 10;
        sa++;
    }
    while (sb < sa) {
        y *= 10;
        sb++;
    }
    return x < y ? -1 : x > y;
}

int tk_value_cmp(const struct tk_value *a, const struct tk_value *b)
{
    if (is_numeric(a->type) && is_numeric(b->type)) {
        if (a->type == COHORT__VALUE_TYPE__VT_DOUBLE || b->type == COHORT__VALUE_TYPE__VT_DOUBLE) {
            double x = as_double(a), y = as_double(b);
            return x < y ? -1 : x > y;
        }
        return cmp_scaled(a->i, a->type == COHORT__VALUE_TYPE__VT_DECIMAL ? a->scale : 0, b->i,
                          b->type == COHORT__VALUE_TYPE__VT_DECIMAL ? b->scale : 0);
    }
    if (a->type != b->type)
        return 2;
    if (a->type == COHORT__VALUE_TYPE__VT_TEXT) {
        size_t n = a->len < b->len ? a->len : b->len;
        int c = n ? memcmp(a->s, b->s, n) : 0;
        if (c != 0)
            return c < 0 ? -1 : 1;
        return a->len < b->len ? -1 : a->len > b->len;
    }
    return a->i < b->i ? -1 : a->i > b->i;
}

size_t tk_key_put(uint8_t *out, const struct tk_value *v)
{
    size_t k;
    out[0] = v->type;
    switch (v->type) {
    case COHORT__VALUE_TYPE__VT_NULL:
        return 1;
    case COHORT__VALUE_TYPE__VT_TEXT:
        out[1] = (uint8_t)v->len;
        if (v->len)
            memcpy(out + 2, v->s, v->len);
        return 2u + v->len;
    case COHORT__VALUE_TYPE__VT_DECIMAL:
        out[1] = v->scale;
        for (k = 0; k < 8; k++)
            out[2 + k] = (uint8_t)((uint64_t)v->i >> (8 * k));
        return 10;
    default:
        for (k = 0; k < 8; k++)
            out[1 + k] = (uint8_t)((uint64_t)v->i >> (8 * k));
        return 9;
    }
}

int tk_key_get(struct tk_value *v, const uint8_t *key, size_t key_len, size_t *pos)
{
    size_t p = *pos, k;
    uint64_t u = 0;
    memset(v, 0, sizeof *v);
    if (p >= key_len)
        return TK_ERR_MALFORMED;
    v->type = key[p++];
    switch (v->type) {
    case COHORT__VALUE_TYPE__VT_NULL:
        break;
    case COHORT__VALUE_TYPE__VT_TEXT:
        if (p >= key_len || key[p] > key_len - p - 1)
            return TK_ERR_MALFORMED;
        v->len = key[p];
        v->s = key + p + 1;
        p += 1u + v->len;
        break;
    case COHORT__VALUE_TYPE__VT_DECIMAL:
        if (key_len - p < 9)
            return TK_ERR_MALFORMED;
        v->scale = key[p++];
        /* fall through */
    case COHORT__VALUE_TYPE__VT_INT:
    case COHORT__VALUE_TYPE__VT_DATE:
    case COHORT__VALUE_TYPE__VT_BOOL:
    case COHORT__VALUE_TYPE__VT_TIMESTAMP:
        if (key_len - p < 8)
            return TK_ERR_MALFORMED;
        for (k = 0; k < 8; k++)
            u |= (uint64_t)key[p + k] << (8 * k);
        v->i = (int64_t)u;
        p += 8;
        break;
    default:
        return TK_ERR_MALFORMED;
    }
    *pos = p;
    return TK_OK;
}

/* Text without stdio: append to out[at..cap), always NUL-terminated; the new length. */
size_t tk_text_put(char *out, size_t at, size_t cap, const char *s)
{
    while (*s != '\0' && at + 1 < cap)
        out[at++] = *s++;
    out[at] = '\0';
    return at;
}

size_t tk_text_u64(char *out, size_t at, size_t cap, uint64_t v)
{
    char d[21];
    size_t n = 0;
    do {
        d[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n > 0 && at + 1 < cap)
        out[at++] = d[--n];
    out[at] = '\0';
    return at;
}
