/*
 * pt_json.c: the HTTP API's JSON reader and writer (see pt_json.h for the
 * contract).
 *
 * The reader is a recursive descent over the bytes, one function per
 * production of RFC 8259, that refuses at the first byte that does not
 * fit. Its recursion is bounded by lim->depth (at most PT_JSON_DEPTH_MAX),
 * checked before each descent. Values are allocated in blocks of
 * PT_JSON_BLOCK, so their addresses never move and the tree's links are
 * plain pointers; strings and numbers are copied into one buffer of the
 * text's size plus one, which always suffices: a string's decoded bytes
 * and its NUL take no more room than its quoted form, and a number's NUL
 * takes the room of the byte that ends it (only a number alone at the end
 * of the text needs the extra one).
 *
 * Invariant on failure: every block and the string buffer are freed and
 * the document is zeroed, so callers never see half a tree.
 *
 * The writer appends to a buffer that doubles up to its maximum; the
 * first error sticks, and later calls do nothing.
 */
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "participant/participant.h"
#include "participant/pt_json.h"

#define PT_JSON_BLOCK 128u

const struct pt_json_limits pt_json_limits_api = {
    .bytes = 64u << 10,
    .depth = 8,
    .values = 4096,
    .items = 256,
    .string = 8192,
};

struct pt_json_block {
    struct pt_json_block *next;
    uint32_t used;
    struct pt_json_value v[PT_JSON_BLOCK];
};

/* ------------------------------------------------------------- UTF-8 */

/* The length of the valid UTF-8 sequence at s (avail bytes there), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t avail)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t cp;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0; /* a continuation byte, an overlong lead (c0, c1), or f5..ff */
    }
    if (avail < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0; /* overlong, or beyond Unicode */
    if (cp >= 0xd800 && cp <= 0xdfff)
        return 0; /* a surrogate, which UTF-8 never encodes */
    return n;
}

/* ------------------------------------------------------------- reader */

struct parser {
    const unsigned char *t;
    size_t len, pos;
    const struct pt_json_limits *lim;
    uint32_t depth_max;
    struct pt_json *doc;
    struct pt_json_error *err;
};

