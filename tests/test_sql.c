/*
 * Tests of the SQL front end (qr_sql.c, qr_plan.c), the catalog and the
 * result layout (qr_result.c).
 *
 * Compiled plans are decoded with cohort__plan__unpack and checked field
 * by field; WHERE and HAVING programs are compared through a small
 * disassembler written here (not qr_plan_explain), so a change in the
 * lowering shows as a changed instruction sequence. Invalid queries are
 * table-driven: each names the exact byte offset, line and column of its
 * error and a part of the message. Result tables are built here as the
 * finalizing token would build them.
 */
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto/cohort.pb-c.h"
#include "querier/qr_result.h"
#include "querier/qr_sql.h"
#include "querier/querier.h"

#define NOW 1767225600 /* 2026-01-01 00:00:00 UTC */
#define D_2026_01_01 20454
#define D_2026_06_30 20634

/* ------------------------------------------------------------ helpers */

static int compile(const char *sql, const struct qr_compile_opts *opts, Cohort__Plan **out,
                   struct qr_sql_error *err)
{
    struct qr_compile_opts def = {.now = NOW};
    uint8_t *plan = NULL;
    size_t len = 0;
    int rc = qr_sql_compile(&plan, &len, sql, opts ? opts : &def, err);

    *out = NULL;
    if (rc != 0) {
        assert_null(plan);
        assert_int_equal(len, 0);
        return rc;
    }
    assert_non_null(plan);
    *out = cohort__plan__unpack(NULL, len, plan);
    assert_non_null(*out);
    free(plan);
    return 0;
}

static Cohort__Plan *compile_ok(const char *sql)
{
    struct qr_sql_error err;
    Cohort__Plan *p;
    int rc = compile(sql, NULL, &p, &err);

    if (rc != 0)
        fail_msg("'%s' did not compile: %d at %u:%u: %s", sql, rc, err.line, err.col, err.msg);
    return p;
}

static void value_text(char *buf, size_t cap, const Cohort__Value *v)
{
    switch (v->type) {
    case COHORT__VALUE_TYPE__VT_INT:
        snprintf(buf, cap, "INT:%lld", (long long)v->i);
        break;
    case COHORT__VALUE_TYPE__VT_DECIMAL:
        snprintf(buf, cap, "DEC:%lld/%u", (long long)v->i, v->scale);
        break;
    case COHORT__VALUE_TYPE__VT_TEXT:
        snprintf(buf, cap, "TEXT:'%.*s'", (int)v->s.len, (const char *)v->s.data);
        break;
    case COHORT__VALUE_TYPE__VT_DATE:
        snprintf(buf, cap, "DATE:%lld", (long long)v->i);
        break;
    case COHORT__VALUE_TYPE__VT_TIMESTAMP:
        snprintf(buf, cap, "TS:%lld", (long long)v->i);
        break;
    case COHORT__VALUE_TYPE__VT_BOOL:
        snprintf(buf, cap, "BOOL:%lld", (long long)v->i);
        break;
    case COHORT__VALUE_TYPE__VT_NULL:
        snprintf(buf, cap, "NULL");
        break;
    default:
        snprintf(buf, cap, "?");
        break;
    }
}

/* A program as "age INT:40 GE": columns by name, constants typed, ops by name. */
static void disassemble(char *buf, size_t cap, Cohort__Instr **prog, size_t n)
{
    static const char *const ops[] = {"NOP", "COL",     "CONST",       "AGG",  "EQ",  "NE",
                                      "LT",  "LE",      "GT",          "GE",   "AND", "OR",
                                      "NOT", "IS_NULL", "IS_NOT_NULL", "LIKE", "IN"};
    size_t used = 0;
    char v[128];

    buf[0] = '\0';
    for (size_t k = 0; k < n; k++) {
        const Cohort__Instr *in = prog[k];
        char item[1024];
        switch (in->op) {
        case COHORT__OP__OP_COLUMN:
            snprintf(item, sizeof item, "%s", in->column);
            break;
        case COHORT__OP__OP_CONST:
            assert_non_null(in->value);
            value_text(item, sizeof item, in->value);
            break;
        case COHORT__OP__OP_AGGREGATE:
            snprintf(item, sizeof item, "AGG#%u", in->index);
            break;
        case COHORT__OP__OP_LIKE_PREFIX:
            assert_non_null(in->value);
            value_text(v, sizeof v, in->value);
            snprintf(item, sizeof item, "LIKE:%s", v);
            break;
        case COHORT__OP__OP_IN: {
            size_t m = (size_t)snprintf(item, sizeof item, "IN[");
            for (size_t i = 0; i < in->n_list; i++) {
                value_text(v, sizeof v, in->list[i]);
                m += (size_t)snprintf(item + m, sizeof item - m, "%s%s", i ? "," : "", v);
            }
            snprintf(item + m, sizeof item - m, "]");
            break;
        }
        default:
            assert_true((unsigned)in->op < sizeof ops / sizeof ops[0]);
            snprintf(item, sizeof item, "%s", ops[in->op]);
            break;
        }
        used += (size_t)snprintf(buf + used, cap - used, "%s%s", k ? " " : "", item);
        assert_true(used < cap);
    }
}

static void assert_program(Cohort__Instr **prog, size_t n, const char *expected, const char *sql)
{
    char got[8192];

    disassemble(got, sizeof got, prog, n);
    if (strcmp(got, expected) != 0)
        fail_msg("%s\n  expected: %s\n  got:      %s", sql, expected, got);
}

/* ------------------------------------------------------------ catalog */

static void test_the_catalog_lists_the_health_table_with_its_columns_in_order(void **state)
{
    static const struct {
        const char *name;
        enum qr_type type;
        unsigned scale;
        int per_participant;
        uint32_t distinct;
    } want[] = {
        {"participant", QR_INT, 0, 1, 1000000},
        {"age", QR_INT, 0, 1, 100},
        {"sex", QR_TEXT, 0, 1, 2},
        {"region", QR_TEXT, 0, 1, 128},
        {"date", QR_DATE, 0, 0, 366},
        {"steps", QR_INT, 0, 0, 30000},
        {"heart_rate", QR_INT, 0, 0, 150},
        {"weight", QR_DECIMAL, 1, 0, 1500},
        {"age_band", QR_TEXT, 0, 1, 8},
    };
    const struct qr_table *t = qr_catalog_table(0);

    (void)state;
    assert_non_null(t);
    assert_string_equal(t->name, "health");
    assert_int_equal(t->n_columns, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < t->n_columns; i++) {
        assert_string_equal(t->columns[i].name, want[i].name);
        assert_int_equal(t->columns[i].type, want[i].type);
        assert_int_equal(t->columns[i].scale, want[i].scale);
        assert_int_equal(t->columns[i].per_participant, want[i].per_participant);
        assert_int_equal(t->columns[i].distinct, want[i].distinct);
        assert_non_null(t->columns[i].doc);
        assert_true(strlen(t->columns[i].doc) > 0);
        assert_null(strchr(t->columns[i].doc, '\n'));
        assert_int_equal(qr_catalog_column(t, want[i].name), (int)i);
    }
}

/*
 * The standard tables owners import into: each has documented columns of
 * the types a token stores, with a timestamp and a bool among them, names a
 * token accepts, and a schema for the token that lists exactly the
 * catalog's columns. A query over each compiles.
 */
static void test_the_catalog_has_five_documented_tables_with_schemas_for_the_token(void **state)
{
    static const char *const names[] = {"health", "energy", "bank_operations", "location_visits",
                                        "documents"};
    static const char *const queries[] = {
        "SELECT age_band, AVG(steps) FROM health GROUP BY age_band",
        "SELECT heating, SUM(kwh), MAX(peak_kw) FROM energy WHERE solar AND day >= "
        "'2026-01-01' GROUP BY heating",
        "SELECT merchant_category, COUNT(*), SUM(amount) FROM bank_operations WHERE "
        "direction = 'debit' AND time >= TIMESTAMP '2026-01-01 00:00:00' AND NOT recurring "
        "GROUP BY merchant_category",
        "SELECT place_category, AVG(duration_min), MAX(distance_km) FROM location_visits WHERE "
        "arrival < TIMESTAMP '2026-07-01 00:00:00' GROUP BY place_category",
        "SELECT type, COUNT(*), AVG(bytes) FROM documents WHERE created >= TIMESTAMP "
        "'2026-01-01 00:00:00' GROUP BY type",
    };
    int seen_timestamp = 0, seen_bool = 0;

    (void)state;
    assert_null(qr_catalog_table(sizeof names / sizeof names[0]));
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const struct qr_table *t = qr_catalog_table(i);
        Cohort__TableSchema *s;
        struct qr_compile_opts opts = {.study = "catalog", .now = 1785000000};
        struct qr_sql_error err;
        uint8_t *buf = NULL;
        size_t len = 0;

        assert_non_null(t);
        assert_string_equal(t->name, names[i]);
        assert_ptr_equal(qr_catalog_find(names[i]), t);
        assert_true(strlen(t->doc) > 0);
        assert_true(t->n_columns > 0 && t->n_columns <= QR_CATALOG_COLUMNS_MAX);
        for (size_t j = 0; j < t->n_columns; j++) {
            const struct qr_column *c = &t->columns[j];
            assert_true(strlen(c->name) > 0 && strlen(c->name) <= 32);
            assert_true(strlen(c->doc) > 0);
            assert_null(strchr(c->doc, '\n'));
            assert_true(c->distinct > 0);
            assert_true(c->type != QR_NULL && c->type != QR_DOUBLE);
            assert_true(c->type == QR_DECIMAL ? c->scale >= 1 && c->scale <= 18 : c->scale == 0);
            assert_int_equal(qr_catalog_column(t, c->name), (int)j);
            seen_timestamp |= c->type == QR_TIMESTAMP;
            seen_bool |= c->type == QR_BOOL;
        }
        assert_int_equal(qr_catalog_schema(t, &buf, &len), QR_OK);
        s = cohort__table_schema__unpack(NULL, len, buf);
        assert_non_null(s);
        assert_string_equal(s->name, t->name);
        assert_int_equal(s->n_columns, t->n_columns);
        for (size_t j = 0; j < t->n_columns; j++) {
            assert_string_equal(s->columns[j]->name, t->columns[j].name);
            assert_int_equal(s->columns[j]->type, t->columns[j].type);
            assert_int_equal(s->columns[j]->scale, t->columns[j].scale);
        }
        cohort__table_schema__free_unpacked(s, NULL);
        free(buf);
        buf = NULL;
        if (qr_sql_compile(&buf, &len, queries[i], &opts, &err) != QR_OK)
            fail_msg("%s: %s", queries[i], err.msg);
        free(buf);
    }
    assert_true(seen_timestamp && seen_bool);
    assert_int_equal(qr_catalog_schema(NULL, NULL, NULL), QR_ERR_ARG);
}

static void test_catalog_lookups_ignore_case_and_reject_unknown_names(void **state)
{
    const struct qr_table *t = qr_catalog_find("HeAlTh");

    (void)state;
    assert_ptr_equal(t, qr_catalog_table(0));
    assert_null(qr_catalog_find("healthy"));
    assert_null(qr_catalog_find(""));
    assert_null(qr_catalog_find(NULL));
    assert_int_equal(qr_catalog_column(t, "HEART_RATE"), 6);
    assert_int_equal(qr_catalog_column(t, "AGE_BAND"), 8);
    assert_int_equal(qr_catalog_column(t, "age_group"), -1);
    assert_int_equal(qr_catalog_column(t, NULL), -1);
    assert_int_equal(qr_catalog_column(NULL, "age"), -1);
}

/* ------------------------------------------------------ valid queries */

#define Q "SELECT COUNT(*) FROM health "
#define QG "SELECT region, COUNT(*) FROM health GROUP BY region "

