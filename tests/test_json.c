/*
 * test_json.c: the HTTP API's JSON reader and writer (participant/pt_json.c).
 *
 * The reader's refusals are table-driven: each hostile or malformed text
 * has its exact error code, the byte offset the error names, and a piece
 * of the message, and no refused text leaves anything allocated (the
 * sanitizer build checks). Each limit is tried at its value (accepted) and
 * one past it (PT_ERR_TOO_LARGE). The writer is checked byte for byte on
 * escaping, and against the reader: whatever bytes a string holds, the
 * writer's text parses, and valid UTF-8 comes back unchanged.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "participant/participant.h"
#include "participant/pt_json.h"

/* Small limits, so each can be reached with a short text. */
static const struct pt_json_limits small = {
    .bytes = 256,
    .depth = 4,
    .values = 20,
    .items = 5,
    .string = 16,
};

static int parse_n(struct pt_json *doc, const char *text, size_t len,
                   const struct pt_json_limits *lim, struct pt_json_error *err)
{
    return pt_json_parse(doc, text, len, lim, err);
}

/* ------------------------------------------------------------ refusals */

struct bad {
    const char *why;
    const char *text;
    size_t len; /* 0: strlen(text) */
    int rc;
    size_t offset;
    const char *msg; /* a piece of the message */
};

