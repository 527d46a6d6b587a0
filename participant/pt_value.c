/*
 * Typed values and schemas on the owner's side: names, types, calendar,
 * exact numbers, UTF-8, and a table schema written as text.
 *
 * Encodings are the wire's, which the token, the querier's SQL literals
 * and the simulator share: DATE is days since 1970-01-01, TIMESTAMP
 * seconds since 1970-01-01 UTC (no leap seconds), DECIMAL(s) an int64
 * scaled by 10^s. Nothing here uses floating point or the C library's
 * time zone: a value parsed and formatted again is the same text, exactly.
 *
 * Every parser takes a length and reads nothing past it; none allocates.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "participant/pt_owner.h"

#define SECONDS_PER_DAY 86400
#define DAYS_MIN (-719162) /* 0001-01-01 */
#define DAYS_MAX 2932896   /* 9999-12-31 */

const char *pt_type_name(enum pt_type t)
{
    switch (t) {
    case PT_NULL:
        return "NULL";
    case PT_INT:
        return "INT";
    case PT_DECIMAL:
        return "DECIMAL";
    case PT_TEXT:
        return "TEXT";
    case PT_DATE:
        return "DATE";
    case PT_BOOL:
        return "BOOL";
    case PT_TIMESTAMP:
        return "TIMESTAMP";
    }
    return "?";
}

void pt_column_type(char *buf, size_t cap, const struct pt_column *c)
{
    if (c->type == PT_DECIMAL)
        snprintf(buf, cap, "DECIMAL(%u)", c->scale);
    else
        snprintf(buf, cap, "%s", pt_type_name(c->type));
}