static const struct {
    const char *sql;
    const char *where;
    const char *having;
} programs[] = {
    {Q, "", ""},
    {Q "WHERE age >= 40", "age INT:40 GE", ""},
    {Q "WHERE sex = 'F'", "sex TEXT:'F' EQ", ""},
    {Q "WHERE age <> 3 AND age != 4", "age INT:3 NE age INT:4 NE AND", ""},
    {Q "WHERE age < 1 OR age <= 2 OR age > 3", "age INT:1 LT age INT:2 LE OR age INT:3 GT OR", ""},
    {Q "WHERE 40 <= age", "INT:40 age LE", ""},
    {Q "WHERE steps > heart_rate", "steps heart_rate GT", ""},
    {Q "WHERE age = -9223372036854775808", "age INT:-9223372036854775808 EQ", ""},
    /* AND binds tighter than OR; NOT tighter than AND; parentheses override. */
    {Q "WHERE age > 30 OR age < 20 AND sex = 'M'",
     "age INT:30 GT age INT:20 LT sex TEXT:'M' EQ AND OR", ""},
    {Q "WHERE (age > 30 OR age < 20) AND sex = 'M'",
     "age INT:30 GT age INT:20 LT OR sex TEXT:'M' EQ AND", ""},
    {Q "WHERE NOT age = 3 AND steps > 0", "age INT:3 EQ NOT steps INT:0 GT AND", ""},
    {Q "WHERE NOT (age = 3 AND steps > 0)", "age INT:3 EQ steps INT:0 GT AND NOT", ""},
    {Q "WHERE NOT NOT age = 3", "age INT:3 EQ NOT NOT", ""},
    /* BETWEEN lowers to x >= a AND x <= b; strings compared with a DATE are dates. */
    {Q "WHERE date BETWEEN '2026-01-01' AND '2026-06-30'",
     "date DATE:20454 GE date DATE:20634 LE AND", ""},
    {Q "WHERE age NOT BETWEEN 18 AND 65", "age INT:18 GE age INT:65 LE AND NOT", ""},
    {Q "WHERE date = DATE '2024-02-29'", "date DATE:19782 EQ", ""},
    {Q "WHERE date >= '1970-01-01'", "date DATE:0 GE", ""},
    {Q "WHERE date < '1969-12-31'", "date DATE:-1 LT", ""},
    {Q "WHERE date IN ('2026-01-01', DATE '2026-01-02')", "date IN[DATE:20454,DATE:20455]", ""},
    /* DECIMAL constants are scaled to the column's scale. */
    {Q "WHERE weight > 72", "weight DEC:720/1 GT", ""},
    {Q "WHERE weight <= 72.5", "weight DEC:725/1 LE", ""},
    {Q "WHERE weight = -0.5", "weight DEC:-5/1 EQ", ""},
    {Q "WHERE weight IN (70, 70.5)", "weight IN[DEC:700/1,DEC:705/1]", ""},
    {Q "WHERE weight BETWEEN 60 AND 80.5", "weight DEC:600/1 GE weight DEC:805/1 LE AND", ""},
    /* IN, NOT IN, LIKE, NOT LIKE, IS [NOT] NULL. */
    {Q "WHERE region IN ('north', 'south')", "region IN[TEXT:'north',TEXT:'south']", ""},
    {Q "WHERE region NOT IN ('north')", "region IN[TEXT:'north'] NOT", ""},
    {Q "WHERE age IN (1)", "age IN[INT:1]", ""},
    {Q "WHERE region LIKE 'no%'", "region LIKE:TEXT:'no'", ""},
    {Q "WHERE region NOT LIKE 'so%'", "region LIKE:TEXT:'so' NOT", ""},
    {Q "WHERE region LIKE '%'", "region LIKE:TEXT:''", ""},
    {Q "WHERE steps IS NULL", "steps IS_NULL", ""},
    {Q "WHERE steps IS NOT NULL AND weight IS NULL", "steps IS_NOT_NULL weight IS_NULL AND", ""},
    /* Literals: escaped quotes, UTF-8, booleans. */
    {Q "WHERE region = 'O''Hara'", "region TEXT:'O'Hara' EQ", ""},
    {Q "WHERE region = ''''", "region TEXT:''' EQ", ""},
    {Q "WHERE region = '\xc3\x8ele-de-France'", "region TEXT:'\xc3\x8ele-de-France' EQ", ""},
    {Q "WHERE TRUE", "BOOL:1", ""},
    {Q "WHERE TRUE = FALSE", "BOOL:1 BOOL:0 EQ", ""},
    {Q "WHERE 1 < 2.5", "INT:1 DEC:25/1 LT", ""},
    /* Keywords and names in any case; comments; a trailing semicolon. */
    {"select count(*) from HEALTH where AGE between 1 and 2", "age INT:1 GE age INT:2 LE AND", ""},
    {"SELECT COUNT(*) -- everyone\nFROM health -- the table\nWHERE age = -1; -- done",
     "age INT:-1 EQ", ""},
    {"SELECT\tCOUNT(*)\r\nFROM\thealth\r\nWHERE\tage=1;", "age INT:1 EQ", ""},
    /* HAVING: aggregates by index, grouping columns by name. */
    {QG "HAVING COUNT(*) >= 20", "", "AGG#0 INT:20 GE"},
    {QG "HAVING region <> 'x'", "", "region TEXT:'x' NE"},
    {QG "HAVING AVG(heart_rate) > 70", "", "AGG#1 INT:70 GT"},
    {QG "HAVING AVG(heart_rate) > 70.25", "", "AGG#1 DEC:7025/2 GT"},
    {QG "HAVING AVG(weight) > 70.25", "", "AGG#1 DEC:7025/2 GT"},
    {QG "HAVING SUM(weight) > 100", "", "AGG#1 DEC:1000/1 GT"},
    {QG "HAVING MAX(weight) BETWEEN 50 AND 60.5", "", "AGG#1 DEC:500/1 GE AGG#1 DEC:605/1 LE AND"},
    {QG "HAVING MIN(date) >= '2026-01-01'", "", "AGG#1 DATE:20454 GE"},
    {QG "HAVING COUNT(DISTINCT participant) >= 10 AND region IS NOT NULL", "",
     "AGG#1 INT:10 GE region IS_NOT_NULL AND"},
    {QG "HAVING COUNT(steps) IN (1, 2)", "", "AGG#1 IN[INT:1,INT:2]"},
    {QG "HAVING region LIKE 'n%' OR COUNT(*) > 5", "", "region LIKE:TEXT:'n' AGG#0 INT:5 GT OR"},
    /* SELECT aliases stand for their items in HAVING. */
    {"SELECT region AS r, COUNT(*) AS n FROM health GROUP BY region HAVING n > 3 AND r <> 'x'", "",
     "AGG#0 INT:3 GT region TEXT:'x' NE AND"},
};

static void test_valid_queries_lower_to_the_expected_programs(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof programs / sizeof programs[0]; i++) {
        Cohort__Plan *p = compile_ok(programs[i].sql);
        assert_program(p->where, p->n_where, programs[i].where, programs[i].sql);
        assert_program(p->having, p->n_having, programs[i].having, programs[i].sql);
        assert_string_equal(p->sql, programs[i].sql);
        cohort__plan__free_unpacked(p, NULL);
    }
}

static void test_a_plain_count_gets_every_default(void **state)
{
    const char *sql = "SELECT COUNT(*) FROM health";
    Cohort__Plan *p = compile_ok(sql);

    (void)state;
    assert_int_equal(p->version, 1);
    assert_int_equal(p->nonce.len, 16);
    assert_string_equal(p->study, "default");
    assert_string_equal(p->protocol, "s_agg");
    assert_string_equal(p->table, "health");
    assert_int_equal(p->n_group_by, 0);
    assert_int_equal(p->n_aggregates, 1);
    assert_int_equal(p->aggregates[0]->func, COHORT__AGG_FUNC__AGG_COUNT_STAR);
    assert_string_equal(p->aggregates[0]->column, "");
    assert_int_equal(p->n_where, 0);
    assert_int_equal(p->n_having, 0);
    assert_int_equal(p->n_output, 1);
    assert_string_equal(p->output[0]->label, "COUNT(*)");
    assert_false(p->output[0]->is_group);
    assert_int_equal(p->output[0]->index, 0);
    assert_int_equal(p->n_order_by, 0);
    assert_int_equal(p->limit, 0);
    assert_int_equal(p->size, 0);
    assert_int_equal(p->issued_at, NOW);
    assert_int_equal(p->deadline, NOW + 3600);
    assert_int_equal(p->expires_at, NOW + 3600 + 86400);
    assert_int_equal(p->tuples_per_participant, 1);
    assert_int_equal(p->max_groups, 1);
    assert_non_null(p->privacy);
    assert_int_equal(p->privacy->min_participants, 10);
    assert_int_equal(p->privacy->min_group_size, 5);
    assert_true(p->privacy->epsilon == 0.0);
    assert_int_equal(p->privacy->contribution_bound, 0);
    assert_string_equal(p->sql, sql);
    cohort__plan__free_unpacked(p, NULL);
}

static void test_every_plan_gets_a_fresh_nonce(void **state)
{
    Cohort__Plan *a = compile_ok("SELECT COUNT(*) FROM health");
    Cohort__Plan *b = compile_ok("SELECT COUNT(*) FROM health");

    (void)state;
    assert_int_equal(a->nonce.len, 16);
    assert_int_equal(b->nonce.len, 16);
    assert_memory_not_equal(a->nonce.data, b->nonce.data, 16);
    cohort__plan__free_unpacked(a, NULL);
    cohort__plan__free_unpacked(b, NULL);
}

static void test_compile_options_set_study_and_times(void **state)
{
    struct qr_compile_opts o = {
        .study = "flu-2026", .now = 1000, .collect_seconds = 60, .valid_seconds = 120};
    struct qr_sql_error err;
    Cohort__Plan *p;

    (void)state;
    assert_int_equal(compile("SELECT COUNT(*) FROM health", &o, &p, &err), 0);
    assert_string_equal(p->study, "flu-2026");
    assert_int_equal(p->issued_at, 1000);
    assert_int_equal(p->deadline, 1060);
    assert_int_equal(p->expires_at, 1180);
    cohort__plan__free_unpacked(p, NULL);

    /* DEADLINE in the SQL wins over collect_seconds. */
    assert_int_equal(compile("SELECT COUNT(*) FROM health DEADLINE 600", &o, &p, &err), 0);
    assert_int_equal(p->deadline, 1600);
    assert_int_equal(p->expires_at, 1720);
    cohort__plan__free_unpacked(p, NULL);

    o.collect_seconds = -1;
    assert_int_equal(compile("SELECT COUNT(*) FROM health", &o, &p, &err), QR_ERR_ARG);
    o.collect_seconds = 0;
    o.now = INT64_MAX - 10;
    assert_int_equal(compile("SELECT COUNT(*) FROM health", &o, &p, &err), QR_ERR_ARG);
}

static void test_outputs_carry_aliases_or_canonical_labels_in_select_order(void **state)
{
    Cohort__Plan *p =
        compile_ok("SELECT COUNT(*) n, region AS r, sum(steps), count(distinct PARTICIPANT), "
                   "AVG(heart_rate) AS hr, age, Min(weight), MAX(date), COUNT(weight) FROM health "
                   "GROUP BY age, region");
    static const struct {
        const char *label;
        int is_group;
        unsigned index;
    } want[] = {
        {"n", 0, 0},
        {"r", 1, 1},
        {"SUM(steps)", 0, 1},
        {"COUNT(DISTINCT participant)", 0, 2},
        {"hr", 0, 3},
        {"age", 1, 0},
        {"MIN(weight)", 0, 4},
        {"MAX(date)", 0, 5},
        {"COUNT(weight)", 0, 6},
    };
    static const struct {
        Cohort__AggFunc func;
        const char *column;
    } aggs[] = {
        {COHORT__AGG_FUNC__AGG_COUNT_STAR, ""},         {COHORT__AGG_FUNC__AGG_SUM, "steps"},
        {COHORT__AGG_FUNC__AGG_COUNT_PARTICIPANTS, ""}, {COHORT__AGG_FUNC__AGG_AVG, "heart_rate"},
        {COHORT__AGG_FUNC__AGG_MIN, "weight"},          {COHORT__AGG_FUNC__AGG_MAX, "date"},
        {COHORT__AGG_FUNC__AGG_COUNT, "weight"},
    };

    (void)state;
    assert_int_equal(p->n_group_by, 2);
    assert_string_equal(p->group_by[0], "age");
    assert_string_equal(p->group_by[1], "region");
    assert_int_equal(p->n_output, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < p->n_output; i++) {
        assert_string_equal(p->output[i]->label, want[i].label);
        assert_int_equal(p->output[i]->is_group, want[i].is_group);
        assert_int_equal(p->output[i]->index, want[i].index);
    }
    assert_int_equal(p->n_aggregates, sizeof aggs / sizeof aggs[0]);
    for (size_t i = 0; i < p->n_aggregates; i++) {
        assert_int_equal(p->aggregates[i]->func, aggs[i].func);
        assert_string_equal(p->aggregates[i]->column, aggs[i].column);
    }
    cohort__plan__free_unpacked(p, NULL);
}

static void test_the_same_aggregate_is_computed_once(void **state)
{
    Cohort__Plan *p = compile_ok("SELECT COUNT(*), COUNT(*) AS c, SUM(steps), sum(STEPS) "
                                 "FROM health HAVING COUNT(*) > 1 AND SUM(steps) > 2");

    (void)state;
    assert_int_equal(p->n_aggregates, 2);
    assert_int_equal(p->n_output, 4);
    assert_int_equal(p->output[0]->index, 0);
    assert_int_equal(p->output[1]->index, 0);
    assert_string_equal(p->output[1]->label, "c");
    assert_int_equal(p->output[2]->index, 1);
    assert_int_equal(p->output[3]->index, 1);
    assert_program(p->having, p->n_having, "AGG#0 INT:1 GT AGG#1 INT:2 GT AND", p->sql);
    cohort__plan__free_unpacked(p, NULL);
}

static void test_having_adds_hidden_aggregates_after_the_selected_ones(void **state)
{
    Cohort__Plan *p = compile_ok("SELECT region, SUM(steps), COUNT(*) FROM health GROUP BY "
                                 "region HAVING COUNT(*) > 5 AND SUM(steps) > 1000 AND "
                                 "MAX(steps) < 50000 AND AVG(heart_rate) > 60");

    (void)state;
    assert_int_equal(p->n_aggregates, 4);
    assert_int_equal(p->aggregates[0]->func, COHORT__AGG_FUNC__AGG_SUM);
    assert_int_equal(p->aggregates[1]->func, COHORT__AGG_FUNC__AGG_COUNT_STAR);
    assert_int_equal(p->aggregates[2]->func, COHORT__AGG_FUNC__AGG_MAX);
    assert_string_equal(p->aggregates[2]->column, "steps");
    assert_int_equal(p->aggregates[3]->func, COHORT__AGG_FUNC__AGG_AVG);
    assert_string_equal(p->aggregates[3]->column, "heart_rate");
    assert_int_equal(p->n_output, 3);
    assert_program(p->having, p->n_having,
                   "AGG#1 INT:5 GT AGG#0 INT:1000 GT AND AGG#2 INT:50000 LT AND AGG#3 INT:60 "
                   "GT AND",
                   p->sql);
    cohort__plan__free_unpacked(p, NULL);
}

