/*
 * test_import.c: the owner's data import (participant/pt_import.c), typed
 * values and schemas (pt_value.c), and the owner's operations on a token
 * (pt_owner.c) over a fake token link (tests/pt_fake.h).
 *
 * Every kind of import error has its own test, which checks the exact
 * message with its file, line and column; the happy paths cover every
 * type, NULLs, and exact decimals. The calendar is checked against the
 * querier's (the encoding the token, the SQL literals and the simulator
 * share), day by day over centuries. Loads are checked on the wire: the
 * requests' sizes and `more` flags, and that a bad file sends nothing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "participant/pt_import.h"
#include "participant/pt_owner.h"
#include "proto/cohort.pb-c.h"
#include "querier/qr_sql.h"
#include "querier/querier.h"
#include "tests/pt_fake.h"
#include "token/tk_int.h"

#define DAY_2026_01_01 20454 /* as sim/sim_data.c */

/* ------------------------------------------------------------ helpers */

/* A schema of every type: n int, amount decimal(2), name text, day date,
 * at timestamp, ok bool. */
static void every_type(struct pt_schema *s)
{
    char err[128];
    assert_int_equal(pt_schema_parse(s, "t",
                                     "n int, amount decimal(2), name text, day date, "
                                     "at timestamp, ok bool",
                                     err, sizeof err),
                     0);
}

struct collected {
    size_t n;
    struct pt_value rows[64][PT_COLUMNS_MAX];
};

static int collect(void *ctx, const struct pt_value *values)
{
    struct collected *c = ctx;
    if (c->n < 64)
        memcpy(c->rows[c->n], values, sizeof c->rows[0]);
    c->n++;
    return 0;
}

static int parse(const char *text, enum pt_format fmt, const struct pt_schema *s,
                 struct collected *c, struct pt_import_error *err)
{
    uint64_t rows = 0;
    int rc;
    memset(c, 0, sizeof *c);
    rc = pt_import_parse((const uint8_t *)text, strlen(text), fmt, s,
                         fmt == PT_FORMAT_CSV ? "data.csv" : "data.jsonl", collect, c, &rows, err);
    if (rc == 0)
        assert_int_equal(rows, c->n);
    return rc;
}

static void expect_text(const struct pt_value *v, const char *s)
{
    assert_int_equal(v->type, PT_TEXT);
    assert_int_equal(v->len, strlen(s));
    assert_memory_equal(v->s, s, v->len);
}

static void expect_int(const struct pt_value *v, enum pt_type t, int64_t i)
{
    assert_int_equal(v->type, t);
    if (v->i != i)
        fail_msg("value %lld, expected %lld", (long long)v->i, (long long)i);
}

/* ------------------------------------------------------ happy paths */

static void csv_rows_of_every_type_are_read_in_schema_order(void **state)
{
    struct pt_schema s;
    struct collected c;
    struct pt_import_error err;
    /* A BOM, the header in another order and case, CRLF, quotes, blank lines. */
    const char *csv = "\xef\xbb\xbf"
                      "OK,n,amount, name ,day,at\r\n"
                      "true,42,12.5,\"Doe, \"\"Jane\"\"\",2026-01-01,2026-01-01T00:00:01Z\r\n"
                      "\r\n"
                      "0,-7,-0.05,\"two\nlines\",1970-01-01,1970-01-01 00:00:00\n"
                      "FALSE,9223372036854775807,3,caf\xc3\xa9,2024-02-29,2038-01-19T03:14:08";

    (void)state;
    every_type(&s);
    assert_int_equal(parse(csv, PT_FORMAT_CSV, &s, &c, &err), 0);
    assert_int_equal(c.n, 3);
    expect_int(&c.rows[0][0], PT_INT, 42);
    expect_int(&c.rows[0][1], PT_DECIMAL, 1250);
    assert_int_equal(c.rows[0][1].scale, 2);
    expect_text(&c.rows[0][2], "Doe, \"Jane\"");
    expect_int(&c.rows[0][3], PT_DATE, DAY_2026_01_01);
    expect_int(&c.rows[0][4], PT_TIMESTAMP, (int64_t)DAY_2026_01_01 * 86400 + 1);
    expect_int(&c.rows[0][5], PT_BOOL, 1);
    expect_int(&c.rows[1][0], PT_INT, -7);
    expect_int(&c.rows[1][1], PT_DECIMAL, -5);
    expect_text(&c.rows[1][2], "two\nlines");
    expect_int(&c.rows[1][3], PT_DATE, 0);
    expect_int(&c.rows[1][4], PT_TIMESTAMP, 0);
    expect_int(&c.rows[1][5], PT_BOOL, 0);
    expect_int(&c.rows[2][0], PT_INT, INT64_MAX);
    expect_int(&c.rows[2][1], PT_DECIMAL, 300);
    expect_text(&c.rows[2][2], "caf\xc3\xa9");
    expect_int(&c.rows[2][3], PT_DATE, 19782);
    expect_int(&c.rows[2][4], PT_TIMESTAMP, 2147483648ll);
    expect_int(&c.rows[2][5], PT_BOOL, 0);
}

static void jsonl_rows_of_every_type_are_read_in_schema_order(void **state)
{
    struct pt_schema s;
    struct collected c;
    struct pt_import_error err;
    const char *jsonl =
        "{\"ok\": true, \"n\": 42, \"amount\": 12.5, \"name\": \"Doe, \\\"Jane\\\"\", "
        "\"day\": \"2026-01-01\", \"at\": \"2026-01-01T00:00:01Z\"}\r\n"
        "   \n"
        "{\"n\":-7,\"amount\":\"-0.05\",\"name\":\"two\\nlines \\u00e9\\ud83d\\ude00\","
        "\"day\":\"1970-01-01\",\"at\":\"1970-01-01 00:00:00\",\"ok\":0}\n"
        "{\"n\":\"9223372036854775807\",\"amount\":3,\"name\":\"\",\"day\":null,\"at\":null,"
        "\"ok\":false}";

    (void)state;
    every_type(&s);
    assert_int_equal(parse(jsonl, PT_FORMAT_JSONL, &s, &c, &err), 0);
    assert_int_equal(c.n, 3);
    expect_int(&c.rows[0][0], PT_INT, 42);
    expect_int(&c.rows[0][1], PT_DECIMAL, 1250);
    expect_text(&c.rows[0][2], "Doe, \"Jane\"");
    expect_int(&c.rows[0][3], PT_DATE, DAY_2026_01_01);
    expect_int(&c.rows[0][4], PT_TIMESTAMP, (int64_t)DAY_2026_01_01 * 86400 + 1);
    expect_int(&c.rows[0][5], PT_BOOL, 1);
    expect_int(&c.rows[1][0], PT_INT, -7);
    expect_int(&c.rows[1][1], PT_DECIMAL, -5);
    expect_text(&c.rows[1][2], "two\nlines \xc3\xa9\xf0\x9f\x98\x80");
    expect_int(&c.rows[1][5], PT_BOOL, 0);
    expect_int(&c.rows[2][0], PT_INT, INT64_MAX);
    expect_int(&c.rows[2][1], PT_DECIMAL, 300);
    expect_text(&c.rows[2][2], "");
    assert_int_equal(c.rows[2][3].type, PT_NULL);
    assert_int_equal(c.rows[2][4].type, PT_NULL);
    expect_int(&c.rows[2][5], PT_BOOL, 0);
}

static void empty_csv_fields_are_null_and_quoted_empty_text_is_empty_text(void **state)
{
    struct pt_schema s;
    struct collected c;
    struct pt_import_error err;

    (void)state;
    every_type(&s);
    assert_int_equal(parse("n,amount,name,day,at,ok\n,,,,,\n\"\",\"\",\"\",\"\",\"\",\"\"\n",
                           PT_FORMAT_CSV, &s, &c, &err),
                     0);
    assert_int_equal(c.n, 2);
    for (size_t i = 0; i < s.n_columns; i++)
        assert_int_equal(c.rows[0][i].type, PT_NULL);
    for (size_t i = 0; i < s.n_columns; i++) {
        if (s.columns[i].type == PT_TEXT)
            expect_text(&c.rows[1][i], "");
        else
            assert_int_equal(c.rows[1][i].type, PT_NULL);
    }
}

