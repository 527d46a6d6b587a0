/*
 * cohort-participant tables: the token's tables, their rows and columns.
 *
 * One line per table: its name, whether studies can target it (a catalog
 * table with the catalog's columns) or it is the owner's own, its number
 * of rows, and its columns as --schema would write them.
 */
#include <stdlib.h>
#include <string.h>

#include "participant/cli.h"
#include "querier/querier.h"

#define CMD "tables"

/* Whether the token's table is the catalog table of that name, column for column. */
static bool is_catalog(const struct pt_schema *s)
{
    const struct qr_table *t = qr_catalog_find(s->name);
    uint8_t *buf = NULL;
    size_t len = 0;
    struct pt_schema cat;
    bool same;

    if (t == NULL || strcmp(t->name, s->name) != 0 || qr_catalog_schema(t, &buf, &len) != QR_OK)
        return false;
    same = pt_schema_decode(&cat, buf, len) == 0 && pt_schema_equal(&cat, s);
    free(buf);
    return same;
}

int cli_tables(int argc, char **argv, const struct cli_env *env)
{
    const char *dir = NULL;
    struct cli_session s;
    struct pt_table_summary *t = NULL;
    size_t n = 0, width = 5;
    char text[PT_SCHEMA_TEXT_MAX];
    int rc;

    if ((rc = cli_dir_only(env, CMD, argc, argv,
                           "Lists the tables of the token in DIR: kind (catalog tables are the "
                           "ones studies\ncan target), rows, and columns.",
                           &dir)) != CLI_OK ||
        dir == NULL)
        return rc;
    if ((rc = cli_open(env, CMD, dir, false, &s)) != CLI_OK)
        return rc;
    rc = pt_owner_tables(&s.o, &t, &n);
    cli_close(env, &s);
    if (rc != 0)
        return cli_owner_fail(env, CMD, &s.o, rc, "cannot list the tables");
    if (n == 0) {
        fprintf(env->out, "no tables yet: " CLI_PROG " import adds one\n");
        return CLI_OK;
    }
    for (size_t i = 0; i < n; i++)
        if (strlen(t[i].schema.name) > width)
            width = strlen(t[i].schema.name);
    fprintf(env->out, "%-*s  %10s  %-7s  %s\n", (int)width, "TABLE", "ROWS", "KIND", "COLUMNS");
    for (size_t i = 0; i < n; i++) {
        pt_schema_text(text, sizeof text, &t[i].schema);
        fprintf(env->out, "%-*s  %10llu  %-7s  %s\n", (int)width, t[i].schema.name,
                (unsigned long long)t[i].rows, is_catalog(&t[i].schema) ? "catalog" : "own", text);
    }
    free(t);
    return CLI_OK;
}