static void test_group_defaults_follow_the_catalog_estimates(void **state)
{
    static const struct {
        const char *group_by;
        uint32_t tuples, max_groups;
    } cases[] = {
        {"region", 1, 128},          {"region, sex", 1, 256},  {"date", 8, 366},
        {"region, date", 8, 4096},   {"region, age", 1, 4096}, {"sex, steps", 8, 4096},
        {"sex, heart_rate", 8, 300},
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char sql[256];
        snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM health GROUP BY %s", cases[i].group_by);
        Cohort__Plan *p = compile_ok(sql);
        assert_int_equal(p->tuples_per_participant, cases[i].tuples);
        assert_int_equal(p->max_groups, cases[i].max_groups);
        cohort__plan__free_unpacked(p, NULL);
    }
}

static void test_with_options_reach_the_plan(void **state)
{
    Cohort__Plan *p = compile_ok(
        "SELECT date, COUNT(*) FROM health GROUP BY date LIMIT 4294967296 SIZE 1000000000 "
        "DEADLINE 31536000 WITH (min_participants = 100, MIN_GROUP_SIZE = 0, epsilon = 0.5, "
        "contribution_bound = 20000, tuples_per_participant = 64, max_groups = 65536, "
        "protocol = 's_agg');");

    (void)state;
    assert_int_equal(p->privacy->min_participants, 100);
    assert_int_equal(p->privacy->min_group_size, 0);
    assert_true(p->privacy->epsilon == 0.5);
    assert_int_equal(p->privacy->contribution_bound, 20000);
    assert_int_equal(p->tuples_per_participant, 64);
    assert_int_equal(p->max_groups, 65536);
    assert_string_equal(p->protocol, "s_agg");
    assert_int_equal(p->limit, 4294967296ull);
    assert_int_equal(p->size, 1000000000ull);
    assert_int_equal(p->deadline, NOW + 31536000);
    cohort__plan__free_unpacked(p, NULL);

    p = compile_ok("SELECT COUNT(*) FROM health LIMIT 0 SIZE 1 DEADLINE 1 WITH (epsilon = 3, "
                   "protocol = s_agg, tuples_per_participant = 1, max_groups = 1)");
    assert_true(p->privacy->epsilon == 3.0);
    assert_int_equal(p->limit, 0);
    assert_int_equal(p->size, 1);
    assert_int_equal(p->deadline, NOW + 1);
    assert_int_equal(p->tuples_per_participant, 1);
    assert_int_equal(p->max_groups, 1);
    cohort__plan__free_unpacked(p, NULL);
}

static void test_differential_privacy_gets_bounds_and_a_threshold_for_its_delta(void **state)
{
    struct qr_compile_opts o = {.now = NOW, .epsilon = 2, .contribution_bound = 300};
    Cohort__Plan *p;

    (void)state;
    /* epsilon alone: one row per participant and group, and the smallest
     * threshold with delta <= 1e-6 (K = 1, 3 quantities: 41 at epsilon 1). */
    p = compile_ok("SELECT region, COUNT(*), SUM(steps) FROM health GROUP BY region WITH "
                   "(epsilon = 1, contribution_bound = 20000)");
    assert_true(p->privacy->epsilon == 1.0);
    assert_int_equal(p->privacy->max_rows, 1);
    assert_int_equal(p->privacy->contribution_bound, 20000);
    assert_int_equal(p->tuples_per_participant, 1);
    assert_int_equal(p->privacy->min_group_size, 41);
    cohort__plan__free_unpacked(p, NULL);
    /* Per-row groups (K = 8) need a far larger threshold for the same delta. */
    p = compile_ok("SELECT date, COUNT(*) FROM health GROUP BY date WITH (epsilon = 1)");
    assert_int_equal(p->tuples_per_participant, 8);
    assert_true(p->privacy->min_group_size > 200);
    cohort__plan__free_unpacked(p, NULL);
    /* An explicit threshold and max_rows are kept as given. */
    p = compile_ok("SELECT sex, AVG(weight) FROM health GROUP BY sex WITH (epsilon = 0.5, "
                   "contribution_bound = 250, max_rows = 7, min_group_size = 3)");
    assert_int_equal(p->privacy->max_rows, 7);
    assert_int_equal(p->privacy->min_group_size, 3);
    cohort__plan__free_unpacked(p, NULL);
    /* Settings from the compile options, unless the SQL says otherwise. */
    assert_int_equal(compile("SELECT sex, SUM(steps) FROM health GROUP BY sex", &o, &p, NULL), 0);
    assert_true(p->privacy->epsilon == 2.0);
    assert_int_equal(p->privacy->contribution_bound, 300);
    assert_int_equal(p->privacy->max_rows, 1);
    cohort__plan__free_unpacked(p, NULL);
    assert_int_equal(
        compile("SELECT sex, SUM(steps) FROM health GROUP BY sex WITH (epsilon = 0.25)", &o, &p,
                NULL),
        0);
    assert_true(p->privacy->epsilon == 0.25);
    cohort__plan__free_unpacked(p, NULL);
    /* Without epsilon nothing changes: no max_rows, the usual threshold. */
    p = compile_ok("SELECT region, MIN(weight) FROM health GROUP BY region");
    assert_true(p->privacy->epsilon == 0.0);
    assert_int_equal(p->privacy->max_rows, 0);
    assert_int_equal(p->privacy->min_group_size, 5);
    cohort__plan__free_unpacked(p, NULL);
}

static void test_order_by_resolves_aliases_positions_and_expressions(void **state)
{
    Cohort__Plan *p = compile_ok("SELECT region, age AS a, COUNT(*) AS n, SUM(steps) FROM health "
                                 "GROUP BY region, age ORDER BY n DESC, 1, sum(steps) ASC, "
                                 "age DESC, A, REGION desc");
    static const struct {
        uint32_t output;
        int desc;
    } want[] = {{2, 1}, {0, 0}, {3, 0}, {1, 1}, {1, 0}, {0, 1}};

    (void)state;
    assert_int_equal(p->n_order_by, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < p->n_order_by; i++) {
        assert_int_equal(p->order_by[i]->output, want[i].output);
        assert_int_equal(p->order_by[i]->desc, want[i].desc);
    }
    cohort__plan__free_unpacked(p, NULL);

    /* An alias that shadows a column name means the output. */
    p = compile_ok("SELECT region, COUNT(*) AS age FROM health GROUP BY region ORDER BY age");
    assert_int_equal(p->order_by[0]->output, 1);
    cohort__plan__free_unpacked(p, NULL);
}

/* DESIGN.md section 4's example, with its placeholders filled in. */
static void test_the_design_example_compiles(void **state)
{
    Cohort__Plan *p =
        compile_ok("SELECT region, age_band, COUNT(*), SUM(steps), AVG(heart_rate), MIN(weight), "
                   "MAX(weight)\n"
                   "FROM health\n"
                   "WHERE age >= 40 AND sex = 'F' AND date BETWEEN '2026-01-01' AND '2026-06-30'\n"
                   "GROUP BY region, age_band\n"
                   "HAVING COUNT(*) >= 20\n"
                   "ORDER BY region LIMIT 100;");

    (void)state;
    assert_int_equal(p->n_group_by, 2);
    assert_string_equal(p->group_by[1], "age_band");
    assert_int_equal(p->n_aggregates, 5);
    assert_program(p->where, p->n_where,
                   "age INT:40 GE sex TEXT:'F' EQ AND date DATE:20454 GE date DATE:20634 LE "
                   "AND AND",
                   p->sql);
    assert_program(p->having, p->n_having, "AGG#0 INT:20 GE", p->sql);
    assert_int_equal(p->n_order_by, 1);
    assert_int_equal(p->order_by[0]->output, 0);
    assert_int_equal(p->limit, 100);
    /* Both grouping columns are the participant's own: one tuple each. */
    assert_int_equal(p->tuples_per_participant, 1);
    assert_int_equal(p->max_groups, 128 * 8);
    cohort__plan__free_unpacked(p, NULL);
}

static void test_nesting_up_to_the_bound_compiles(void **state)
{
    char sql[1024];
    size_t n = (size_t)snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM health WHERE ");

    (void)state;
    for (unsigned i = 0; i < QR_SQL_DEPTH_MAX; i++)
        sql[n++] = '(';
    n += (size_t)snprintf(sql + n, sizeof sql - n, "age = 1");
    for (unsigned i = 0; i < QR_SQL_DEPTH_MAX; i++)
        sql[n++] = ')';
    sql[n] = '\0';
    Cohort__Plan *p = compile_ok(sql);
    assert_program(p->where, p->n_where, "age INT:1 EQ", sql);
    cohort__plan__free_unpacked(p, NULL);
}

static void test_a_plan_is_explained_in_readable_text(void **state)
{
    uint8_t *plan;
    size_t len;
    struct qr_compile_opts o = {.now = NOW, .study = "flu"};
    struct qr_sql_error err;
    char *text;

    (void)state;
    assert_int_equal(qr_sql_compile(&plan, &len,
                                    "SELECT region, COUNT(*) AS n FROM health WHERE (age > 30 "
                                    "OR age < 20) AND NOT sex = 'F' AND region IN ('a', 'b''c') "
                                    "AND region LIKE 'x%' AND weight > 70 AND date >= "
                                    "'2026-01-01' GROUP BY region HAVING AVG(heart_rate) > 60.5 "
                                    "ORDER BY n DESC LIMIT 5 SIZE 1000 WITH (epsilon = 0.25, "
                                    "contribution_bound = 10)",
                                    &o, &err),
                     0);
    text = qr_plan_explain(plan, len);
    assert_non_null(text);
    assert_non_null(strstr(text, "study flu, protocol s_agg"));
    assert_non_null(strstr(text, "table:      health\n"));
    assert_non_null(strstr(text, "select:     region, COUNT(*) AS n\n"));
    assert_non_null(strstr(text, "group by:   region\n"));
    assert_non_null(strstr(text, "aggregates: #0 COUNT(*), #1 AVG(heart_rate)\n"));
    assert_non_null(strstr(text, "where:      (age > 30 OR age < 20) AND NOT (sex = 'F') AND "
                                 "region IN ('a', 'b''c') AND region LIKE 'x%' AND weight > 70.0 "
                                 "AND date >= DATE '2026-01-01'\n"));
    assert_non_null(strstr(text, "having:     AVG(heart_rate) > 60.5\n"));
    assert_non_null(strstr(text, "order by:   n DESC\n"));
    assert_non_null(strstr(text, "limit:      5 rows\n"));
    assert_non_null(strstr(text, "stop collecting after 1000 contributions"));
    assert_non_null(strstr(text, "issued:     2026-01-01 00:00:00 UTC"));
    assert_non_null(strstr(text, "deadline:   2026-01-01 01:00:00 UTC (+3600 s)"));
    assert_non_null(strstr(text, "epsilon 0.25, contribution bound 10"));
    assert_non_null(strstr(text, "groups of fewer than "));
    assert_non_null(strstr(text, " (noisy) participants dropped"));
    assert_non_null(strstr(text, "dp:         at most 1 row per participant and group; noise on "
                                 "4 quantities, epsilon/4 each; delta "));
    assert_non_null(strstr(text, "tuples:     1 per participant"));
    assert_non_null(strstr(text, "max groups: 128"));
    free(text);

    /* Bytes that are not a plan have no account. */
    plan[0] ^= 0xff;
    plan[1] ^= 0xff;
    assert_null(qr_plan_explain(plan, len > 3 ? 3 : len));
    assert_null(qr_plan_explain(NULL, 0));
    free(plan);
}

static void test_explain_marks_a_malformed_program(void **state)
{
    Cohort__Plan p = COHORT__PLAN__INIT;
    Cohort__Instr and_op = COHORT__INSTR__INIT;
    Cohort__Instr *prog[] = {&and_op};
    uint8_t buf[256];
    char *text;

    (void)state;
    and_op.op = COHORT__OP__OP_AND;
    p.table = "health";
    p.n_where = 1;
    p.where = prog;
    assert_true(cohort__plan__get_packed_size(&p) < sizeof buf);
    size_t len = cohort__plan__pack(&p, buf);
    text = qr_plan_explain(buf, len);
    assert_non_null(text);
    assert_non_null(strstr(text, "where:      (malformed program)"));
    free(text);
}

/* ---------------------------------------------------- invalid queries */

