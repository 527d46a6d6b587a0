/*
 * Fuzz target: the HTTP API's JSON reader and writer (participant/pt_json.c).
 *
 * Invariants. A text either parses, or fails with PT_ERR_INPUT or
 * PT_ERR_TOO_LARGE, an offset within the text, a line and column that
 * agree with the offset, and a message of printable ASCII. A parsed tree
 * respects every limit; written back by the writer it parses again to the
 * same tree, and writing that tree gives the same text (the writer's form
 * is a fixed point).
 */
#include <string.h>

#include "participant/participant.h"
#include "participant/pt_json.h"
#include "tests/fuzz/fuzz.h"

static const struct pt_json_limits lim = {
    .bytes = 4096,
    .depth = 6,
    .values = 256,
    .items = 32,
    .string = 128,
};

static void write_value(struct pt_jw *w, const struct pt_json_value *v, uint32_t depth)
{
    FUZZ_CHECK(depth <= lim.depth + 1);
    switch (v->type) {
    case PT_JSON_NULL:
        pt_jw_null(w);
        break;
    case PT_JSON_BOOL:
        pt_jw_bool(w, v->b);
        break;
    case PT_JSON_NUMBER: {
        /* Numbers are kept as written; write them as a string so the
         * check covers their text. */
        pt_jw_strn(w, v->s, v->len);
        break;
    }
    case PT_JSON_STRING:
        FUZZ_CHECK(v->len <= lim.string && strlen(v->s) == v->len);
        pt_jw_strn(w, v->s, v->len);
        break;
    case PT_JSON_ARRAY:
    case PT_JSON_OBJECT: {
        uint32_t n = 0;
        FUZZ_CHECK(v->n <= lim.items);
        if (v->type == PT_JSON_ARRAY)
            pt_jw_array(w);
        else
            pt_jw_object(w);
        for (const struct pt_json_value *c = v->child; c != NULL; c = c->next, n++) {
            if (v->type == PT_JSON_OBJECT) {
                FUZZ_CHECK(c->key != NULL && strlen(c->key) == c->key_len);
                pt_jw_key(w, c->key);
            } else {
                FUZZ_CHECK(c->key == NULL);
            }
            write_value(w, c, depth + 1);
        }
        FUZZ_CHECK(n == v->n);
        if (v->type == PT_JSON_ARRAY)
            pt_jw_array_end(w);
        else
            pt_jw_object_end(w);
        break;
    }
    }
}

static char *write_tree(const struct pt_json *doc, size_t *len)
{
    struct pt_jw w;
    char *out = NULL;
    pt_jw_init(&w, 1u << 20);
    write_value(&w, doc->root, 0);
    FUZZ_CHECK(pt_jw_finish(&w, &out, len) == 0);
    return out;
}

void fuzz_one(const uint8_t *data, size_t size)
{
    struct pt_json doc, again;
    struct pt_json_error err;
    char *t1, *t2;
    size_t l1, l2;
    int rc = pt_json_parse(&doc, (const char *)data, size, &lim, &err);

    if (rc != 0) {
        uint32_t line = 1, col = 1;
        FUZZ_CHECK(rc == PT_ERR_INPUT || rc == PT_ERR_TOO_LARGE);
        FUZZ_CHECK(err.offset <= size);
        for (size_t i = 0; i < err.offset; i++) {
            if (data[i] == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
        FUZZ_CHECK(err.line == line && err.column == col);
        FUZZ_CHECK(err.msg[0] != '\0');
        for (const char *p = err.msg; *p; p++)
            FUZZ_CHECK(*p >= 0x20 && *p < 0x7f);
        FUZZ_CHECK(doc.root == NULL);
        return;
    }
    t1 = write_tree(&doc, &l1);
    pt_json_free(&doc);
    /* The writer's text may be longer than the input (escapes): read it
     * without the byte limit. */
    {
        struct pt_json_limits big = lim;
        big.bytes = 1u << 20;
        FUZZ_CHECK(pt_json_parse(&again, t1, l1, &big, &err) == 0);
    }
    t2 = write_tree(&again, &l2);
    FUZZ_CHECK(l1 == l2 && memcmp(t1, t2, l1) == 0);
    pt_json_free(&again);
    free(t1);
    free(t2);
}

void fuzz_seeds(void (*add)(const uint8_t *data, size_t size))
{
    static const char *seeds[] = {
        "{\"name\":\"photos\",\"rules\":[{\"type\":\"bank.*\",\"verbs\":[\"GET\",\"POST\"],"
        "\"field\":\"tag\",\"values\":[\"2026\"]}],\"expires\":0,\"owner\":false}",
        "{\"recipient\":\"AAEC\",\"docs\":[\"00112233445566778899aabbccddeeff\"],"
        "\"policy\":{\"read_write\":false,\"expires\":1900000000,\"max_reads\":3}}",
        "[1,-0.5e+10,true,false,null,\"\\u00e9\\ud834\\udd1e\\n\",{}]",
        "\"caf\xc3\xa9\"",
        "[[[[[]]]]]",
    };
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++)
        add((const uint8_t *)seeds[i], strlen(seeds[i]));
}