static void json_null_is_null_for_every_type(void **state)
{
    struct pt_schema s;
    struct collected c;
    struct pt_import_error err;

    (void)state;
    every_type(&s);
    assert_int_equal(parse("{\"n\":null,\"amount\":null,\"name\":null,\"day\":null,\"at\":null,"
                           "\"ok\":null}",
                           PT_FORMAT_JSONL, &s, &c, &err),
                     0);
    for (size_t i = 0; i < s.n_columns; i++)
        assert_int_equal(c.rows[0][i].type, PT_NULL);
}

static void decimals_are_exact_at_their_scale(void **state)
{
    static const struct {
        const char *text;
        unsigned scale;
        int rc;
        int64_t want;
    } cases[] = {
        {"12.5", 1, 0, 125},
        {"12.5", 2, 0, 1250},
        {"12", 2, 0, 1200},
        {"0.1", 2, 0, 10},
        {"-0.05", 2, 0, -5},
        {"-0", 2, 0, 0},
        {"12.500", 2, 0, 1250}, /* zeros past the scale lose nothing */
        {"0.30000000000000004", 2, PT_NUM_DIGITS, 0},
        {"12.345", 2, PT_NUM_DIGITS, 0},
        {"92233720368547758.07", 2, 0, INT64_MAX},
        {"-92233720368547758.08", 2, 0, INT64_MIN},
        {"92233720368547758.08", 2, PT_NUM_RANGE, 0},
        {"99999999999999999999999", 0, PT_NUM_RANGE, 0},
        {"1.000000000000000001", 18, 0, 1000000000000000001ll},
        {"1e3", 0, PT_NUM_SYNTAX, 0},
        {".5", 1, PT_NUM_SYNTAX, 0},
        {"5.", 1, PT_NUM_SYNTAX, 0},
        {"+5", 1, PT_NUM_SYNTAX, 0},
        {"-", 1, PT_NUM_SYNTAX, 0},
        {"", 1, PT_NUM_SYNTAX, 0},
        {"1.2.3", 2, PT_NUM_SYNTAX, 0},
        {" 1", 1, PT_NUM_SYNTAX, 0},
        {"1,5", 1, PT_NUM_SYNTAX, 0},
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t v = 0;
        int rc = pt_decimal_parse(&v, cases[i].text, strlen(cases[i].text), cases[i].scale);
        if (rc != cases[i].rc || (rc == 0 && v != cases[i].want))
            fail_msg("'%s' at scale %u: rc %d value %lld, expected rc %d value %lld", cases[i].text,
                     cases[i].scale, rc, (long long)v, cases[i].rc, (long long)cases[i].want);
        if (rc == 0) {
            /* Formatting gives back the canonical text, which parses to the same value. */
            struct pt_value pv = {.type = PT_DECIMAL, .i = v, .scale = cases[i].scale};
            char buf[64];
            int64_t again = 1;
            pt_value_format(buf, sizeof buf, &pv);
            assert_int_equal(pt_decimal_parse(&again, buf, strlen(buf), cases[i].scale), 0);
            assert_true(again == v);
        }
    }
}

static void integers_are_read_exactly_within_int64(void **state)
{
    int64_t v;

    (void)state;
    assert_int_equal(pt_int_parse(&v, "9223372036854775807", 19), 0);
    assert_true(v == INT64_MAX);
    assert_int_equal(pt_int_parse(&v, "-9223372036854775808", 20), 0);
    assert_true(v == INT64_MIN);
    assert_int_equal(pt_int_parse(&v, "007", 3), 0);
    assert_true(v == 7);
    assert_int_equal(pt_int_parse(&v, "9223372036854775808", 19), PT_NUM_RANGE);
    assert_int_equal(pt_int_parse(&v, "-9223372036854775809", 20), PT_NUM_RANGE);
    assert_int_equal(pt_int_parse(&v, "12.0", 4), PT_NUM_SYNTAX);
    assert_int_equal(pt_int_parse(&v, "0x10", 4), PT_NUM_SYNTAX);
}

/*
 * DATE and TIMESTAMP are encoded as the querier's SQL literals encode them
 * (querier/qr_sql.c) and as the simulator writes them: checked for every
 * day from 1900 to 2100, and at the edges of the years allowed.
 */
static void dates_and_timestamps_use_the_querier_encoding(void **state)
{
    int64_t a, b;
    char text[PT_TIMESTAMP_TEXT], sql[20];

    (void)state;
    for (int64_t d = -25567; d <= 47482; d++) {
        pt_date_format(text, d);
        assert_int_equal(pt_date_parse(&a, text, 10), 0);
        assert_int_equal(qr_date_parse(&b, text, 10), 0);
        assert_true(a == d && b == d);
    }
    assert_int_equal(pt_date_parse(&a, "2026-01-01", 10), 0);
    assert_true(a == DAY_2026_01_01);
    assert_int_equal(pt_date_parse(&a, "0001-01-01", 10), 0);
    assert_int_equal(pt_date_parse(&a, "9999-12-31", 10), 0);
    assert_int_equal(pt_date_parse(&a, "0000-12-31", 10), -1);
    assert_int_equal(pt_date_parse(&a, "2023-02-29", 10), -1);
    assert_int_equal(pt_date_parse(&a, "2026-13-01", 10), -1);
    assert_int_equal(pt_date_parse(&a, "2026-1-01", 9), -1);
    assert_int_equal(pt_date_parse(&a, "2026/01/01", 10), -1);

    static const char *const stamps[] = {"1970-01-01T00:00:00Z", "2026-03-29T01:59:59Z",
                                         "1969-12-31T23:59:59Z", "2400-02-29T12:00:00Z"};
    for (size_t i = 0; i < sizeof stamps / sizeof stamps[0]; i++) {
        assert_int_equal(pt_timestamp_parse(&a, stamps[i], 20), 0);
        memcpy(sql, stamps[i], 19);
        sql[10] = ' ';
        assert_int_equal(qr_timestamp_parse(&b, sql, 19), 0);
        assert_true(a == b);
        pt_timestamp_format(text, a);
        assert_string_equal(text, stamps[i]);
        assert_int_equal(pt_timestamp_parse(&b, stamps[i], 19), 0); /* without the Z */
        assert_true(a == b);
    }
    assert_int_equal(pt_timestamp_parse(&a, "2026-01-01T24:00:00Z", 20), -1);
    assert_int_equal(pt_timestamp_parse(&a, "2026-01-01T23:59:60Z", 20), -1);
    assert_int_equal(pt_timestamp_parse(&a, "2026-01-01T10:00:00+02:00", 25), -1);
    assert_int_equal(pt_timestamp_parse(&a, "2026-01-01T10:00:00.5Z", 22), -1);
    assert_int_equal(pt_timestamp_parse(&a, "2026-01-01", 10), -1);
}

static void values_format_exactly(void **state)
{
    static const struct {
        struct pt_value v;
        const char *text;
    } cases[] = {
        {{.type = PT_NULL}, ""},
        {{.type = PT_INT, .i = -42}, "-42"},
        {{.type = PT_DECIMAL, .i = 1250, .scale = 2}, "12.50"},
        {{.type = PT_DECIMAL, .i = -5, .scale = 2}, "-0.05"},
        {{.type = PT_DECIMAL, .i = INT64_MIN, .scale = 2}, "-92233720368547758.08"},
        {{.type = PT_DECIMAL, .i = 7, .scale = 0}, "7"},
        {{.type = PT_DATE, .i = DAY_2026_01_01}, "2026-01-01"},
        {{.type = PT_TIMESTAMP, .i = 86399}, "1970-01-01T23:59:59Z"},
        {{.type = PT_TIMESTAMP, .i = -1}, "1969-12-31T23:59:59Z"},
        {{.type = PT_BOOL, .i = 1}, "true"},
        {{.type = PT_BOOL, .i = 0}, "false"},
        {{.type = PT_TEXT, .len = 3, .s = "abc"}, "abc"},
    };
    char buf[64];

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = pt_value_format(buf, sizeof buf, &cases[i].v);
        assert_string_equal(buf, cases[i].text);
        assert_int_equal(n, strlen(cases[i].text));
    }
    /* Cut to the buffer, always terminated; the length needed is returned. */
    assert_int_equal(pt_value_format(buf, 4, &cases[4].v), strlen(cases[4].text));
    assert_string_equal(buf, "-92");
}