static const struct {
    const char *sql;
    size_t pos;
    unsigned line, col;
    const char *msg;
} errors[] = {
    {"", 0, 1, 1, "expected SELECT, found end of input"},
    {"SELECT COUNT(*) FORM health", 16, 1, 17, "expected FROM, found 'FORM'"},
    {"SELECT COUNT(*) FROM health WHERE", 33, 1, 34, "expected an expression, found end of input"},
    {"SELECT COUNT(*) FROM health WHERE age > 3 AND", 45, 1, 46,
     "expected an expression, found end of input"},
    {"SELECT age FROM health", 7, 1, 8,
     "column age must appear in GROUP BY or inside an aggregate"},
    {"SELECT COUNT(*) FROM health WHERE agee > 3", 34, 1, 35,
     "unknown column 'agee' in table health"},
    {"SELECT COUNT(*) FROM x", 21, 1, 22,
     "unknown table 'x'; standard tables are: health, energy, bank_operations, location_visits"},
    {"SELECT COUNT(*) FROM health WHERE age = 'abc'", 40, 1, 41,
     "cannot compare age (INT) with 'abc' (TEXT)"},
    {"SELECT COUNT(*) FROM health WHERE 'abc' = age", 34, 1, 35,
     "cannot compare age (INT) with 'abc' (TEXT)"},
    {"SELECT COUNT(*) FROM health WHERE age > 40.5", 40, 1, 41,
     "cannot compare age (INT) with 40.5 (DECIMAL)"},
    {"SELECT COUNT(*) FROM health WHERE weight > 72.55", 43, 1, 44,
     "72.55 has more fractional digits than weight"},
    {"SELECT COUNT(*) FROM health WHERE date > '2026-02-30'", 41, 1, 42,
     "invalid date '2026-02-30'"},
    {"SELECT COUNT(*) FROM health WHERE date > '2026-1-01'", 41, 1, 42, "invalid date '2026-1-01'"},
    {"SELECT COUNT(*) FROM health WHERE date > DATE '2026-13-01'", 46, 1, 47,
     "invalid date '2026-13-01'"},
    {"SELECT COUNT(*) FROM health WHERE date > DATE '2025-02-29'", 46, 1, 47,
     "invalid date '2025-02-29'"},
    {"SELECT COUNT(*) FROM health WHERE date > 5", 41, 1, 42,
     "cannot compare date (DATE) with 5 (INT)"},
    {"SELECT COUNT(*) FROM health WHERE date > TIMESTAMP '2026-01-01 00:00:00'", 41, 1, 42,
     "cannot compare date (DATE) with TIMESTAMP '2026-01-01 00:00:00' (TIMESTAMP)"},
    {"SELECT COUNT(*) FROM health WHERE region = 5", 43, 1, 44,
     "cannot compare region (TEXT) with 5 (INT)"},
    {"SELECT COUNT(*) FROM health WHERE steps > region", 42, 1, 43,
     "cannot compare steps (INT) with region (TEXT)"},
    {"SELECT COUNT(*) FROM health WHERE age BETWEEN 1 AND 'x'", 52, 1, 53,
     "cannot compare age (INT) with 'x' (TEXT)"},
    {"SELECT COUNT(*) FROM health WHERE region IN ('a', 3)", 50, 1, 51,
     "cannot compare region (TEXT) with 3 (INT)"},
    {"SELECT COUNT(*) FROM health WHERE region LIKE '%abc'", 46, 1, 47,
     "only prefix patterns such as 'abc%' are supported"},
    {"SELECT COUNT(*) FROM health WHERE region LIKE 'a_c%'", 46, 1, 47,
     "only prefix patterns such as 'abc%' are supported"},
    {"SELECT COUNT(*) FROM health WHERE region LIKE 'abc'", 46, 1, 47,
     "only prefix patterns such as 'abc%' are supported"},
    {"SELECT COUNT(*) FROM health WHERE region LIKE 'ab%c%'", 46, 1, 47,
     "only prefix patterns such as 'abc%' are supported"},
    {"SELECT COUNT(*) FROM health WHERE region LIKE 5", 46, 1, 47,
     "expected a pattern string after LIKE, found '5'"},
    {"SELECT COUNT(*) FROM health WHERE age LIKE 'a%'", 34, 1, 35,
     "LIKE needs a TEXT column on its left; age is INT"},
    {"SELECT COUNT(*) FROM health WHERE region IN ('a', NULL)", 50, 1, 51,
     "NULL is not allowed in an IN list"},
    {"SELECT COUNT(*) FROM health WHERE region IN ()", 45, 1, 46, "expected a constant, found ')'"},
    {"SELECT COUNT(*) FROM health WHERE 3 IN (1, 2)", 34, 1, 35, "IN needs a column on its left"},
    {"SELECT COUNT(*) FROM health WHERE age = NULL", 40, 1, 41,
     "comparison with NULL is never true; use IS NULL"},
    {"SELECT COUNT(*) FROM health WHERE age IS 3", 41, 1, 42, "expected NULL, found '3'"},
    {"SELECT COUNT(*) FROM health WHERE age NOT = 3", 42, 1, 43,
     "expected BETWEEN, IN or LIKE after NOT, found '='"},
    {"SELECT COUNT(*) FROM health WHERE steps", 34, 1, 35,
     "expected a condition, found steps (INT)"},
    {"SELECT COUNT(*) FROM health WHERE COUNT(*) > 3", 34, 1, 35,
     "aggregate functions are not allowed in WHERE; use HAVING"},
    {"SELECT COUNT(*) FROM health WHERE age > 3 age", 42, 1, 43,
     "expected AND, OR, GROUP BY, HAVING, ORDER BY, LIMIT, SIZE, DEADLINE, WITH, ';' or end of "
     "input, found 'age'"},
    {"SELECT COUNT(*) FROM health WHERE age > 12abc", 40, 1, 41, "malformed number '12abc'"},
    {"SELECT COUNT(*) FROM health WHERE age > 9223372036854775808", 40, 1, 41,
     "number 9223372036854775808 is out of range"},
    {"SELECT COUNT(*) FROM health WHERE weight > 1.0000000000000000001", 43, 1, 44,
     "is out of range"},
    {"SELECT COUNT(*) FROM health WHERE age > 1.", 40, 1, 41,
     "malformed number: expected a digit after '.'"},
    {"SELECT COUNT(*) FROM health WHERE sex = 'F", 40, 1, 41, "unterminated string literal"},
    {"SELECT COUNT(*) FROM health WHERE sex = "
     "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'",
     40, 1, 41, "string literal longer than 64 bytes"},
    {"SELECT COUNT(*) FROM health WHERE "
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa = 1",
     34, 1, 35, "identifier longer than 63 bytes"},
    {"SELECT COUNT(*) FROM health WHERE sex = 'F' ! 3", 44, 1, 45, "unexpected character '!'"},
    {"SELECT COUNT(*) FROM health WHERE sex - 3", 38, 1, 39, "unexpected character '-'"},
    {"SELECT COUNT(*) FROM health WHERE \xc3\xa2ge > 3", 34, 1, 35,
     "unexpected byte 0xc3: non-ASCII characters are only allowed in string literals"},
    {"SELECT COUNT(*) FROM health -- caf\xc3\xa9\nWHERE age > 3", 34, 1, 35,
     "unexpected byte 0xc3"},
    {"SELECT\x01 COUNT(*) FROM health", 6, 1, 7, "unexpected control character 0x01"},
    {"SELECT COUNT(*) FROM health WHERE sex = 'a\xe2\x80\xae"
     "b'",
     42, 1, 43, "invalid or forbidden UTF-8 sequence in string literal"},
    {"SELECT COUNT(*) FROM health WHERE sex = 'a\xff"
     "b'",
     42, 1, 43, "invalid or forbidden UTF-8 sequence in string literal"},
    {"SELECT COUNT(*) FROM health WHERE sex = 'a\tb'", 42, 1, 43,
     "control character 0x09 in string literal"},
    {"SELECT * FROM health", 7, 1, 8, "SELECT * is not supported"},
    {"SELECT 5 FROM health", 7, 1, 8, "expected a column or an aggregate, found '5'"},
    {"SELECT foo(age) FROM health", 7, 1, 8,
     "unknown function 'foo'; the aggregates are COUNT, SUM, AVG, MIN and MAX"},
    {"SELECT COUNT(DISTINCT age) FROM health", 22, 1, 23,
     "only COUNT(DISTINCT participant) is supported"},
    {"SELECT SUM(DISTINCT steps) FROM health", 11, 1, 12,
     "DISTINCT is only supported as COUNT(DISTINCT participant)"},
    {"SELECT SUM(*) FROM health", 11, 1, 12, "SUM(*) is not supported"},
    {"SELECT SUM(region) FROM health", 11, 1, 12,
     "SUM needs an INT or DECIMAL column; region is TEXT"},
    {"SELECT AVG(date) FROM health", 11, 1, 12, "AVG needs an INT or DECIMAL column; date is DATE"},
    {"SELECT MIN(sex) FROM health", 11, 1, 12, "MIN is not supported on TEXT columns such as sex"},
    {"SELECT MAX(region) FROM health", 11, 1, 12,
     "MAX is not supported on TEXT columns such as region"},
    {"SELECT COUNT(*) AS n, SUM(steps) AS N FROM health", 36, 1, 37, "alias N is used twice"},
    {"SELECT COUNT(*) AS FROM health", 19, 1, 20, "expected an alias after AS, found 'FROM'"},
    {"SELECT COUNT(*) FROM health WHERE age > 3 GROUP region", 48, 1, 49,
     "expected BY, found 'region'"},
    {"SELECT COUNT(*) FROM health GROUP BY region, region", 45, 1, 46,
     "column region appears twice in GROUP BY"},
    {"SELECT COUNT(*) FROM health GROUP BY COUNT(*)", 37, 1, 38,
     "GROUP BY takes column names, not aggregates"},
    {"SELECT COUNT(*) FROM health GROUP BY region, age, sex, date, steps, heart_rate, weight, "
     "participant, region",
     101, 1, 102, "too many GROUP BY columns (at most 8)"},
    {"SELECT region, COUNT(*) FROM health GROUP BY region HAVING age > 3", 59, 1, 60,
     "column age must appear in GROUP BY to be used in HAVING"},
    {"SELECT region, COUNT(*) AS age FROM health GROUP BY region HAVING age > 3", 66, 1, 67,
     "column age must appear in GROUP BY to be used in HAVING"},
    {"SELECT region, COUNT(*) FROM health GROUP BY region HAVING n > 3", 59, 1, 60,
     "unknown column 'n' in table health"},
    {"SELECT region, COUNT(*) FROM health GROUP BY region HAVING AVG(heart_rate) > 'x'", 77, 1, 78,
     "cannot compare AVG(heart_rate) (DOUBLE) with 'x' (TEXT)"},
    {"SELECT region, COUNT(*) FROM health GROUP BY region HAVING COUNT(*) > 2.5", 70, 1, 71,
     "cannot compare COUNT(*) (INT) with 2.5 (DECIMAL)"},
    {"SELECT region, COUNT(*) FROM health GROUP BY region HAVING SUM(weight) > 2.55", 73, 1, 74,
     "2.55 has more fractional digits than SUM(weight)"},
    {"SELECT region, COUNT(*) FROM health GROUP BY region HAVING SUM(region) > 2", 63, 1, 64,
     "SUM needs an INT or DECIMAL column; region is TEXT"},
    {"SELECT region, COUNT(*) FROM health GROUP BY region ORDER BY age", 61, 1, 62,
     "ORDER BY age does not match any item of the SELECT list"},
    {"SELECT region, COUNT(*) FROM health GROUP BY region ORDER BY nope", 61, 1, 62,
     "ORDER BY nope names neither an output nor a column"},
    {"SELECT region, COUNT(*) FROM health GROUP BY region ORDER BY 3", 61, 1, 62,
     "ORDER BY position 3 is out of range: the SELECT list has 2 items"},
    {"SELECT region, COUNT(*) FROM health GROUP BY region ORDER BY 0", 61, 1, 62,
     "ORDER BY position 0 is out of range"},
    {"SELECT region, COUNT(*) FROM health GROUP BY region ORDER BY 'x'", 61, 1, 62,
     "ORDER BY takes an output name, a position or an aggregate"},
    {"SELECT region, COUNT(*) FROM health GROUP BY region ORDER BY SUM(steps)", 61, 1, 62,
     "ORDER BY SUM(steps) does not match any item of the SELECT list"},
    {"SELECT COUNT(*) FROM health LIMIT 4294967297", 34, 1, 35,
     "LIMIT must be between 0 and 4294967296"},
    {"SELECT COUNT(*) FROM health LIMIT -1", 34, 1, 35, "LIMIT must be between 0 and 4294967296"},
    {"SELECT COUNT(*) FROM health LIMIT 1.5", 34, 1, 35,
     "expected an integer after LIMIT, found '1.5'"},
    {"SELECT COUNT(*) FROM health SIZE 0", 33, 1, 34, "SIZE must be between 1 and 1000000000"},
    {"SELECT COUNT(*) FROM health SIZE 1000000001", 33, 1, 34,
     "SIZE must be between 1 and 1000000000"},
    {"SELECT COUNT(*) FROM health DEADLINE 0", 37, 1, 38,
     "DEADLINE must be between 1 and 31536000"},
    {"SELECT COUNT(*) FROM health DEADLINE 31536001", 37, 1, 38,
     "DEADLINE must be between 1 and 31536000"},
    {"SELECT COUNT(*) FROM health LIMIT 10 WHERE age > 3", 37, 1, 38,
     "expected SIZE, DEADLINE, WITH, ';' or end of input, found 'WHERE'"},
    {"SELECT COUNT(*) FROM health ;;", 29, 1, 30, "expected end of input, found ';'"},
    {"SELECT COUNT(*) FROM health WITH (protocol = 'x_agg')", 45, 1, 46,
     "unknown protocol 'x_agg'; the protocols are auto, s_agg, rnf_noise, c_noise, ed_hist "
     "and shuffle"},
    {"SELECT COUNT(*) FROM health WITH (protocol = shuffle, fakes = 2)", 34, 1, 35,
     "fakes belongs to rnf_noise"},
    {"SELECT COUNT(*) FROM health WITH (protocol = c_noise, rounds = 2)", 34, 1, 35,
     "rounds and batch_min belong to shuffle"},
    {"SELECT COUNT(*) FROM health WITH (protocol = s_agg, buckets = 4)", 34, 1, 35,
     "buckets, fakes, rounds and batch_min belong to the other protocols, not s_agg"},
    {"SELECT sex, COUNT(*) FROM health GROUP BY sex WITH (protocol = c_noise, buckets = 4096, "
     "tuples_per_participant = 2)",
     52, 1, 53, "c_noise sends buckets x tuples_per_participant ciphertexts per participant"},
    {"SELECT sex, COUNT(*) FROM health GROUP BY sex WITH (protocol = shuffle, epsilon = 1)", 52, 1,
     53, "protocol shuffle shows the service how often each group occurs"},
    {"SELECT COUNT(*) FROM health WITH (rounds = 0)", 43, 1, 44, "rounds must be between 1 and 8"},
    {"SELECT COUNT(*) FROM health WITH (foo = 1)", 34, 1, 35,
     "unknown option 'foo'; the options are"},
    {"SELECT COUNT(*) FROM health WITH (epsilon = 1, EPSILON = 2)", 47, 1, 48,
     "option epsilon is given twice"},
    {"SELECT COUNT(*) FROM health WITH (tuples_per_participant = 65)", 59, 1, 60,
     "tuples_per_participant must be between 1 and 64"},
    {"SELECT COUNT(*) FROM health WITH (tuples_per_participant = 0)", 59, 1, 60,
     "tuples_per_participant must be between 1 and 64"},
    {"SELECT COUNT(*) FROM health WITH (max_groups = 0)", 47, 1, 48,
     "max_groups must be between 1 and 65536"},
    {"SELECT COUNT(*) FROM health WITH (max_groups = 65537)", 47, 1, 48,
     "max_groups must be between 1 and 65536"},
    {"SELECT COUNT(*) FROM health WITH (min_participants = 4294967296)", 53, 1, 54,
     "min_participants must be between 0 and 4294967295"},
    {"SELECT COUNT(*) FROM health WITH (min_group_size = -1)", 51, 1, 52,
     "min_group_size must be between 0 and 4294967295"},
    {"SELECT COUNT(*) FROM health WITH (contribution_bound = -1)", 55, 1, 56,
     "contribution_bound must be between 0 and"},
    {"SELECT COUNT(*) FROM health WITH (min_participants = 1.5)", 53, 1, 54,
     "expected an integer for min_participants, found '1.5'"},
    {"SELECT COUNT(*) FROM health WITH (epsilon = -0.5)", 44, 1, 45, "epsilon must be 0 or more"},
    {"SELECT COUNT(*) FROM health WITH (epsilon = 'x')", 44, 1, 45,
     "expected a number for epsilon, found 'x'"},
    {"SELECT COUNT(*) FROM health WITH (epsilon 1)", 42, 1, 43, "expected '=', found '1'"},
    {"SELECT COUNT(*) FROM health WITH (epsilon = 1", 45, 1, 46,
     "expected ',' or ')', found end of input"},
    {"SELECT region, COUNT(*), MIN(weight) FROM health GROUP BY region WITH (epsilon = 1)", 25, 1,
     26, "MIN(weight) has no differential-privacy mechanism; remove it or drop epsilon"},
    {"SELECT MAX(steps) FROM health WITH (epsilon = 0.5, contribution_bound = 10)", 7, 1, 8,
     "MAX(steps) has no differential-privacy mechanism"},
    {"SELECT sex, SUM(steps) FROM health GROUP BY sex WITH (epsilon = 1)", 12, 1, 13,
     "SUM(steps) under differential privacy needs contribution_bound"},
    {"SELECT COUNT(*) FROM health HAVING AVG(weight) > 60 WITH (epsilon = 1, max_rows = 3)", 35, 1,
     36, "AVG(weight) under differential privacy needs contribution_bound"},
    {"SELECT COUNT(*) FROM health WITH (max_rows = 2)", 34, 1, 35,
     "max_rows bounds rows only under differential privacy; give epsilon too"},
    {"SELECT COUNT(*) FROM health WITH (epsilon = 1, max_rows = 0)", 58, 1, 59,
     "max_rows must be between 1 and 1000000"},
    {"SELECT COUNT(*) FROM health WITH (epsilon = 0.000000000000001)", 34, 1, 35,
     "the noise for epsilon 1e-15 and these contribution bounds would exceed"},
    {"SELECT SUM(weight) FROM health WITH (epsilon = 1, contribution_bound = 1000000000000000)", 50,
     1, 51, "the noise for epsilon 1 and these contribution bounds would exceed 1e+15"},
    {"SELECT agee FROM health WHERE x = 1 GROUP BY y", 7, 1, 8,
     "unknown column 'agee' in table health"},
    {"SELECT COUNT(*) FROM health WHERE agee = 1 GROUP BY nope", 34, 1, 35,
     "unknown column 'agee' in table health"},
    {"SELECT COUNT(*) FROM healthy WHERE agee = 1", 21, 1, 22, "unknown table 'healthy'"},
    {"SELECT COUNT(*)\nFROM health\nWHERE age >\n  'x'", 42, 4, 3,
     "cannot compare age (INT) with 'x' (TEXT)"},
    {"SELECT COUNT(*)\r\nFROM health\r\nWHERE\r\n agee = 1", 38, 4, 2, "unknown column 'agee'"},
};