static const struct bad bad_texts[] = {
    {"nothing", "", 0, PT_ERR_INPUT, 0, "no value"},
    {"only white space", " \t\r\n", 0, PT_ERR_INPUT, 4, "no value"},
    {"a byte order mark", "\xef\xbb\xbf{}", 0, PT_ERR_INPUT, 0, "byte order mark"},
    {"a comma before ]", "[1,2,]", 0, PT_ERR_INPUT, 5, "comma before ']'"},
    {"a comma before }", "{\"a\":1,}", 0, PT_ERR_INPUT, 7, "comma before '}'"},
    {"a lone comma", "[,]", 0, PT_ERR_INPUT, 1, "expected a value, not ','"},
    {"a line comment", "// hi\n1", 0, PT_ERR_INPUT, 0, "expected a value"},
    {"a block comment", "[1/* x */]", 0, PT_ERR_INPUT, 2, "expected ',' or ']'"},
    {"single quotes", "'a'", 0, PT_ERR_INPUT, 0, "expected a value, not '''"},
    {"NaN", "NaN", 0, PT_ERR_INPUT, 0, "expected a value"},
    {"Infinity", "[Infinity]", 0, PT_ERR_INPUT, 1, "expected a value"},
    {"minus Infinity", "-Infinity", 0, PT_ERR_INPUT, 0, "minus sign without digits"},
    {"a leading zero", "01", 0, PT_ERR_INPUT, 0, "leading zero"},
    {"a negative leading zero", "[-012]", 0, PT_ERR_INPUT, 1, "leading zero"},
    {"a plus sign", "+1", 0, PT_ERR_INPUT, 0, "expected a value, not '+'"},
    {"a lone minus", "-", 0, PT_ERR_INPUT, 0, "minus sign"},
    {"a point without digits", "1.", 0, PT_ERR_INPUT, 1, "decimal point"},
    {"a point before digits", ".5", 0, PT_ERR_INPUT, 0, "expected a value, not '.'"},
    {"an exponent without digits", "1e", 0, PT_ERR_INPUT, 1, "exponent"},
    {"a signed exponent without digits", "[2E+]", 0, PT_ERR_INPUT, 2, "exponent"},
    {"hexadecimal", "0x10", 0, PT_ERR_INPUT, 1, "unexpected 'x' after the value"},
    {"a name without quotes", "{a:1}", 0, PT_ERR_INPUT, 1, "member name"},
    {"a number as a name", "{1:1}", 0, PT_ERR_INPUT, 1, "member name"},
    {"no colon", "{\"a\" 1}", 0, PT_ERR_INPUT, 5, "expected ':'"},
    {"no comma", "[1 2]", 0, PT_ERR_INPUT, 3, "expected ',' or ']'"},
    {"no comma between members", "{\"a\":1 \"b\":2}", 0, PT_ERR_INPUT, 7, "',' or '}'"},
    {"an array not closed", "[1,", 0, PT_ERR_INPUT, 3, "ends where a value"},
    {"an array cut after an item", "[1", 0, PT_ERR_INPUT, 2, "ends inside an array"},
    {"an object not closed", "{\"a\":1", 0, PT_ERR_INPUT, 6, "ends inside an object"},
    {"a string not closed", "[\"abc", 0, PT_ERR_INPUT, 1, "string is not closed"},
    {"a name not closed", "{\"ab", 0, PT_ERR_INPUT, 1, "member name is not closed"},
    {"a mismatched bracket", "[1}", 0, PT_ERR_INPUT, 2, "expected ',' or ']'"},
    {"a raw tab in a string", "\"a\tb\"", 0, PT_ERR_INPUT, 2, "control byte 0x09"},
    {"a raw newline in a string", "\"a\nb\"", 0, PT_ERR_INPUT, 2, "control byte 0x0a"},
    {"an unknown escape", "\"\\x41\"", 0, PT_ERR_INPUT, 1, "unknown escape \\'x'"},
    {"an escape cut short", "\"\\", 0, PT_ERR_INPUT, 0, "not closed"},
    {"a bad hex digit", "\"\\u12G4\"", 0, PT_ERR_INPUT, 1, "4 hex digits"},
    {"too few hex digits", "\"\\u00\"", 0, PT_ERR_INPUT, 1, "4 hex digits"},
    {"an escaped NUL", "\"a\\u0000b\"", 0, PT_ERR_INPUT, 2, "NUL"},
    {"a lone high surrogate", "\"\\ud800\"", 0, PT_ERR_INPUT, 1, "without a low surrogate"},
    {"a high surrogate then a letter", "\"\\ud800\\u0041\"", 0, PT_ERR_INPUT, 1,
     "without a low surrogate"},
    {"two high surrogates", "\"\\ud800\\ud800\"", 0, PT_ERR_INPUT, 1, "without a low surrogate"},
    {"a lone low surrogate", "\"\\udc00\"", 0, PT_ERR_INPUT, 1, "without a high surrogate"},
    {"UTF-8 cut short", "\"\xc3\"", 0, PT_ERR_INPUT, 1, "invalid UTF-8 (byte 0xc3)"},
    {"an overlong slash", "\"\xc0\xaf\"", 0, PT_ERR_INPUT, 1, "invalid UTF-8 (byte 0xc0)"},
    {"an overlong three bytes", "\"\xe0\x80\xaf\"", 0, PT_ERR_INPUT, 1, "invalid UTF-8"},
    {"an encoded surrogate", "\"\xed\xa0\x80\"", 0, PT_ERR_INPUT, 1, "invalid UTF-8 (byte 0xed)"},
    {"beyond U+10FFFF", "\"\xf4\x90\x80\x80\"", 0, PT_ERR_INPUT, 1, "invalid UTF-8 (byte 0xf4)"},
    {"a byte never in UTF-8", "\"a\xff\"", 0, PT_ERR_INPUT, 2, "invalid UTF-8 (byte 0xff)"},
    {"a lone continuation byte", "\"\x80\"", 0, PT_ERR_INPUT, 1, "invalid UTF-8 (byte 0x80)"},
    {"invalid UTF-8 in a name", "{\"\xfe\":1}", 0, PT_ERR_INPUT, 2, "in a member name"},
    {"a member given twice", "{\"a\":1,\"b\":2,\"a\":3}", 0, PT_ERR_INPUT, 13, "given twice"},
    {"a member given twice by escape", "{\"a\":1,\"\\u0061\":2}", 0, PT_ERR_INPUT, 7,
     "given twice"},
    {"two values", "1 2", 0, PT_ERR_INPUT, 2, "unexpected '2' after the value"},
    {"two objects", "{}{}", 0, PT_ERR_INPUT, 2, "after the value"},
    {"a NUL after the value", "1\0", 2, PT_ERR_INPUT, 1, "unexpected 0x00"},
    {"a NUL in white space", "[1,\0 2]", 7, PT_ERR_INPUT, 3, "expected a value, not 0x00"},
    {"a capital True", "True", 0, PT_ERR_INPUT, 0, "expected a value, not 'T'"},
    {"a word cut short", "nul", 0, PT_ERR_INPUT, 0, "lowercase words"},
    {"a word run on", "[truex]", 0, PT_ERR_INPUT, 5, "expected ',' or ']'"},
    {"a form feed as white space", "\f1", 0, PT_ERR_INPUT, 0, "expected a value, not 0x0c"},
    {"a non-breaking space as white space",
     "\xc2\xa0"
     "1",
     0, PT_ERR_INPUT, 0, "expected a value, not 0xc2"},
    /* The limits. */
    {"a text over its bytes",
     "[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,"
     "24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,"
     "45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,64,65,"
     "66,67,68,69,70,71,72,73,74,75,76,77,78,79,80,81,82,83,84,85,86,"
     "87,88,89]",
     0, PT_ERR_TOO_LARGE, 256, "longer than 256 bytes"},
    {"nesting deeper than the limit", "[[[[[1]]]]]", 0, PT_ERR_TOO_LARGE, 4, "deeper than 4"},
    {"objects nested deeper than the limit", "{\"a\":{\"a\":{\"a\":{\"a\":{}}}}}", 0,
     PT_ERR_TOO_LARGE, 20, "deeper than 4"},
    {"an array of too many items", "[1,2,3,4,5,6]", 0, PT_ERR_TOO_LARGE, 11, "more than 5 items"},
    {"an object of too many members", "{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6}", 0,
     PT_ERR_TOO_LARGE, 31, "more than 5 members"},
    {"too many values", "[[1,2,3,4],[1,2,3,4],[1,2,3,4],[1,2,3,4],[1,2,3,4]]", 0, PT_ERR_TOO_LARGE,
     38, "more than 20 values"},
    {"a string too long", "\"abcdefghijklmnopq\"", 0, PT_ERR_TOO_LARGE, 0, "longer than 16"},
    {"a string too long once decoded",
     "\"\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9"
     "\\u00e9\\u00e9\"",
     0, PT_ERR_TOO_LARGE, 0, "longer than 16"},
    {"a name too long", "{\"abcdefghijklmnopq\":1}", 0, PT_ERR_TOO_LARGE, 1,
     "member name longer than 16"},
    {"a number too long", "12345678901234567", 0, PT_ERR_TOO_LARGE, 0, "number longer than 16"},
};