/* ------------------------------------------------------ import errors */

struct bad_input {
    const char *input;
    enum pt_import_kind kind;
    uint64_t line;
    unsigned column;
    const char *column_name;
    const char *msg;
};

static void expect_errors(const struct bad_input *cases, size_t n, enum pt_format fmt)
{
    struct pt_schema s;
    struct collected c;
    struct pt_import_error err;

    every_type(&s);
    for (size_t i = 0; i < n; i++) {
        int rc = parse(cases[i].input, fmt, &s, &c, &err);
        if (rc != PT_ERR_INPUT)
            fail_msg("case %zu: rc %d, expected PT_ERR_INPUT", i, rc);
        if (strcmp(err.msg, cases[i].msg) != 0)
            fail_msg("case %zu:\n  expected: %s\n  got:      %s", i, cases[i].msg, err.msg);
        assert_int_equal(err.kind, cases[i].kind);
        assert_int_equal(err.line, cases[i].line);
        assert_int_equal(err.column, cases[i].column);
        assert_string_equal(err.column_name, cases[i].column_name);
    }
}

#define HDR "n,amount,name,day,at,ok\n"
#define OK_ROW "1,1.5,a,2026-01-01,2026-01-01T00:00:00Z,true\n"

static void a_value_of_the_wrong_type_is_refused_with_its_line_and_column(void **state)
{
    static const struct bad_input csv[] = {
        {HDR OK_ROW "abc,1,a,2026-01-01,2026-01-01T00:00:00,1\n", PT_IMPORT_TYPE, 3, 1, "n",
         "data.csv:3: column 'n' (1): 'abc' is not an integer"},
        {HDR "99999999999999999999,1,a,,,\n", PT_IMPORT_TYPE, 2, 1, "n",
         "data.csv:2: column 'n' (1): '99999999999999999999' is out of the INT range"},
        {HDR "1,12.345,a,,,\n", PT_IMPORT_TYPE, 2, 2, "amount",
         "data.csv:2: column 'amount' (2): '12.345' has more decimals than DECIMAL(2) keeps"},
        {HDR "1,1e3,a,,,\n", PT_IMPORT_TYPE, 2, 2, "amount",
         "data.csv:2: column 'amount' (2): '1e3' is not a DECIMAL(2) number"},
        {HDR "1,1,a,2026-02-30,,\n", PT_IMPORT_TYPE, 2, 4, "day",
         "data.csv:2: column 'day' (4): '2026-02-30' is not a date (YYYY-MM-DD)"},
        {HDR "1,1,a,,2026-01-01T10:00:00+02:00,\n", PT_IMPORT_TYPE, 2, 5, "at",
         "data.csv:2: column 'at' (5): '2026-01-01T10:00:00+02:00' is not a timestamp "
         "(YYYY-MM-DDTHH:MM:SSZ, UTC)"},
        {HDR "1,1,a,,,yes\n", PT_IMPORT_TYPE, 2, 6, "ok",
         "data.csv:2: column 'ok' (6): 'yes' is not a bool (true, false, 1 or 0)"},
        {HDR "1, 2,a,,,\n", PT_IMPORT_TYPE, 2, 2, "amount",
         "data.csv:2: column 'amount' (2): ' 2' is not a DECIMAL(2) number"},
        /* The column is counted in the file's order, not the schema's. */
        {"ok,n,amount,name,day,at\n1,x,1,a,,\n", PT_IMPORT_TYPE, 2, 2, "n",
         "data.csv:2: column 'n' (2): 'x' is not an integer"},
    };
    static const struct bad_input jsonl[] = {
        {"{\"n\":\"abc\",\"amount\":1,\"name\":\"a\",\"day\":null,\"at\":null,\"ok\":true}",
         PT_IMPORT_TYPE, 1, 1, "n", "data.jsonl:1: column 'n' (1): 'abc' is not an integer"},
        {"{\"n\":1.5,\"amount\":1,\"name\":\"a\",\"day\":null,\"at\":null,\"ok\":true}",
         PT_IMPORT_TYPE, 1, 1, "n", "data.jsonl:1: column 'n' (1): '1.5' is not an integer"},
        {"{\"n\":1,\"amount\":1,\"name\":12,\"day\":null,\"at\":null,\"ok\":true}", PT_IMPORT_TYPE,
         1, 3, "name",
         "data.jsonl:1: column 'name' (3): a number '12' is not text (write it as a string)"},
        {"{\"n\":1,\"amount\":1,\"name\":\"a\",\"day\":20454,\"at\":null,\"ok\":true}",
         PT_IMPORT_TYPE, 1, 4, "day",
         "data.jsonl:1: column 'day' (4): a number '20454' is not a date (YYYY-MM-DD)"},
        {"{\"n\":true,\"amount\":1,\"name\":\"a\",\"day\":null,\"at\":null,\"ok\":true}",
         PT_IMPORT_TYPE, 1, 1, "n",
         "data.jsonl:1: column 'n' (1): a JSON bool 'true' is not an "
         "integer"},
        {"{\"n\":\"\",\"amount\":1,\"name\":\"a\",\"day\":null,\"at\":null,\"ok\":true}",
         PT_IMPORT_TYPE, 1, 1, "n", "data.jsonl:1: column 'n' (1): '' is not an integer"},
        {"{\"n\":1,\"amount\":1,\"name\":{\"x\":1},\"day\":null,\"at\":null,\"ok\":true}",
         PT_IMPORT_TYPE, 1, 3, "name",
         "data.jsonl:1: column 'name' (3): a nested object is not a value (each line is one flat "
         "object)"},
        {"{\"n\":[1],\"amount\":1,\"name\":\"a\",\"day\":null,\"at\":null,\"ok\":true}",
         PT_IMPORT_TYPE, 1, 1, "n",
         "data.jsonl:1: column 'n' (1): a nested array is not a value (each line is one flat "
         "object)"},
    };

    (void)state;
    expect_errors(csv, sizeof csv / sizeof csv[0], PT_FORMAT_CSV);
    expect_errors(jsonl, sizeof jsonl / sizeof jsonl[0], PT_FORMAT_JSONL);
}

static void a_missing_column_is_refused_with_its_name(void **state)
{
    static const struct bad_input csv[] = {
        {"n,amount,name,day,ok\n", PT_IMPORT_MISSING, 1, 5, "at",
         "data.csv:1: column 'at' (5): the header lacks this column of table t"},
        {HDR OK_ROW "1,2\n", PT_IMPORT_MISSING, 3, 3, "name",
         "data.csv:3: column 'name' (3): missing: the line has 2 fields, the header 6"},
    };
    static const struct bad_input jsonl[] = {
        {"{\"n\":1,\"amount\":1,\"name\":\"a\",\"day\":null,\"ok\":true}", PT_IMPORT_MISSING, 1, 5,
         "at",
         "data.jsonl:1: column 'at' (5): missing: the object has no key 'at' (write null for no "
         "value)"},
        {"\n{}", PT_IMPORT_MISSING, 2, 1, "n",
         "data.jsonl:2: column 'n' (1): missing: the object has no key 'n' (write null for no "
         "value)"},
    };

    (void)state;
    expect_errors(csv, sizeof csv / sizeof csv[0], PT_FORMAT_CSV);
    expect_errors(jsonl, sizeof jsonl / sizeof jsonl[0], PT_FORMAT_JSONL);
}