static void check_error(const char *sql, size_t len, size_t pos, unsigned line, unsigned col,
                        const char *msg)
{
    struct qr_sql_error err;
    struct qr_compile_opts o = {.now = NOW};
    uint8_t *plan = (uint8_t *)"untouched";
    size_t plan_len = 99;
    int rc;

    memset(&err, 0xa5, sizeof err);
    rc = qr_sql_compile_len(&plan, &plan_len, sql, len, &o, &err);
    if (rc != QR_ERR_SQL)
        fail_msg("'%s' gave %d, not QR_ERR_SQL", sql, rc);
    assert_null(plan);
    assert_int_equal(plan_len, 0);
    assert_non_null(memchr(err.msg, '\0', sizeof err.msg));
    if (err.pos != pos || err.line != line || err.col != col || strstr(err.msg, msg) == NULL)
        fail_msg("'%s'\n  expected %zu (%u:%u) %s\n  got      %zu (%u:%u) %s", sql, pos, line, col,
                 msg, err.pos, err.line, err.col, err.msg);
}

static void test_invalid_queries_report_position_and_reason(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++)
        check_error(errors[i].sql, strlen(errors[i].sql), errors[i].pos, errors[i].line,
                    errors[i].col, errors[i].msg);
}

static void test_a_nul_byte_is_an_error_at_its_position(void **state)
{
    static const char sql[] = "SELECT COUNT(*) FROM health\0 WHERE age > 3";
    static const char str[] = "SELECT COUNT(*) FROM health WHERE sex = 'a\0b'";

    (void)state;
    check_error(sql, sizeof sql - 1, 27, 1, 28, "unexpected NUL byte");
    check_error(str, sizeof str - 1, 42, 1, 43, "NUL byte in string literal");
}

static void test_sql_longer_than_the_bound_is_refused(void **state)
{
    size_t len = QR_SQL_MAX + 1;
    char *sql = malloc(len + 1);
    struct qr_sql_error err;
    uint8_t *plan;
    size_t plan_len;

    (void)state;
    assert_non_null(sql);
    memset(sql, ' ', len);
    memcpy(sql, "SELECT COUNT(*) FROM health", 27);
    sql[len] = '\0';
    check_error(sql, len, QR_SQL_MAX, 1, QR_SQL_MAX + 1, "longer than 8192 bytes");
    assert_int_equal(qr_sql_compile(&plan, &plan_len, sql, NULL, &err), QR_ERR_SQL);
    assert_int_equal(err.pos, QR_SQL_MAX);
    /* Exactly at the bound is fine. */
    sql[QR_SQL_MAX] = '\0';
    assert_int_equal(qr_sql_compile(&plan, &plan_len, sql, NULL, &err), 0);
    free(plan);
    free(sql);
}

static void test_nesting_deeper_than_the_bound_is_refused(void **state)
{
    char sql[1024];
    size_t n = (size_t)snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM health WHERE ");
    size_t start = n;

    (void)state;
    for (unsigned i = 0; i <= QR_SQL_DEPTH_MAX; i++)
        sql[n++] = '(';
    n += (size_t)snprintf(sql + n, sizeof sql - n, "age = 1");
    for (unsigned i = 0; i <= QR_SQL_DEPTH_MAX; i++)
        sql[n++] = ')';
    sql[n] = '\0';
    check_error(sql, n, start + QR_SQL_DEPTH_MAX, 1, (unsigned)(start + QR_SQL_DEPTH_MAX + 1),
                "expression nested too deeply");

    n = start;
    for (unsigned i = 0; i <= QR_SQL_DEPTH_MAX; i++)
        n += (size_t)snprintf(sql + n, sizeof sql - n, "NOT ");
    n += (size_t)snprintf(sql + n, sizeof sql - n, "age = 1");
    check_error(sql, n, start + 4 * QR_SQL_DEPTH_MAX, 1,
                (unsigned)(start + 4 * QR_SQL_DEPTH_MAX + 1), "expression nested too deeply");
}

/*
 * "age = 1 AND (age = 1 AND (...))" with k comparisons: the k-th one's
 * constant sits at stack depth k + 1. *last receives that constant's offset.
 */
static size_t right_nested(char *sql, size_t cap, unsigned k, size_t *last)
{
    size_t n = (size_t)snprintf(sql, cap, "SELECT COUNT(*) FROM health WHERE ");

    for (unsigned i = 1; i <= k; i++) {
        n += (size_t)snprintf(sql + n, cap - n, "%sage = ", i > 1 ? "(" : "");
        *last = n;
        n += (size_t)snprintf(sql + n, cap - n, "1%s", i < k ? " AND " : "");
    }
    for (unsigned i = 1; i < k; i++)
        sql[n++] = ')';
    sql[n] = '\0';
    return n;
}

static void test_a_program_deeper_than_the_stack_is_refused(void **state)
{
    char sql[4096];
    size_t last, n;

    (void)state;
    n = right_nested(sql, sizeof sql, QR_STACK_MAX, &last);
    check_error(sql, n, last, 1, (unsigned)last + 1, "expression too complex");

    /* One comparison less needs a stack of exactly QR_STACK_MAX. */
    right_nested(sql, sizeof sql, QR_STACK_MAX - 1, &last);
    Cohort__Plan *p = compile_ok(sql);
    assert_int_equal(p->n_where, 3 * (QR_STACK_MAX - 1) + QR_STACK_MAX - 2);
    cohort__plan__free_unpacked(p, NULL);
}

static void test_a_program_longer_than_the_bound_is_refused(void **state)
{
    char sql[4096];
    size_t n = (size_t)snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM health WHERE ");
    size_t last = 0;

    (void)state;
    /* Each "age = 1" is 3 instructions and each OR one: 64 of them make 255. */
    for (unsigned k = 1; k <= 65; k++) {
        n += (size_t)snprintf(sql + n, sizeof sql - n, "%sage = ", k > 1 ? " OR " : "");
        last = n;
        n += (size_t)snprintf(sql + n, sizeof sql - n, "1");
        if (k == 64) {
            Cohort__Plan *p = compile_ok(sql);
            assert_int_equal(p->n_where, 255);
            cohort__plan__free_unpacked(p, NULL);
        }
    }
    check_error(sql, n, last, 1, (unsigned)last + 1, "more than 256 instructions");
}

