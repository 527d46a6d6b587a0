/*
 * Importing the owner's data files: CSV (RFC 4180) and JSON Lines, into
 * typed rows of a table schema. pt_import.h states the formats exactly.
 *
 * The file is hostile until checked: it may be of any size, hold any bytes,
 * quote anything, nest anything. The parser reads it once from start to
 * end with an index that only moves forward, each step bounded by the
 * file's length, and it keeps nothing of it but the current field: a line
 * is at most PT_IMPORT_LINE_MAX bytes, so one buffer of that size holds any
 * field's decoded bytes. It allocates that buffer and nothing else.
 *
 * Every error names the place (file, line, column) and says what was
 * wrong, quoting the bad value with its control bytes escaped, and the
 * parse stops at the first one: a file is taken whole or not at all.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "participant/pt_import.h"
#include "participant/pt_json.h"

/* Where a value came from: it decides NULLs and which JSON kinds fit. */
enum src {
    SRC_CSV,        /* an unquoted CSV field */
    SRC_CSV_QUOTED, /* a quoted CSV field */
    SRC_JSON_STRING,
    SRC_JSON_NUMBER,
    SRC_JSON_TRUE,
    SRC_JSON_FALSE,
    SRC_JSON_NULL,
};

struct parser {
    const uint8_t *p;
    size_t len;
    size_t pos;
    uint64_t line; /* of pos, 1-based */
    const struct pt_schema *schema;
    const char *file;
    struct pt_import_error *err;
    pt_import_row_fn fn;
    void *ctx;
    uint64_t rows;
    char *buf; /* a field's decoded bytes: PT_IMPORT_LINE_MAX + 1 */
    struct pt_value row[PT_COLUMNS_MAX];
    bool seen[PT_COLUMNS_MAX];
    size_t n_fields;         /* CSV: fields of the header */
    int map[PT_COLUMNS_MAX]; /* CSV: header field -> schema column */
    size_t line_start;       /* JSON: offset of the current line */
};

/* ------------------------------------------------------------- errors */

/* A value for a message: quoted, cut, control and invalid bytes escaped. */
static void show(char *out, size_t cap, const char *s, size_t n)
{
    size_t k = 0, i;
    bool utf8 = pt_utf8_valid((const uint8_t *)s, n, NULL);

    if (cap < 8)
        return;
    out[k++] = '\'';
    for (i = 0; i < n && i < PT_IMPORT_SHOW_MAX && k + 6 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f || (c >= 0x80 && !utf8))
            k += (size_t)snprintf(out + k, cap - k, "\\x%02x", c);
        else
            out[k++] = (char)c;
    }
    if (i < n && k + 4 < cap) {
        /* Cut at a character boundary, then say so. */
        while (utf8 && k > 1 && ((unsigned char)out[k - 1] & 0xc0) == 0x80)
            k--;
        if (utf8 && k > 1 && (unsigned char)out[k - 1] >= 0xc0)
            k--;
        memcpy(out + k, "...", 3);
        k += 3;
    }
    out[k++] = '\'';
    out[k] = '\0';
}

/*
 * Record the error: column is 1-based (0: none), name may be NULL (then
 * "field N"). Returns PT_ERR_INPUT for the caller to pass up.
 */