static void a_column_the_table_lacks_is_refused(void **state)
{
    static const struct bad_input csv[] = {
        {"n,amount,name,colour,day,at,ok\n", PT_IMPORT_EXTRA, 1, 4, "colour",
         "data.csv:1: column 'colour' (4): table t has no such column"},
        {"n,amount,name,day,at,ok,N\n", PT_IMPORT_EXTRA, 1, 7, "N",
         "data.csv:1: column 'N' (7): the header names this column twice"},
        {HDR "1,1,a,,,,extra\n", PT_IMPORT_EXTRA, 2, 7, "",
         "data.csv:2: field 7: the line has more fields than the header's 6"},
    };
    static const struct bad_input jsonl[] = {
        {"{\"n\":1,\"colour\":\"red\"}", PT_IMPORT_EXTRA, 1, 2, "colour",
         "data.jsonl:1: column 'colour' (2): table t has no such column"},
    };

    (void)state;
    expect_errors(csv, sizeof csv / sizeof csv[0], PT_FORMAT_CSV);
    expect_errors(jsonl, sizeof jsonl / sizeof jsonl[0], PT_FORMAT_JSONL);
}

static void an_overlong_text_or_line_is_refused(void **state)
{
    char *long_line = malloc(PT_IMPORT_LINE_MAX + 64);
    char *long_json = malloc(PT_IMPORT_LINE_MAX + 64);
    struct bad_input dyn[2];
    static const struct bad_input csv[] = {
        {HDR "1,1,aaaaaaaaaabbbbbbbbbbccccccccccddddddddddeeeeeeeeeeffffffffffggggg,,,\n",
         PT_IMPORT_TOO_LONG, 2, 3, "name",
         "data.csv:2: column 'name' (3): a text of 65 bytes: a text value holds at most 64"},
    };
    static const struct bad_input jsonl[] = {
        {"{\"name\":\"aaaaaaaaaabbbbbbbbbbccccccccccddddddddddeeeeeeeeeeffffffffffgggggg\\u00e9\"}",
         PT_IMPORT_TOO_LONG, 1, 1, "name",
         "data.jsonl:1: column 'name' (1): a text of 68 bytes: a text value holds at most 64"},
    };

    (void)state;
    assert_non_null(long_line);
    assert_non_null(long_json);
    expect_errors(csv, sizeof csv / sizeof csv[0], PT_FORMAT_CSV);
    expect_errors(jsonl, sizeof jsonl / sizeof jsonl[0], PT_FORMAT_JSONL);

    /* A line over PT_IMPORT_LINE_MAX, even in quotes, is refused before it is read. */
    strcpy(long_line, HDR "1,1,\"");
    memset(long_line + strlen(long_line), 'x', PT_IMPORT_LINE_MAX);
    strcpy(long_line + strlen(HDR) + 5 + PT_IMPORT_LINE_MAX, "\",,,\n");
    dyn[0] = (struct bad_input){
        long_line, PT_IMPORT_TOO_LONG, 2, 0, "", "data.csv:2: the line is longer than 16384 bytes"};
    expect_errors(dyn, 1, PT_FORMAT_CSV);
    strcpy(long_json, "{\"name\":\"");
    memset(long_json + 9, 'x', PT_IMPORT_LINE_MAX);
    strcpy(long_json + 9 + PT_IMPORT_LINE_MAX, "\"}\n");
    dyn[1] = (struct bad_input){long_json, PT_IMPORT_TOO_LONG,
                                1,         0,
                                "",        "data.jsonl:1: the line is longer than 16384 bytes"};
    expect_errors(dyn + 1, 1, PT_FORMAT_JSONL);
    free(long_line);
    free(long_json);
}

static void a_file_over_its_size_or_row_limit_is_refused(void **state)
{
    struct pt_schema s;
    struct pt_import_error err;
    char serr[64];
    size_t n = PT_IMPORT_FILE_MAX + 1, rows_len;
    uint8_t *big = calloc(1, n);
    char *rows;

    (void)state;
    assert_non_null(big);
    every_type(&s);
    assert_int_equal(pt_import_parse(big, n, PT_FORMAT_CSV, &s, "big.csv", NULL, NULL, NULL, &err),
                     PT_ERR_INPUT);
    assert_int_equal(err.kind, PT_IMPORT_TOO_LONG);
    assert_int_equal(err.line, 0);
    assert_string_equal(err.msg, "big.csv: the file is larger than 16 MiB");
    free(big);

    /* One row more than PT_IMPORT_ROWS_MAX, in a one-column table. */
    assert_int_equal(pt_schema_parse(&s, "t", "b bool", serr, sizeof serr), 0);
    rows_len = 2 + 2 * ((size_t)PT_IMPORT_ROWS_MAX + 1);
    rows = malloc(rows_len + 1);
    assert_non_null(rows);
    memcpy(rows, "b\n", 2);
    for (size_t i = 0; i <= PT_IMPORT_ROWS_MAX; i++)
        memcpy(rows + 2 + 2 * i, "1\n", 2);
    assert_int_equal(pt_import_parse((uint8_t *)rows, rows_len, PT_FORMAT_CSV, &s, "rows.csv", NULL,
                                     NULL, NULL, &err),
                     PT_ERR_INPUT);
    assert_int_equal(err.kind, PT_IMPORT_TOO_LONG);
    assert_string_equal(err.msg, "rows.csv:1000002: more than 1000000 rows in one file");
    free(rows);
}

static void csv_quoting_that_breaks_rfc_4180_is_refused(void **state)
{
    static const struct bad_input csv[] = {
        {HDR "1,1,ab\"c,,,\n", PT_IMPORT_QUOTING, 2, 3, "name",
         "data.csv:2: column 'name' (3): a quote inside an unquoted field (quote the whole "
         "field, and double each quote in it)"},
        {HDR "1,1,\"ab\"c,,,\n", PT_IMPORT_QUOTING, 2, 3, "name",
         "data.csv:2: column 'name' (3): 'c' after the closing quote (a field ends at its "
         "closing quote)"},
        {HDR OK_ROW "1,1,\"abc,,,\n2,2,x,,,\n", PT_IMPORT_QUOTING, 3, 3, "name",
         "data.csv:3: column 'name' (3): a quoted field that never ends (a missing closing "
         "quote)"},
        {"n,\"amount\"x\n", PT_IMPORT_QUOTING, 1, 2, "",
         "data.csv:1: field 2: 'x' after the closing quote (a field ends at its closing quote)"},
    };

    (void)state;
    expect_errors(csv, sizeof csv / sizeof csv[0], PT_FORMAT_CSV);
}

static void malformed_json_is_refused_with_its_position(void **state)
{
    static const struct bad_input jsonl[] = {
        {"{\"n\" 1}", PT_IMPORT_JSON, 1, 0, "",
         "data.jsonl:1: malformed JSON at character 6: expected ':' after a key, found '1'"},
        {"{\"n\":1} x", PT_IMPORT_JSON, 1, 0, "",
         "data.jsonl:1: malformed JSON at character 9: expected the end of the line after the "
         "object, found 'x'"},
        {"[1,2]", PT_IMPORT_JSON, 1, 0, "",
         "data.jsonl:1: malformed JSON at character 1: expected an object '{' (each line is one "
         "object, not an array), found '['"},
        {"{\"n\":1,", PT_IMPORT_JSON, 1, 0, "",
         "data.jsonl:1: malformed JSON at character 8: expected a key in quotes, found the end "
         "of the line"},
        {"{\"name\":\"a\\qb\"}", PT_IMPORT_JSON, 1, 0, "",
         "data.jsonl:1: malformed JSON at character 12: an unknown escape, found 'q'"},
        {"{\"name\":\"\\ud800\"}", PT_IMPORT_JSON, 1, 0, "",
         "data.jsonl:1: malformed JSON at character 16: a high surrogate without its low one, "
         "found '\"'"},
        {"{\"name\":\"a\tb\"}", PT_IMPORT_JSON, 1, 0, "",
         "data.jsonl:1: malformed JSON at character 11: a control character in a string must be "
         "escaped, found '\\x09'"},
        {"{\"n\":01}", PT_IMPORT_JSON, 1, 0, "",
         "data.jsonl:1: malformed JSON at character 7: expected ',' or '}' after a value, found "
         "'1'"},
        {"{\"n\":tru}", PT_IMPORT_JSON, 1, 0, "",
         "data.jsonl:1: malformed JSON at character 6: expected a value, found 't'"},
        {"{\"n\":1,\"n\":2}", PT_IMPORT_JSON, 1, 2, "n",
         "data.jsonl:1: column 'n' (2): the object has this key twice"},
    };

    (void)state;
    expect_errors(jsonl, sizeof jsonl / sizeof jsonl[0], PT_FORMAT_JSONL);
}