static void hostile_texts_are_refused_with_their_code_and_position(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_texts / sizeof bad_texts[0]; i++) {
        const struct bad *b = &bad_texts[i];
        size_t len = b->len ? b->len : strlen(b->text);
        struct pt_json doc;
        struct pt_json_error err;
        int rc = parse_n(&doc, b->text, len, &small, &err);

        if (rc != b->rc || err.offset != b->offset || strstr(err.msg, b->msg) == NULL)
            fail_msg("%s: rc %d (expected %d), offset %zu (expected %zu), message '%s' "
                     "(expected '%s')",
                     b->why, rc, b->rc, err.offset, b->offset, err.msg, b->msg);
        assert_null(doc.root);
        assert_null(doc.blocks);
        assert_null(doc.str);
        /* The message is plain printable ASCII. */
        for (const char *p = err.msg; *p; p++)
            assert_true(*p >= 0x20 && *p < 0x7f);
    }
}

static void an_error_names_its_line_and_column(void **state)
{
    const char *text = "{\n  \"a\": 1,\n  \"b\": tru\n}";
    struct pt_json doc;
    struct pt_json_error err;

    (void)state;
    assert_int_equal(pt_json_parse(&doc, text, strlen(text), &small, &err), PT_ERR_INPUT);
    assert_int_equal(err.line, 3);
    assert_int_equal(err.column, 8);
    assert_int_equal(err.offset, 19);
}

static void a_deeply_nested_text_is_refused_without_recursing_into_it(void **state)
{
    size_t n = 200000;
    char *text = malloc(2 * n);
    struct pt_json doc;
    struct pt_json_error err;

    (void)state;
    assert_non_null(text);
    memset(text, '[', n);
    memset(text + n, ']', n);
    assert_int_equal(
        pt_json_parse(
            &doc, text, 2 * n,
            &(struct pt_json_limits){
                .bytes = 2 * n, .depth = 1000000, .values = 1000000, .items = 10, .string = 10},
            &err),
        PT_ERR_TOO_LARGE);
    assert_int_equal(err.offset, PT_JSON_DEPTH_MAX);
    free(text);
}

/* ----------------------------------------------------------- accepted */

static void every_limit_is_reached_exactly(void **state)
{
    const char *ok[] = {
        "[[[[1]]]]",                                                    /* depth 4 */
        "[1,2,3,4,5]",                                                  /* 5 items */
        "{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5}",                    /* 5 members */
        "\"abcdefghijklmnop\"",                                         /* 16 bytes */
        "\"\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\"", /* 16 bytes decoded */
        "1234567890123456",                                             /* a 16-byte number */
        "[[1,2,3,4],[1,2,3,4],[1,2,3,4],[1,2,3]]",                      /* 20 values */
    };
    (void)state;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        struct pt_json doc;
        struct pt_json_error err;
        int rc = pt_json_parse(&doc, ok[i], strlen(ok[i]), &small, &err);
        if (rc != 0)
            fail_msg("'%s': %d %s", ok[i], rc, err.msg);
        pt_json_free(&doc);
    }
}