static int fail(struct parser *pc, enum pt_import_kind kind, uint64_t line, unsigned column,
                const char *name, size_t name_len, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

static int fail(struct parser *pc, enum pt_import_kind kind, uint64_t line, unsigned column,
                const char *name, size_t name_len, const char *fmt, ...)
{
    struct pt_import_error *e = pc->err;
    char where[160], shown[PT_IMPORT_SHOW_MAX * 4 + 8];
    va_list ap;
    int cut;

    if (e == NULL)
        return PT_ERR_INPUT;
    memset(e, 0, sizeof *e);
    e->kind = kind;
    e->line = line;
    e->column = column;
    va_start(ap, fmt);
    vsnprintf(e->what, sizeof e->what, fmt, ap);
    va_end(ap);
    if (line)
        snprintf(where, sizeof where, "%.128s:%llu", pc->file, (unsigned long long)line);
    else
        snprintf(where, sizeof where, "%.128s", pc->file);
    /* A message too long for msg is cut; the parts above are bounded anyway. */
    if (column && name != NULL) {
        size_t n = name_len > PT_NAME_MAX ? PT_NAME_MAX : name_len;
        if (pt_utf8_valid((const uint8_t *)name, n, NULL)) {
            memcpy(e->column_name, name, n);
            e->column_name[n] = '\0';
        }
        show(shown, sizeof shown, name, name_len);
        cut = snprintf(e->msg, sizeof e->msg, "%s: column %s (%u): %s", where, shown, column,
                       e->what);
    } else if (column) {
        cut = snprintf(e->msg, sizeof e->msg, "%s: field %u: %s", where, column, e->what);
    } else {
        cut = snprintf(e->msg, sizeof e->msg, "%s: %s", where, e->what);
    }
    (void)cut;
    return PT_ERR_INPUT;
}

/* --------------------------------------------------------------- values */

static const char *type_words(const struct pt_column *c, char *buf, size_t cap)
{
    switch (c->type) {
    case PT_INT:
        return "an integer";
    case PT_DECIMAL:
        snprintf(buf, cap, "a DECIMAL(%u) number", c->scale);
        return buf;
    case PT_DATE:
        return "a date (YYYY-MM-DD)";
    case PT_TIMESTAMP:
        return "a timestamp (YYYY-MM-DDTHH:MM:SSZ, UTC)";
    case PT_BOOL:
        return "a bool (true, false, 1 or 0)";
    default:
        return "text";
    }
}

static const char *src_words(enum src src)
{
    switch (src) {
    case SRC_JSON_NUMBER:
        return "a number";
    case SRC_JSON_TRUE:
    case SRC_JSON_FALSE:
        return "a JSON bool";
    default:
        return "a string";
    }
}

/*
 * Convert one field (s, n) from src into column col of the row. field is
 * the 1-based position used in messages, line the field's line.
 */
static int convert(struct parser *pc, int col, unsigned field, uint64_t line, const char *s,
                   size_t n, enum src src)
{
    const struct pt_column *c = &pc->schema->columns[col];
    struct pt_value *v = &pc->row[col];
    char shown[PT_IMPORT_SHOW_MAX * 4 + 8], words[48];
    size_t bad;
    int rc;

#define FAIL(kind, ...) fail(pc, kind, line, field, c->name, strlen(c->name), __VA_ARGS__)
    memset(v, 0, offsetof(struct pt_value, s));
    v->s[0] = '\0';
    if (src == SRC_JSON_NULL || (src == SRC_CSV && n == 0) ||
        (src == SRC_CSV_QUOTED && n == 0 && c->type != PT_TEXT)) {
        v->type = PT_NULL;
        return 0;
    }
    if ((src == SRC_CSV || src == SRC_CSV_QUOTED || src == SRC_JSON_STRING) &&
        !pt_utf8_valid((const uint8_t *)s, n, &bad))
        return FAIL(PT_IMPORT_UTF8, "%s at byte %zu of the value is not UTF-8",
                    s[bad] == 0 ? "a NUL byte" : "the byte", bad + 1);
    show(shown, sizeof shown, s, n);
    if (((src == SRC_JSON_TRUE || src == SRC_JSON_FALSE) && c->type != PT_BOOL) ||
        (src == SRC_JSON_NUMBER && (c->type == PT_DATE || c->type == PT_TIMESTAMP)))
        return FAIL(PT_IMPORT_TYPE, "%s %s is not %s", src_words(src), shown,
                    type_words(c, words, sizeof words));
    v->type = c->type;
    switch (c->type) {
    case PT_INT:
        rc = pt_int_parse(&v->i, s, n);
        if (rc == PT_NUM_RANGE)
            return FAIL(PT_IMPORT_TYPE, "%s is out of the INT range", shown);
        if (rc != 0)
            return FAIL(PT_IMPORT_TYPE, "%s is not an integer", shown);
        return 0;
    case PT_DECIMAL:
        v->scale = c->scale;
        rc = pt_decimal_parse(&v->i, s, n, c->scale);
        if (rc == PT_NUM_RANGE)
            return FAIL(PT_IMPORT_TYPE, "%s is out of the DECIMAL(%u) range", shown, c->scale);
        if (rc == PT_NUM_DIGITS)
            return FAIL(PT_IMPORT_TYPE, "%s has more decimals than DECIMAL(%u) keeps", shown,
                        c->scale);
        if (rc != 0)
            return FAIL(PT_IMPORT_TYPE, "%s is not %s", shown, type_words(c, words, sizeof words));
        return 0;
    case PT_TEXT:
        if (src == SRC_JSON_NUMBER)
            return FAIL(PT_IMPORT_TYPE, "a number %s is not text (write it as a string)", shown);
        if (n > PT_TEXT_MAX)
            return FAIL(PT_IMPORT_TOO_LONG, "a text of %zu bytes: a text value holds at most %u", n,
                        PT_TEXT_MAX);
        memcpy(v->s, s, n);
        v->s[n] = '\0';
        v->len = n;
        return 0;
    case PT_DATE:
        if (pt_date_parse(&v->i, s, n) != 0)
            return FAIL(PT_IMPORT_TYPE, "%s is not %s", shown, type_words(c, words, sizeof words));
        return 0;
    case PT_TIMESTAMP:
        if (pt_timestamp_parse(&v->i, s, n) != 0)
            return FAIL(PT_IMPORT_TYPE, "%s is not %s", shown, type_words(c, words, sizeof words));
        return 0;
    case PT_BOOL:
        if (src == SRC_JSON_TRUE || src == SRC_JSON_FALSE) {
            v->i = src == SRC_JSON_TRUE;
            return 0;
        }
        if ((n == 4 && strncasecmp(s, "true", 4) == 0) || (n == 1 && s[0] == '1'))
            v->i = 1;
        else if ((n == 5 && strncasecmp(s, "false", 5) == 0) || (n == 1 && s[0] == '0'))
            v->i = 0;
        else
            return FAIL(PT_IMPORT_TYPE, "%s is not %s", shown, type_words(c, words, sizeof words));
        return 0;
    default:
        abort(); /* pt_schema never holds another type */
    }
#undef FAIL
}

static int emit_row(struct parser *pc, uint64_t line)
{
    if (pc->rows == PT_IMPORT_ROWS_MAX)
        return fail(pc, PT_IMPORT_TOO_LONG, line, 0, NULL, 0, "more than %u rows in one file",
                    PT_IMPORT_ROWS_MAX);
    pc->rows++;
    return pc->fn != NULL ? pc->fn(pc->ctx, pc->row) : 0;
}

/* ------------------------------------------------------------------ CSV */

enum field_end { END_COMMA, END_LINE, END_FILE };

/* At pos: a line break (LF or CRLF)? Its length, or 0. */
static size_t line_break(const struct parser *pc, size_t pos)
{
    if (pos < pc->len && pc->p[pos] == '\n')
        return 1;
    if (pos + 1 < pc->len && pc->p[pos] == '\r' && pc->p[pos + 1] == '\n')
        return 2;
    return 0;
}

/*
 * Read one field at pc->pos of the record that began at rec_start. For
 * messages, col is the field's schema column (-1: unknown) and field its
 * 1-based position. On return *s and *n are its bytes (in the input, or in
 * pc->buf if it was quoted), and pc->pos is past its terminator.
 */
static int csv_field(struct parser *pc, size_t rec_start, uint64_t rec_line, int col,
                     unsigned field, const char **s, size_t *n, bool *quoted, enum field_end *end)
{
    const char *name = col >= 0 ? pc->schema->columns[col].name : NULL;
    size_t name_len = name ? strlen(name) : 0, i = pc->pos, k = 0, brk;
    uint64_t start_line = pc->line;

#define TOO_LONG()                                                                                 \
    fail(pc, PT_IMPORT_TOO_LONG, rec_line, 0, NULL, 0, "the line is longer than %u bytes",         \
         PT_IMPORT_LINE_MAX)
    *quoted = i < pc->len && pc->p[i] == '"';
    if (!*quoted) {
        while (i < pc->len && pc->p[i] != ',' && line_break(pc, i) == 0) {
            if (i - rec_start >= PT_IMPORT_LINE_MAX)
                return TOO_LONG();
            if (pc->p[i] == '"')
                return fail(pc, PT_IMPORT_QUOTING, start_line, field, name, name_len,
                            "a quote inside an unquoted field (quote the whole field, and double "
                            "each quote in it)");
            i++;
        }
        *s = (const char *)pc->p + pc->pos;
        *n = i - pc->pos;
    } else {
        for (i++;; i++) {
            if (i - rec_start >= PT_IMPORT_LINE_MAX)
                return TOO_LONG();
            if (i >= pc->len)
                return fail(pc, PT_IMPORT_QUOTING, start_line, field, name, name_len,
                            "a quoted field that never ends (a missing closing quote)");
            if (pc->p[i] == '"') {
                if (i + 1 < pc->len && pc->p[i + 1] == '"') {
                    pc->buf[k++] = '"';
                    i++;
                    continue;
                }
                i++;
                break;
            }
            if (pc->p[i] == '\n')
                pc->line++;
            pc->buf[k++] = (char)pc->p[i];
        }
        if (i < pc->len && pc->p[i] != ',' && line_break(pc, i) == 0) {
            char shown[16];
            show(shown, sizeof shown, (const char *)pc->p + i, 1);
            return fail(pc, PT_IMPORT_QUOTING, pc->line, field, name, name_len,
                        "%s after the closing quote (a field ends at its closing quote)", shown);
        }
        pc->buf[k] = '\0';
        *s = pc->buf;
        *n = k;
    }
    if (i >= pc->len) {
        *end = END_FILE;
    } else if (pc->p[i] == ',') {
        *end = END_COMMA;
        i++;
    } else {
        brk = line_break(pc, i);
        *end = END_LINE;
        i += brk;
        pc->line++;
    }
    pc->pos = i;
    return 0;
#undef TOO_LONG
}

/* The header: every field a distinct column of the table, every column there. */
static int csv_header(struct parser *pc)
{
    size_t rec_start = pc->pos;
    uint64_t rec_line = pc->line;
    enum field_end end = END_COMMA;
    bool quoted;
    int rc;

    for (unsigned field = 1; end == END_COMMA; field++) {
        const char *s;
        size_t n, bad;
        int col;

        if ((rc = csv_field(pc, rec_start, rec_line, -1, field, &s, &n, &quoted, &end)) != 0)
            return rc;
        while (n > 0 && (s[0] == ' ' || s[0] == '\t')) {
            s++;
            n--;
        }
        while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
            n--;
        if (!pt_utf8_valid((const uint8_t *)s, n, &bad))
            return fail(pc, PT_IMPORT_UTF8, rec_line, field, NULL, 0,
                        "the column name is not UTF-8 (byte %zu)", bad + 1);
        col = pt_schema_column(pc->schema, s, n);
        if (col < 0)
            return fail(pc, PT_IMPORT_EXTRA, rec_line, field, s, n, "table %s has no such column",
                        pc->schema->name);
        if (pc->seen[col])
            return fail(pc, PT_IMPORT_EXTRA, rec_line, field, s, n,
                        "the header names this column twice");
        pc->seen[col] = true;
        pc->map[pc->n_fields++] = col;
    }
    for (size_t c = 0; c < pc->schema->n_columns; c++) {
        const char *name = pc->schema->columns[c].name;
        if (!pc->seen[c])
            return fail(pc, PT_IMPORT_MISSING, rec_line, (unsigned)c + 1, name, strlen(name),
                        "the header lacks this column of table %s", pc->schema->name);
    }
    return 0;
}

static int csv_record(struct parser *pc)
{
    size_t rec_start = pc->pos;
    uint64_t rec_line = pc->line;
    enum field_end end = END_COMMA;
    size_t field = 0;
    bool quoted;
    int rc;

    for (; end == END_COMMA; field++) {
        const char *s;
        size_t n;
        uint64_t line = pc->line;

        if (field >= pc->n_fields) {
            /* Read the extra field only to bound it; it is an error anyway. */
            if ((rc = csv_field(pc, rec_start, rec_line, -1, (unsigned)field + 1, &s, &n, &quoted,
                                &end)) != 0)
                return rc;
            return fail(pc, PT_IMPORT_EXTRA, line, (unsigned)field + 1, NULL, 0,
                        "the line has more fields than the header's %zu", pc->n_fields);
        }
        if ((rc = csv_field(pc, rec_start, rec_line, pc->map[field], (unsigned)field + 1, &s, &n,
                            &quoted, &end)) != 0)
            return rc;
        if ((rc = convert(pc, pc->map[field], (unsigned)field + 1, line, s, n,
                          quoted ? SRC_CSV_QUOTED : SRC_CSV)) != 0)
            return rc;
    }
    if (field < pc->n_fields) {
        const char *name = pc->schema->columns[pc->map[field]].name;
        return fail(pc, PT_IMPORT_MISSING, rec_line, (unsigned)field + 1, name, strlen(name),
                    "missing: the line has %zu field%s, the header %zu", field,
                    field == 1 ? "" : "s", pc->n_fields);
    }
    return emit_row(pc, rec_line);
}

/* Skip blank lines; true if a record follows. */
static bool csv_next(struct parser *pc)
{
    size_t brk;

    while ((brk = line_break(pc, pc->pos)) != 0) {
        pc->pos += brk;
        pc->line++;
    }
    return pc->pos < pc->len;
}

static int parse_csv(struct parser *pc)
{
    int rc;

    if (!csv_next(pc))
        return fail(pc, PT_IMPORT_EMPTY, 0, 0, NULL, 0, "the file is empty");
    if ((rc = csv_header(pc)) != 0)
        return rc;
    while (csv_next(pc))
        if ((rc = csv_record(pc)) != 0)
            return rc;
    return 0;
}

/* ---------------------------------------------------------- JSON Lines */

struct jline {
    size_t start, end; /* the line's bytes, without its line break */
    size_t i;
};

static int json_fail(struct parser *pc, const struct jline *l, const char *what)
{
    char shown[16];

    if (l->i >= l->end)
        return fail(pc, PT_IMPORT_JSON, pc->line, 0, NULL, 0,
                    "malformed JSON at character %zu: %s, found the end of the line",
                    l->i - l->start + 1, what);
    show(shown, sizeof shown, (const char *)pc->p + l->i, 1);
    return fail(pc, PT_IMPORT_JSON, pc->line, 0, NULL, 0,
                "malformed JSON at character %zu: %s, found %s", l->i - l->start + 1, what, shown);
}

static void json_space(const struct parser *pc, struct jline *l)
{
    while (l->i < l->end && (pc->p[l->i] == ' ' || pc->p[l->i] == '\t'))
        l->i++;
}

/*
 * A JSON string at l->i (its opening quote), decoded into pc->buf. Raw
 * bytes are copied as they are (the caller checks UTF-8); escapes become
 * UTF-8. The decoded text is never longer than the line, so it fits.
 */
static int json_string(struct parser *pc, struct jline *l, size_t *n)
{
    size_t k = 0;

    l->i++;
    for (;;) {
        uint8_t c;
        if (l->i >= l->end)
            return json_fail(pc, l, "expected the closing quote of a string");
        c = pc->p[l->i];
        if (c == '"') {
            l->i++;
            break;
        }
        if (c < 0x20)
            return json_fail(pc, l, "a control character in a string must be escaped");
        if (c != '\\') {
            pc->buf[k++] = (char)c;
            l->i++;
            continue;
        }
        if (l->i + 1 >= l->end)
            return json_fail(pc, l, "expected an escape after '\\'");
        c = pc->p[l->i + 1];
        l->i += 2;
        switch (c) {
        case '"':
        case '\\':
        case '/':
            pc->buf[k++] = (char)c;
            break;
        case 'b':
            pc->buf[k++] = '\b';
            break;
        case 'f':
            pc->buf[k++] = '\f';
            break;
        case 'n':
            pc->buf[k++] = '\n';
            break;
        case 'r':
            pc->buf[k++] = '\r';
            break;
        case 't':
            pc->buf[k++] = '\t';
            break;
        case 'u': {
            uint32_t cp;
            size_t used;
            int e = pt_json_u_escape(pc->p + l->i, l->end - l->i, &cp, &used);
            if (e == PT_JSON_U_DIGITS)
                return json_fail(pc, l, "expected four hex digits after '\\u'");
            if (e != 0) {
                l->i += 4; /* the message points past the first escape's digits */
                return json_fail(pc, l,
                                 e == PT_JSON_U_LOW ? "a low surrogate without its high one"
                                                    : "a high surrogate without its low one");
            }
            l->i += used;
            /* \u0000 is decoded; the UTF-8 check refuses it as a NUL. */
            k += pt_json_put_utf8(pc->buf + k, cp);
            break;
        }
        default:
            l->i--;
            return json_fail(pc, l, "an unknown escape");
        }
    }
    pc->buf[k] = '\0';
    *n = k;
    return 0;
}

static bool is_json_digit(uint8_t c)
{
    return c >= '0' && c <= '9';
}

/* A JSON number at l->i, by the grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static int json_number(struct parser *pc, struct jline *l, size_t *start, size_t *n)
{
    size_t i = l->i;
    const uint8_t *p = pc->p;

    *start = i;
    if (i < l->end && p[i] == '-')
        i++;
    if (i < l->end && p[i] == '0') {
        i++;
    } else if (i < l->end && p[i] >= '1' && p[i] <= '9') {
        while (i < l->end && is_json_digit(p[i]))
            i++;
    } else {
        l->i = i;
        return json_fail(pc, l, "expected a digit");
    }
    if (i < l->end && p[i] == '.') {
        i++;
        if (i >= l->end || !is_json_digit(p[i])) {
            l->i = i;
            return json_fail(pc, l, "expected a digit after the decimal point");
        }
        while (i < l->end && is_json_digit(p[i]))
            i++;
    }
    if (i < l->end && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        if (i < l->end && (p[i] == '+' || p[i] == '-'))
            i++;
        if (i >= l->end || !is_json_digit(p[i])) {
            l->i = i;
            return json_fail(pc, l, "expected a digit in the exponent");
        }
        while (i < l->end && is_json_digit(p[i]))
            i++;
    }
    *n = i - *start;
    l->i = i;
    return 0;
}

static bool literal(const struct parser *pc, const struct jline *l, const char *word)
{
    size_t n = strlen(word);
    return l->end - l->i >= n && memcmp(pc->p + l->i, word, n) == 0;
}

/* One object: every key a column, every column a key, once each. */
static int json_object(struct parser *pc, struct jline *l)
{
    unsigned member = 0;
    int rc;

    memset(pc->seen, 0, sizeof pc->seen);
    if (l->i >= l->end || pc->p[l->i] != '{') {
        if (l->i < l->end && pc->p[l->i] == '[')
            return json_fail(pc, l,
                             "expected an object '{' (each line is one object, not an "
                             "array)");
        return json_fail(pc, l, "expected an object '{'");
    }
    l->i++;
    json_space(pc, l);
    if (l->i < l->end && pc->p[l->i] == '}') {
        l->i++;
    } else {
        for (;;) {
            char key[PT_NAME_MAX + 1];
            size_t n, key_len, bad, vstart = 0, vlen = 0;
            enum src src;
            int col;

            member++;
            if (l->i >= l->end || pc->p[l->i] != '"')
                return json_fail(pc, l, "expected a key in quotes");
            if ((rc = json_string(pc, l, &n)) != 0)
                return rc;
            if (!pt_utf8_valid((const uint8_t *)pc->buf, n, &bad))
                return fail(pc, PT_IMPORT_UTF8, pc->line, member, NULL, 0,
                            "the key is not UTF-8 (byte %zu)", bad + 1);
            col = pt_schema_column(pc->schema, pc->buf, n);
            if (col < 0)
                return fail(pc, PT_IMPORT_EXTRA, pc->line, member, pc->buf, n,
                            "table %s has no such column", pc->schema->name);
            key_len = n;
            memcpy(key, pc->buf, key_len);
            key[key_len] = '\0';
            if (pc->seen[col])
                return fail(pc, PT_IMPORT_JSON, pc->line, member, key, key_len,
                            "the object has this key twice");
            pc->seen[col] = true;
            json_space(pc, l);
            if (l->i >= l->end || pc->p[l->i] != ':')
                return json_fail(pc, l, "expected ':' after a key");
            l->i++;
            json_space(pc, l);
            if (l->i >= l->end)
                return json_fail(pc, l, "expected a value");
            switch (pc->p[l->i]) {
            case '"':
                if ((rc = json_string(pc, l, &vlen)) != 0)
                    return rc;
                src = SRC_JSON_STRING;
                break;
            case '{':
            case '[':
                return fail(pc, PT_IMPORT_TYPE, pc->line, member, key, key_len,
                            "a nested %s is not a value (each line is one flat object)",
                            pc->p[l->i] == '{' ? "object" : "array");
            case 't':
            case 'f':
            case 'n': {
                const char *w = pc->p[l->i] == 't' ? "true" : pc->p[l->i] == 'f' ? "false" : "null";
                if (!literal(pc, l, w))
                    return json_fail(pc, l, "expected a value");
                l->i += strlen(w);
                src = w[0] == 't' ? SRC_JSON_TRUE : w[0] == 'f' ? SRC_JSON_FALSE : SRC_JSON_NULL;
                memcpy(pc->buf, w, strlen(w) + 1);
                vlen = strlen(w);
                break;
            }
            default:
                if ((rc = json_number(pc, l, &vstart, &vlen)) != 0)
                    return rc;
                memcpy(pc->buf, pc->p + vstart, vlen);
                pc->buf[vlen] = '\0';
                src = SRC_JSON_NUMBER;
                break;
            }
            if ((rc = convert(pc, col, member, pc->line, pc->buf, vlen, src)) != 0)
                return rc;
            json_space(pc, l);
            if (l->i < l->end && pc->p[l->i] == ',') {
                l->i++;
                json_space(pc, l);
                continue;
            }
            if (l->i < l->end && pc->p[l->i] == '}') {
                l->i++;
                break;
            }
            return json_fail(pc, l, "expected ',' or '}' after a value");
        }
    }
    json_space(pc, l);
    if (l->i != l->end)
        return json_fail(pc, l, "expected the end of the line after the object");
    for (size_t c = 0; c < pc->schema->n_columns; c++) {
        const char *name = pc->schema->columns[c].name;
        if (!pc->seen[c])
            return fail(pc, PT_IMPORT_MISSING, pc->line, (unsigned)c + 1, name, strlen(name),
                        "missing: the object has no key '%s' (write null for no value)", name);
    }
    return emit_row(pc, pc->line);
}

static int parse_jsonl(struct parser *pc)
{
    bool any = false;
    int rc;

    while (pc->pos < pc->len) {
        struct jline l;
        const uint8_t *nl = memchr(pc->p + pc->pos, '\n', pc->len - pc->pos);
        size_t next = nl ? (size_t)(nl - pc->p) + 1 : pc->len;

        l.start = pc->pos;
        l.end = nl ? (size_t)(nl - pc->p) : pc->len;
        if (l.end - l.start > PT_IMPORT_LINE_MAX)
            return fail(pc, PT_IMPORT_TOO_LONG, pc->line, 0, NULL, 0,
                        "the line is longer than %u bytes", PT_IMPORT_LINE_MAX);
        if (l.end > l.start && pc->p[l.end - 1] == '\r')
            l.end--;
        l.i = l.start;
        json_space(pc, &l);
        if (l.i < l.end) {
            any = true;
            if ((rc = json_object(pc, &l)) != 0)
                return rc;
        }
        pc->pos = next;
        pc->line++;
    }
    if (!any)
        return fail(pc, PT_IMPORT_EMPTY, 0, 0, NULL, 0, "the file is empty");
    return 0;
}

/* ------------------------------------------------------------ entry points */

int pt_import_parse(const uint8_t *data, size_t len, enum pt_format fmt,
                    const struct pt_schema *schema, const char *file, pt_import_row_fn fn,
                    void *ctx, uint64_t *rows, struct pt_import_error *err)
{
    struct parser *pc;
    int rc;

    if (err != NULL)
        memset(err, 0, sizeof *err);
    if (schema == NULL || schema->n_columns == 0 || schema->n_columns > PT_COLUMNS_MAX ||
        (data == NULL && len > 0))
        return PT_ERR_INPUT;
    pc = calloc(1, sizeof *pc);
    if (pc == NULL)
        return PT_ERR_NOMEM;
    pc->buf = malloc(PT_IMPORT_LINE_MAX + 1);
    if (pc->buf == NULL) {
        free(pc);
        return PT_ERR_NOMEM;
    }
    pc->p = data;
    pc->len = len;
    pc->line = 1;
    pc->schema = schema;
    pc->file = file != NULL ? file : "(input)";
    pc->err = err;
    pc->fn = fn;
    pc->ctx = ctx;
    if (len > PT_IMPORT_FILE_MAX) {
        rc = fail(pc, PT_IMPORT_TOO_LONG, 0, 0, NULL, 0, "the file is larger than %u MiB",
                  PT_IMPORT_FILE_MAX >> 20);
        goto out;
    }
    if (len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0)
        pc->pos = 3; /* a UTF-8 byte order mark */
    if (fmt == PT_FORMAT_CSV)
        rc = parse_csv(pc);
    else if (fmt == PT_FORMAT_JSONL)
        rc = parse_jsonl(pc);
    else
        rc = PT_ERR_INPUT;
    if (rc == 0 && pc->rows == 0)
        rc = fail(pc, PT_IMPORT_EMPTY, 0, 0, NULL, 0, "the file has no rows, only a header");
    if (rc == 0 && rows != NULL)
        *rows = pc->rows;
out:
    free(pc->buf);
    free(pc);
    return rc;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcasecmp(s + n - k, suffix) == 0;
}

enum pt_format pt_import_format_guess(const char *file, const uint8_t *data, size_t len)
{
    size_t i = 0;

    if (file != NULL) {
        if (ends_with(file, ".csv"))
            return PT_FORMAT_CSV;
        if (ends_with(file, ".jsonl") || ends_with(file, ".ndjson") || ends_with(file, ".json"))
            return PT_FORMAT_JSONL;
    }
    if (len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0)
        i = 3;
    while (i < len && (data[i] == ' ' || data[i] == '\t' || data[i] == '\r' || data[i] == '\n'))
        i++;
    return i < len && data[i] == '{' ? PT_FORMAT_JSONL : PT_FORMAT_CSV;
}

static int load_row(void *ctx, const struct pt_value *values)
{
    return pt_load_row(ctx, values);
}

int pt_import_load(struct pt_owner *o, const uint8_t *data, size_t len, enum pt_format fmt,
                   const struct pt_schema *schema, const char *file, size_t request_max,
                   uint64_t *rows, struct pt_import_error *err)
{
    uint64_t n = 0, stored = 0;
    int rc;

    /* First the whole file is checked, and nothing is sent. */
    if ((rc = pt_import_parse(data, len, fmt, schema, file, NULL, NULL, &n, err)) != 0)
        return rc;
    for (;;) {
        struct pt_load *l = NULL;
        if ((rc = pt_load_begin(&l, o, schema, request_max)) != 0)
            return rc;
        rc = pt_import_parse(data, len, fmt, schema, file, load_row, l, &n, err);
        if (rc == 0)
            rc = pt_load_commit(l, &stored);
        pt_load_free(l);
        if (rc == PT_ERR_TOKEN &&
            (o->token_status == TK_ERR_NO_MEMORY || o->token_status == TK_ERR_TOO_LARGE) &&
            request_max / 2 >= PT_LOAD_REQUEST_MIN) {
            request_max /= 2; /* the token dropped the batch: send it again, smaller */
            continue;
        }
        if (rc == 0 && rows != NULL)
            *rows = stored;
        return rc;
    }
}