static void test_lists_beyond_their_bounds_are_refused(void **state)
{
    char sql[4096];
    size_t n, at = 0;

    (void)state;
    /* IN lists. */
    n = (size_t)snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM health WHERE age IN (");
    for (unsigned k = 1; k <= QR_IN_LIST_MAX + 1; k++) {
        if (k == QR_IN_LIST_MAX + 1)
            at = n + 2;
        n += (size_t)snprintf(sql + n, sizeof sql - n, "%s%u", k > 1 ? ", " : "", k);
    }
    snprintf(sql + n, sizeof sql - n, ")");
    check_error(sql, strlen(sql), at, 1, (unsigned)at + 1, "too many values in IN list");

    /* Aggregates: 17 distinct ones. */
    static const char *const aggs[] = {
        "COUNT(*)",      "COUNT(DISTINCT participant)",
        "COUNT(age)",    "COUNT(sex)",
        "COUNT(region)", "COUNT(date)",
        "COUNT(steps)",  "COUNT(heart_rate)",
        "COUNT(weight)", "SUM(age)",
        "SUM(steps)",    "SUM(heart_rate)",
        "SUM(weight)",   "AVG(age)",
        "AVG(steps)",    "AVG(heart_rate)",
        "AVG(weight)",
    };
    n = (size_t)snprintf(sql, sizeof sql, "SELECT ");
    for (size_t k = 0; k < sizeof aggs / sizeof aggs[0]; k++) {
        if (k == QR_AGGREGATES_MAX)
            at = n + 2;
        n += (size_t)snprintf(sql + n, sizeof sql - n, "%s%s", k ? ", " : "", aggs[k]);
    }
    snprintf(sql + n, sizeof sql - n, " FROM health");
    check_error(sql, strlen(sql), at, 1, (unsigned)at + 1, "too many aggregates (at most 16)");

    /* SELECT items. */
    n = (size_t)snprintf(sql, sizeof sql, "SELECT ");
    for (unsigned k = 0; k <= QR_OUTPUT_MAX; k++) {
        if (k == QR_OUTPUT_MAX)
            at = n + 2;
        n += (size_t)snprintf(sql + n, sizeof sql - n, "%sCOUNT(*)", k ? ", " : "");
    }
    snprintf(sql + n, sizeof sql - n, " FROM health");
    check_error(sql, strlen(sql), at, 1, (unsigned)at + 1, "too many items in SELECT");
}

static void test_bad_arguments_are_refused_without_crashing(void **state)
{
    struct qr_sql_error err;
    uint8_t *plan;
    size_t len;

    (void)state;
    assert_int_equal(qr_sql_compile(NULL, &len, "SELECT COUNT(*) FROM health", NULL, &err),
                     QR_ERR_ARG);
    assert_int_equal(qr_sql_compile(&plan, NULL, "SELECT COUNT(*) FROM health", NULL, &err),
                     QR_ERR_ARG);
    assert_int_equal(qr_sql_compile(&plan, &len, NULL, NULL, &err), QR_ERR_ARG);
    assert_true(strlen(err.msg) > 0);
    /* No error struct: still refused, no crash. */
    assert_int_equal(qr_sql_compile(&plan, &len, "SELEC", NULL, NULL), QR_ERR_SQL);
    assert_null(plan);
}

/* ------------------------------------------------------------- results */

struct cell {
    Cohort__ValueType type;
    int64_t i;
    double d;
    unsigned scale;
    const char *s;
    size_t s_len; /* 0: strlen(s) */
};

#define C_NULL                                                                                     \
    {                                                                                              \
        COHORT__VALUE_TYPE__VT_NULL, 0, 0, 0, NULL, 0                                              \
    }
#define C_INT(x)                                                                                   \
    {                                                                                              \
        COHORT__VALUE_TYPE__VT_INT, (x), 0, 0, NULL, 0                                             \
    }
#define C_DEC(x, sc)                                                                               \
    {                                                                                              \
        COHORT__VALUE_TYPE__VT_DECIMAL, (x), 0, (sc), NULL, 0                                      \
    }
#define C_DBL(x)                                                                                   \
    {                                                                                              \
        COHORT__VALUE_TYPE__VT_DOUBLE, 0, (x), 0, NULL, 0                                          \
    }
#define C_TEXT(x)                                                                                  \
    {                                                                                              \
        COHORT__VALUE_TYPE__VT_TEXT, 0, 0, 0, (x), 0                                               \
    }
#define C_DATE(x)                                                                                  \
    {                                                                                              \
        COHORT__VALUE_TYPE__VT_DATE, (x), 0, 0, NULL, 0                                            \
    }

struct rcol {
    Cohort__ValueType type;
    unsigned scale;
};

#define ROWS_MAX 8
#define COLS_MAX 8

/* Pack a ResultTable as a finalizing token would: rows of `width` cells. */
static uint8_t *pack_table(size_t *len, const struct rcol *cols, size_t ncols,
                           const struct cell *cells, size_t width, size_t nrows)
{
    Cohort__ResultTable t = COHORT__RESULT_TABLE__INIT;
    Cohort__ResultColumn rc[COLS_MAX], *rcp[COLS_MAX];
    Cohort__Row rows[ROWS_MAX], *rowp[ROWS_MAX];
    Cohort__Value vals[ROWS_MAX * COLS_MAX], *valp[ROWS_MAX * COLS_MAX];
    uint8_t *buf;

    assert_true(ncols <= COLS_MAX && width <= COLS_MAX && nrows <= ROWS_MAX);
    for (size_t c = 0; c < ncols; c++) {
        cohort__result_column__init(&rc[c]);
        rc[c].label = "col";
        rc[c].type = cols[c].type;
        rc[c].scale = cols[c].scale;
        rcp[c] = &rc[c];
    }
    for (size_t r = 0; r < nrows; r++) {
        cohort__row__init(&rows[r]);
        for (size_t c = 0; c < width; c++) {
            const struct cell *x = &cells[r * width + c];
            Cohort__Value *v = &vals[r * width + c];
            cohort__value__init(v);
            v->type = x->type;
            v->i = x->i;
            v->d = x->d;
            v->scale = x->scale;
            if (x->s != NULL) {
                v->s.data = (uint8_t *)x->s;
                v->s.len = x->s_len ? x->s_len : strlen(x->s);
            }
            valp[r * width + c] = v;
        }
        rows[r].n_values = width;
        rows[r].values = &valp[r * width];
        rowp[r] = &rows[r];
    }
    t.n_columns = ncols;
    t.columns = rcp;
    t.n_rows = nrows;
    t.rows = rowp;
    t.participants = 1234;
    t.groups_suppressed = 3;
    *len = cohort__result_table__get_packed_size(&t);
    buf = malloc(*len + 1);
    assert_non_null(buf);
    cohort__result_table__pack(&t, buf);
    return buf;
}

static uint8_t *plan_bytes(const char *sql, size_t *len)
{
    struct qr_compile_opts o = {.now = NOW};
    struct qr_sql_error err;
    uint8_t *plan;

    if (qr_sql_compile(&plan, len, sql, &o, &err) != 0)
        fail_msg("'%s': %s", sql, err.msg);
    return plan;
}

static const struct qr_value *cell_at(const struct qr_result *r, size_t row, size_t col)
{
    assert_true(row < r->n_rows && col < r->n_columns);
    return &r->cells[row * r->n_columns + col];
}

static void assert_cell_text(const struct qr_result *r, size_t row, size_t col, const char *want)
{
    char buf[128];

    qr_value_format(buf, sizeof buf, cell_at(r, row, col));
    if (strcmp(buf, want) != 0)
        fail_msg("cell %zu,%zu: expected %s, got %s", row, col, want, buf);
}

static void test_results_come_in_select_order_sorted_and_limited(void **state)
{
    size_t plan_len, table_len;
    uint8_t *plan = plan_bytes("SELECT COUNT(*) AS n, region, AVG(heart_rate) AS hr, "
                               "SUM(weight) FROM health GROUP BY region ORDER BY n DESC, region "
                               "LIMIT 4",
                               &plan_len);
    static const struct rcol cols[] = {{COHORT__VALUE_TYPE__VT_TEXT, 0},
                                       {COHORT__VALUE_TYPE__VT_INT, 0},
                                       {COHORT__VALUE_TYPE__VT_DOUBLE, 0},
                                       {COHORT__VALUE_TYPE__VT_DECIMAL, 1}};
    static const struct cell cells[] = {
        C_TEXT("b"), C_INT(5),      C_DBL(70.5),    C_DEC(1000, 1), C_TEXT("a"),
        C_INT(7),    C_DBL(71.25),  C_DEC(2000, 1), C_NULL,         C_INT(5),
        C_DBL(60.0), C_DEC(300, 1), C_TEXT("c"),    C_INT(5),       C_NULL,
        C_NULL,      C_TEXT("d"),   C_INT(2),       C_DBL(80.0),    C_DEC(-10, 1),
    };
    static const char *const want[4][4] = {
        {"7", "a", "71.2500", "200.0"},
        {"5", "NULL", "60.0000", "30.0"},
        {"5", "b", "70.5000", "100.0"},
        {"5", "c", "NULL", "NULL"},
    };
    uint8_t *table = pack_table(&table_len, cols, 4, cells, 4, 5);
    struct qr_result r;

    (void)state;
    assert_int_equal(qr_result_from_table(&r, table, table_len, plan, plan_len), 0);
    assert_int_equal(r.n_columns, 4);
    assert_string_equal(r.labels[0], "n");
    assert_string_equal(r.labels[1], "region");
    assert_string_equal(r.labels[2], "hr");
    assert_string_equal(r.labels[3], "SUM(weight)");
    assert_int_equal(r.n_rows, 4);
    for (size_t row = 0; row < 4; row++)
        for (size_t col = 0; col < 4; col++)
            assert_cell_text(&r, row, col, want[row][col]);
    assert_int_equal(cell_at(&r, 0, 0)->type, QR_INT);
    assert_int_equal(cell_at(&r, 0, 3)->type, QR_DECIMAL);
    assert_int_equal(cell_at(&r, 0, 3)->scale, 1);
    assert_int_equal(r.participants, 1234);
    assert_int_equal(r.groups_suppressed, 3);
    qr_result_free(&r);
    assert_null(r.cells);
    assert_null(r.labels);
    qr_result_free(&r);
    qr_result_free(NULL);
    free(table);
    free(plan);
}

static void run_order(const char *sql, const struct cell *cells, size_t nrows,
                      const char *const *want, size_t nwant)
{
    static const struct rcol cols[] = {{COHORT__VALUE_TYPE__VT_TEXT, 0},
                                       {COHORT__VALUE_TYPE__VT_INT, 0}};
    size_t plan_len, table_len;
    uint8_t *plan = plan_bytes(sql, &plan_len);
    uint8_t *table = pack_table(&table_len, cols, 2, cells, 2, nrows);
    struct qr_result r;

    assert_int_equal(qr_result_from_table(&r, table, table_len, plan, plan_len), 0);
    assert_int_equal(r.n_rows, nwant);
    for (size_t i = 0; i < nwant; i++)
        assert_cell_text(&r, i, 0, want[i]);
    qr_result_free(&r);
    free(table);
    free(plan);
}

static void test_ties_are_broken_by_the_groups_and_null_sorts_first_ascending(void **state)
{
    static const struct cell cells[] = {
        C_TEXT("x"), C_INT(1), C_TEXT("y"), C_INT(1), C_NULL,      C_INT(0),
        C_TEXT("a"), C_INT(0), C_TEXT("z"), C_INT(1), C_TEXT("b"), C_NULL,
    };
    static const char *const by_count[] = {"b", "NULL", "a", "x", "y", "z"};
    static const char *const by_count_desc[] = {"x", "y", "z", "NULL", "a", "b"};
    static const char *const by_region[] = {"NULL", "a", "b", "x", "y", "z"};
    static const char *const by_region_desc[] = {"z", "y", "x", "b", "a", "NULL"};
    static const char *const limited[] = {"z", "y"};

    (void)state;
    run_order("SELECT region, COUNT(*) FROM health GROUP BY region ORDER BY 2", cells, 6, by_count,
              6);
    run_order("SELECT region, COUNT(*) FROM health GROUP BY region ORDER BY COUNT(*) DESC", cells,
              6, by_count_desc, 6);
    run_order("SELECT region, COUNT(*) FROM health GROUP BY region ORDER BY region", cells, 6,
              by_region, 6);
    run_order("SELECT region, COUNT(*) FROM health GROUP BY region ORDER BY region DESC", cells, 6,
              by_region_desc, 6);
    run_order("SELECT region, COUNT(*) FROM health GROUP BY region", cells, 6, by_region, 6);
    run_order("SELECT region, COUNT(*) FROM health GROUP BY region ORDER BY 1 DESC LIMIT 2", cells,
              6, limited, 2);
    run_order("SELECT region, COUNT(*) FROM health GROUP BY region LIMIT 0", cells, 6, by_region,
              6);
}

static void test_an_empty_result_has_labels_and_no_rows(void **state)
{
    static const struct rcol cols[] = {{COHORT__VALUE_TYPE__VT_INT, 0}};
    size_t plan_len, table_len;
    uint8_t *plan = plan_bytes("SELECT COUNT(*) FROM health", &plan_len);
    uint8_t *table = pack_table(&table_len, cols, 1, NULL, 1, 0);
    struct qr_result r;

    (void)state;
    assert_int_equal(qr_result_from_table(&r, table, table_len, plan, plan_len), 0);
    assert_int_equal(r.n_columns, 1);
    assert_int_equal(r.n_rows, 0);
    assert_string_equal(r.labels[0], "COUNT(*)");
    qr_result_free(&r);
    free(table);
    free(plan);
}

/* Re-encode a compiled plan after changing it. */
static uint8_t *tamper_plan(const char *sql, size_t *len, void (*change)(Cohort__Plan *))
{
    size_t n;
    uint8_t *bytes = plan_bytes(sql, &n);
    Cohort__Plan *p = cohort__plan__unpack(NULL, n, bytes);
    uint8_t *out;

    assert_non_null(p);
    change(p);
    *len = cohort__plan__get_packed_size(p);
    out = malloc(*len + 1);
    assert_non_null(out);
    cohort__plan__pack(p, out);
    cohort__plan__free_unpacked(p, NULL);
    free(bytes);
    return out;
}

static void bad_output_index(Cohort__Plan *p)
{
    p->output[1]->index = 9;
}

static void bad_order_output(Cohort__Plan *p)
{
    p->order_by[0]->output = 3;
}

static void bad_group_column(Cohort__Plan *p)
{
    p->group_by[0][0] = 'X';
}

static void bad_table(Cohort__Plan *p)
{
    p->table[0] = 'X';
}

static void bad_agg_column(Cohort__Plan *p)
{
    /* SUM(weight) becomes SUM(region): same length, changed in place. */
    memcpy(p->aggregates[1]->column, "region", 6);
}

static void assert_refused(const uint8_t *table, size_t table_len, const uint8_t *plan,
                           size_t plan_len, int want, const char *what)
{
    struct qr_result r;
    int rc;

    memset(&r, 0xa5, sizeof r);
    rc = qr_result_from_table(&r, table, table_len, plan, plan_len);
    if (rc != want)
        fail_msg("%s: expected %d, got %d", what, want, rc);
    assert_int_equal(r.n_columns, 0);
    assert_int_equal(r.n_rows, 0);
    assert_null(r.cells);
    assert_null(r.labels);
    qr_result_free(&r);
}

/* A table as pack_table makes it, then given differential-privacy fields. */
static uint8_t *with_dp(uint8_t *table, size_t *len, double eps, const char *mech,
                        const double *bounds, size_t n_bounds, double conf)
{
    Cohort__ResultTable *t = cohort__result_table__unpack(NULL, *len, table);
    char *own_mech;
    double *own_bounds;
    size_t own_n;
    uint8_t *out;

    assert_non_null(t);
    own_mech = t->mechanism;
    own_bounds = t->error_bound;
    own_n = t->n_error_bound;
    t->epsilon = eps;
    t->mechanism = (char *)mech;
    t->error_bound = (double *)bounds;
    t->n_error_bound = n_bounds;
    t->error_confidence = conf;
    *len = cohort__result_table__get_packed_size(t);
    out = malloc(*len + 1);
    assert_non_null(out);
    cohort__result_table__pack(t, out);
    t->mechanism = own_mech; /* what the unpacking allocated, freed with it */
    t->error_bound = own_bounds;
    t->n_error_bound = own_n;
    cohort__result_table__free_unpacked(t, NULL);
    free(table);
    return out;
}

static void test_a_dp_result_states_its_noise_in_select_order(void **state)
{
    static const struct rcol cols[] = {{COHORT__VALUE_TYPE__VT_TEXT, 0},
                                       {COHORT__VALUE_TYPE__VT_DECIMAL, 1},
                                       {COHORT__VALUE_TYPE__VT_INT, 0}};
    static const struct cell cells[] = {C_TEXT("a"), C_DEC(7123, 1), C_INT(99),
                                        C_TEXT("b"), C_DEC(-50, 1),  C_INT(-3)};
    static const double bounds[] = {0, 12.5, 9};
    static const double negative[] = {0, -1, 9};
    static const double nan_bound[] = {0, NAN, 9};
    static const char *const sql =
        "SELECT SUM(weight), region, COUNT(*) AS n FROM health GROUP BY region WITH (epsilon = "
        "1, contribution_bound = 200)";
    size_t plan_len, len, exact_len;
    uint8_t *plan = plan_bytes(sql, &plan_len), *table, *exact_plan;
    struct qr_result r;
    char note[512];

    (void)state;
    table = with_dp(pack_table(&len, cols, 3, cells, 3, 2), &len, 1.0, "discrete\nLaplace", bounds,
                    3, 0.95);
    assert_int_equal(qr_result_from_table(&r, table, len, plan, plan_len), 0);
    assert_true(r.epsilon == 1.0 && r.error_confidence == 0.95);
    assert_string_equal(r.mechanism, "discrete?Laplace");
    assert_non_null(r.error_bound);
    assert_true(r.error_bound[0] == 12.5 && r.error_bound[1] == 0 && r.error_bound[2] == 9);
    /* Noisy values may be negative; they are laid out as any other. */
    assert_cell_text(&r, 1, 0, "-5.0");
    assert_cell_text(&r, 1, 2, "-3");
    qr_result_footnote(note, sizeof note, &r);
    assert_string_equal(note, "differential privacy: epsilon 1; discrete?Laplace\n"
                              "noise within SUM(weight) +-12.5, n +-9 with probability 0.95 "
                              "each\n");
    qr_result_free(&r);
    assert_null(r.error_bound);
    free(table);

    /* What does not match the plan is malformed. */
    table = pack_table(&len, cols, 3, cells, 3, 2);
    assert_refused(table, len, plan, plan_len, QR_ERR_MALFORMED, "a DP plan's table without noise");
    table = with_dp(table, &len, 0.5, "m", bounds, 3, 0.95);
    assert_refused(table, len, plan, plan_len, QR_ERR_MALFORMED, "another epsilon");
    table = with_dp(table, &len, 1.0, "m", bounds, 2, 0.95);
    assert_refused(table, len, plan, plan_len, QR_ERR_MALFORMED, "a bound missing");
    table = with_dp(table, &len, 1.0, "m", negative, 3, 0.95);
    assert_refused(table, len, plan, plan_len, QR_ERR_MALFORMED, "a negative bound");
    table = with_dp(table, &len, 1.0, "m", nan_bound, 3, 0.95);
    assert_refused(table, len, plan, plan_len, QR_ERR_MALFORMED, "a NaN bound");
    table = with_dp(table, &len, 1.0, "m", bounds, 3, 1.0);
    assert_refused(table, len, plan, plan_len, QR_ERR_MALFORMED, "a confidence of 1");
    table = with_dp(table, &len, 1.0, "m", bounds, 3, 0.95);
    exact_plan = plan_bytes("SELECT SUM(weight), region, COUNT(*) AS n FROM health GROUP BY "
                            "region",
                            &exact_len);
    assert_refused(table, len, exact_plan, exact_len, QR_ERR_MALFORMED,
                   "noise an exact plan did not ask for");
    /* An exact result has no footnote. */
    free(table);
    table = pack_table(&len, cols, 3, cells, 3, 2);
    assert_int_equal(qr_result_from_table(&r, table, len, exact_plan, exact_len), 0);
    assert_null(r.error_bound);
    assert_int_equal(qr_result_footnote(note, sizeof note, &r), 0);
    assert_string_equal(note, "");
    qr_result_free(&r);
    free(table);
    free(exact_plan);
    free(plan);
}

static void test_malformed_result_tables_are_refused_and_leave_nothing(void **state)
{
    static const char *sql = "SELECT region, COUNT(*), SUM(weight) FROM health GROUP BY region "
                             "ORDER BY 2 WITH (max_groups = 3)";
    static const struct rcol good_cols[] = {{COHORT__VALUE_TYPE__VT_TEXT, 0},
                                            {COHORT__VALUE_TYPE__VT_INT, 0},
                                            {COHORT__VALUE_TYPE__VT_DECIMAL, 1}};
    static const struct rcol int_as_dec[] = {{COHORT__VALUE_TYPE__VT_TEXT, 0},
                                             {COHORT__VALUE_TYPE__VT_DECIMAL, 0},
                                             {COHORT__VALUE_TYPE__VT_DECIMAL, 1}};
    static const struct rcol wrong_scale[] = {{COHORT__VALUE_TYPE__VT_TEXT, 0},
                                              {COHORT__VALUE_TYPE__VT_INT, 0},
                                              {COHORT__VALUE_TYPE__VT_DECIMAL, 2}};
    static const struct cell good[] = {C_TEXT("a"), C_INT(1), C_DEC(5, 1),
                                       C_TEXT("b"), C_INT(2), C_DEC(6, 1)};
    static const struct cell four[] = {C_TEXT("a"), C_INT(1),    C_NULL,      C_TEXT("b"),
                                       C_INT(1),    C_NULL,      C_TEXT("c"), C_INT(1),
                                       C_NULL,      C_TEXT("d"), C_INT(1),    C_NULL};
    static const struct cell text_in_int[] = {C_TEXT("a"), C_TEXT("1"), C_DEC(5, 1)};
    static const struct cell dec_scale[] = {C_TEXT("a"), C_INT(1), C_DEC(5, 2)};
    static const struct cell long_text[] = {
        C_TEXT("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), C_INT(1),
        C_NULL};
    static const struct cell nul_text[] = {
        {COHORT__VALUE_TYPE__VT_TEXT, 0, 0, 0, "a\0b", 3}, C_INT(1), C_NULL};
    static const struct cell short_row[] = {C_TEXT("a"), C_INT(1)};
    size_t plan_len, len, bad_len;
    uint8_t *plan = plan_bytes(sql, &plan_len);
    uint8_t *t, *bad_plan;
    struct qr_result r;

    (void)state;
    /* The baseline is accepted. */
    t = pack_table(&len, good_cols, 3, good, 3, 2);
    assert_int_equal(qr_result_from_table(&r, t, len, plan, plan_len), 0);
    assert_int_equal(r.n_rows, 2);
    qr_result_free(&r);

    /* Plans the table does not fit. */
    bad_plan = tamper_plan(sql, &bad_len, bad_output_index);
    assert_refused(t, len, bad_plan, bad_len, QR_ERR_MALFORMED, "output index");
    free(bad_plan);
    bad_plan = tamper_plan(sql, &bad_len, bad_order_output);
    assert_refused(t, len, bad_plan, bad_len, QR_ERR_MALFORMED, "order output");
    free(bad_plan);
    bad_plan = tamper_plan(sql, &bad_len, bad_group_column);
    assert_refused(t, len, bad_plan, bad_len, QR_ERR_MALFORMED, "group column");
    free(bad_plan);
    bad_plan = tamper_plan(sql, &bad_len, bad_table);
    assert_refused(t, len, bad_plan, bad_len, QR_ERR_MALFORMED, "table");
    free(bad_plan);
    bad_plan = tamper_plan(sql, &bad_len, bad_agg_column);
    assert_refused(t, len, bad_plan, bad_len, QR_ERR_MALFORMED, "SUM over TEXT");
    free(bad_plan);
    assert_refused(t, len, (const uint8_t *)"\xff\xff\xff", 3, QR_ERR_MALFORMED, "plan bytes");
    assert_refused(t, len, plan, QR_PLAN_MAX + 1, QR_ERR_TOO_LARGE, "plan size");
    assert_refused(t, QR_RESULT_TABLE_MAX + 1, plan, plan_len, QR_ERR_TOO_LARGE, "table size");
    assert_refused(NULL, 0, plan, plan_len, QR_ERR_ARG, "no table");
    assert_int_equal(qr_result_from_table(NULL, t, len, plan, plan_len), QR_ERR_ARG);
    free(t);

    /* Tables that do not fit the plan. */
    assert_refused((const uint8_t *)"\x0a\xff", 2, plan, plan_len, QR_ERR_MALFORMED, "bytes");
    t = pack_table(&len, good_cols, 2, good, 3, 2);
    assert_refused(t, len, plan, plan_len, QR_ERR_MALFORMED, "column count");
    free(t);
    t = pack_table(&len, int_as_dec, 3, good, 3, 2);
    assert_refused(t, len, plan, plan_len, QR_ERR_MALFORMED, "column type");
    free(t);
    t = pack_table(&len, wrong_scale, 3, good, 3, 2);
    assert_refused(t, len, plan, plan_len, QR_ERR_MALFORMED, "column scale");
    free(t);
    t = pack_table(&len, good_cols, 3, four, 3, 4);
    assert_refused(t, len, plan, plan_len, QR_ERR_MALFORMED, "more rows than max_groups");
    free(t);
    t = pack_table(&len, good_cols, 3, short_row, 2, 1);
    assert_refused(t, len, plan, plan_len, QR_ERR_MALFORMED, "row width");
    free(t);
    t = pack_table(&len, good_cols, 3, text_in_int, 3, 1);
    assert_refused(t, len, plan, plan_len, QR_ERR_MALFORMED, "value type");
    free(t);
    t = pack_table(&len, good_cols, 3, dec_scale, 3, 1);
    assert_refused(t, len, plan, plan_len, QR_ERR_MALFORMED, "value scale");
    free(t);
    t = pack_table(&len, good_cols, 3, long_text, 3, 1);
    assert_refused(t, len, plan, plan_len, QR_ERR_MALFORMED, "text length");
    free(t);
    t = pack_table(&len, good_cols, 3, nul_text, 3, 1);
    assert_refused(t, len, plan, plan_len, QR_ERR_MALFORMED, "text with NUL");
    free(t);
    free(plan);
}

static void test_values_out_of_range_are_refused(void **state)
{
    static const struct rcol one_int[] = {{COHORT__VALUE_TYPE__VT_INT, 0}};
    static const struct rcol date_avg[] = {{COHORT__VALUE_TYPE__VT_DATE, 0},
                                           {COHORT__VALUE_TYPE__VT_DOUBLE, 0}};
    static const struct cell two_rows[] = {C_INT(1), C_INT(2)};
    static const struct cell nan_avg[] = {C_DATE(0), C_DBL(NAN)};
    static const struct cell far_date[] = {C_DATE(3000000), C_DBL(1.0)};
    static const struct cell ok[] = {C_DATE(D_2026_01_01), C_DBL(1.5)};
    size_t plan_len, len;
    uint8_t *plan = plan_bytes("SELECT COUNT(*) FROM health", &plan_len);
    uint8_t *t;
    struct qr_result r;

    (void)state;
    t = pack_table(&len, one_int, 1, two_rows, 1, 2);
    assert_refused(t, len, plan, plan_len, QR_ERR_MALFORMED, "two rows without GROUP BY");
    free(t);
    free(plan);

    plan = plan_bytes("SELECT date, AVG(steps) FROM health GROUP BY date", &plan_len);
    t = pack_table(&len, date_avg, 2, nan_avg, 2, 1);
    assert_refused(t, len, plan, plan_len, QR_ERR_MALFORMED, "NaN");
    free(t);
    t = pack_table(&len, date_avg, 2, far_date, 2, 1);
    assert_refused(t, len, plan, plan_len, QR_ERR_MALFORMED, "date past 9999");
    free(t);
    t = pack_table(&len, date_avg, 2, ok, 2, 1);
    assert_int_equal(qr_result_from_table(&r, t, len, plan, plan_len), 0);
    assert_cell_text(&r, 0, 0, "2026-01-01");
    assert_cell_text(&r, 0, 1, "1.5000");
    qr_result_free(&r);
    free(t);
    free(plan);
}

/* ------------------------------------------------------------ formats */

static void test_values_format_as_researchers_expect(void **state)
{
    static const struct {
        struct qr_value v;
        const char *want;
    } cases[] = {
        {{.type = QR_NULL}, "NULL"},
        {{.type = QR_INT, .i = 42}, "42"},
        {{.type = QR_INT, .i = -7}, "-7"},
        {{.type = QR_INT, .i = INT64_MIN}, "-9223372036854775808"},
        {{.type = QR_DECIMAL, .i = 725, .scale = 1}, "72.5"},
        {{.type = QR_DECIMAL, .i = -5, .scale = 1}, "-0.5"},
        {{.type = QR_DECIMAL, .i = 5, .scale = 3}, "0.005"},
        {{.type = QR_DECIMAL, .i = 0, .scale = 2}, "0.00"},
        {{.type = QR_DECIMAL, .i = -1234, .scale = 2}, "-12.34"},
        {{.type = QR_DECIMAL, .i = 100, .scale = 0}, "100"},
        {{.type = QR_DECIMAL, .i = INT64_MIN, .scale = 2}, "-92233720368547758.08"},
        {{.type = QR_DECIMAL, .i = INT64_MAX, .scale = 18}, "9.223372036854775807"},
        {{.type = QR_DOUBLE, .d = 72.123456}, "72.1235"},
        {{.type = QR_DOUBLE, .d = -0.5}, "-0.5000"},
        {{.type = QR_DATE, .i = 0}, "1970-01-01"},
        {{.type = QR_DATE, .i = -1}, "1969-12-31"},
        {{.type = QR_DATE, .i = D_2026_01_01}, "2026-01-01"},
        {{.type = QR_DATE, .i = 11016}, "2000-02-29"},
        {{.type = QR_DATE, .i = 2932896}, "9999-12-31"},
        {{.type = QR_TIMESTAMP, .i = 0}, "1970-01-01 00:00:00"},
        {{.type = QR_TIMESTAMP, .i = -1}, "1969-12-31 23:59:59"},
        {{.type = QR_TIMESTAMP, .i = NOW + 3723}, "2026-01-01 01:02:03"},
        {{.type = QR_BOOL, .i = 1}, "true"},
        {{.type = QR_BOOL, .i = 0}, "false"},
        {{.type = QR_TEXT, .s = "north"}, "north"},
        {{.type = QR_TEXT, .s = ""}, ""},
    };
    char buf[64];

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memset(buf, 'x', sizeof buf);
        qr_value_format(buf, sizeof buf, &cases[i].v);
        if (strcmp(buf, cases[i].want) != 0)
            fail_msg("case %zu: expected '%s', got '%s'", i, cases[i].want, buf);
    }
}

static void test_formatting_truncates_to_the_buffer_and_always_terminates(void **state)
{
    struct qr_value v = {.type = QR_DECIMAL, .i = -123456, .scale = 2};
    char buf[5];

    (void)state;
    qr_value_format(buf, sizeof buf, &v);
    assert_string_equal(buf, "-123");
    memset(buf, 'x', sizeof buf);
    qr_value_format(buf, 1, &v);
    assert_int_equal(buf[0], '\0');
    assert_int_equal(buf[1], 'x');
    qr_value_format(buf, 0, &v);
    qr_value_format(NULL, 10, &v);
    qr_value_format(buf, sizeof buf, NULL);
    assert_string_equal(buf, "NULL");
}

/* ------------------------------------------------------------- dates */

static void test_dates_parse_only_real_calendar_days(void **state)
{
    int64_t d;

    (void)state;
    assert_int_equal(qr_date_parse(&d, "2026-01-01", 10), 0);
    assert_int_equal(d, D_2026_01_01);
    assert_int_equal(qr_date_parse(&d, "2000-02-29", 10), 0);
    assert_int_equal(d, 11016);
    assert_int_equal(qr_date_parse(&d, "0001-01-01", 10), 0);
    assert_int_equal(d, -719162);
    assert_int_equal(qr_date_parse(&d, "1900-02-29", 10), -1);
    assert_int_equal(qr_date_parse(&d, "2026-04-31", 10), -1);
    assert_int_equal(qr_date_parse(&d, "2026-00-10", 10), -1);
    assert_int_equal(qr_date_parse(&d, "0000-01-01", 10), -1);
    assert_int_equal(qr_date_parse(&d, "2026-01-1x", 10), -1);
    assert_int_equal(qr_date_parse(&d, "2026/01/01", 10), -1);
    assert_int_equal(qr_date_parse(&d, "2026-01-01 ", 11), -1);
    assert_int_equal(qr_timestamp_parse(&d, "2026-01-01 01:02:03", 19), 0);
    assert_int_equal(d, NOW + 3723);
    assert_int_equal(qr_timestamp_parse(&d, "2026-01-01", 10), 0);
    assert_int_equal(d, NOW);
    assert_int_equal(qr_timestamp_parse(&d, "2026-01-01 24:00:00", 19), -1);
    assert_int_equal(qr_timestamp_parse(&d, "2026-01-01T01:02:03", 19), -1);
    assert_int_equal(qr_timestamp_parse(&d, "2026-01-01 01:60:00", 19), -1);

    /* Round trip over four centuries of days. */
    for (int64_t day = -146097; day <= 146097; day += 7) {
        int64_t y, back;
        unsigned m, dd;
        char text[16];
        qr_date_civil(day, &y, &m, &dd);
        snprintf(text, sizeof text, "%04lld-%02u-%02u", (long long)y, m, dd);
        assert_int_equal(qr_date_parse(&back, text, 10), 0);
        assert_int_equal(back, day);
    }
}

static void test_timestamp_literals_compare_with_timestamps_only(void **state)
{
    Cohort__Plan *p = compile_ok("SELECT COUNT(*) FROM health WHERE TIMESTAMP '2026-01-01 "
                                 "00:00:01' > '2026-01-01'");

    (void)state;
    assert_program(p->where, p->n_where, "TS:1767225601 TS:1767225600 GT", p->sql);
    cohort__plan__free_unpacked(p, NULL);
}

/* ------------------------------------------------------------ mutation */

/* A small deterministic generator (xorshift64*), so failures reproduce. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static void check_error_position(const char *sql, size_t len, const struct qr_sql_error *err)
{
    unsigned line = 1, col = 1;

    assert_true(err->pos <= len);
    for (size_t i = 0; i < err->pos; i++) {
        if (sql[i] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    assert_int_equal(err->line, line);
    assert_int_equal(err->col, col);
    assert_true(strlen(err->msg) > 0);
}

static void test_mutated_queries_compile_or_fail_cleanly(void **state)
{
    static const char *const seeds[] = {
        "SELECT region, age AS a, COUNT(*) n, SUM(steps), AVG(weight), MIN(date), MAX(weight), "
        "COUNT(DISTINCT participant) FROM health WHERE age BETWEEN 18 AND 65 AND sex IN ('F', "
        "'M') AND region LIKE 'n%' AND NOT (date < '2026-01-01' OR weight > 70.5) AND steps IS "
        "NOT NULL GROUP BY region, age HAVING COUNT(*) >= 20 AND AVG(weight) > 60.25 ORDER BY n "
        "DESC, 1 LIMIT 10 SIZE 1000 DEADLINE 60 WITH (epsilon = 0.5, max_groups = 100);",
        "select count(*) from health -- c\nwhere date = DATE '2024-02-29' or region = 'O''x'",
    };
    static const char alphabet[] = "()',;*=<>!-.%_ \n\t0123456789aAzZ\x01\x80\xc3\xa9";
    static const char *const words[] = {
        "SELECT", "FROM", "WHERE",   "AND",      "OR",     "NOT",      "(",    ")",   "'", "NULL",
        "IN",     "LIKE", "BETWEEN", "GROUP BY", "HAVING", "COUNT(*)", "DATE", "age", ",", "--"};
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    char sql[1024];
    size_t compiled = 0;

    (void)state;
    for (unsigned iter = 0; iter < 20000; iter++) {
        const char *seed = seeds[iter % 2];
        size_t len = strlen(seed);
        memcpy(sql, seed, len);
        unsigned edits = 1 + (unsigned)(rng_next(&rng) % 4);
        for (unsigned e = 0; e < edits; e++) {
            size_t at = (size_t)(rng_next(&rng) % (len + 1));
            uint64_t what = rng_next(&rng) % 4;
            if (what == 0 && at < len) { /* replace a byte */
                sql[at] = alphabet[rng_next(&rng) % (sizeof alphabet - 1)];
            } else if (what == 1 && at < len) { /* delete a run */
                size_t n = 1 + (size_t)(rng_next(&rng) % 8);
                if (n > len - at)
                    n = len - at;
                memmove(sql + at, sql + at + n, len - at - n);
                len -= n;
            } else if (what == 2 && at < len) { /* cut */
                len = at;
            } else { /* insert a word */
                const char *w = words[rng_next(&rng) % (sizeof words / sizeof words[0])];
                size_t n = strlen(w);
                if (len + n + 1 < sizeof sql) {
                    memmove(sql + at + n, sql + at, len - at);
                    memcpy(sql + at, w, n);
                    len += n;
                }
            }
        }
        sql[len] = '\0';

        struct qr_compile_opts o = {.now = NOW};
        struct qr_sql_error err;
        uint8_t *plan = NULL;
        size_t plan_len = 0;
        int rc = qr_sql_compile_len(&plan, &plan_len, sql, len, &o, &err);
        if (rc == 0) {
            char *text = qr_plan_explain(plan, plan_len);
            assert_non_null(text);
            assert_null(strstr(text, "malformed"));
            free(text);
            free(plan);
            compiled++;
        } else {
            assert_int_equal(rc, QR_ERR_SQL);
            assert_null(plan);
            check_error_position(sql, len, &err);
        }
    }
    /* The mutations must leave some queries valid, or this test proves little. */
    assert_true(compiled > 100);
}