static void a_text_becomes_a_tree_with_strings_decoded(void **state)
{
    const char *text = " { \"name\" : \"caf\\u00e9 \\\"x\\\"\\n\\/\", \"n\": -12, \"f\": 1.5e-3, "
                       "\"ok\": true, \"no\": false, \"nil\": null, \"list\": [ 1, [], {} ], "
                       "\"clef\": \"\\ud834\\udd1e\", \"raw\": \"\xf0\x9f\x99\x82\" } ";
    struct pt_json doc;
    struct pt_json_error err;
    const struct pt_json_value *r, *v;
    int64_t x = 0;

    (void)state;
    assert_int_equal(pt_json_parse(&doc, text, strlen(text), &pt_json_limits_api, &err), 0);
    r = doc.root;
    assert_int_equal(r->type, PT_JSON_OBJECT);
    assert_int_equal(r->n, 9);
    assert_int_equal(r->offset, 1);

    v = pt_json_member(r, "name");
    assert_int_equal(v->type, PT_JSON_STRING);
    assert_string_equal(v->s, "caf\xc3\xa9 \"x\"\n/");
    assert_int_equal(v->len, strlen("caf\xc3\xa9 \"x\"\n/"));

    v = pt_json_member(r, "n");
    assert_int_equal(v->type, PT_JSON_NUMBER);
    assert_string_equal(v->s, "-12");
    assert_int_equal(pt_json_int(v, -100, 100, &x), 0);
    assert_int_equal(x, -12);
    assert_int_equal(pt_json_int(v, 0, 100, &x), PT_ERR_INPUT);

    v = pt_json_member(r, "f");
    assert_string_equal(v->s, "1.5e-3");
    assert_int_equal(pt_json_int(v, INT64_MIN, INT64_MAX, &x), PT_ERR_INPUT);

    assert_true(pt_json_member(r, "ok")->b);
    assert_int_equal(pt_json_member(r, "ok")->type, PT_JSON_BOOL);
    assert_false(pt_json_member(r, "no")->b);
    assert_int_equal(pt_json_member(r, "nil")->type, PT_JSON_NULL);

    v = pt_json_member(r, "list");
    assert_int_equal(v->type, PT_JSON_ARRAY);
    assert_int_equal(v->n, 3);
    assert_string_equal(v->child->s, "1");
    assert_null(v->child->key);
    assert_int_equal(v->child->next->type, PT_JSON_ARRAY);
    assert_int_equal(v->child->next->n, 0);
    assert_int_equal(v->child->next->next->type, PT_JSON_OBJECT);
    assert_null(v->child->next->next->next);

    assert_string_equal(pt_json_member(r, "clef")->s, "\xf0\x9d\x84\x9e");
    assert_string_equal(pt_json_member(r, "raw")->s, "\xf0\x9f\x99\x82");
    assert_null(pt_json_member(r, "absent"));
    assert_null(pt_json_member(v, "n")); /* not an object */

    {
        const char *known[] = {"name", "n", "f", "ok", "no", "nil", "list", "clef"};
        v = pt_json_unknown_member(r, known, 8);
        assert_non_null(v);
        assert_string_equal(v->key, "raw");
        assert_null(pt_json_unknown_member(
            r, (const char *[]){"name", "n", "f", "ok", "no", "nil", "list", "clef", "raw"}, 9));
    }
    pt_json_free(&doc);
    pt_json_free(&doc); /* twice is fine */
}

static void whole_numbers_are_read_within_int64_exactly(void **state)
{
    struct num {
        const char *text;
        int rc;
        int64_t v;
    } nums[] = {
        {"0", 0, 0},
        {"-0", 0, 0},
        {"9223372036854775807", 0, INT64_MAX},
        {"-9223372036854775808", 0, INT64_MIN},
        {"9223372036854775808", PT_ERR_INPUT, 0},
        {"-9223372036854775809", PT_ERR_INPUT, 0},
        {"18446744073709551616", PT_ERR_INPUT, 0},
        {"1e3", PT_ERR_INPUT, 0},
        {"1.0", PT_ERR_INPUT, 0},
        {"\"1\"", PT_ERR_INPUT, 0},
    };
    (void)state;
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        struct pt_json doc;
        int64_t x = 42;
        assert_int_equal(
            pt_json_parse(&doc, nums[i].text, strlen(nums[i].text), &pt_json_limits_api, NULL), 0);
        assert_int_equal(pt_json_int(doc.root, INT64_MIN, INT64_MAX, &x), nums[i].rc);
        assert_int_equal(x, nums[i].rc == 0 ? nums[i].v : 42);
        pt_json_free(&doc);
    }
}

