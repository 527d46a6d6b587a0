/*
 * Fuzz target: the owner's parsers and decoders (participant/pt_import.c,
 * pt_value.c, pt_owner.c). The first byte picks what the rest is:
 *   0: a CSV file, 1: a JSON Lines file (both for a table of every type),
 *   2: a schema written as text (import --schema),
 *   3: a token's response to each owner request (tables, rows, policy,
 *      audit, delete, provisioning).
 *
 * Invariants. A file either parses, and every row it gives has values of
 * its columns' types within their limits, which print and parse back to
 * the same values; or it fails with PT_ERR_INPUT, a kind, and a message
 * safe for a terminal (no control bytes) whose line and column are within
 * the input. A schema either parses and prints back to itself, or fails
 * with a message. A response never crashes, loops or leaks, whatever it
 * holds; the owner functions return 0 or an error.
 */
#include <string.h>

#include "participant/pt_import.h"
#include "participant/pt_owner.h"
#include "proto/cohort.pb-c.h"
#include "tests/fuzz/fuzz.h"

static struct pt_schema schema;
static size_t rows_seen;

static void every_type(void)
{
    char err[64];
    if (schema.n_columns == 0)
        FUZZ_CHECK(pt_schema_parse(&schema, "t",
                                   "n int, amount decimal(2), name text, day date, at timestamp, "
                                   "ok bool",
                                   err, sizeof err) == 0);
}

static int check_row(void *ctx, const struct pt_value *v)
{
    (void)ctx;
    rows_seen++;
    for (size_t c = 0; c < schema.n_columns; c++) {
        const struct pt_column *col = &schema.columns[c];
        char text[96];
        int64_t again = 0;
        size_t n;

        if (v[c].type == PT_NULL)
            continue;
        FUZZ_CHECK(v[c].type == col->type);
        n = pt_value_format(text, sizeof text, &v[c]);
        FUZZ_CHECK(n < sizeof text);
        switch (col->type) {
        case PT_INT:
            FUZZ_CHECK(pt_int_parse(&again, text, n) == 0 && again == v[c].i);
            break;
        case PT_DECIMAL:
            FUZZ_CHECK(v[c].scale == col->scale);
            FUZZ_CHECK(pt_decimal_parse(&again, text, n, col->scale) == 0 && again == v[c].i);
            break;
        case PT_TEXT:
            FUZZ_CHECK(v[c].len <= PT_TEXT_MAX);
            FUZZ_CHECK(pt_utf8_valid((const uint8_t *)v[c].s, v[c].len, NULL));
            break;
        case PT_DATE:
            FUZZ_CHECK(pt_date_parse(&again, text, n) == 0 && again == v[c].i);
            break;
        case PT_TIMESTAMP:
            FUZZ_CHECK(pt_timestamp_parse(&again, text, n) == 0 && again == v[c].i);
            break;
        case PT_BOOL:
            FUZZ_CHECK(v[c].i == 0 || v[c].i == 1);
            break;
        default:
            FUZZ_CHECK(0);
        }
    }
    return 0;
}

static void fuzz_file(const uint8_t *data, size_t size, enum pt_format fmt)
{
    struct pt_import_error err;
    uint64_t rows = 0, lines = 1;
    int rc;

    every_type();
    rows_seen = 0;
    rc = pt_import_parse(data, size, fmt, &schema, "fuzz", check_row, NULL, &rows, &err);
    for (size_t i = 0; i < size; i++)
        lines += data[i] == '\n';
    if (rc == 0) {
        FUZZ_CHECK(rows >= 1 && rows == rows_seen);
        return;
    }
    FUZZ_CHECK(rc == PT_ERR_INPUT);
    FUZZ_CHECK(err.kind != PT_IMPORT_OK);
    FUZZ_CHECK(err.msg[0] != '\0' && strlen(err.msg) < sizeof err.msg);
    for (const char *p = err.msg; *p; p++)
        FUZZ_CHECK((unsigned char)*p >= 0x20 && *p != 0x7f);
    FUZZ_CHECK(err.line <= lines);
    FUZZ_CHECK(err.column <= PT_COLUMNS_MAX + 1);
    FUZZ_CHECK(pt_utf8_valid((const uint8_t *)err.column_name, strlen(err.column_name), NULL));
}

static void fuzz_schema(const uint8_t *data, size_t size)
{
    char text[PT_SCHEMA_TEXT_MAX + 2], back[PT_SCHEMA_TEXT_MAX], err[160];
    struct pt_schema s, again;

    if (size > PT_SCHEMA_TEXT_MAX + 1)
        size = PT_SCHEMA_TEXT_MAX + 1;
    memcpy(text, data, size);
    text[size] = '\0';
    err[0] = '\0';
    if (pt_schema_parse(&s, "t", text, err, sizeof err) != 0) {
        FUZZ_CHECK(err[0] != '\0');
        return;
    }
    FUZZ_CHECK(s.n_columns >= 1 && s.n_columns <= PT_COLUMNS_MAX);
    pt_schema_text(back, sizeof back, &s);
    FUZZ_CHECK(pt_schema_parse(&again, "t", back, err, sizeof err) == 0);
    FUZZ_CHECK(pt_schema_equal(&s, &again));
}

struct canned {
    const uint8_t *data;
    size_t size;
    int calls;
};

static int canned_transact(void *ctx, const uint8_t *req, size_t req_len, const uint8_t **resp,
                           size_t *resp_len)
{
    struct canned *c = ctx;
    (void)req;
    (void)req_len;
    /* The same response every time: a page loop must stop on its own. */
    FUZZ_CHECK(++c->calls < 1000);
    *resp = c->data;
    *resp_len = c->size;
    return 0;
}