static void test_mutated_result_tables_never_crash(void **state)
{
    static const struct rcol cols[] = {{COHORT__VALUE_TYPE__VT_TEXT, 0},
                                       {COHORT__VALUE_TYPE__VT_INT, 0},
                                       {COHORT__VALUE_TYPE__VT_DECIMAL, 1}};
    static const struct cell cells[] = {C_TEXT("a"), C_INT(1), C_DEC(5, 1), C_TEXT("b"), C_INT(2),
                                        C_NULL,      C_NULL,   C_INT(3),    C_DEC(-7, 1)};
    size_t plan_len, len;
    uint8_t *plan = plan_bytes("SELECT COUNT(*), region, SUM(weight) FROM health GROUP BY region "
                               "ORDER BY 3 DESC, 2 LIMIT 2",
                               &plan_len);
    uint8_t *table = pack_table(&len, cols, 3, cells, 3, 3);
    uint8_t *copy = malloc(len);
    uint64_t rng = 42;

    (void)state;
    assert_non_null(copy);
    for (unsigned iter = 0; iter < 20000; iter++) {
        struct qr_result r;
        memcpy(copy, table, len);
        for (unsigned e = 0; e < 1 + iter % 3; e++)
            copy[rng_next(&rng) % len] ^= (uint8_t)(1u << (rng_next(&rng) % 8));
        int rc = qr_result_from_table(&r, copy, len, plan, plan_len);
        if (rc == 0) {
            assert_true(r.n_rows <= 2);
            assert_int_equal(r.n_columns, 3);
        } else {
            assert_int_equal(rc, QR_ERR_MALFORMED);
            assert_null(r.cells);
        }
        qr_result_free(&r);
    }
    free(copy);
    free(table);
    free(plan);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_catalog_lists_the_health_table_with_its_columns_in_order),
        cmocka_unit_test(test_the_catalog_has_five_documented_tables_with_schemas_for_the_token),
        cmocka_unit_test(test_catalog_lookups_ignore_case_and_reject_unknown_names),
        cmocka_unit_test(test_valid_queries_lower_to_the_expected_programs),
        cmocka_unit_test(test_a_plain_count_gets_every_default),
        cmocka_unit_test(test_every_plan_gets_a_fresh_nonce),
        cmocka_unit_test(test_compile_options_set_study_and_times),
        cmocka_unit_test(test_outputs_carry_aliases_or_canonical_labels_in_select_order),
        cmocka_unit_test(test_the_same_aggregate_is_computed_once),
        cmocka_unit_test(test_having_adds_hidden_aggregates_after_the_selected_ones),
        cmocka_unit_test(test_group_defaults_follow_the_catalog_estimates),
        cmocka_unit_test(test_with_options_reach_the_plan),
        cmocka_unit_test(test_differential_privacy_gets_bounds_and_a_threshold_for_its_delta),
        cmocka_unit_test(test_order_by_resolves_aliases_positions_and_expressions),
        cmocka_unit_test(test_the_design_example_compiles),
        cmocka_unit_test(test_nesting_up_to_the_bound_compiles),
        cmocka_unit_test(test_a_plan_is_explained_in_readable_text),
        cmocka_unit_test(test_explain_marks_a_malformed_program),
        cmocka_unit_test(test_invalid_queries_report_position_and_reason),
        cmocka_unit_test(test_a_nul_byte_is_an_error_at_its_position),
        cmocka_unit_test(test_sql_longer_than_the_bound_is_refused),
        cmocka_unit_test(test_nesting_deeper_than_the_bound_is_refused),
        cmocka_unit_test(test_a_program_deeper_than_the_stack_is_refused),
        cmocka_unit_test(test_a_program_longer_than_the_bound_is_refused),
        cmocka_unit_test(test_lists_beyond_their_bounds_are_refused),
        cmocka_unit_test(test_bad_arguments_are_refused_without_crashing),
        cmocka_unit_test(test_results_come_in_select_order_sorted_and_limited),
        cmocka_unit_test(test_a_dp_result_states_its_noise_in_select_order),
        cmocka_unit_test(test_ties_are_broken_by_the_groups_and_null_sorts_first_ascending),
        cmocka_unit_test(test_an_empty_result_has_labels_and_no_rows),
        cmocka_unit_test(test_malformed_result_tables_are_refused_and_leave_nothing),
        cmocka_unit_test(test_values_out_of_range_are_refused),
        cmocka_unit_test(test_values_format_as_researchers_expect),
        cmocka_unit_test(test_formatting_truncates_to_the_buffer_and_always_terminates),
        cmocka_unit_test(test_dates_parse_only_real_calendar_days),
        cmocka_unit_test(test_timestamp_literals_compare_with_timestamps_only),
        cmocka_unit_test(test_mutated_queries_compile_or_fail_cleanly),
        cmocka_unit_test(test_mutated_result_tables_never_crash),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