/* ------------------------------------------------------------- writer */

static char *finish(struct pt_jw *w)
{
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(pt_jw_finish(w, &out, &len), 0);
    assert_int_equal(strlen(out), len);
    return out;
}

static void the_writer_escapes_every_byte_that_needs_it(void **state)
{
    struct esc {
        const char *in;
        size_t len;
        const char *out;
    } cases[] = {
        {"plain", 5, "\"plain\""},
        {"a\"b\\c/d", 7, "\"a\\\"b\\\\c/d\""},
        {"\n\r\t\b\f", 5, "\"\\n\\r\\t\\u0008\\u000c\""},
        {"\x01\x1f\x7f", 3, "\"\\u0001\\u001f\\u007f\""},
        {"a\0b", 3, "\"a\\u0000b\""},
        {"caf\xc3\xa9", 5, "\"caf\xc3\xa9\""},
        {"\xf0\x9f\x99\x82", 4, "\"\xf0\x9f\x99\x82\""},
        {"x\xe2\x80\xa8y\xe2\x80\xa9", 8, "\"x\\u2028y\\u2029\""},
        {"\xff", 1, "\"\\ufffd\""},
        {"a\xc3", 2, "\"a\\ufffd\""},
        {"\xc0\xaf", 2, "\"\\ufffd\\ufffd\""},
        {"\xed\xa0\x80!", 4, "\"\\ufffd\\ufffd\\ufffd!\""},
        {"<script>", 8, "\"<script>\""},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct pt_jw w;
        char *out;
        pt_jw_init(&w, 1024);
        pt_jw_strn(&w, cases[i].in, cases[i].len);
        out = finish(&w);
        if (strcmp(out, cases[i].out) != 0)
            fail_msg("case %zu: got %s, expected %s", i, out, cases[i].out);
        free(out);
    }
}

static void the_writer_builds_objects_and_arrays_with_commas(void **state)
{
    static const uint8_t bytes[] = {0x00, 0x01, 0xab, 0xff, 0x10};
    struct pt_jw w;
    char *out;

    (void)state;
    pt_jw_init(&w, 1024);
    pt_jw_object(&w);
    pt_jw_key(&w, "id");
    pt_jw_hex(&w, bytes, sizeof bytes);
    pt_jw_key(&w, "b64");
    pt_jw_base64(&w, bytes, sizeof bytes);
    pt_jw_key(&w, "n");
    pt_jw_i64(&w, INT64_MIN);
    pt_jw_key(&w, "u");
    pt_jw_u64(&w, UINT64_MAX);
    pt_jw_key(&w, "list");
    pt_jw_array(&w);
    pt_jw_bool(&w, true);
    pt_jw_bool(&w, false);
    pt_jw_null(&w);
    pt_jw_object(&w);
    pt_jw_object_end(&w);
    pt_jw_array(&w);
    pt_jw_array_end(&w);
    pt_jw_str(&w, "x");
    pt_jw_array_end(&w);
    pt_jw_key(&w, "we\"ird");
    pt_jw_str(&w, "");
    pt_jw_object_end(&w);
    out = finish(&w);
    assert_string_equal(out, "{\"id\":\"0001abff10\",\"b64\":\"AAGr/xA=\","
                             "\"n\":-9223372036854775808,\"u\":18446744073709551615,"
                             "\"list\":[true,false,null,{},[],\"x\"],\"we\\\"ird\":\"\"}");
    free(out);
}

