/*
 * The catalog of standard tables.
 *
 * A study can only name a table that every token of the deployment holds
 * with the same schema, so the querier and the tokens agree on a fixed list:
 * this file. The simulator generates data for the health table, owners
 * import theirs into any of them (cohort-participant import), and a token
 * receives the schema with its data, so changing a column here is a change
 * of the deployment's data model, not a local edit.
 *
 * Besides names and types, each column carries two planning estimates:
 * - per_participant: 1 if the value is the same on every row of one
 *   participant (a profile attribute), so grouping by it alone puts each
 *   participant in exactly one group;
 * - distinct: how many distinct values a population has, used to size the
 *   default bound on the number of groups.
 *
 * Value encodings are the wire's (proto/cohort.proto, ValueType): DATE is
 * days since 1970-01-01, TIMESTAMP seconds since 1970-01-01 UTC, DECIMAL(s)
 * an integer scaled by 10^s, BOOL 0 or 1. Every column may be NULL.
 *
 * Lookups are ASCII case-insensitive, as SQL identifiers are; the names
 * stored here are the canonical spelling that plans carry.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proto/cohort.pb-c.h"
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

static const struct qr_column energy_columns[] = {
    {"day", QR_DATE, 0, 366, 0, "the day the consumption was metered"},
    {"kwh", QR_DECIMAL, 3, 60000, 0, "electricity used that day, kWh with three decimals"},
    {"peak_kw", QR_DECIMAL, 2, 1500, 0, "highest 30-minute mean demand that day, kW"},
    {"outdoor_temp", QR_DECIMAL, 1, 700, 0, "mean outdoor temperature that day, degrees Celsius"},
    {"tariff", QR_TEXT, 0, 6, 1,
     "the supply contract: 'base', 'peak_offpeak', 'tempo', 'dynamic', 'other'"},
    {"heating", QR_TEXT, 0, 7, 1,
     "main heating: 'electric', 'heat_pump', 'gas', 'oil', 'wood', 'district', 'none'"},
    {"dwelling", QR_TEXT, 0, 2, 1, "'house' or 'flat'"},
    {"surface_m2", QR_INT, 0, 400, 1, "living area in square metres"},
    {"household_size", QR_INT, 0, 10, 1, "people living in the home"},
    {"solar", QR_BOOL, 0, 2, 1, "the home produces solar electricity"},
    {"region", QR_TEXT, 0, 128, 1, "region of the home, one of the 128 region codes of health"},
};

static const struct qr_column bank_operations_columns[] = {
    {"time", QR_TIMESTAMP, 0, 1000000, 0, "when the operation was booked, UTC"},
    {"date", QR_DATE, 0, 366, 0, "the day the operation was booked"},
    {"amount", QR_DECIMAL, 2, 100000, 0,
     "the amount, positive, in the account's currency, two decimals"},
    {"direction", QR_TEXT, 0, 2, 0, "'debit' (money out) or 'credit' (money in)"},
    {"currency", QR_TEXT, 0, 8, 0, "ISO 4217 code of the account's currency: 'EUR', 'USD', ..."},
    {"category", QR_TEXT, 0, 10, 0,
     "kind of operation: 'card', 'transfer', 'direct_debit', 'cash', 'cheque', 'fee', "
     "'interest', 'salary', 'refund', 'other'"},
    {"merchant_category", QR_TEXT, 0, 16, 0,
     "card payments: 'groceries', 'restaurants', 'transport', 'fuel', 'health', 'housing', "
     "'utilities', 'leisure', 'travel', 'clothing', 'online', 'other'; NULL otherwise"},
    {"recurring", QR_BOOL, 0, 2, 0, "part of a recurring series (rent, salary, subscription)"},
    {"age_band", QR_TEXT, 0, 8, 1, "account holder's age group, as in health"},
    {"region", QR_TEXT, 0, 128, 1, "account holder's region, one of the region codes of health"},
};

static const struct qr_column location_visits_columns[] = {
    {"arrival", QR_TIMESTAMP, 0, 1000000, 0, "when the visit began, UTC"},
    {"date", QR_DATE, 0, 366, 0, "the day the visit began"},
    {"duration_min", QR_INT, 0, 1440, 0, "minutes spent at the place"},
    {"place_category", QR_TEXT, 0, 12, 0,
     "'home', 'work', 'school', 'shop', 'restaurant', 'health', 'sport', 'park', 'culture', "
     "'worship', 'transport', 'other'"},
    {"region", QR_TEXT, 0, 128, 0, "region of the place, one of the region codes of health"},
    {"distance_km", QR_DECIMAL, 1, 2000, 0, "distance from home, km with one decimal"},
    {"mode", QR_TEXT, 0, 6, 0, "how the person came: 'walk', 'bike', 'car', 'public', 'other'"},
    {"home_region", QR_TEXT, 0, 128, 1, "region of the person's home"},
};

/* The token keeps this table itself, from the owner's documents' metadata
 * (token/tk_table.c); its id column is left out: a study has no use for it. */