static bool is_alpha(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_digit(int c)
{
    return c >= '0' && c <= '9';
}

bool pt_name_valid(const char *name)
{
    size_t n;

    if (name == NULL || !is_alpha((unsigned char)name[0]))
        return false;
    for (n = 0; name[n] != '\0'; n++) {
        if (n >= PT_NAME_MAX || !(is_alpha((unsigned char)name[n]) || is_digit(name[n])))
            return false;
    }
    return true;
}

/* ------------------------------------------------------------ calendar */

static bool is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned days_in_month(int64_t y, unsigned m)
{
    static const unsigned dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

    if (m == 2 && is_leap(y))
        return 29;
    return dim[m - 1];
}

/* Howard Hinnant's days_from_civil and civil_from_days, as in qr_sql.c. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static int digits(const char *s, size_t n, unsigned *out)
{
    unsigned v = 0;

    for (size_t i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    *out = v;
    return 0;
}

int pt_date_parse(int64_t *days, const char *s, size_t len)
{
    unsigned y, m, d;

    if (len != 10 || s[4] != '-' || s[7] != '-')
        return -1;
    if (digits(s, 4, &y) != 0 || digits(s + 5, 2, &m) != 0 || digits(s + 8, 2, &d) != 0)
        return -1;
    if (y < 1 || m < 1 || m > 12 || d < 1 || d > days_in_month(y, m))
        return -1;
    *days = days_from_civil(y, m, d);
    return 0;
}

int pt_timestamp_parse(int64_t *secs, const char *s, size_t len)
{
    int64_t days;
    unsigned hh, mm, ss;

    if (len == 20 && s[19] == 'Z')
        len = 19;
    if (len != 19 || (s[10] != 'T' && s[10] != ' ') || s[13] != ':' || s[16] != ':')
        return -1;
    if (pt_date_parse(&days, s, 10) != 0)
        return -1;
    if (digits(s + 11, 2, &hh) != 0 || digits(s + 14, 2, &mm) != 0 || digits(s + 17, 2, &ss) != 0)
        return -1;
    if (hh > 23 || mm > 59 || ss > 59)
        return -1;
    *secs = days * SECONDS_PER_DAY + (int64_t)hh * 3600 + (int64_t)mm * 60 + (int64_t)ss;
    return 0;
}

/* v as exactly n decimal digits, zero-padded (v < 10^n). */
static void put_digits(char *out, unsigned v, int n)
{
    for (int k = n - 1; k >= 0; k--) {
        out[k] = (char)('0' + v % 10);
        v /= 10;
    }
}

void pt_date_format(char buf[static PT_DATE_TEXT], int64_t days)
{
    int64_t y;
    unsigned m, d;

    if (days < DAYS_MIN)
        days = DAYS_MIN;
    if (days > DAYS_MAX)
        days = DAYS_MAX;
    civil_from_days(days, &y, &m, &d);
    put_digits(buf, (unsigned)y, 4);
    buf[4] = '-';
    put_digits(buf + 5, m, 2);
    buf[7] = '-';
    put_digits(buf + 8, d, 2);
    buf[10] = '\0';
}

void pt_timestamp_format(char buf[static PT_TIMESTAMP_TEXT], int64_t secs)
{
    const int64_t lo = (int64_t)DAYS_MIN * SECONDS_PER_DAY;
    const int64_t hi = (int64_t)DAYS_MAX * SECONDS_PER_DAY + SECONDS_PER_DAY - 1;
    int64_t days, rem;

    if (secs < lo)
        secs = lo;
    if (secs > hi)
        secs = hi;
    days = secs / SECONDS_PER_DAY;
    rem = secs % SECONDS_PER_DAY;
    if (rem < 0) {
        rem += SECONDS_PER_DAY;
        days--;
    }
    pt_date_format(buf, days);
    buf[10] = 'T';
    put_digits(buf + 11, (unsigned)(rem / 3600), 2);
    buf[13] = ':';
    put_digits(buf + 14, (unsigned)(rem / 60 % 60), 2);
    buf[16] = ':';
    put_digits(buf + 17, (unsigned)(rem % 60), 2);
    buf[19] = 'Z';
    buf[20] = '\0';
}

/* ------------------------------------------------------------- numbers */

/* Accumulate a magnitude in uint64 up to `limit`; -1 past it. */
static int accumulate(uint64_t *acc, int digit, uint64_t limit)
{
    if (*acc > (limit - (uint64_t)digit) / 10)
        return -1;
    *acc = *acc * 10 + (uint64_t)digit;
    return 0;
}

int pt_decimal_parse(int64_t *out, const char *s, size_t len, unsigned scale)
{
    const uint64_t pos_limit = (uint64_t)INT64_MAX;
    uint64_t limit, mag = 0;
    size_t i = 0, int_digits = 0, frac_digits = 0;
    bool neg = false, range = false, excess = false;

    if (scale > PT_SCALE_MAX)
        return PT_NUM_SYNTAX;
    if (i < len && s[i] == '-') {
        neg = true;
        i++;
    }
    limit = neg ? pos_limit + 1 : pos_limit;
    for (; i < len && is_digit(s[i]); i++, int_digits++)
        if (!range && accumulate(&mag, s[i] - '0', limit) != 0)
            range = true;
    if (int_digits == 0)
        return PT_NUM_SYNTAX;
    if (i < len && s[i] == '.') {
        for (i++; i < len && is_digit(s[i]); i++, frac_digits++) {
            if (frac_digits >= scale)
                excess |= s[i] != '0'; /* only zeros may follow the last kept digit */
            else if (!range && accumulate(&mag, s[i] - '0', limit) != 0)
                range = true;
        }
        if (frac_digits == 0)
            return PT_NUM_SYNTAX;
    }
    if (i != len)
        return PT_NUM_SYNTAX;
    if (excess)
        return PT_NUM_DIGITS;
    for (size_t k = frac_digits; k < scale; k++)
        if (!range && accumulate(&mag, 0, limit) != 0)
            range = true;
    if (range)
        return PT_NUM_RANGE;
    if (!neg)
        *out = (int64_t)mag;
    else if (mag == pos_limit + 1)
        *out = INT64_MIN;
    else
        *out = -(int64_t)mag;
    return 0;
}

int pt_int_parse(int64_t *out, const char *s, size_t len)
{
    /* An integer is a DECIMAL(0) written without a point. */
    for (size_t i = 0; i < len; i++)
        if (s[i] == '.')
            return PT_NUM_SYNTAX;
    return pt_decimal_parse(out, s, len, 0);
}

size_t pt_value_format(char *buf, size_t cap, const struct pt_value *v)
{
    char tmp[PT_TIMESTAMP_TEXT];
    int n = 0;

    switch (v->type) {
    case PT_NULL:
        n = snprintf(buf, cap, "%s", "");
        break;
    case PT_INT:
        n = snprintf(buf, cap, "%lld", (long long)v->i);
        break;
    case PT_DECIMAL: {
        /* Exact: the magnitude's digits, a point before the last `scale`. */
        char digs[32];
        uint64_t mag = v->i < 0 ? 0 - (uint64_t)v->i : (uint64_t)v->i;
        unsigned scale = v->scale > PT_SCALE_MAX ? PT_SCALE_MAX : v->scale;
        int nd = snprintf(digs, sizeof digs, "%0*llu", (int)scale + 1, (unsigned long long)mag);
        if (scale == 0)
            n = snprintf(buf, cap, "%s%s", v->i < 0 ? "-" : "", digs);
        else
            n = snprintf(buf, cap, "%s%.*s.%s", v->i < 0 ? "-" : "", nd - (int)scale, digs,
                         digs + nd - (int)scale);
        break;
    }
    case PT_TEXT:
        n = snprintf(buf, cap, "%.*s", (int)(v->len > PT_TEXT_MAX ? PT_TEXT_MAX : v->len), v->s);
        break;
    case PT_DATE:
        pt_date_format(tmp, v->i);
        n = snprintf(buf, cap, "%s", tmp);
        break;
    case PT_BOOL:
        n = snprintf(buf, cap, "%s", v->i ? "true" : "false");
        break;
    case PT_TIMESTAMP:
        pt_timestamp_format(tmp, v->i);
        n = snprintf(buf, cap, "%s", tmp);
        break;
    default:
        n = snprintf(buf, cap, "?");
        break;
    }
    return n < 0 ? 0 : (size_t)n;
}

/* --------------------------------------------------------------- UTF-8 */

bool pt_utf8_valid(const uint8_t *s, size_t len, size_t *bad)
{
    size_t i = 0;

    while (i < len) {
        uint8_t c = s[i];
        size_t need;
        uint32_t cp, min;

        if (c == 0)
            goto fail;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
            cp = c & 0x1f;
            min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            cp = c & 0x0f;
            min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            cp = c & 0x07;
            min = 0x10000;
        } else {
            goto fail;
        }
        if (len - i <= need)
            goto fail;
        for (size_t k = 1; k <= need; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                goto fail;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            goto fail;
        i += need + 1;
    }
    return true;
fail:
    if (bad != NULL)
        *bad = i;
    return false;
}

/* ------------------------------------------------------------- schemas */

int pt_schema_column(const struct pt_schema *s, const char *name, size_t len)
{
    for (size_t i = 0; i < s->n_columns; i++) {
        if (strlen(s->columns[i].name) == len && strncasecmp(s->columns[i].name, name, len) == 0)
            return (int)i;
    }
    return -1;
}

bool pt_schema_equal(const struct pt_schema *a, const struct pt_schema *b)
{
    if (strcmp(a->name, b->name) != 0 || a->n_columns != b->n_columns)
        return false;
    for (size_t i = 0; i < a->n_columns; i++) {
        const struct pt_column *x = &a->columns[i], *y = &b->columns[i];
        if (strcmp(x->name, y->name) != 0 || x->type != y->type || x->scale != y->scale)
            return false;
    }
    return true;
}

void pt_schema_text(char *buf, size_t cap, const struct pt_schema *s)
{
    size_t n = 0;

    if (cap == 0)
        return;
    buf[0] = '\0';
    for (size_t i = 0; i < s->n_columns && n < cap; i++) {
        const struct pt_column *c = &s->columns[i];
        int k;
        if (c->type == PT_DECIMAL)
            k = snprintf(buf + n, cap - n, "%s%s decimal(%u)", i ? ", " : "", c->name, c->scale);
        else
            k = snprintf(buf + n, cap - n, "%s%s %s", i ? ", " : "", c->name,
                         c->type == PT_INT         ? "int"
                         : c->type == PT_TEXT      ? "text"
                         : c->type == PT_DATE      ? "date"
                         : c->type == PT_BOOL      ? "bool"
                         : c->type == PT_TIMESTAMP ? "timestamp"
                                                   : "?");
        if (k < 0)
            break;
        n += (size_t)k;
    }
}

static const struct {
    const char *name;
    enum pt_type type;
} type_names[] = {
    {"int", PT_INT},      {"integer", PT_INT},     {"bigint", PT_INT},          {"int64", PT_INT},
    {"text", PT_TEXT},    {"date", PT_DATE},       {"timestamp", PT_TIMESTAMP}, {"bool", PT_BOOL},
    {"boolean", PT_BOOL}, {"decimal", PT_DECIMAL}, {"numeric", PT_DECIMAL},
};

static void skip_space(const char **p)
{
    while (**p == ' ' || **p == '\t' || **p == '\n' || **p == '\r')
        (*p)++;
}

/* A word of letters, digits and '_' (which may be too long: the caller checks). */
static size_t word(const char *p)
{
    size_t n = 0;
    while (is_alpha((unsigned char)p[n]) || is_digit(p[n]))
        n++;
    return n;
}

static int schema_fail(char *err, size_t err_len, size_t col, const char *what, size_t n,
                       const char *s)
{
    if (col)
        snprintf(err, err_len, "column %zu: %s '%.*s'", col, what, (int)(n > 40 ? 40 : n), s);
    else
        snprintf(err, err_len, "%s '%.*s'", what, (int)(n > 40 ? 40 : n), s);
    return PT_ERR_INPUT;
}

int pt_schema_parse(struct pt_schema *out, const char *table, const char *text, char *err,
                    size_t err_len)
{
    struct pt_schema s;
    const char *p = text;

    memset(&s, 0, sizeof s);
    if (table == NULL || !pt_name_valid(table))
        return schema_fail(err, err_len, 0, "invalid table name (letters, digits, _; at most 32)",
                           table ? strlen(table) : 0, table ? table : "");
    if (text == NULL || strlen(text) > PT_SCHEMA_TEXT_MAX) {
        snprintf(err, err_len, "a schema is at most %u bytes of text", PT_SCHEMA_TEXT_MAX);
        return PT_ERR_INPUT;
    }
    snprintf(s.name, sizeof s.name, "%s", table);
    for (;;) {
        struct pt_column *c;
        size_t n, col = s.n_columns + 1, t;

        skip_space(&p);
        n = word(p);
        if (n == 0)
            return schema_fail(err, err_len, col, "expected a column name, found",
                               strlen(p) ? 1 : 0, p);
        if (s.n_columns == PT_COLUMNS_MAX) {
            snprintf(err, err_len, "a table has at most %u columns", PT_COLUMNS_MAX);
            return PT_ERR_INPUT;
        }
        c = &s.columns[s.n_columns];
        if (n > PT_NAME_MAX || is_digit(p[0]))
            return schema_fail(err, err_len, col, "invalid column name", n, p);
        memcpy(c->name, p, n);
        c->name[n] = '\0';
        if (pt_schema_column(&s, c->name, n) >= 0)
            return schema_fail(err, err_len, col, "a second column named", n, p);
        p += n;
        skip_space(&p);
        n = word(p);
        for (t = 0; t < sizeof type_names / sizeof type_names[0]; t++)
            if (strlen(type_names[t].name) == n && strncasecmp(type_names[t].name, p, n) == 0)
                break;
        if (n == 0 || t == sizeof type_names / sizeof type_names[0])
            return schema_fail(err, err_len, col,
                               "unknown type (int, decimal(s), text, date, timestamp, bool):", n,
                               p);
        c->type = type_names[t].type;
        p += n;
        skip_space(&p);
        if (c->type == PT_DECIMAL) {
            unsigned scale;
            if (*p != '(')
                return schema_fail(err, err_len, col,
                                   "decimal needs its scale, as in decimal(2):", strlen(c->name),
                                   c->name);
            p++;
            skip_space(&p);
            n = 0;
            while (is_digit(p[n]))
                n++;
            if (n == 0 || n > 2 || digits(p, n, &scale) != 0 || scale > PT_SCALE_MAX)
                return schema_fail(err, err_len, col, "a decimal's scale is 0 to 18, not",
                                   n ? n : 1, p);
            c->scale = scale;
            p += n;
            skip_space(&p);
            if (*p != ')')
                return schema_fail(err, err_len, col, "expected ')' after the scale, found", 1, p);
            p++;
            skip_space(&p);
        }
        s.n_columns++;
        if (*p == '\0')
            break;
        if (*p != ',')
            return schema_fail(err, err_len, col, "expected ',' between columns, found", 1, p);
        p++;
    }
    *out = s;
    return 0;
}