static void invalid_utf8_is_refused(void **state)
{
    static const struct bad_input csv[] = {
        {HDR "1,1,caf\xe9,,,\n", PT_IMPORT_UTF8, 2, 3, "name",
         "data.csv:2: column 'name' (3): the byte at byte 4 of the value is not UTF-8"},
        {HDR "1,1,\xc0\xaf,,,\n", PT_IMPORT_UTF8, 2, 3, "name",
         "data.csv:2: column 'name' (3): the byte at byte 1 of the value is not UTF-8"},
        {HDR "1,1,\xed\xa0\x80,,,\n", PT_IMPORT_UTF8, 2, 3, "name",
         "data.csv:2: column 'name' (3): the byte at byte 1 of the value is not UTF-8"},
        {"n,am\xffount\n", PT_IMPORT_UTF8, 1, 2, "",
         "data.csv:1: field 2: the column name is not UTF-8 (byte 3)"},
    };
    static const struct bad_input jsonl[] = {
        {"{\"name\":\"caf\xe9\"}", PT_IMPORT_UTF8, 1, 1, "name",
         "data.jsonl:1: column 'name' (1): the byte at byte 4 of the value is not UTF-8"},
        {"{\"name\":\"a\\u0000\"}", PT_IMPORT_UTF8, 1, 1, "name",
         "data.jsonl:1: column 'name' (1): a NUL byte at byte 2 of the value is not UTF-8"},
    };
    struct pt_schema s;
    struct pt_import_error err;
    static const char nul_csv[] = HDR "1,1,a\0b,,,\n";

    (void)state;
    expect_errors(csv, sizeof csv / sizeof csv[0], PT_FORMAT_CSV);
    expect_errors(jsonl, sizeof jsonl / sizeof jsonl[0], PT_FORMAT_JSONL);
    /* A NUL byte in a CSV field (the table-driven cases are C strings). */
    every_type(&s);
    assert_int_equal(pt_import_parse((const uint8_t *)nul_csv, sizeof nul_csv - 1, PT_FORMAT_CSV,
                                     &s, "data.csv", NULL, NULL, NULL, &err),
                     PT_ERR_INPUT);
    assert_int_equal(err.kind, PT_IMPORT_UTF8);
    assert_string_equal(err.msg,
                        "data.csv:2: column 'name' (3): a NUL byte at byte 2 of the value is not "
                        "UTF-8");
}

static void an_empty_file_is_refused(void **state)
{
    static const struct bad_input csv[] = {
        {"", PT_IMPORT_EMPTY, 0, 0, "", "data.csv: the file is empty"},
        {"\xef\xbb\xbf\r\n\n", PT_IMPORT_EMPTY, 0, 0, "", "data.csv: the file is empty"},
        {HDR "\n\n", PT_IMPORT_EMPTY, 0, 0, "", "data.csv: the file has no rows, only a header"},
    };
    static const struct bad_input jsonl[] = {
        {"", PT_IMPORT_EMPTY, 0, 0, "", "data.jsonl: the file is empty"},
        {" \n\t\r\n", PT_IMPORT_EMPTY, 0, 0, "", "data.jsonl: the file is empty"},
    };

    (void)state;
    expect_errors(csv, sizeof csv / sizeof csv[0], PT_FORMAT_CSV);
    expect_errors(jsonl, sizeof jsonl / sizeof jsonl[0], PT_FORMAT_JSONL);
}

static void bad_values_are_quoted_with_control_bytes_escaped_and_cut(void **state)
{
    static const struct bad_input csv[] = {
        {HDR "\x1b[31mred,1,a,,,\n", PT_IMPORT_TYPE, 2, 1, "n",
         "data.csv:2: column 'n' (1): '\\x1b[31mred' is not an integer"},
        {HDR "12345678901234567890123456789012345678901234567890x,1,a,,,\n", PT_IMPORT_TYPE, 2, 1,
         "n",
         "data.csv:2: column 'n' (1): '1234567890123456789012345678901234567890...' is not an "
         "integer"},
    };

    (void)state;
    expect_errors(csv, sizeof csv / sizeof csv[0], PT_FORMAT_CSV);
}

static void the_format_is_guessed_from_the_name_then_the_content(void **state)
{
    (void)state;
    assert_int_equal(pt_import_format_guess("a.CSV", (const uint8_t *)"{", 1), PT_FORMAT_CSV);
    assert_int_equal(pt_import_format_guess("a.jsonl", (const uint8_t *)"x", 1), PT_FORMAT_JSONL);
    assert_int_equal(pt_import_format_guess("a.ndjson", NULL, 0), PT_FORMAT_JSONL);
    assert_int_equal(pt_import_format_guess("a.txt", (const uint8_t *)"\n  {\"a\":1}", 10),
                     PT_FORMAT_JSONL);
    assert_int_equal(pt_import_format_guess("-", (const uint8_t *)"a,b\n", 4), PT_FORMAT_CSV);
}

/* ------------------------------------------------------------ schemas */

static void schemas_parse_from_text_and_print_back_the_same(void **state)
{
    struct pt_schema s, again;
    char err[128], text[PT_SCHEMA_TEXT_MAX];

    (void)state;
    assert_int_equal(pt_schema_parse(&s, "my_sleep",
                                     " night DATE , minutes Integer,score numeric( 1 ),"
                                     "note text, woke timestamp, nap boolean",
                                     err, sizeof err),
                     0);
    assert_string_equal(s.name, "my_sleep");
    assert_int_equal(s.n_columns, 6);
    assert_int_equal(s.columns[2].type, PT_DECIMAL);
    assert_int_equal(s.columns[2].scale, 1);
    pt_schema_text(text, sizeof text, &s);
    assert_string_equal(text, "night date, minutes int, score decimal(1), note text, woke "
                              "timestamp, nap bool");
    assert_int_equal(pt_schema_parse(&again, "my_sleep", text, err, sizeof err), 0);
    assert_true(pt_schema_equal(&s, &again));
    assert_int_equal(pt_schema_column(&s, "MINUTES", 7), 1);
    assert_int_equal(pt_schema_column(&s, "minute", 6), -1);
}

static void bad_schemas_are_refused_with_the_column_at_fault(void **state)
{
    static const struct {
        const char *table, *text, *msg;
    } cases[] = {
        {"t", "a int, b flaot",
         "column 2: unknown type (int, decimal(s), text, date, timestamp, "
         "bool): 'flaot'"},
        {"t", "a int, A text", "column 2: a second column named 'A'"},
        {"t", "a decimal", "column 1: decimal needs its scale, as in decimal(2): 'a'"},
        {"t", "a decimal(19)", "column 1: a decimal's scale is 0 to 18, not '19'"},
        {"t", "a int b int", "column 1: expected ',' between columns, found 'b'"},
        {"t", "a int,", "column 2: expected a column name, found ''"},
        {"t", "", "column 1: expected a column name, found ''"},
        {"t", "9a int", "column 1: invalid column name '9a'"},
        {"t", "abcdefghijabcdefghijabcdefghijabc int",
         "column 1: invalid column name 'abcdefghijabcdefghijabcdefghijabc'"},
        {"bad-name", "a int", "invalid table name (letters, digits, _; at most 32) 'bad-name'"},
    };
    struct pt_schema s;
    char err[160], many[PT_SCHEMA_TEXT_MAX];
    size_t n = 0;

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(pt_schema_parse(&s, cases[i].table, cases[i].text, err, sizeof err),
                         PT_ERR_INPUT);
        if (strcmp(err, cases[i].msg) != 0)
            fail_msg("'%s':\n  expected: %s\n  got:      %s", cases[i].text, cases[i].msg, err);
    }
    for (unsigned i = 0; i <= PT_COLUMNS_MAX; i++)
        n += (size_t)snprintf(many + n, sizeof many - n, "%sc%u int", i ? "," : "", i);
    assert_int_equal(pt_schema_parse(&s, "t", many, err, sizeof err), PT_ERR_INPUT);
    assert_string_equal(err, "a table has at most 32 columns");
}