static void a_text_over_its_maximum_fails_whole(void **state)
{
    struct pt_jw w;
    char *out = NULL;
    size_t len = 0;

    (void)state;
    pt_jw_init(&w, 10);
    pt_jw_array(&w);
    pt_jw_str(&w, "12345678"); /* 1 + 10 bytes */
    pt_jw_array_end(&w);
    assert_int_equal(pt_jw_finish(&w, &out, &len), PT_ERR_TOO_LARGE);
    assert_null(out);

    /* Exactly at the maximum is fine. */
    pt_jw_init(&w, 10);
    pt_jw_array(&w);
    pt_jw_str(&w, "123456");
    pt_jw_array_end(&w);
    out = finish(&w);
    assert_string_equal(out, "[\"123456\"]");
    free(out);

    /* A large base64 value, in pieces. */
    {
        uint8_t big[1000];
        for (size_t i = 0; i < sizeof big; i++)
            big[i] = (uint8_t)(i * 7);
        pt_jw_init(&w, 1336);
        pt_jw_base64(&w, big, sizeof big); /* 1336 + 2 quotes */
        assert_int_equal(pt_jw_finish(&w, &out, &len), PT_ERR_TOO_LARGE);
        pt_jw_init(&w, 1338);
        pt_jw_base64(&w, big, sizeof big);
        out = finish(&w);
        assert_int_equal(len = strlen(out), 1338);
        free(out);
    }
}

static void an_unfinished_text_is_refused(void **state)
{
    struct pt_jw w;
    char *out = NULL;
    size_t len = 0;

    (void)state;
    pt_jw_init(&w, 100);
    assert_int_equal(pt_jw_finish(&w, &out, &len), PT_ERR_INPUT); /* nothing */
    pt_jw_init(&w, 100);
    pt_jw_object(&w);
    pt_jw_key(&w, "a");
    assert_int_equal(pt_jw_finish(&w, &out, &len), PT_ERR_INPUT); /* open */
    assert_null(out);
    pt_jw_free(&w);
}

static uint64_t rng = 88172645463325252ull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Every string the writer writes, the reader reads; valid UTF-8 comes back the same. */
static void written_strings_read_back(void **state)
{
    (void)state;
    for (int round = 0; round < 5000; round++) {
        char in[64];
        size_t n = next_rand() % sizeof in;
        struct pt_jw w;
        struct pt_json doc;
        struct pt_json_error err;
        char *out;
        size_t len;
        bool valid;

        for (size_t i = 0; i < n; i++) {
            /* Mostly ASCII and a few UTF-8 lead and continuation bytes. */
            uint64_t r = next_rand();
            in[i] = (char)(r % 4 == 0 ? 0x80 + (r >> 8) % 0x80 : 1 + (r >> 8) % 0x7f);
        }
        valid = true;
        for (size_t i = 0; i < n;) {
            /* What the reader takes raw: UTF-8 and no control byte. */
            unsigned char c = (unsigned char)in[i];
            if (c < 0x80) {
                i++;
                continue;
            }
            struct pt_json d2;
            char q[8] = "\"";
            size_t k = (c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2);
            if (i + k > n) {
                valid = false;
                break;
            }
            memcpy(q + 1, in + i, k);
            q[k + 1] = '"';
            if (pt_json_parse(&d2, q, k + 2, &pt_json_limits_api, NULL) != 0) {
                valid = false;
                break;
            }
            pt_json_free(&d2);
            i += k;
        }
        pt_jw_init(&w, 1024);
        pt_jw_strn(&w, in, n);
        assert_int_equal(pt_jw_finish(&w, &out, &len), 0);
        if (pt_json_parse(&doc, out, len, &pt_json_limits_api, &err) != 0)
            fail_msg("round %d: the writer's %s does not read back: %s", round, out, err.msg);
        assert_int_equal(doc.root->type, PT_JSON_STRING);
        if (valid) {
            assert_int_equal(doc.root->len, n);
            assert_memory_equal(doc.root->s, in, n);
        }
        pt_json_free(&doc);
        free(out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hostile_texts_are_refused_with_their_code_and_position),
        cmocka_unit_test(an_error_names_its_line_and_column),
        cmocka_unit_test(a_deeply_nested_text_is_refused_without_recursing_into_it),
        cmocka_unit_test(every_limit_is_reached_exactly),
        cmocka_unit_test(a_text_becomes_a_tree_with_strings_decoded),
        cmocka_unit_test(whole_numbers_are_read_within_int64_exactly),
        cmocka_unit_test(the_writer_escapes_every_byte_that_needs_it),
        cmocka_unit_test(the_writer_builds_objects_and_arrays_with_commas),
        cmocka_unit_test(a_text_over_its_maximum_fails_whole),
        cmocka_unit_test(an_unfinished_text_is_refused),
        cmocka_unit_test(written_strings_read_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
