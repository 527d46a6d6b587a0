/*
 * Fuzz target: the SQL compiler on any text.
 *
 * Invariants: it either compiles, and the plan decodes and is explained, or
 * it fails with QR_ERR_SQL (or a clean resource error) and a position within
 * the text, a line and column of at least 1, and a message; nothing leaks.
 */
#include <string.h>

#include "proto/cohort.pb-c.h"
#include "querier/qr_sql.h"
#include "querier/querier.h"
#include "tests/fuzz/fuzz.h"

void fuzz_one(const uint8_t *data, size_t size)
{
    struct qr_compile_opts opts = {.study = "fuzz", .now = 1785000000};
    struct qr_sql_error err;
    uint8_t *plan = NULL;
    size_t plan_len = 0;
    int rc;

    memset(&err, 0, sizeof err);
    rc = qr_sql_compile_len(&plan, &plan_len, (const char *)data, size, &opts, &err);
    if (rc == 0) {
        Cohort__Plan *p = cohort__plan__unpack(NULL, plan_len, plan);
        char *text = qr_plan_explain(plan, plan_len);
        FUZZ_CHECK(p != NULL && text != NULL);
        cohort__plan__free_unpacked(p, NULL);
        free(text);
        free(plan);
        return;
    }
    FUZZ_CHECK(plan == NULL);
    FUZZ_CHECK(rc == QR_ERR_SQL || rc == QR_ERR_NOMEM || rc == QR_ERR_ARG);
    if (rc == QR_ERR_SQL) {
        FUZZ_CHECK(err.pos <= size);
        FUZZ_CHECK(err.line >= 1 && err.col >= 1);
        FUZZ_CHECK(err.msg[0] != '\0');
    }
}

void fuzz_seeds(void (*add)(const uint8_t *data, size_t size))
{
    static const char *const seeds[] = {
        "SELECT COUNT(*) FROM health",
        "SELECT region, sex, COUNT(DISTINCT participant), AVG(steps) FROM health WHERE "
        "heart_rate IS NOT NULL AND (age >= 50 OR sex = 'M') GROUP BY region, sex HAVING "
        "AVG(steps) > 5000 ORDER BY region DESC, sex LIMIT 40",
        "SELECT age, COUNT(*), SUM(weight) FROM health WHERE age IN (30, 40, 50) AND NOT sex = "
        "'F' AND region LIKE 'R0%' AND date BETWEEN '2026-01-01' AND DATE '2026-06-30' GROUP BY "
        "age SIZE 100 DEADLINE 60 WITH (min_participants = 3, max_groups = 20, epsilon = 0.5)",
        "SELECT MAX(heart_rate), MIN(date) FROM health -- comment\nHAVING COUNT(*) > 10;",
    };
    size_t i;
    for (i = 0; i < sizeof seeds / sizeof seeds[0]; i++)
        add((const uint8_t *)seeds[i], strlen(seeds[i]));
}

#ifdef COHORT_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_one(data, size);
    return 0;
}
#endif
