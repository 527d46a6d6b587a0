/*
 * The SQL reader: a lexer and a recursive-descent parser for Cohort's SQL
 * subset (DESIGN.md section 4), producing the syntax tree of qr_sql.h.
 *
 * The grammar, keywords case-insensitive:
 *
 *   query     := SELECT item {, item} FROM table
 *                [WHERE cond] [GROUP BY column {, column}] [HAVING cond]
 *                [ORDER BY key [ASC|DESC] {, key [ASC|DESC]}] [LIMIT n]
 *                [SIZE n] [DEADLINE n] [WITH ( name = value {, ...} )] [;]
 *   item      := (column | aggregate) [[AS] alias]
 *   aggregate := COUNT(*) | COUNT(DISTINCT participant)
 *              | (COUNT | SUM | AVG | MIN | MAX) ( column )
 *   cond      := conj {OR conj};  conj := neg {AND neg};  neg := NOT neg | pred
 *   pred      := ( cond ) | operand [ cmp operand | [NOT] BETWEEN operand AND operand
 *              | [NOT] IN ( constant {, constant} ) | [NOT] LIKE 'prefix%'
 *              | IS [NOT] NULL ]
 *   operand   := column | aggregate | constant
 *   constant  := integer | decimal | 'string' | TRUE | FALSE | NULL
 *              | DATE 'YYYY-MM-DD' | TIMESTAMP 'YYYY-MM-DD HH:MM:SS'
 *
 * Reserved words (never a column, table or alias): SELECT FROM WHERE GROUP
 * BY HAVING ORDER ASC DESC LIMIT SIZE DEADLINE WITH AS AND OR NOT BETWEEN IN
 * IS NULL LIKE TRUE FALSE DISTINCT. The function names and DATE/TIMESTAMP are
 * not reserved: the health table has a column named date, so DATE is a
 * typed literal only when a string follows it, and COUNT is a function only
 * when '(' follows it. `--` starts a comment that runs to the end of the line.
 *
 * What is trusted: nothing. The text comes from a researcher and is bounded
 * by QR_SQL_MAX; every token, literal and identifier has its own bound;
 * recursion is bounded by QR_SQL_DEPTH_MAX and the tree by QR_NODES_MAX.
 * Outside string literals only printable ASCII and white space are accepted
 * (so the text that owners are shown in a plan cannot hide anything); string
 * literals must be valid UTF-8 without control or bidirectional-override
 * characters. Each error names its byte offset, line and column.
 *
 * Parsing allocates nothing; qr_sql_compile() allocates the tree once and
 * frees it on every path.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "querier/qr_sql.h"

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        int rc_ = (expr);                                                                          \
        if (rc_ != 0)                                                                              \
            return rc_;                                                                            \
    } while (0)

/* How much of a token an error message quotes. */
#define QUOTE_MAX 32

/* ----------------------------------------------------------- errors */