static int any_row(void *ctx, const struct pt_schema *s, uint64_t id, const struct pt_value *v)
{
    (void)ctx;
    (void)id;
    for (size_t c = 0; c < s->n_columns; c++)
        FUZZ_CHECK(v[c].type == PT_NULL || v[c].type == s->columns[c].type);
    return 0;
}

static int any_entry(void *ctx, const struct pt_audit_entry *e)
{
    (void)ctx;
    FUZZ_CHECK(strlen(e->reason) <= PT_REASON_MAX && strlen(e->study) <= PT_STUDY_MAX);
    return 0;
}

static void fuzz_responses(const uint8_t *data, size_t size)
{
    struct canned c = {data, size, 0};
    struct pt_link link = {&c, canned_transact};
    struct pt_owner o;
    struct pt_table_summary *t = NULL, one;
    struct pt_policy *p = malloc(sizeof *p);
    struct pt_changed ch;
    struct pt_token_info info;
    struct pt_delete d = {.all = true};
    uint8_t *csr = NULL, pk[PT_KEY_LEN];
    size_t n = 0, csr_len = 0;
    uint64_t count;
    bool found;

    FUZZ_CHECK(p != NULL);
    pt_owner_init(&o, &link, 0);
    if (pt_owner_tables(&o, &t, &n) == 0) {
        for (size_t i = 0; i < n; i++)
            FUZZ_CHECK(t[i].schema.n_columns <= PT_COLUMNS_MAX);
        free(t);
    }
    (void)pt_owner_table(&o, "t", &one, &found);
    c.calls = 0;
    (void)pt_owner_rows(&o, "t", 0, any_row, NULL, &count);
    c.calls = 0;
    (void)pt_owner_audit(&o, 0, 0, any_entry, NULL, &count);
    (void)pt_owner_policy_get(&o, p);
    (void)pt_owner_delete(&o, "t", &d, &ch);
    (void)pt_owner_compact(&o, &ch);
    (void)pt_owner_info(&o, &info);
    if (pt_owner_provision_begin(&o, "s", &csr, &csr_len, pk) == 0)
        free(csr);
    free(p);
}

void fuzz_one(const uint8_t *data, size_t size)
{
    if (size == 0)
        return;
    switch (data[0] % 4) {
    case 0:
        fuzz_file(data + 1, size - 1, PT_FORMAT_CSV);
        break;
    case 1:
        fuzz_file(data + 1, size - 1, PT_FORMAT_JSONL);
        break;
    case 2:
        fuzz_schema(data + 1, size - 1);
        break;
    default:
        fuzz_responses(data + 1, size - 1);
        break;
    }
}

/* A RowPage response of two rows, to start the response mutations from. */
static size_t row_page(uint8_t *out)
{
    Cohort__TokenResponse r = COHORT__TOKEN_RESPONSE__INIT;
    Cohort__RowPage page = COHORT__ROW_PAGE__INIT;
    Cohort__TableSchema s = COHORT__TABLE_SCHEMA__INIT;
    Cohort__Column c0 = COHORT__COLUMN__INIT, c1 = COHORT__COLUMN__INIT, *cols[] = {&c0, &c1};
    Cohort__Value v0 = COHORT__VALUE__INIT, v1 = COHORT__VALUE__INIT, *vals[] = {&v0, &v1};
    Cohort__Row row = COHORT__ROW__INIT, *rows[] = {&row, &row};
    uint64_t ids[] = {1, 2};

    s.name = "t";
    c0.name = "n";
    c0.type = COHORT__VALUE_TYPE__VT_INT;
    c1.name = "amount";
    c1.type = COHORT__VALUE_TYPE__VT_DECIMAL;
    c1.scale = 2;
    s.n_columns = 2;
    s.columns = cols;
    v0.type = COHORT__VALUE_TYPE__VT_INT;
    v0.i = 42;
    v1.type = COHORT__VALUE_TYPE__VT_DECIMAL;
    v1.i = 1250;
    v1.scale = 2;
    row.n_values = 2;
    row.values = vals;
    page.schema = &s;
    page.n_ids = page.n_rows = 2;
    page.ids = ids;
    page.rows = rows;
    r.body_case = COHORT__TOKEN_RESPONSE__BODY_ROWS;
    r.rows = &page;
    return cohort__token_response__pack(&r, out);
}

void fuzz_seeds(void (*add)(const uint8_t *data, size_t size))
{
    static const char *const seeds[] = {
        "\0n,amount,name,day,at,ok\n1,12.5,\"a, "
        "\"\"b\"\"\",2026-01-01,2026-01-01T00:00:00Z,true\r\n"
        ",,,,,\n-3,0.01,caf\xc3\xa9,1970-01-01,1970-01-01 00:00:00,0\n",
        "\0ok,at,day,name,amount,n\n1,,,\"x\ny\",,9223372036854775807\n",
        "\1{\"n\":1,\"amount\":\"12.50\",\"name\":\"a\\u00e9\\n\",\"day\":\"2026-01-01\","
        "\"at\":\"2026-01-01T00:00:00Z\",\"ok\":true}\n"
        "{\"n\":null,\"amount\":null,\"name\":null,\"day\":null,\"at\":null,\"ok\":null}\n",
        "\1{\"ok\":false,\"at\":null,\"day\":null,\"name\":\"\",\"amount\":-0.5,\"n\":-7}\r\n\n",
        "\2night date, minutes int, score decimal(2), note text, woke timestamp, nap bool",
        "\2a INTEGER,b numeric( 18 ),c Boolean",
    };
    uint8_t page[512];

    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++)
        add((const uint8_t *)seeds[i], 1 + strlen(seeds[i] + 1));
    page[0] = 3;
    add(page, 1 + row_page(page + 1));
}

#ifdef COHORT_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_one(data, size);
    return 0;
}
#endif