/* Our limits are the token's: what the importer accepts, the token stores. */
static void the_owner_side_limits_are_the_tokens(void **state)
{
    (void)state;
    assert_int_equal(PT_NAME_MAX, TK_NAME_MAX);
    assert_int_equal(PT_TEXT_MAX, TK_TEXT_MAX);
    assert_int_equal(PT_COLUMNS_MAX, TK_MAX_COLUMNS);
    assert_int_equal(PT_LOAD_REQUEST_MAX, TK_REQUEST_MAX);
    assert_int_equal(PT_COLUMNS_MAX, QR_CATALOG_COLUMNS_MAX);
}

/* ------------------------------------------------------- owner, loads */

/* n rows of the every-type table as CSV, row i with n = i. */
static char *csv_rows(size_t n)
{
    size_t cap = 64 + n * 96, k;
    char *s = malloc(cap);
    assert_non_null(s);
    k = (size_t)snprintf(s, cap, HDR);
    for (size_t i = 0; i < n; i++)
        k += (size_t)snprintf(s + k, cap - k, "%zu,%zu.25,name %zu,2026-01-01,,%s\n", i, i, i,
                              i % 2 ? "true" : "false");
    return s;
}

static void a_file_loads_as_one_batch_cut_into_requests_that_fit(void **state)
{
    struct fake_token *f = fake_new();
    struct pt_link link = fake_link(f);
    struct pt_owner o;
    struct pt_schema s;
    struct pt_import_error err;
    uint64_t rows = 0;
    char *csv = csv_rows(500);

    (void)state;
    every_type(&s);
    pt_owner_init(&o, &link, 1785000000);
    assert_int_equal(pt_import_load(&o, (uint8_t *)csv, strlen(csv), PT_FORMAT_CSV, &s, "x.csv",
                                    4096, &rows, &err),
                     0);
    assert_int_equal(rows, 500);
    assert_true(f->load_requests > 5);
    assert_true(f->largest_load <= 4096);
    /* Every request but the last says more; only the last commits. */
    for (size_t i = 0; i < f->n_requests; i++) {
        assert_int_equal(f->bodies[i], COHORT__TOKEN_REQUEST__BODY_LOAD_TABLE);
        assert_int_equal(f->mores[i], i + 1 < f->n_requests);
    }
    assert_int_equal(f->n_tables, 1);
    assert_int_equal(f->tables[0].n_rows, 500);
    for (size_t i = 0; i < 500; i++) {
        const struct fake_row *r = &f->tables[0].rows[i];
        char name[32];
        assert_int_equal(r->id, i + 1);
        expect_int(&r->v[0], PT_INT, (int64_t)i);
        expect_int(&r->v[1], PT_DECIMAL, (int64_t)i * 100 + 25);
        assert_int_equal(r->v[1].scale, 2);
        snprintf(name, sizeof name, "name %zu", i);
        expect_text(&r->v[2], name);
        expect_int(&r->v[3], PT_DATE, DAY_2026_01_01);
        assert_int_equal(r->v[4].type, PT_NULL);
        expect_int(&r->v[5], PT_BOOL, (int64_t)(i % 2));
    }
    free(csv);
    fake_free(f);
}

static void a_bad_file_sends_nothing_to_the_token(void **state)
{
    struct fake_token *f = fake_new();
    struct pt_link link = fake_link(f);
    struct pt_owner o;
    struct pt_schema s;
    struct pt_import_error err;
    uint64_t rows = 99;
    char *csv = csv_rows(400);
    char *bad = strstr(csv, "\n399,");

    (void)state;
    assert_non_null(bad);
    bad[1] = 'x'; /* the very last row is wrong */
    every_type(&s);
    pt_owner_init(&o, &link, 1785000000);
    assert_int_equal(pt_import_load(&o, (uint8_t *)csv, strlen(csv), PT_FORMAT_CSV, &s, "x.csv",
                                    4096, &rows, &err),
                     PT_ERR_INPUT);
    assert_string_equal(err.msg, "x.csv:401: column 'n' (1): 'x99' is not an integer");
    assert_int_equal(rows, 99);
    assert_int_equal(f->n_requests, 0);
    assert_int_equal(f->n_tables, 0);
    free(csv);
    fake_free(f);
}

static void a_token_short_of_ram_gets_the_batch_again_in_smaller_requests(void **state)
{
    struct fake_token *f = fake_new();
    struct pt_link link = fake_link(f);
    struct pt_owner o;
    struct pt_schema s;
    struct pt_import_error err;
    uint64_t rows = 0;
    char *csv = csv_rows(300);

    (void)state;
    every_type(&s);
    f->refuse_over = 3000;
    pt_owner_init(&o, &link, 1785000000);
    assert_int_equal(pt_import_load(&o, (uint8_t *)csv, strlen(csv), PT_FORMAT_CSV, &s, "x.csv",
                                    16384, &rows, &err),
                     0);
    assert_int_equal(rows, 300);
    assert_int_equal(f->n_tables, 1);
    assert_int_equal(f->tables[0].n_rows, 300); /* each row once: the failed batches were dropped */
    for (size_t i = 0; i < 300; i++)
        expect_int(&f->tables[0].rows[i].v[0], PT_INT, (int64_t)i);
    free(csv);
    fake_free(f);
}

static void a_load_the_token_refuses_stores_nothing_and_says_why(void **state)
{
    struct fake_token *f = fake_new();
    struct pt_link link = fake_link(f);
    struct pt_owner o;
    struct pt_schema s;
    struct pt_import_error err;
    uint64_t rows = 0;
    char *csv = csv_rows(10);

    (void)state;
    every_type(&s);
    f->refuse_status = TK_ERR_STORE;
    f->refuse_reason = "flash full";
    pt_owner_init(&o, &link, 1785000000);
    assert_int_equal(pt_import_load(&o, (uint8_t *)csv, strlen(csv), PT_FORMAT_CSV, &s, "x.csv",
                                    4096, &rows, &err),
                     PT_ERR_TOKEN);
    assert_int_equal(o.token_status, TK_ERR_STORE);
    assert_string_equal(o.reason, "flash full");
    assert_int_equal(f->n_tables, 0);
    free(csv);
    fake_free(f);
}

static void pt_load_refuses_rows_that_do_not_match_the_schema(void **state)
{
    struct fake_token *f = fake_new();
    struct pt_link link = fake_link(f);
    struct pt_owner o;
    struct pt_schema s;
    struct pt_load *l;
    struct pt_value row[PT_COLUMNS_MAX];

    (void)state;
    every_type(&s);
    memset(row, 0, sizeof row);
    pt_owner_init(&o, &link, 0);
    assert_int_equal(pt_load_begin(&l, &o, &s, 100), PT_ERR_INPUT);
    assert_int_equal(pt_load_begin(&l, &o, &s, 4096), 0);
    row[0].type = PT_TEXT; /* n is an INT */
    assert_int_equal(pt_load_row(l, row), PT_ERR_INPUT);
    row[0].type = PT_NULL;
    row[1].type = PT_DECIMAL;
    row[1].scale = 3; /* amount is DECIMAL(2) */
    assert_int_equal(pt_load_row(l, row), PT_ERR_INPUT);
    row[1].scale = 2;
    assert_int_equal(pt_load_row(l, row), 0);
    pt_load_free(l);
    assert_int_equal(f->n_requests, 0);
    pt_load_free(NULL);
    fake_free(f);
}

/* ------------------------------------------------------- owner, reads */

static void load_rows(struct fake_token *f, struct pt_owner *o, size_t n)
{
    struct pt_schema s;
    struct pt_import_error err;
    uint64_t rows = 0;
    char *csv = csv_rows(n);
    (void)f;
    every_type(&s);
    assert_int_equal(pt_import_load(o, (uint8_t *)csv, strlen(csv), PT_FORMAT_CSV, &s, "x.csv",
                                    65536, &rows, &err),
                     0);
    assert_int_equal(rows, n);
    free(csv);
}