/* Record the first error, at offset at; returns rc. */
static int fail(struct parser *ps, size_t at, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(struct parser *ps, size_t at, int rc, const char *fmt, ...)
{
    struct pt_json_error *e = ps->err;
    va_list ap;

    if (e == NULL)
        return rc;
    if (at > ps->len)
        at = ps->len;
    e->offset = at;
    e->line = 1;
    e->column = 1;
    for (size_t i = 0; i < at; i++) {
        if (ps->t[i] == '\n') {
            e->line++;
            e->column = 1;
        } else {
            e->column++;
        }
    }
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return rc;
}

/* A byte of the input, for a message: a printable ASCII character quoted, else its value. */
static const char *show(unsigned char c, char buf[8])
{
    if (c > 0x20 && c < 0x7f)
        snprintf(buf, 8, "'%c'", c);
    else
        snprintf(buf, 8, "0x%02x", c);
    return buf;
}

static struct pt_json_value *new_value(struct parser *ps, enum pt_json_type type, size_t at,
                                       int *rc)
{
    struct pt_json *doc = ps->doc;
    struct pt_json_block *b = doc->blocks;
    struct pt_json_value *v;

    if (doc->n_values >= ps->lim->values) {
        *rc = fail(ps, at, PT_ERR_TOO_LARGE, "more than %u values", ps->lim->values);
        return NULL;
    }
    if (b == NULL || b->used == PT_JSON_BLOCK) {
        if ((b = malloc(sizeof *b)) == NULL) {
            *rc = fail(ps, at, PT_ERR_NOMEM, "out of memory");
            return NULL;
        }
        b->next = doc->blocks;
        b->used = 0;
        doc->blocks = b;
    }
    v = &b->v[b->used++];
    doc->n_values++;
    memset(v, 0, sizeof *v);
    v->type = type;
    v->offset = at;
    return v;
}

static bool is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void skip_ws(struct parser *ps)
{
    while (ps->pos < ps->len && is_ws(ps->t[ps->pos]))
        ps->pos++;
}

static int hex4(const unsigned char *s, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

size_t pt_json_put_utf8(char out[static 4], uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

int pt_json_u_escape(const uint8_t *p, size_t avail, uint32_t *cp, size_t *used)
{
    uint32_t hi, lo;

    if (avail < 4 || hex4(p, &hi) != 0)
        return PT_JSON_U_DIGITS;
    if (hi >= 0xdc00 && hi <= 0xdfff)
        return PT_JSON_U_LOW;
    if (hi < 0xd800 || hi > 0xdbff) {
        *cp = hi;
        *used = 4;
        return 0;
    }
    if (avail < 10 || p[4] != '\\' || p[5] != 'u' || hex4(p + 6, &lo) != 0 || lo < 0xdc00 ||
        lo > 0xdfff)
        return PT_JSON_U_HIGH;
    *cp = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
    *used = 10;
    return 0;
}

/* A string at ps->pos (its opening quote), decoded into the buffer. */
static int parse_string(struct parser *ps, const char **out, size_t *out_len, const char *what)
{
    struct pt_json *doc = ps->doc;
    size_t start = ps->pos, first = doc->str_len;
    char *dst = doc->str;
    char b[8];

    ps->pos++; /* the quote */
    for (;;) {
        unsigned char c;
        size_t n;

        if (ps->pos >= ps->len)
            return fail(ps, start, PT_ERR_INPUT, "%s is not closed", what);
        c = ps->t[ps->pos];
        if (c == '"') {
            ps->pos++;
            break;
        }
        if (c < 0x20)
            return fail(ps, ps->pos, PT_ERR_INPUT,
                        "a control byte %s inside %s (it must be escaped)", show(c, b), what);
        if (c == '\\') {
            uint32_t cp;
            size_t esc = ps->pos, used;
            char tmp[4];

            if (ps->pos + 1 >= ps->len)
                return fail(ps, start, PT_ERR_INPUT, "%s is not closed", what);
            c = ps->t[ps->pos + 1];
            ps->pos += 2;
            switch (c) {
            case '"':
            case '\\':
            case '/':
                tmp[0] = (char)c;
                n = 1;
                break;
            case 'b':
                tmp[0] = '\b';
                n = 1;
                break;
            case 'f':
                tmp[0] = '\f';
                n = 1;
                break;
            case 'n':
                tmp[0] = '\n';
                n = 1;
                break;
            case 'r':
                tmp[0] = '\r';
                n = 1;
                break;
            case 't':
                tmp[0] = '\t';
                n = 1;
                break;
            case 'u':
                switch (pt_json_u_escape(ps->t + ps->pos, ps->len - ps->pos, &cp, &used)) {
                case PT_JSON_U_DIGITS:
                    return fail(ps, esc, PT_ERR_INPUT, "\\u must be followed by 4 hex digits");
                case PT_JSON_U_LOW:
                    return fail(ps, esc, PT_ERR_INPUT,
                                "a low surrogate escape without a high surrogate before it");
                case PT_JSON_U_HIGH:
                    return fail(ps, esc, PT_ERR_INPUT,
                                "a high surrogate escape without a low surrogate after it");
                default:
                    break;
                }
                if (cp == 0)
                    return fail(ps, esc, PT_ERR_INPUT, "\\u0000 (NUL) is not allowed in %s", what);
                ps->pos += used;
                n = pt_json_put_utf8(tmp, cp);
                break;
            default:
                return fail(ps, esc, PT_ERR_INPUT, "an unknown escape \\%s", show(c, b));
            }
            if (doc->str_len - first + n > ps->lim->string)
                return fail(ps, start, PT_ERR_TOO_LARGE, "%s longer than %zu bytes", what,
                            ps->lim->string);
            assert(doc->str_len + n < doc->str_cap);
            memcpy(dst + doc->str_len, tmp, n);
            doc->str_len += n;
            continue;
        }
        n = utf8_seq(ps->t + ps->pos, ps->len - ps->pos);
        if (n == 0)
            return fail(ps, ps->pos, PT_ERR_INPUT, "invalid UTF-8 (byte 0x%02x) in %s", c, what);
        if (doc->str_len - first + n > ps->lim->string)
            return fail(ps, start, PT_ERR_TOO_LARGE, "%s longer than %zu bytes", what,
                        ps->lim->string);
        assert(doc->str_len + n < doc->str_cap);
        memcpy(dst + doc->str_len, ps->t + ps->pos, n);
        doc->str_len += n;
        ps->pos += n;
    }
    assert(doc->str_len < doc->str_cap);
    dst[doc->str_len++] = '\0';
    *out = dst + first;
    *out_len = doc->str_len - first - 1;
    return 0;
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int parse_number(struct parser *ps, struct pt_json_value *v)
{
    struct pt_json *doc = ps->doc;
    size_t start = ps->pos, n;
    const unsigned char *t = ps->t;

    if (t[ps->pos] == '-')
        ps->pos++;
    if (ps->pos >= ps->len || !is_digit(t[ps->pos]))
        return fail(ps, start, PT_ERR_INPUT, "a minus sign without digits after it");
    if (t[ps->pos] == '0') {
        ps->pos++;
        if (ps->pos < ps->len && is_digit(t[ps->pos]))
            return fail(ps, start, PT_ERR_INPUT, "a number with a leading zero");
    } else {
        while (ps->pos < ps->len && is_digit(t[ps->pos]))
            ps->pos++;
    }
    if (ps->pos < ps->len && t[ps->pos] == '.') {
        ps->pos++;
        if (ps->pos >= ps->len || !is_digit(t[ps->pos]))
            return fail(ps, ps->pos - 1, PT_ERR_INPUT, "a decimal point without digits after it");
        while (ps->pos < ps->len && is_digit(t[ps->pos]))
            ps->pos++;
    }
    if (ps->pos < ps->len && (t[ps->pos] == 'e' || t[ps->pos] == 'E')) {
        size_t e = ps->pos++;
        if (ps->pos < ps->len && (t[ps->pos] == '+' || t[ps->pos] == '-'))
            ps->pos++;
        if (ps->pos >= ps->len || !is_digit(t[ps->pos]))
            return fail(ps, e, PT_ERR_INPUT, "an exponent without digits");
        while (ps->pos < ps->len && is_digit(t[ps->pos]))
            ps->pos++;
    }
    n = ps->pos - start;
    if (n > ps->lim->string)
        return fail(ps, start, PT_ERR_TOO_LARGE, "a number longer than %zu bytes", ps->lim->string);
    assert(doc->str_len + n < doc->str_cap);
    memcpy(doc->str + doc->str_len, t + start, n);
    doc->str[doc->str_len + n] = '\0';
    v->s = doc->str + doc->str_len;
    v->len = n;
    doc->str_len += n + 1;
    return 0;
}

static int parse_value(struct parser *ps, uint32_t depth, struct pt_json_value **out);

static int parse_container(struct parser *ps, uint32_t depth, struct pt_json_value *v)
{
    bool object = v->type == PT_JSON_OBJECT;
    unsigned char close = object ? '}' : ']';
    struct pt_json_value *last = NULL;
    char b[8];
    int rc;

    if (depth + 1 > ps->depth_max)
        return fail(ps, ps->pos, PT_ERR_TOO_LARGE, "arrays and objects nested deeper than %u",
                    ps->depth_max);
    ps->pos++; /* '{' or '[' */
    skip_ws(ps);
    if (ps->pos < ps->len && ps->t[ps->pos] == close) {
        ps->pos++;
        return 0;
    }
    for (;;) {
        struct pt_json_value *item;
        const char *key = NULL;
        size_t key_len = 0, key_at = 0;

        skip_ws(ps);
        if (v->n >= ps->lim->items && ps->pos < ps->len && ps->t[ps->pos] != close)
            return fail(ps, ps->pos, PT_ERR_TOO_LARGE, "an %s of more than %u %s",
                        object ? "object" : "array", ps->lim->items, object ? "members" : "items");
        if (object) {
            if (ps->pos >= ps->len)
                return fail(ps, ps->pos, PT_ERR_INPUT, "the text ends inside an object");
            if (ps->t[ps->pos] != '"') {
                if (ps->t[ps->pos] == '}' && last != NULL)
                    return fail(ps, ps->pos, PT_ERR_INPUT, "a comma before '}'");
                return fail(ps, ps->pos, PT_ERR_INPUT, "expected a member name (a string), not %s",
                            show(ps->t[ps->pos], b));
            }
            key_at = ps->pos;
            if ((rc = parse_string(ps, &key, &key_len, "a member name")) != 0)
                return rc;
            skip_ws(ps);
            if (ps->pos >= ps->len || ps->t[ps->pos] != ':')
                return fail(ps, ps->pos, PT_ERR_INPUT, "expected ':' after a member name");
            ps->pos++;
            for (const struct pt_json_value *m = v->child; m != NULL; m = m->next)
                if (m->key_len == key_len && memcmp(m->key, key, key_len) == 0)
                    return fail(ps, key_at, PT_ERR_INPUT, "a member name given twice");
        } else if (ps->pos < ps->len && ps->t[ps->pos] == ']' && last != NULL) {
            return fail(ps, ps->pos, PT_ERR_INPUT, "a comma before ']'");
        }
        if ((rc = parse_value(ps, depth + 1, &item)) != 0)
            return rc;
        item->key = key;
        item->key_len = key_len;
        if (last == NULL)
            v->child = item;
        else
            last->next = item;
        last = item;
        v->n++;
        skip_ws(ps);
        if (ps->pos >= ps->len)
            return fail(ps, ps->pos, PT_ERR_INPUT, "the text ends inside an %s",
                        object ? "object" : "array");
        if (ps->t[ps->pos] == ',') {
            ps->pos++;
            continue;
        }
        if (ps->t[ps->pos] == close) {
            ps->pos++;
            return 0;
        }
        return fail(ps, ps->pos, PT_ERR_INPUT, "expected ',' or '%c' after %s, not %s", close,
                    object ? "a member" : "an item", show(ps->t[ps->pos], b));
    }
}

static int literal(struct parser *ps, const char *word)
{
    size_t n = strlen(word);
    if (ps->len - ps->pos < n || memcmp(ps->t + ps->pos, word, n) != 0)
        return -1;
    ps->pos += n;
    return 0;
}

static int parse_value(struct parser *ps, uint32_t depth, struct pt_json_value **out)
{
    struct pt_json_value *v;
    unsigned char c;
    size_t at;
    char b[8];
    int rc = 0;

    skip_ws(ps);
    at = ps->pos;
    if (ps->pos >= ps->len)
        return fail(ps, at, PT_ERR_INPUT, "the text ends where a value was expected");
    c = ps->t[ps->pos];
    switch (c) {
    case '{':
    case '[':
        if ((v = new_value(ps, c == '{' ? PT_JSON_OBJECT : PT_JSON_ARRAY, at, &rc)) == NULL)
            return rc;
        rc = parse_container(ps, depth, v);
        break;
    case '"':
        if ((v = new_value(ps, PT_JSON_STRING, at, &rc)) == NULL)
            return rc;
        rc = parse_string(ps, &v->s, &v->len, "a string");
        break;
    case 't':
    case 'f':
    case 'n':
        if ((v = new_value(ps, c == 'n' ? PT_JSON_NULL : PT_JSON_BOOL, at, &rc)) == NULL)
            return rc;
        v->b = c == 't';
        if (literal(ps, c == 't' ? "true" : c == 'f' ? "false" : "null") != 0)
            return fail(ps, at, PT_ERR_INPUT,
                        "not a value (true, false and null are lowercase "
                        "words)");
        break;
    default:
        if (c != '-' && !is_digit(c))
            return fail(ps, at, PT_ERR_INPUT, "expected a value, not %s", show(c, b));
        if ((v = new_value(ps, PT_JSON_NUMBER, at, &rc)) == NULL)
            return rc;
        rc = parse_number(ps, v);
        break;
    }
    if (rc == 0)
        *out = v;
    return rc;
}

int pt_json_parse(struct pt_json *doc, const char *text, size_t len,
                  const struct pt_json_limits *lim, struct pt_json_error *err)
{
    struct parser ps = {
        .t = (const unsigned char *)text,
        .len = len,
        .pos = 0,
        .lim = lim,
        .depth_max = lim->depth > PT_JSON_DEPTH_MAX ? PT_JSON_DEPTH_MAX : lim->depth,
        .doc = doc,
        .err = err,
    };
    struct pt_json_value *root = NULL;
    char b[8];
    int rc;

    memset(doc, 0, sizeof *doc);
    if (err != NULL)
        memset(err, 0, sizeof *err);
    if (len > lim->bytes) {
        ps.len = lim->bytes;
        return fail(&ps, lim->bytes, PT_ERR_TOO_LARGE, "the text is longer than %zu bytes",
                    lim->bytes);
    }
    if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
        return fail(&ps, 0, PT_ERR_INPUT, "a byte order mark is not allowed");
    skip_ws(&ps);
    if (ps.pos == len)
        return fail(&ps, ps.pos, PT_ERR_INPUT, "the text holds no value");
    doc->str_cap = len + 1;
    if ((doc->str = malloc(doc->str_cap)) == NULL)
        return fail(&ps, 0, PT_ERR_NOMEM, "out of memory");
    if ((rc = parse_value(&ps, 0, &root)) != 0)
        goto fail;
    skip_ws(&ps);
    if (ps.pos != len) {
        rc =
            fail(&ps, ps.pos, PT_ERR_INPUT, "unexpected %s after the value", show(ps.t[ps.pos], b));
        goto fail;
    }
    doc->root = root;
    return 0;
fail:
    pt_json_free(doc);
    return rc;
}

void pt_json_free(struct pt_json *doc)
{
    struct pt_json_block *b, *next;

    if (doc == NULL)
        return;
    for (b = doc->blocks; b != NULL; b = next) {
        next = b->next;
        free(b);
    }
    free(doc->str);
    memset(doc, 0, sizeof *doc);
}

const struct pt_json_value *pt_json_member(const struct pt_json_value *obj, const char *key)
{
    size_t n = strlen(key);

    if (obj == NULL || obj->type != PT_JSON_OBJECT)
        return NULL;
    for (const struct pt_json_value *m = obj->child; m != NULL; m = m->next)
        if (m->key_len == n && memcmp(m->key, key, n) == 0)
            return m;
    return NULL;
}

const struct pt_json_value *pt_json_unknown_member(const struct pt_json_value *obj,
                                                   const char *const *known, size_t n)
{
    if (obj == NULL || obj->type != PT_JSON_OBJECT)
        return NULL;
    for (const struct pt_json_value *m = obj->child; m != NULL; m = m->next) {
        bool found = false;
        for (size_t i = 0; i < n && !found; i++)
            found = strlen(known[i]) == m->key_len && memcmp(known[i], m->key, m->key_len) == 0;
        if (!found)
            return m;
    }
    return NULL;
}

int pt_json_int(const struct pt_json_value *v, int64_t min, int64_t max, int64_t *out)
{
    const char *s;
    bool neg;
    uint64_t mag = 0, lim;

    if (v == NULL || v->type != PT_JSON_NUMBER)
        return PT_ERR_INPUT;
    s = v->s;
    neg = *s == '-';
    if (neg)
        s++;
    lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; *s != '\0'; s++) {
        if (!is_digit((unsigned char)*s))
            return PT_ERR_INPUT; /* a fraction or an exponent */
        if (mag > (lim - (uint64_t)(*s - '0')) / 10)
            return PT_ERR_INPUT;
        mag = mag * 10 + (uint64_t)(*s - '0');
    }
    {
        int64_t x =
            neg ? (mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag) : (int64_t)mag;
        if (x < min || x > max)
            return PT_ERR_INPUT;
        *out = x;
    }
    return 0;
}

const char *pt_json_type_name(enum pt_json_type t)
{
    switch (t) {
    case PT_JSON_NULL:
        return "null";
    case PT_JSON_BOOL:
        return "a boolean";
    case PT_JSON_NUMBER:
        return "a number";
    case PT_JSON_STRING:
        return "a string";
    case PT_JSON_ARRAY:
        return "an array";
    case PT_JSON_OBJECT:
        return "an object";
    }
    return "?";
}

/* ------------------------------------------------------------- writer */

void pt_jw_init(struct pt_jw *w, size_t max)
{
    memset(w, 0, sizeof *w);
    w->max = max;
    w->first[0] = true;
}

void pt_jw_free(struct pt_jw *w)
{
    free(w->buf);
    memset(w, 0, sizeof *w);
}

static void put(struct pt_jw *w, const char *s, size_t n)
{
    if (w->err != 0)
        return;
    if (n > w->max - w->len) {
        w->err = PT_ERR_TOO_LARGE;
        return;
    }
    if (w->len + n + 1 > w->cap) {
        size_t cap = w->cap ? w->cap : 256;
        char *p;
        while (cap < w->len + n + 1)
            cap *= 2;
        if (cap > w->max + 1)
            cap = w->max + 1;
        if ((p = realloc(w->buf, cap)) == NULL) {
            w->err = PT_ERR_NOMEM;
            return;
        }
        w->buf = p;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    w->buf[w->len] = '\0';
}

static void misuse(struct pt_jw *w)
{
    assert(!"pt_jw misused");
    if (w->err == 0)
        w->err = PT_ERR_INPUT;
}

/* What comes before a value: a comma in an array, nothing after a key. */
static void before_value(struct pt_jw *w)
{
    if (w->err != 0)
        return;
    if (w->depth == 0) {
        if (!w->first[0])
            misuse(w); /* a second top-level value */
        w->first[0] = false;
        return;
    }
    if (w->in_object[w->depth]) {
        if (!w->key_due)
            misuse(w);
        w->key_due = false;
        return;
    }
    if (!w->first[w->depth])
        put(w, ",", 1);
    w->first[w->depth] = false;
}

static void jw_open(struct pt_jw *w, bool object)
{
    before_value(w);
    if (w->err != 0)
        return;
    if (w->depth == PT_JW_DEPTH_MAX) {
        misuse(w);
        return;
    }
    put(w, object ? "{" : "[", 1);
    w->depth++;
    w->first[w->depth] = true;
    w->in_object[w->depth] = object;
}

static void jw_close(struct pt_jw *w, bool object)
{
    if (w->err != 0)
        return;
    if (w->depth == 0 || w->in_object[w->depth] != object || w->key_due) {
        misuse(w);
        return;
    }
    put(w, object ? "}" : "]", 1);
    w->depth--;
}

void pt_jw_object(struct pt_jw *w)
{
    jw_open(w, true);
}

void pt_jw_object_end(struct pt_jw *w)
{
    jw_close(w, true);
}

void pt_jw_array(struct pt_jw *w)
{
    jw_open(w, false);
}

void pt_jw_array_end(struct pt_jw *w)
{
    jw_close(w, false);
}

/* A string literal with every byte that needs it escaped. */
static void put_string(struct pt_jw *w, const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0;

    put(w, "\"", 1);
    while (i < len && w->err == 0) {
        unsigned char c = u[i];
        const char *esc = NULL;
        char ubuf[8];
        size_t n = 1;

        if (c >= 0x80) {
            n = utf8_seq(u + i, len - i);
            if (n == 0)
                esc = "\\ufffd";
            else if (n == 3 && c == 0xe2 && u[i + 1] == 0x80 && (u[i + 2] & 0xfe) == 0xa8)
                esc = u[i + 2] == 0xa8 ? "\\u2028" : "\\u2029";
        } else if (c == '"') {
            esc = "\\\"";
        } else if (c == '\\') {
            esc = "\\\\";
        } else if (c == '\n') {
            esc = "\\n";
        } else if (c == '\r') {
            esc = "\\r";
        } else if (c == '\t') {
            esc = "\\t";
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(ubuf, sizeof ubuf, "\\u%04x", c);
            esc = ubuf;
        }
        if (esc == NULL) {
            run += n;
            i += n;
            continue;
        }
        put(w, s + i - run, run);
        run = 0;
        put(w, esc, strlen(esc));
        i += n == 0 ? 1 : n;
    }
    put(w, s + i - run, run);
    put(w, "\"", 1);
}

void pt_jw_key(struct pt_jw *w, const char *key)
{
    if (w->err != 0)
        return;
    if (w->depth == 0 || !w->in_object[w->depth] || w->key_due) {
        misuse(w);
        return;
    }
    if (!w->first[w->depth])
        put(w, ",", 1);
    w->first[w->depth] = false;
    put_string(w, key, strlen(key));
    put(w, ":", 1);
    w->key_due = true;
}

void pt_jw_null(struct pt_jw *w)
{
    before_value(w);
    put(w, "null", 4);
}

void pt_jw_bool(struct pt_jw *w, bool b)
{
    before_value(w);
    put(w, b ? "true" : "false", b ? 4 : 5);
}

void pt_jw_i64(struct pt_jw *w, int64_t v)
{
    char buf[24];
    int n = snprintf(buf, sizeof buf, "%lld", (long long)v);
    before_value(w);
    put(w, buf, (size_t)n);
}

void pt_jw_u64(struct pt_jw *w, uint64_t v)
{
    char buf[24];
    int n = snprintf(buf, sizeof buf, "%llu", (unsigned long long)v);
    before_value(w);
    put(w, buf, (size_t)n);
}

void pt_jw_str(struct pt_jw *w, const char *s)
{
    pt_jw_strn(w, s, strlen(s));
}

void pt_jw_strn(struct pt_jw *w, const char *s, size_t len)
{
    before_value(w);
    put_string(w, s, len);
}

void pt_jw_hex(struct pt_jw *w, const uint8_t *data, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    char buf[64];

    before_value(w);
    put(w, "\"", 1);
    for (size_t i = 0; i < n; i += sizeof buf / 2) {
        size_t k = n - i < sizeof buf / 2 ? n - i : sizeof buf / 2;
        for (size_t j = 0; j < k; j++) {
            buf[2 * j] = digits[data[i + j] >> 4];
            buf[2 * j + 1] = digits[data[i + j] & 15];
        }
        put(w, buf, 2 * k);
    }
    put(w, "\"", 1);
}

void pt_jw_base64(struct pt_jw *w, const uint8_t *data, size_t n)
{
    const int variant = sodium_base64_VARIANT_ORIGINAL;
    char buf[sodium_base64_ENCODED_LEN(48, sodium_base64_VARIANT_ORIGINAL)];

    before_value(w);
    put(w, "\"", 1);
    /* In pieces of 48 bytes (a multiple of 3, so no padding inside). */
    for (size_t i = 0; i < n && w->err == 0; i += 48) {
        size_t k = n - i < 48 ? n - i : 48;
        sodium_bin2base64(buf, sizeof buf, data + i, k, variant);
        put(w, buf, strlen(buf));
    }
    put(w, "\"", 1);
}

int pt_jw_finish(struct pt_jw *w, char **out, size_t *len)
{
    int rc = w->err;

    if (rc == 0 && (w->depth != 0 || w->first[0]))
        rc = PT_ERR_INPUT; /* unfinished, or no value at all */
    if (rc == 0 && w->buf == NULL)
        rc = PT_ERR_INPUT;
    if (rc != 0) {
        pt_jw_free(w);
        return rc;
    }
    *out = w->buf;
    *len = w->len;
    w->buf = NULL;
    pt_jw_free(w);
    return 0;
}