static void error_v(struct qr_sql_error *err, const char *sql, size_t len, size_t pos,
                    const char *fmt, va_list ap)
{
    unsigned line = 1, col = 1;

    if (pos > len)
        pos = len;
    for (size_t i = 0; i < pos; i++) {
        if (sql[i] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    err->pos = pos;
    err->line = line;
    err->col = col;
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
}

void qr_sql_error_at(struct qr_sql_error *err, const char *sql, size_t len, size_t pos,
                     const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    error_v(err, sql, len, pos, fmt, ap);
    va_end(ap);
}

/* ---------------------------------------------------------- calendar */

static int is_leap(int64_t y)
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

/* Howard Hinnant's days_from_civil. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

void qr_date_civil(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    if (z > QR_DAYS_ABS_MAX)
        z = QR_DAYS_ABS_MAX;
    if (z < -QR_DAYS_ABS_MAX)
        z = -QR_DAYS_ABS_MAX;
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
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    *out = v;
    return 0;
}

int qr_date_parse(int64_t *days, const char *s, size_t len)
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

int qr_timestamp_parse(int64_t *secs, const char *s, size_t len)
{
    int64_t days;
    unsigned hh = 0, mm = 0, ss = 0;

    if (len != 10 && len != 19)
        return -1;
    if (qr_date_parse(&days, s, 10) != 0)
        return -1;
    if (len == 19) {
        if (s[10] != ' ' || s[13] != ':' || s[16] != ':')
            return -1;
        if (digits(s + 11, 2, &hh) != 0 || digits(s + 14, 2, &mm) != 0 ||
            digits(s + 17, 2, &ss) != 0)
            return -1;
        if (hh > 23 || mm > 59 || ss > 59)
            return -1;
    }
    *secs = days * 86400 + (int64_t)hh * 3600 + (int64_t)mm * 60 + (int64_t)ss;
    return 0;
}

/* ------------------------------------------------------------- lexer */

enum tok {
    T_END,
    T_IDENT,
    T_STRING,
    T_NUMBER,
    T_LPAREN,
    T_RPAREN,
    T_COMMA,
    T_SEMI,
    T_STAR,
    T_EQ,
    T_NE,
    T_LT,
    T_LE,
    T_GT,
    T_GE,
};

enum kw {
    K_NONE,
    K_SELECT,
    K_FROM,
    K_WHERE,
    K_GROUP,
    K_BY,
    K_HAVING,
    K_ORDER,
    K_ASC,
    K_DESC,
    K_LIMIT,
    K_SIZE,
    K_DEADLINE,
    K_WITH,
    K_AS,
    K_AND,
    K_OR,
    K_NOT,
    K_BETWEEN,
    K_IN,
    K_IS,
    K_NULL,
    K_LIKE,
    K_TRUE,
    K_FALSE,
    K_DISTINCT,
    K_COUNT_
};

static const char *const keywords[K_COUNT_] = {
    [K_SELECT] = "SELECT",
    [K_FROM] = "FROM",
    [K_WHERE] = "WHERE",
    [K_GROUP] = "GROUP",
    [K_BY] = "BY",
    [K_HAVING] = "HAVING",
    [K_ORDER] = "ORDER",
    [K_ASC] = "ASC",
    [K_DESC] = "DESC",
    [K_LIMIT] = "LIMIT",
    [K_SIZE] = "SIZE",
    [K_DEADLINE] = "DEADLINE",
    [K_WITH] = "WITH",
    [K_AS] = "AS",
    [K_AND] = "AND",
    [K_OR] = "OR",
    [K_NOT] = "NOT",
    [K_BETWEEN] = "BETWEEN",
    [K_IN] = "IN",
    [K_IS] = "IS",
    [K_NULL] = "NULL",
    [K_LIKE] = "LIKE",
    [K_TRUE] = "TRUE",
    [K_FALSE] = "FALSE",
    [K_DISTINCT] = "DISTINCT",
};

struct token {
    enum tok kind;
    enum kw kw;                 /* T_IDENT: the reserved word it is, or K_NONE */
    size_t pos, len;            /* source span */
    int64_t i;                  /* T_NUMBER: digits without the point */
    unsigned scale;             /* T_NUMBER: digits after the point; 0 for an integer */
    char name[QR_NAME_MAX + 1]; /* T_IDENT */
    char s[QR_TEXT_MAX + 1];    /* T_STRING, unescaped */
    size_t s_len;
};

struct lexer {
    const char *sql;
    size_t len;
    struct qr_sql_error *err;
};

static int lex_fail(const struct lexer *lx, size_t pos, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int lex_fail(const struct lexer *lx, size_t pos, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    error_v(lx->err, lx->sql, lx->len, pos, fmt, ap);
    va_end(ap);
    return QR_ERR_SQL;
}

static int is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* A byte that may not appear outside a string literal: explain why. */
static int bad_byte(const struct lexer *lx, size_t at)
{
    unsigned char c = (unsigned char)lx->sql[at];

    if (c == 0)
        return lex_fail(lx, at, "unexpected NUL byte");
    if (c >= 0x80)
        return lex_fail(lx, at,
                        "unexpected byte 0x%02x: non-ASCII characters are only allowed in "
                        "string literals",
                        c);
    if (c < 0x20 || c == 0x7f)
        return lex_fail(lx, at, "unexpected control character 0x%02x", c);
    return lex_fail(lx, at, "unexpected character '%c'", c);
}

/* The length of the valid UTF-8 sequence at s (0 if invalid or forbidden). */
static size_t utf8_char(const unsigned char *s, size_t n)
{
    uint32_t cp;
    size_t k;

    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        k = 2;
        cp = s[0] & 0x1f;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        k = 3;
        cp = s[0] & 0x0f;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        k = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (n < k)
        return 0;
    for (size_t j = 1; j < k; j++) {
        if ((s[j] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[j] & 0x3f);
    }
    if ((k == 3 && cp < 0x800) || (k == 4 && cp < 0x10000) || cp > 0x10ffff)
        return 0; /* overlong or out of range */
    if (cp >= 0xd800 && cp <= 0xdfff)
        return 0; /* surrogate */
    if ((cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069) || cp == 0x200e ||
        cp == 0x200f || (cp >= 0x80 && cp <= 0x9f))
        return 0; /* bidirectional overrides and C1 controls */
    return k;
}

static int lex_string(const struct lexer *lx, struct token *t, size_t at)
{
    const unsigned char *u = (const unsigned char *)lx->sql;
    size_t start = at, n = 0;

    at++;
    for (;;) {
        size_t k = 1;

        if (at >= lx->len)
            return lex_fail(lx, start, "unterminated string literal");
        if (u[at] == '\'') {
            if (at + 1 < lx->len && u[at + 1] == '\'') {
                at++; /* '' is one quote */
            } else {
                at++;
                break;
            }
        } else if (u[at] == 0) {
            return lex_fail(lx, at, "NUL byte in string literal");
        } else if (u[at] >= 0x80) {
            k = utf8_char(u + at, lx->len - at);
            if (k == 0)
                return lex_fail(lx, at, "invalid or forbidden UTF-8 sequence in string literal");
        } else if (u[at] < 0x20 || u[at] == 0x7f) {
            return lex_fail(lx, at, "control character 0x%02x in string literal", u[at]);
        }
        if (n + k > QR_TEXT_MAX)
            return lex_fail(lx, start, "string literal longer than %u bytes", QR_TEXT_MAX);
        memcpy(t->s + n, u + at, k);
        n += k;
        at += k;
    }
    t->s[n] = '\0';
    t->s_len = n;
    t->kind = T_STRING;
    t->len = at - start;
    return 0;
}

static int lex_number(const struct lexer *lx, struct token *t, size_t at)
{
    const unsigned char *u = (const unsigned char *)lx->sql;
    size_t start = at;
    uint64_t mag = 0;
    unsigned frac = 0;
    int neg = 0, overflow = 0, point = 0;

    if (u[at] == '-') {
        neg = 1;
        at++;
    }
    while (at < lx->len && (is_digit(u[at]) || (u[at] == '.' && !point))) {
        if (u[at] == '.') {
            point = 1;
            at++;
            if (at >= lx->len || !is_digit(u[at]))
                return lex_fail(lx, start, "malformed number: expected a digit after '.'");
            continue;
        }
        unsigned d = (unsigned)(u[at] - '0');
        if (mag > (UINT64_MAX - d) / 10)
            overflow = 1;
        else
            mag = mag * 10 + d;
        if (point)
            frac++;
        at++;
    }
    if (at < lx->len && (is_alpha(u[at]) || is_digit(u[at]) || u[at] == '.')) {
        size_t end = at;
        while (end < lx->len && end - start < QUOTE_MAX &&
               (is_alpha(u[end]) || is_digit(u[end]) || u[end] == '.'))
            end++;
        return lex_fail(lx, start, "malformed number '%.*s'", (int)(end - start), lx->sql + start);
    }
    if (overflow || frac > QR_DECIMAL_SCALE_MAX ||
        mag > (neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX)) {
        size_t n = at - start;
        return lex_fail(lx, start, "number %.*s%s is out of range",
                        (int)(n > QUOTE_MAX ? QUOTE_MAX : n), lx->sql + start,
                        n > QUOTE_MAX ? "..." : "");
    }
    if (neg)
        t->i = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
    else
        t->i = (int64_t)mag;
    t->scale = frac;
    t->kind = T_NUMBER;
    t->len = at - start;
    return 0;
}

static int lex_ident(const struct lexer *lx, struct token *t, size_t at)
{
    const unsigned char *u = (const unsigned char *)lx->sql;
    size_t start = at;

    while (at < lx->len && (is_alpha(u[at]) || is_digit(u[at])))
        at++;
    if (at - start > QR_NAME_MAX)
        return lex_fail(lx, start, "identifier longer than %u bytes", QR_NAME_MAX);
    memcpy(t->name, lx->sql + start, at - start);
    t->name[at - start] = '\0';
    t->kind = T_IDENT;
    t->len = at - start;
    t->kw = K_NONE;
    for (int k = K_NONE + 1; k < K_COUNT_; k++) {
        if (strcasecmp(keywords[k], t->name) == 0) {
            t->kw = (enum kw)k;
            break;
        }
    }
    return 0;
}

/* Read the token that starts at or after byte `at` (skipping space and comments). */
static int lex(const struct lexer *lx, struct token *t, size_t at)
{
    const unsigned char *u = (const unsigned char *)lx->sql;

    memset(t, 0, sizeof *t);
    for (;;) {
        while (at < lx->len && is_space(u[at]))
            at++;
        if (at + 1 < lx->len && u[at] == '-' && u[at + 1] == '-') {
            while (at < lx->len && u[at] != '\n') {
                if (u[at] != '\t' && (u[at] < 0x20 || u[at] >= 0x7f))
                    return bad_byte(lx, at);
                at++;
            }
            continue;
        }
        break;
    }
    t->pos = at;
    if (at >= lx->len) {
        t->kind = T_END;
        return 0;
    }
    unsigned char c = u[at];
    unsigned char next = at + 1 < lx->len ? u[at + 1] : 0;
    if (is_alpha(c))
        return lex_ident(lx, t, at);
    if (is_digit(c) || (c == '-' && is_digit(next)))
        return lex_number(lx, t, at);
    if (c == '\'')
        return lex_string(lx, t, at);
    t->len = 1;
    switch (c) {
    case '(':
        t->kind = T_LPAREN;
        return 0;
    case ')':
        t->kind = T_RPAREN;
        return 0;
    case ',':
        t->kind = T_COMMA;
        return 0;
    case ';':
        t->kind = T_SEMI;
        return 0;
    case '*':
        t->kind = T_STAR;
        return 0;
    case '=':
        t->kind = T_EQ;
        return 0;
    case '<':
        if (next == '=' || next == '>') {
            t->kind = next == '=' ? T_LE : T_NE;
            t->len = 2;
        } else {
            t->kind = T_LT;
        }
        return 0;
    case '>':
        if (next == '=') {
            t->kind = T_GE;
            t->len = 2;
        } else {
            t->kind = T_GT;
        }
        return 0;
    case '!':
        if (next == '=') {
            t->kind = T_NE;
            t->len = 2;
            return 0;
        }
        break;
    default:
        break;
    }
    return bad_byte(lx, at);
}

/* ------------------------------------------------------------ parser */

struct parser {
    struct lexer lx;
    struct token cur;
    struct qr_query *q;
};

static int fail(struct parser *p, size_t pos, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct parser *p, size_t pos, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    error_v(p->lx.err, p->lx.sql, p->lx.len, pos, fmt, ap);
    va_end(ap);
    return QR_ERR_SQL;
}

static int advance(struct parser *p)
{
    return lex(&p->lx, &p->cur, p->cur.pos + p->cur.len);
}

/* The token after the current one; T_END if it does not lex (the error comes later). */
static void peek(const struct parser *p, struct token *t)
{
    struct qr_sql_error scratch;
    struct lexer lx = p->lx;

    lx.err = &scratch;
    if (lex(&lx, t, p->cur.pos + p->cur.len) != 0)
        t->kind = T_END;
}

/* How error messages name a token: 'FORM', 'abc', end of input. */
static const char *describe(const struct parser *p, const struct token *t, char *buf, size_t cap)
{
    size_t n = t->len;

    if (t->kind == T_END)
        return "end of input";
    if (n > QUOTE_MAX)
        n = QUOTE_MAX;
    if (t->kind == T_STRING)
        snprintf(buf, cap, "%.*s%s", (int)n, p->lx.sql + t->pos, n < t->len ? "..." : "");
    else
        snprintf(buf, cap, "'%.*s%s'", (int)n, p->lx.sql + t->pos, n < t->len ? "..." : "");
    return buf;
}

static int expected(struct parser *p, const char *what)
{
    char buf[QUOTE_MAX + 8];

    return fail(p, p->cur.pos, "expected %s, found %s", what,
                describe(p, &p->cur, buf, sizeof buf));
}

static int is_kw(const struct parser *p, enum kw k)
{
    return p->cur.kind == T_IDENT && p->cur.kw == k;
}

static int is_name(const struct parser *p)
{
    return p->cur.kind == T_IDENT && p->cur.kw == K_NONE;
}

static int expect_kw(struct parser *p, enum kw k)
{
    if (!is_kw(p, k))
        return expected(p, keywords[k]);
    return advance(p);
}

static int expect_tok(struct parser *p, enum tok kind, const char *what)
{
    if (p->cur.kind != kind)
        return expected(p, what);
    return advance(p);
}

static int new_node(struct parser *p, struct qr_node **out, enum qr_node_kind kind,
                    const struct token *at)
{
    struct qr_query *q = p->q;

    if (q->n_nodes >= QR_NODES_MAX)
        return fail(p, at->pos, "query too complex: more than %u expression nodes", QR_NODES_MAX);
    struct qr_node *n = &q->nodes[q->n_nodes++];
    memset(n, 0, sizeof *n);
    n->kind = kind;
    n->pos = at->pos;
    n->len = at->len;
    *out = n;
    return 0;
}

/* A column name: an identifier that is not a reserved word. */
static int parse_column(struct parser *p, struct qr_node **out, const char *what)
{
    if (!is_name(p))
        return expected(p, what);
    TRY(new_node(p, out, QR_N_COLUMN, &p->cur));
    memcpy((*out)->name, p->cur.name, sizeof p->cur.name);
    return advance(p);
}

static const struct {
    const char *name;
    enum qr_agg agg;
} functions[] = {
    {"COUNT", QR_AGG_COUNT}, {"SUM", QR_AGG_SUM}, {"AVG", QR_AGG_AVG},
    {"MIN", QR_AGG_MIN},     {"MAX", QR_AGG_MAX},
};

/* cur is an aggregate's name and '(' follows it. */
static int parse_aggregate(struct parser *p, struct qr_node **out)
{
    struct qr_node *n = NULL;
    char buf[QUOTE_MAX + 8];
    size_t f;

    for (f = 0; f < sizeof functions / sizeof functions[0]; f++) {
        if (strcasecmp(functions[f].name, p->cur.name) == 0)
            break;
    }
    if (f == sizeof functions / sizeof functions[0])
        return fail(p, p->cur.pos,
                    "unknown function %s; the aggregates are COUNT, SUM, AVG, MIN and MAX",
                    describe(p, &p->cur, buf, sizeof buf));
    TRY(new_node(p, &n, QR_N_AGG, &p->cur));
    n->agg = functions[f].agg;
    TRY(advance(p)); /* the name */
    TRY(advance(p)); /* '(' */
    n->arg_pos = p->cur.pos;
    if (n->agg == QR_AGG_COUNT && p->cur.kind == T_STAR) {
        n->agg = QR_AGG_COUNT_STAR;
        TRY(advance(p));
    } else if (is_kw(p, K_DISTINCT)) {
        if (n->agg != QR_AGG_COUNT)
            return fail(p, p->cur.pos, "DISTINCT is only supported as COUNT(DISTINCT participant)");
        TRY(advance(p));
        n->arg_pos = p->cur.pos;
        if (!is_name(p) || strcasecmp(p->cur.name, "participant") != 0)
            return fail(p, p->cur.pos,
                        "only COUNT(DISTINCT participant) is supported, found COUNT(DISTINCT "
                        "%s)",
                        describe(p, &p->cur, buf, sizeof buf));
        n->agg = QR_AGG_COUNT_PARTICIPANTS;
        TRY(advance(p));
    } else if (p->cur.kind == T_STAR) {
        return fail(p, p->cur.pos, "%s(*) is not supported; name a column", functions[f].name);
    } else {
        if (!is_name(p))
            return expected(p, "a column");
        memcpy(n->name, p->cur.name, sizeof p->cur.name);
        TRY(advance(p));
    }
    TRY(expect_tok(p, T_RPAREN, "')'"));
    n->len = p->cur.pos - n->pos; /* up to the next token: for messages only */
    *out = n;
    return 0;
}

/* A constant: number, string, TRUE, FALSE, NULL, DATE '...', TIMESTAMP '...'. */
static int parse_constant(struct parser *p, struct qr_node **out, const char *what)
{
    struct token next;
    struct qr_node *n = NULL;

    if (p->cur.kind == T_NUMBER) {
        TRY(new_node(p, &n, QR_N_CONST, &p->cur));
        n->lit = p->cur.scale > 0 ? QR_LIT_DECIMAL : QR_LIT_INT;
        n->i = p->cur.i;
        n->scale = p->cur.scale;
    } else if (p->cur.kind == T_STRING) {
        TRY(new_node(p, &n, QR_N_CONST, &p->cur));
        n->lit = QR_LIT_STRING;
        memcpy(n->s, p->cur.s, sizeof p->cur.s);
        n->s_len = p->cur.s_len;
    } else if (is_kw(p, K_TRUE) || is_kw(p, K_FALSE) || is_kw(p, K_NULL)) {
        TRY(new_node(p, &n, QR_N_CONST, &p->cur));
        n->lit = is_kw(p, K_NULL) ? QR_LIT_NULL : QR_LIT_BOOL;
        n->i = is_kw(p, K_TRUE);
    } else if (is_name(p) && (strcasecmp(p->cur.name, "DATE") == 0 ||
                              strcasecmp(p->cur.name, "TIMESTAMP") == 0)) {
        int is_date = strcasecmp(p->cur.name, "DATE") == 0;
        peek(p, &next);
        if (next.kind != T_STRING)
            return expected(p, what);
        TRY(new_node(p, &n, QR_N_CONST, &p->cur));
        TRY(advance(p));
        n->len = p->cur.pos + p->cur.len - n->pos;
        n->lit = is_date ? QR_LIT_DATE : QR_LIT_TIMESTAMP;
        if (is_date && qr_date_parse(&n->i, p->cur.s, p->cur.s_len) != 0)
            return fail(p, p->cur.pos, "invalid date '%s': expected a real date 'YYYY-MM-DD'",
                        p->cur.s);
        if (!is_date && qr_timestamp_parse(&n->i, p->cur.s, p->cur.s_len) != 0)
            return fail(p, p->cur.pos,
                        "invalid timestamp '%s': expected 'YYYY-MM-DD HH:MM:SS' (UTC)", p->cur.s);
    } else {
        return expected(p, what);
    }
    *out = n;
    return advance(p);
}

/*
 * An operand: a constant (if allow_const), a column, or an aggregate. What
 * is allowed where (no aggregate in WHERE, ...) is for qr_plan.c to say.
 */
static int parse_operand(struct parser *p, struct qr_node **out, int allow_const, const char *what)
{
    struct token next;

    if (p->cur.kind == T_IDENT && p->cur.kw == K_NONE) {
        peek(p, &next);
        if (next.kind == T_LPAREN)
            return parse_aggregate(p, out);
        if (next.kind == T_STRING &&
            (strcasecmp(p->cur.name, "DATE") == 0 || strcasecmp(p->cur.name, "TIMESTAMP") == 0)) {
            if (!allow_const)
                return expected(p, what);
            return parse_constant(p, out, what);
        }
        return parse_column(p, out, what);
    }
    if (!allow_const)
        return expected(p, what);
    return parse_constant(p, out, what);
}

static int parse_or(struct parser *p, struct qr_node **out, unsigned depth);

static int binary(struct parser *p, struct qr_node **out, enum qr_node_kind kind,
                  const struct token *at, struct qr_node *a, struct qr_node *b)
{
    TRY(new_node(p, out, kind, at));
    (*out)->a = a;
    (*out)->b = b;
    return 0;
}

static int parse_in_list(struct parser *p, struct qr_node *n)
{
    struct qr_node **tail = &n->list;

    TRY(expect_tok(p, T_LPAREN, "'(' after IN"));
    for (;;) {
        struct qr_node *c;

        if (n->n_list == QR_IN_LIST_MAX)
            return fail(p, p->cur.pos, "too many values in IN list (at most %u)", QR_IN_LIST_MAX);
        TRY(parse_constant(p, &c, "a constant"));
        if (c->lit == QR_LIT_NULL)
            return fail(p, c->pos, "NULL is not allowed in an IN list; use IS NULL");
        *tail = c;
        tail = &c->next;
        n->n_list++;
        if (p->cur.kind != T_COMMA)
            break;
        TRY(advance(p));
    }
    return expect_tok(p, T_RPAREN, "',' or ')'");
}

/* LIKE takes 'prefix%' only: a literal prefix and one trailing %, no other % or _. */
static int parse_like_pattern(struct parser *p, struct qr_node *n)
{
    const struct token *t = &p->cur;

    if (t->kind != T_STRING)
        return expected(p, "a pattern string after LIKE");
    if (t->s_len == 0 || t->s[t->s_len - 1] != '%' || strcspn(t->s, "%_") != t->s_len - 1)
        return fail(p, t->pos, "only prefix patterns such as 'abc%%' are supported");
    memcpy(n->s, t->s, t->s_len - 1);
    n->s[t->s_len - 1] = '\0';
    n->s_len = t->s_len - 1;
    return advance(p);
}

static int cmp_of(enum tok kind, enum qr_cmp *cmp)
{
    switch (kind) {
    case T_EQ:
        *cmp = QR_CMP_EQ;
        return 1;
    case T_NE:
        *cmp = QR_CMP_NE;
        return 1;
    case T_LT:
        *cmp = QR_CMP_LT;
        return 1;
    case T_LE:
        *cmp = QR_CMP_LE;
        return 1;
    case T_GT:
        *cmp = QR_CMP_GT;
        return 1;
    case T_GE:
        *cmp = QR_CMP_GE;
        return 1;
    default:
        return 0;
    }
}

static int parse_predicate(struct parser *p, struct qr_node **out, unsigned depth)
{
    struct qr_node *a = NULL, *n = NULL;
    struct token at;
    enum qr_cmp cmp;

    if (p->cur.kind == T_LPAREN) {
        if (depth + 1 > QR_SQL_DEPTH_MAX)
            return fail(p, p->cur.pos, "expression nested too deeply (more than %u levels)",
                        QR_SQL_DEPTH_MAX);
        TRY(advance(p));
        TRY(parse_or(p, out, depth + 1));
        return expect_tok(p, T_RPAREN, "')'");
    }
    TRY(parse_operand(p, &a, 1, "an expression"));
    at = p->cur;
    if (cmp_of(p->cur.kind, &cmp)) {
        struct qr_node *b = NULL;
        TRY(advance(p));
        TRY(parse_operand(p, &b, 1, "an expression"));
        TRY(binary(p, &n, QR_N_CMP, &at, a, b));
        n->cmp = cmp;
        *out = n;
        return 0;
    }
    int negated = 0;
    if (is_kw(p, K_NOT)) {
        TRY(advance(p));
        if (!is_kw(p, K_BETWEEN) && !is_kw(p, K_IN) && !is_kw(p, K_LIKE))
            return expected(p, "BETWEEN, IN or LIKE after NOT");
        negated = 1;
    }
    if (is_kw(p, K_BETWEEN)) {
        struct qr_node *lo = NULL, *hi = NULL;
        TRY(advance(p));
        TRY(parse_operand(p, &lo, 1, "an expression"));
        TRY(expect_kw(p, K_AND));
        TRY(parse_operand(p, &hi, 1, "an expression"));
        TRY(binary(p, &n, QR_N_BETWEEN, &at, a, lo));
        n->c = hi;
    } else if (is_kw(p, K_IN)) {
        TRY(advance(p));
        TRY(binary(p, &n, QR_N_IN, &at, a, NULL));
        TRY(parse_in_list(p, n));
    } else if (is_kw(p, K_LIKE)) {
        TRY(advance(p));
        TRY(binary(p, &n, QR_N_LIKE, &at, a, NULL));
        TRY(parse_like_pattern(p, n));
    } else if (is_kw(p, K_IS)) {
        TRY(advance(p));
        if (is_kw(p, K_NOT)) {
            negated = 1;
            TRY(advance(p));
        }
        TRY(expect_kw(p, K_NULL));
        TRY(binary(p, &n, QR_N_IS_NULL, &at, a, NULL));
    } else {
        TRY(binary(p, &n, QR_N_OPERAND, &at, a, NULL));
    }
    n->negated = negated;
    *out = n;
    return 0;
}

static int parse_not(struct parser *p, struct qr_node **out, unsigned depth)
{
    struct qr_node *a;
    struct token at = p->cur;

    if (!is_kw(p, K_NOT))
        return parse_predicate(p, out, depth);
    if (depth + 1 > QR_SQL_DEPTH_MAX)
        return fail(p, p->cur.pos, "expression nested too deeply (more than %u levels)",
                    QR_SQL_DEPTH_MAX);
    TRY(advance(p));
    TRY(parse_not(p, &a, depth + 1));
    return binary(p, out, QR_N_NOT, &at, a, NULL);
}

static int parse_and(struct parser *p, struct qr_node **out, unsigned depth)
{
    struct qr_node *left = NULL, *right = NULL;

    TRY(parse_not(p, &left, depth));
    while (is_kw(p, K_AND)) {
        struct token at = p->cur;
        TRY(advance(p));
        TRY(parse_not(p, &right, depth));
        TRY(binary(p, &left, QR_N_AND, &at, left, right));
    }
    *out = left;
    return 0;
}

static int parse_or(struct parser *p, struct qr_node **out, unsigned depth)
{
    struct qr_node *left = NULL, *right = NULL;

    TRY(parse_and(p, &left, depth));
    while (is_kw(p, K_OR)) {
        struct token at = p->cur;
        TRY(advance(p));
        TRY(parse_and(p, &right, depth));
        TRY(binary(p, &left, QR_N_OR, &at, left, right));
    }
    *out = left;
    return 0;
}

/* ------------------------------------------------------------ clauses */

static int parse_item(struct parser *p)
{
    struct qr_query *q = p->q;
    struct qr_item *it;
    struct token next;

    if (p->cur.kind == T_STAR)
        return fail(p, p->cur.pos,
                    "SELECT * is not supported; list the grouping columns and aggregates");
    if (q->n_items == QR_OUTPUT_MAX)
        return fail(p, p->cur.pos, "too many items in SELECT (at most %u)", QR_OUTPUT_MAX);
    it = &q->items[q->n_items++];
    TRY(parse_operand(p, &it->expr, 0, "a column or an aggregate"));
    if (is_kw(p, K_AS)) {
        TRY(advance(p));
        if (!is_name(p))
            return expected(p, "an alias after AS");
    } else if (is_name(p)) {
        /*
         * A bare alias followed by another name is most likely a misspelt
         * FROM ("COUNT(*) FORM health"): say so at the alias.
         */
        peek(p, &next);
        if (next.kind == T_IDENT && next.kw == K_NONE)
            return expected(p, "FROM");
    } else {
        return 0;
    }
    it->has_alias = 1;
    it->alias_pos = p->cur.pos;
    memcpy(it->alias, p->cur.name, sizeof p->cur.name);
    return advance(p);
}

static int parse_group_by(struct parser *p)
{
    struct qr_query *q = p->q;

    TRY(expect_kw(p, K_BY));
    for (;;) {
        struct token next;

        if (q->n_group == QR_GROUP_COLUMNS_MAX)
            return fail(p, p->cur.pos, "too many GROUP BY columns (at most %u)",
                        QR_GROUP_COLUMNS_MAX);
        peek(p, &next);
        if (is_name(p) && next.kind == T_LPAREN)
            return fail(p, p->cur.pos, "GROUP BY takes column names, not aggregates");
        TRY(parse_column(p, &q->group[q->n_group], "a column"));
        q->n_group++;
        if (p->cur.kind != T_COMMA)
            return 0;
        TRY(advance(p));
    }
}

static int parse_order_by(struct parser *p)
{
    struct qr_query *q = p->q;

    TRY(expect_kw(p, K_BY));
    for (;;) {
        struct qr_order_item *o;

        if (q->n_order == QR_ORDER_MAX)
            return fail(p, p->cur.pos, "too many ORDER BY keys (at most %u)", QR_ORDER_MAX);
        o = &q->order[q->n_order++];
        TRY(parse_operand(p, &o->expr, 1, "an output name, position or aggregate"));
        if (is_kw(p, K_ASC) || is_kw(p, K_DESC)) {
            o->desc = is_kw(p, K_DESC);
            TRY(advance(p));
        }
        if (p->cur.kind != T_COMMA)
            return 0;
        TRY(advance(p));
    }
}

/* LIMIT, SIZE, DEADLINE: an integer in [min, max]. */
static int parse_count(struct parser *p, const char *clause, int64_t min, int64_t max, int64_t *out)
{
    char what[48];

    TRY(advance(p));
    if (p->cur.kind != T_NUMBER || p->cur.scale != 0) {
        snprintf(what, sizeof what, "an integer after %s", clause);
        return expected(p, what);
    }
    if (p->cur.i < min || p->cur.i > max)
        return fail(p, p->cur.pos, "%s must be between %" PRId64 " and %" PRId64, clause, min, max);
    *out = p->cur.i;
    return advance(p);
}

enum opt_id {
    O_MIN_PARTICIPANTS,
    O_MIN_GROUP_SIZE,
    O_EPSILON,
    O_CONTRIBUTION_BOUND,
    O_TUPLES,
    O_MAX_GROUPS,
    O_PROTOCOL,
    O_MAX_ROWS,
    O_BUCKETS,
    O_FAKES,
    O_ROUNDS,
    O_BATCH_MIN,
    O_PARTICIPANTS,
    O_COUNT_
};

static const struct {
    const char *name;
    int64_t min, max; /* integer options */
} options[O_COUNT_] = {
    [O_MIN_PARTICIPANTS] = {"min_participants", 0, UINT32_MAX},
    [O_MIN_GROUP_SIZE] = {"min_group_size", 0, UINT32_MAX},
    [O_EPSILON] = {"epsilon", 0, 0},
    [O_CONTRIBUTION_BOUND] = {"contribution_bound", 0, INT64_MAX},
    [O_TUPLES] = {"tuples_per_participant", 1, QR_TUPLES_MAX},
    [O_MAX_GROUPS] = {"max_groups", 1, QR_MAX_GROUPS_LIMIT},
    [O_PROTOCOL] = {"protocol", 0, 0},
    [O_MAX_ROWS] = {"max_rows", 1, QR_DP_MAX_ROWS_MAX},
    [O_BUCKETS] = {"buckets", 1, QR_BUCKETS_MAX},
    [O_FAKES] = {"fakes", 0, QR_FAKES_MAX},
    [O_ROUNDS] = {"rounds", 1, QR_ROUNDS_MAX},
    [O_BATCH_MIN] = {"batch_min", 2, 65535},
    [O_PARTICIPANTS] = {"participants", 1, 100000000},
};

static int *option_flag(struct qr_options *o, enum opt_id id)
{
    switch (id) {
    case O_MIN_PARTICIPANTS:
        return &o->has_min_participants;
    case O_MIN_GROUP_SIZE:
        return &o->has_min_group_size;
    case O_EPSILON:
        return &o->has_epsilon;
    case O_CONTRIBUTION_BOUND:
        return &o->has_contribution_bound;
    case O_TUPLES:
        return &o->has_tuples;
    case O_MAX_GROUPS:
        return &o->has_max_groups;
    case O_MAX_ROWS:
        return &o->has_max_rows;
    case O_BUCKETS:
        return &o->has_buckets;
    case O_FAKES:
        return &o->has_fakes;
    case O_ROUNDS:
        return &o->has_rounds;
    case O_BATCH_MIN:
        return &o->has_batch_min;
    case O_PARTICIPANTS:
        return &o->has_participants;
    default:
        return &o->has_protocol;
    }
}

static int parse_option_value(struct parser *p, enum opt_id id)
{
    struct qr_options *o = &p->q->opt;
    const struct token *t = &p->cur;
    char what[64];

    if (id == O_PROTOCOL) {
        const char *v = t->kind == T_STRING ? t->s : t->name;
        if (t->kind != T_STRING && !is_name(p))
            return expected(p, "a protocol name such as 's_agg'");
        if (qr_protocol_valid(v) != 0)
            return fail(p, t->pos,
                        "unknown protocol '%s'; the protocols are auto, s_agg, rnf_noise, "
                        "c_noise, ed_hist and shuffle",
                        v);
        memcpy(o->protocol, v, strlen(v) + 1); /* a known name: short */
        return advance(p);
    }
    if (id == O_EPSILON) {
        if (t->kind != T_NUMBER)
            return expected(p, "a number for epsilon");
        if (t->i < 0)
            return fail(p, t->pos, "epsilon must be 0 or more");
        double v = (double)t->i;
        for (unsigned k = 0; k < t->scale; k++)
            v /= 10.0;
        o->epsilon = v;
        return advance(p);
    }
    if (t->kind != T_NUMBER || t->scale != 0) {
        snprintf(what, sizeof what, "an integer for %s", options[id].name);
        return expected(p, what);
    }
    if (t->i < options[id].min || t->i > options[id].max)
        return fail(p, t->pos, "%s must be between %" PRId64 " and %" PRId64, options[id].name,
                    options[id].min, options[id].max);
    switch (id) {
    case O_MIN_PARTICIPANTS:
        o->min_participants = (uint32_t)t->i;
        break;
    case O_MIN_GROUP_SIZE:
        o->min_group_size = (uint32_t)t->i;
        break;
    case O_CONTRIBUTION_BOUND:
        o->contribution_bound = t->i;
        break;
    case O_TUPLES:
        o->tuples_per_participant = (uint32_t)t->i;
        break;
    case O_MAX_ROWS:
        o->max_rows = (uint32_t)t->i;
        break;
    case O_BUCKETS:
        o->buckets = (uint32_t)t->i;
        break;
    case O_FAKES:
        o->fakes = (uint32_t)t->i;
        break;
    case O_ROUNDS:
        o->rounds = (uint32_t)t->i;
        break;
    case O_BATCH_MIN:
        o->batch_min = (uint32_t)t->i;
        break;
    case O_PARTICIPANTS:
        o->participants = (uint64_t)t->i;
        break;
    default:
        o->max_groups = (uint32_t)t->i;
        break;
    }
    return advance(p);
}

static int parse_with(struct parser *p)
{
    TRY(advance(p));
    TRY(expect_tok(p, T_LPAREN, "'(' after WITH"));
    for (;;) {
        char buf[QUOTE_MAX + 8];
        int id;

        if (p->cur.kind != T_IDENT)
            return expected(p, "an option name");
        for (id = 0; id < O_COUNT_; id++) {
            if (strcasecmp(options[id].name, p->cur.name) == 0)
                break;
        }
        if (id == O_COUNT_)
            return fail(p, p->cur.pos,
                        "unknown option %s; the options are min_participants, "
                        "min_group_size, epsilon, contribution_bound, max_rows, "
                        "tuples_per_participant, max_groups, protocol, buckets, fakes, "
                        "rounds, batch_min and participants",
                        describe(p, &p->cur, buf, sizeof buf));
        int *given = option_flag(&p->q->opt, (enum opt_id)id);
        if (*given)
            return fail(p, p->cur.pos, "option %s is given twice", options[id].name);
        *given = 1;
        if (id == O_EPSILON)
            p->q->opt.epsilon_pos = p->cur.pos;
        else if (id == O_CONTRIBUTION_BOUND)
            p->q->opt.contribution_bound_pos = p->cur.pos;
        else if (id == O_MAX_ROWS)
            p->q->opt.max_rows_pos = p->cur.pos;
        else if (id == O_PROTOCOL)
            p->q->opt.protocol_pos = p->cur.pos;
        TRY(advance(p));
        TRY(expect_tok(p, T_EQ, "'='"));
        TRY(parse_option_value(p, (enum opt_id)id));
        if (p->cur.kind != T_COMMA)
            break;
        TRY(advance(p));
    }
    return expect_tok(p, T_RPAREN, "',' or ')'");
}

/* The clauses after FROM, in order; what the "expected" message lists. */
enum stage {
    S_FROM,
    S_WHERE,
    S_GROUP,
    S_HAVING,
    S_ORDER,
    S_LIMIT,
    S_SIZE,
    S_DEADLINE,
    S_WITH,
    S_SEMI,
};

static int expected_after(struct parser *p, enum stage stage)
{
    static const char *const names[] = {"WHERE", "GROUP BY", "HAVING",   "ORDER BY",
                                        "LIMIT", "SIZE",     "DEADLINE", "WITH"};
    char what[160] = "";
    size_t n = 0;

    if (stage == S_WHERE || stage == S_HAVING)
        n += (size_t)snprintf(what + n, sizeof what - n, "AND, OR, ");
    if (stage == S_GROUP || stage == S_ORDER)
        n += (size_t)snprintf(what + n, sizeof what - n, "',', ");
    if (stage < S_SEMI) {
        for (int s = stage + 1; s <= S_WITH; s++)
            n += (size_t)snprintf(what + n, sizeof what - n, "%s, ", names[s - 1]);
        n += (size_t)snprintf(what + n, sizeof what - n, "';' or ");
    }
    snprintf(what + n, sizeof what - n, "end of input");
    return expected(p, what);
}

static int parse_query(struct parser *p)
{
    struct qr_query *q = p->q;
    enum stage stage = S_FROM;
    int64_t v;

    TRY(expect_kw(p, K_SELECT));
    for (;;) {
        TRY(parse_item(p));
        if (p->cur.kind != T_COMMA)
            break;
        TRY(advance(p));
    }
    TRY(expect_kw(p, K_FROM));
    if (!is_name(p))
        return expected(p, "a table name");
    memcpy(q->table, p->cur.name, sizeof p->cur.name);
    q->table_pos = p->cur.pos;
    TRY(advance(p));

    if (is_kw(p, K_WHERE)) {
        TRY(advance(p));
        TRY(parse_or(p, &q->where, 0));
        stage = S_WHERE;
    }
    if (is_kw(p, K_GROUP)) {
        TRY(advance(p));
        TRY(parse_group_by(p));
        stage = S_GROUP;
    }
    if (is_kw(p, K_HAVING)) {
        TRY(advance(p));
        TRY(parse_or(p, &q->having, 0));
        stage = S_HAVING;
    }
    if (is_kw(p, K_ORDER)) {
        TRY(advance(p));
        TRY(parse_order_by(p));
        stage = S_ORDER;
    }
    if (is_kw(p, K_LIMIT)) {
        TRY(parse_count(p, "LIMIT", 0, (int64_t)QR_LIMIT_MAX, &v));
        q->has_limit = 1;
        q->limit = (uint64_t)v;
        stage = S_LIMIT;
    }
    if (is_kw(p, K_SIZE)) {
        TRY(parse_count(p, "SIZE", 1, (int64_t)QR_SIZE_MAX, &v));
        q->has_size = 1;
        q->size = (uint64_t)v;
        stage = S_SIZE;
    }
    if (is_kw(p, K_DEADLINE)) {
        TRY(parse_count(p, "DEADLINE", 1, QR_DEADLINE_MAX, &v));
        q->has_deadline = 1;
        q->deadline_seconds = v;
        stage = S_DEADLINE;
    }
    if (is_kw(p, K_WITH)) {
        TRY(parse_with(p));
        stage = S_WITH;
    }
    if (p->cur.kind == T_SEMI) {
        TRY(advance(p));
        stage = S_SEMI;
    }
    if (p->cur.kind != T_END)
        return expected_after(p, stage);
    return 0;
}

int qr_sql_parse(struct qr_query *q, const char *sql, size_t len, struct qr_sql_error *err)
{
    struct parser p;

    memset(q, 0, sizeof *q);
    q->sql = sql;
    q->sql_len = len;
    memset(&p, 0, sizeof p);
    p.lx.sql = sql;
    p.lx.len = len;
    p.lx.err = err;
    p.q = q;
    TRY(lex(&p.lx, &p.cur, 0));
    return parse_query(&p);
}

/* ------------------------------------------------------------ compile */

int qr_sql_compile_len(uint8_t **plan, size_t *plan_len, const char *sql, size_t len,
                       const struct qr_compile_opts *opts, struct qr_sql_error *err)
{
    struct qr_sql_error scratch;
    struct qr_query *q = NULL;
    int rc;

    if (err == NULL)
        err = &scratch;
    memset(err, 0, sizeof *err);
    if (plan == NULL || plan_len == NULL || sql == NULL) {
        qr_sql_error_at(err, "", 0, 0, "bad arguments to qr_sql_compile");
        return QR_ERR_ARG;
    }
    *plan = NULL;
    *plan_len = 0;
    if (len > QR_SQL_MAX) {
        qr_sql_error_at(err, sql, len, QR_SQL_MAX, "the SQL text is longer than %u bytes",
                        QR_SQL_MAX);
        return QR_ERR_SQL;
    }
    q = calloc(1, sizeof *q);
    if (q == NULL) {
        qr_sql_error_at(err, sql, len, 0, "out of memory");
        return QR_ERR_NOMEM;
    }
    rc = qr_sql_parse(q, sql, len, err);
    if (rc != 0)
        goto cleanup;
    rc = qr_plan_build(plan, plan_len, q, opts, err);
cleanup:
    free(q);
    return rc;
}

int qr_sql_compile(uint8_t **plan, size_t *plan_len, const char *sql,
                   const struct qr_compile_opts *opts, struct qr_sql_error *err)
{
    size_t len = sql == NULL ? 0 : strnlen(sql, (size_t)QR_SQL_MAX + 1);

    return qr_sql_compile_len(plan, plan_len, sql, len, opts, err);
}