struct seen_rows {
    size_t n;
    uint64_t ids[64];
    int64_t first[64];
    int stop_at;
};

static int see_row(void *ctx, const struct pt_schema *s, uint64_t id, const struct pt_value *v)
{
    struct seen_rows *r = ctx;
    assert_string_equal(s->name, "t");
    if (r->n < 64) {
        r->ids[r->n] = id;
        r->first[r->n] = v[0].i;
    }
    r->n++;
    return r->stop_at && (int)r->n == r->stop_at ? -99 : 0;
}

static void rows_are_read_page_by_page_in_id_order_up_to_the_limit(void **state)
{
    struct fake_token *f = fake_new();
    struct pt_link link = fake_link(f);
    struct pt_owner o;
    struct seen_rows seen;
    uint64_t n = 0;

    (void)state;
    pt_owner_init(&o, &link, 0);
    load_rows(f, &o, 10);
    memset(&seen, 0, sizeof seen);
    assert_int_equal(pt_owner_rows(&o, "t", 0, see_row, &seen, &n), 0);
    assert_int_equal(n, 10);
    assert_int_equal(seen.n, 10);
    for (size_t i = 0; i < 10; i++) {
        assert_int_equal(seen.ids[i], i + 1);
        assert_int_equal(seen.first[i], (int64_t)i);
    }
    memset(&seen, 0, sizeof seen);
    assert_int_equal(pt_owner_rows(&o, "t", 4, see_row, &seen, &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(seen.n, 4);
    /* A callback's error stops the reading and comes back. */
    memset(&seen, 0, sizeof seen);
    seen.stop_at = 5;
    assert_int_equal(pt_owner_rows(&o, "t", 0, see_row, &seen, &n), -99);
    assert_int_equal(seen.n, 5);
    /* An unknown table is the token's refusal. */
    assert_int_equal(pt_owner_rows(&o, "nope", 0, see_row, &seen, &n), PT_ERR_TOKEN);
    assert_int_equal(o.token_status, TK_ERR_NOT_FOUND);
    fake_free(f);
}

/* A link that answers every request with the same hand-built response. */
struct canned {
    uint8_t buf[4096];
    size_t len;
};

static int canned_transact(void *ctx, const uint8_t *req, size_t req_len, const uint8_t **resp,
                           size_t *resp_len)
{
    struct canned *c = ctx;
    (void)req;
    (void)req_len;
    *resp = c->buf;
    *resp_len = c->len;
    return 0;
}

static void canned_rows(struct canned *c, bool more, size_t n_rows, const uint64_t *ids)
{
    Cohort__TokenResponse r = COHORT__TOKEN_RESPONSE__INIT;
    Cohort__RowPage page = COHORT__ROW_PAGE__INIT;
    Cohort__TableSchema s = COHORT__TABLE_SCHEMA__INIT;
    Cohort__Column col = COHORT__COLUMN__INIT, *cols[1] = {&col};
    Cohort__Row rows[4], *row_ptrs[4];
    Cohort__Value val = COHORT__VALUE__INIT, *vals[1] = {&val};

    s.name = "t";
    col.name = "n";
    col.type = COHORT__VALUE_TYPE__VT_INT;
    s.n_columns = 1;
    s.columns = cols;
    val.type = COHORT__VALUE_TYPE__VT_INT;
    for (size_t i = 0; i < n_rows; i++) {
        cohort__row__init(&rows[i]);
        rows[i].n_values = 1;
        rows[i].values = vals;
        row_ptrs[i] = &rows[i];
    }
    page.schema = &s;
    page.n_rows = page.n_ids = n_rows;
    page.rows = row_ptrs;
    page.ids = (uint64_t *)ids;
    page.more = more;
    r.body_case = COHORT__TOKEN_RESPONSE__BODY_ROWS;
    r.rows = &page;
    c->len = cohort__token_response__pack(&r, c->buf);
}

static void a_page_that_would_loop_forever_is_a_broken_link(void **state)
{
    struct canned c;
    struct pt_link link = {&c, canned_transact};
    struct pt_owner o;
    struct seen_rows seen;
    static const uint64_t same[] = {5, 5}, zero[] = {0};
    uint64_t n;

    (void)state;
    pt_owner_init(&o, &link, 0);
    memset(&seen, 0, sizeof seen);
    canned_rows(&c, true, 0, NULL); /* more, but nothing */
    assert_int_equal(pt_owner_rows(&o, "t", 0, see_row, &seen, &n), PT_ERR_LINK);
    canned_rows(&c, true, 2, same); /* ids that do not grow */
    assert_int_equal(pt_owner_rows(&o, "t", 0, see_row, &seen, &n), PT_ERR_LINK);
    canned_rows(&c, false, 1, zero); /* id 0 */
    assert_int_equal(pt_owner_rows(&o, "t", 0, see_row, &seen, &n), PT_ERR_LINK);
    c.len = 3;
    memcpy(c.buf, "\xff\xff\xff", 3); /* not a response at all */
    assert_int_equal(pt_owner_rows(&o, "t", 0, see_row, &seen, &n), PT_ERR_LINK);
}

static void tables_list_their_schemas_and_row_counts(void **state)
{
    struct fake_token *f = fake_new();
    struct pt_link link = fake_link(f);
    struct pt_owner o;
    struct pt_table_summary *t = NULL, one;
    struct pt_schema s;
    size_t n = 9;
    bool found;

    (void)state;
    pt_owner_init(&o, &link, 0);
    assert_int_equal(pt_owner_tables(&o, &t, &n), 0);
    assert_int_equal(n, 0);
    assert_null(t);
    load_rows(f, &o, 7);
    assert_int_equal(pt_owner_tables(&o, &t, &n), 0);
    assert_int_equal(n, 1);
    every_type(&s);
    assert_true(pt_schema_equal(&t[0].schema, &s));
    assert_int_equal(t[0].rows, 7);
    free(t);
    assert_int_equal(pt_owner_table(&o, "t", &one, &found), 0);
    assert_true(found);
    assert_int_equal(one.rows, 7);
    assert_int_equal(pt_owner_table(&o, "T", &one, &found), 0);
    assert_false(found);
    fake_free(f);
}

static void deletes_send_ids_all_or_a_compiled_where_program(void **state)
{
    struct fake_token *f = fake_new();
    struct pt_link link = fake_link(f);
    struct pt_owner o;
    struct pt_changed ch;
    struct pt_delete d;
    static const uint64_t ids[] = {2, 4, 99}, known[] = {2, 4};
    struct qr_compile_opts opts = {.study = "owner", .now = 1785000000};
    struct qr_sql_error err;
    uint8_t *plan = NULL;
    size_t plan_len = 0;

    (void)state;
    pt_owner_init(&o, &link, 0);
    load_rows(f, &o, 6);
    memset(&d, 0, sizeof d);
    d.ids = ids;
    d.n_ids = 3;
    assert_int_equal(pt_owner_delete(&o, "t", &d, &ch), PT_ERR_TOKEN); /* 99 is unknown */
    assert_int_equal(o.token_status, TK_ERR_NOT_FOUND);
    assert_int_equal(f->tables[0].n_rows, 6);
    d.ids = known;
    d.n_ids = 2;
    assert_int_equal(pt_owner_delete(&o, "t", &d, &ch), 0);
    assert_int_equal(ch.rows, 2);
    assert_int_equal(f->tables[0].n_rows, 4);
    assert_int_equal(f->last_delete->n_ids, 2);
    assert_false(f->last_delete->all);

    /* Exactly one way to choose rows. */
    d.all = true;
    assert_int_equal(pt_owner_delete(&o, "t", &d, &ch), PT_ERR_INPUT);
    memset(&d, 0, sizeof d);
    assert_int_equal(pt_owner_delete(&o, "t", &d, &ch), PT_ERR_INPUT);

    /* A WHERE compiled by the querier travels as the plan's program. */
    assert_int_equal(qr_sql_compile(&plan, &plan_len,
                                    "SELECT COUNT(*) FROM health WHERE (age >= 40 AND sex = 'F')",
                                    &opts, &err),
                     QR_OK);
    d.where_plan = plan;
    d.where_plan_len = plan_len;
    assert_int_equal(pt_owner_delete(&o, "t", &d, &ch), PT_ERR_INPUT);      /* another table */
    assert_int_equal(pt_owner_delete(&o, "health", &d, &ch), PT_ERR_TOKEN); /* the fake has none */
    assert_non_null(f->last_delete);
    assert_int_equal(f->last_delete->n_where, 7);
    assert_int_equal(f->last_delete->where[0]->op, COHORT__OP__OP_COLUMN);
    assert_string_equal(f->last_delete->where[0]->column, "age");
    assert_int_equal(f->last_delete->where[6]->op, COHORT__OP__OP_AND);
    free(plan);
    assert_int_equal(qr_sql_compile(&plan, &plan_len,
                                    "SELECT sex, COUNT(*) FROM health WHERE age > 1 GROUP BY sex",
                                    &opts, &err),
                     QR_OK);
    d.where_plan = plan;
    d.where_plan_len = plan_len;
    assert_int_equal(pt_owner_delete(&o, "health", &d, &ch), PT_ERR_INPUT); /* not a condition */
    free(plan);

    memset(&d, 0, sizeof d);
    d.all = true;
    assert_int_equal(pt_owner_delete(&o, "t", &d, &ch), 0);
    assert_int_equal(ch.rows, 4);
    assert_int_equal(f->n_tables, 0);
    fake_free(f);
}

static void a_policy_set_is_the_policy_read_back(void **state)
{
    struct fake_token *f = fake_new();
    struct pt_link link = fake_link(f);
    struct pt_owner o;
    struct pt_policy p, q;

    (void)state;
    memset(&p, 0, sizeof p);
    p.n_authorities = 1;
    memset(p.authorities[0], 0xab, 32);
    p.n_researchers = 2;
    memset(p.researchers[0], 0x01, 32);
    memset(p.researchers[1], 0x02, 32);
    p.n_studies = 1;
    strcpy(p.studies[0], "sleep-2026");
    p.n_tables = 2;
    strcpy(p.tables[0], "health");
    strcpy(p.tables[1], "energy.kwh");
    p.min_participants = 100;
    p.min_group_size = 10;
    p.require_dp = true;
    p.epsilon_per_study = 0.5;
    p.epsilon_total = 2;
    pt_owner_init(&o, &link, 1785000000);
    assert_int_equal(pt_owner_policy_set(&o, &p), 0);
    assert_int_equal(pt_owner_policy_get(&o, &q), 0);
    p.set_at = 1785000000;
    assert_memory_equal(&p, &q, sizeof p);
    p.epsilon_total = -1;
    assert_int_equal(pt_owner_policy_set(&o, &p), PT_ERR_INPUT);
    fake_free(f);
}

struct seen_audit {
    size_t n;
    uint64_t seq[16];
};

static int see_audit(void *ctx, const struct pt_audit_entry *e)
{
    struct seen_audit *s = ctx;
    if (s->n < 16)
        s->seq[s->n] = e->seq;
    s->n++;
    return 0;
}

static void the_audit_log_is_read_page_by_page(void **state)
{
    struct fake_token *f = fake_new();
    struct pt_link link = fake_link(f);
    struct pt_owner o;
    struct seen_audit seen;
    uint64_t n = 0;

    (void)state;
    for (size_t i = 0; i < 5; i++) {
        struct pt_audit_entry *e = &f->audit[i];
        e->seq = i + 1;
        e->time = 1785000000 + (int64_t)i;
        e->accepted = i % 2 == 0;
        strcpy(e->study, "s");
    }
    f->n_audit = 5;
    pt_owner_init(&o, &link, 0);
    memset(&seen, 0, sizeof seen);
    assert_int_equal(pt_owner_audit(&o, 0, 0, see_audit, &seen, &n), 0);
    assert_int_equal(n, 5);
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(seen.seq[i], i + 1);
    memset(&seen, 0, sizeof seen);
    assert_int_equal(pt_owner_audit(&o, 2, 2, see_audit, &seen, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(seen.seq[0], 3);
    assert_int_equal(seen.seq[1], 4);
    fake_free(f);
}

static void provisioning_begins_with_a_certificate_request(void **state)
{
    struct fake_token *f = fake_new();
    struct pt_link link = fake_link(f);
    struct pt_owner o;
    uint8_t *csr = NULL, pk[32];
    size_t len = 0;
    Cohort__CertRequest *c;
    char subject[PT_SUBJECT_MAX + 2];

    (void)state;
    pt_owner_init(&o, &link, 0);
    assert_int_equal(pt_owner_provision_begin(&o, "alice's token", &csr, &len, pk), 0);
    c = cohort__cert_request__unpack(NULL, len, csr);
    assert_non_null(c);
    assert_string_equal(c->subject, "alice's token");
    assert_memory_equal(c->sign_pk.data, pk, 32);
    cohort__cert_request__free_unpacked(c, NULL);
    free(csr);
    memset(subject, 'x', sizeof subject - 1);
    subject[sizeof subject - 1] = '\0';
    assert_int_equal(pt_owner_provision_begin(&o, subject, &csr, &len, pk), PT_ERR_INPUT);
    fake_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(csv_rows_of_every_type_are_read_in_schema_order),
        cmocka_unit_test(jsonl_rows_of_every_type_are_read_in_schema_order),
        cmocka_unit_test(empty_csv_fields_are_null_and_quoted_empty_text_is_empty_text),
        cmocka_unit_test(json_null_is_null_for_every_type),
        cmocka_unit_test(decimals_are_exact_at_their_scale),
        cmocka_unit_test(integers_are_read_exactly_within_int64),
        cmocka_unit_test(dates_and_timestamps_use_the_querier_encoding),
        cmocka_unit_test(values_format_exactly),
        cmocka_unit_test(a_value_of_the_wrong_type_is_refused_with_its_line_and_column),
        cmocka_unit_test(a_missing_column_is_refused_with_its_name),
        cmocka_unit_test(a_column_the_table_lacks_is_refused),
        cmocka_unit_test(an_overlong_text_or_line_is_refused),
        cmocka_unit_test(a_file_over_its_size_or_row_limit_is_refused),
        cmocka_unit_test(csv_quoting_that_breaks_rfc_4180_is_refused),
        cmocka_unit_test(malformed_json_is_refused_with_its_position),
        cmocka_unit_test(invalid_utf8_is_refused),
        cmocka_unit_test(an_empty_file_is_refused),
        cmocka_unit_test(bad_values_are_quoted_with_control_bytes_escaped_and_cut),
        cmocka_unit_test(the_format_is_guessed_from_the_name_then_the_content),
        cmocka_unit_test(schemas_parse_from_text_and_print_back_the_same),
        cmocka_unit_test(bad_schemas_are_refused_with_the_column_at_fault),
        cmocka_unit_test(the_owner_side_limits_are_the_tokens),
        cmocka_unit_test(a_file_loads_as_one_batch_cut_into_requests_that_fit),
        cmocka_unit_test(a_bad_file_sends_nothing_to_the_token),
        cmocka_unit_test(a_token_short_of_ram_gets_the_batch_again_in_smaller_requests),
        cmocka_unit_test(a_load_the_token_refuses_stores_nothing_and_says_why),
        cmocka_unit_test(pt_load_refuses_rows_that_do_not_match_the_schema),
        cmocka_unit_test(rows_are_read_page_by_page_in_id_order_up_to_the_limit),
        cmocka_unit_test(a_page_that_would_loop_forever_is_a_broken_link),
        cmocka_unit_test(tables_list_their_schemas_and_row_counts),
        cmocka_unit_test(deletes_send_ids_all_or_a_compiled_where_program),
        cmocka_unit_test(a_policy_set_is_the_policy_read_back),
        cmocka_unit_test(the_audit_log_is_read_page_by_page),
        cmocka_unit_test(provisioning_begins_with_a_certificate_request),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
