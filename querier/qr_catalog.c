/*
 * The catalog of standard tables.
 *
 * A study can only name a table that every token of the deployment holds
 * with the same schema, so the querier and the tokens agree on a fixed list:
 * this file. The simulator generates data for exactly these columns, and a
 * token receives the schema with its data, so changing a column here is a
 * change of the deployment's data model, not a local edit.
 *
 * Besides names and types, each column carries two planning estimates:
 * - per_participant: 1 if the value is the same on every row of one
 *   participant (a profile attribute), so grouping by it alone puts each
 *   participant in exactly one group;
 * - distinct: how many distinct values a population has, used to size the
 *   default bound on the number of groups.
 *
 * Lookups are ASCII case-insensitive, as SQL identifiers are; the names
 * stored here are the canonical spelling that plans carry.
 */
#include <string.h>
#include <strings.h>

#include "querier/querier.h"

static const struct qr_column health_columns[] = {
    {"participant", QR_INT, 0, 1000000, 1, "the participant's number in this data set"},
    {"age", QR_INT, 0, 100, 1, "age in whole years"},
    {"sex", QR_TEXT, 0, 2, 1, "sex as recorded: 'F' or 'M'"},
    {"region", QR_TEXT, 0, 128, 1, "region of residence, one of 128 region codes"},
    {"date", QR_DATE, 0, 366, 0, "the day the measurements were taken"},
    {"steps", QR_INT, 0, 30000, 0, "steps walked that day"},
    {"heart_rate", QR_INT, 0, 150, 0, "mean heart rate that day, beats per minute"},
    {"weight", QR_DECIMAL, 1, 1500, 0, "body weight that day, kilograms with one decimal"},
    {"age_band", QR_TEXT, 0, 8, 1, "age group: '18-29', '30-39', ..., '70-79', '80+'"},
};

static const struct qr_table tables[] = {
    {"health", "one row per participant and day: profile and daily wearable measurements",
     sizeof health_columns / sizeof health_columns[0], health_columns},
};

#define N_TABLES (sizeof tables / sizeof tables[0])

const struct qr_table *qr_catalog_table(size_t i)
{
    if (i >= N_TABLES)
        return NULL;
    return &tables[i];
}

const struct qr_table *qr_catalog_find(const char *name)
{
    if (name == NULL)
        return NULL;
    for (size_t i = 0; i < N_TABLES; i++) {
        if (strcasecmp(tables[i].name, name) == 0)
            return &tables[i];
    }
    return NULL;
}

int qr_catalog_column(const struct qr_table *t, const char *name)
{
    if (t == NULL || name == NULL)
        return -1;
    for (size_t i = 0; i < t->n_columns; i++) {
        if (strcasecmp(t->columns[i].name, name) == 0)
            return (int)i;
    }
    return -1;
}