static const struct qr_column documents_columns[] = {
    {"type", QR_TEXT, 0, 64, 0, "the document's type, as the app gave it: 'bank.statement', ..."},
    {"author", QR_TEXT, 0, 1000, 0, "who wrote it, as the app gave it (cut to 64 bytes)"},
    {"subject", QR_TEXT, 0, 1000, 0, "its subject, as the app gave it (cut to 64 bytes)"},
    {"created", QR_TIMESTAMP, 0, 1000000, 0, "when it was created, UTC (NULL if not given)"},
    {"modified", QR_TIMESTAMP, 0, 1000000, 0, "when it last changed, UTC (NULL if not given)"},
    {"bytes", QR_INT, 0, 1000000, 0, "its size in bytes (the name size is a keyword of the SQL)"},
    {"revision", QR_INT, 0, 100, 0, "its current revision: 1, 2, ..."},
};

#define COLUMNS(a) (sizeof(a) / sizeof((a)[0])), (a)

static const struct qr_table tables[] = {
    {"health", "one row per participant and day: profile and daily wearable measurements",
     COLUMNS(health_columns)},
    {"energy", "one row per home and day: metered electricity and the home's profile",
     COLUMNS(energy_columns)},
    {"bank_operations", "one row per operation on the owner's bank accounts",
     COLUMNS(bank_operations_columns)},
    {"location_visits", "one row per visit to a place, from the owner's phone",
     COLUMNS(location_visits_columns)},
    {"documents",
     "one row per document in the owner's personal cloud: its metadata, kept by the "
     "token",
     COLUMNS(documents_columns)},
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

int qr_catalog_schema(const struct qr_table *t, uint8_t **schema, size_t *schema_len)
{
    Cohort__Column cols[QR_CATALOG_COLUMNS_MAX];
    Cohort__Column *ptrs[QR_CATALOG_COLUMNS_MAX];
    Cohort__TableSchema s;
    size_t n;
    uint8_t *out;

    if (t == NULL || schema == NULL || schema_len == NULL || t->n_columns > QR_CATALOG_COLUMNS_MAX)
        return QR_ERR_ARG;
    cohort__table_schema__init(&s);
    s.name = (char *)t->name;
    for (size_t i = 0; i < t->n_columns; i++) {
        cohort__column__init(&cols[i]);
        cols[i].name = (char *)t->columns[i].name;
        cols[i].type = (Cohort__ValueType)t->columns[i].type;
        cols[i].scale = t->columns[i].scale;
        ptrs[i] = &cols[i];
    }
    s.n_columns = t->n_columns;
    s.columns = ptrs;
    n = cohort__table_schema__get_packed_size(&s);
    out = malloc(n ? n : 1);
    if (out == NULL)
        return QR_ERR_NOMEM;
    cohort__table_schema__pack(&s, out);
    *schema = out;
    *schema_len = n;
    return QR_OK;
}
