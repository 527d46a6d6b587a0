/*
 * cohort-participant delete: remove the owner's rows from the token.
 *
 * Three ways to say which, exactly one per call:
 * - --all: every row, and the table itself;
 * - --id N[,N...]: these rows (ids as `rows` shows them); if any id does
 *   not exist, the token deletes nothing;
 * - --where "CONDITION": the rows a condition selects, written as a
 *   study's WHERE clause (age >= 40 AND date < '2026-01-01'). It is
 *   compiled by the querier's own SQL compiler, so it means exactly what
 *   it would mean in a study; this needs the table's columns from the
 *   catalog, so it works for catalog tables only.
 * The token erases the rows from its flash (it rewrites its log) before
 * it answers.
 */
#include <stdlib.h>
#include <string.h>

#include "participant/cli.h"
#include "querier/querier.h"

#define CMD "delete"
#define WHERE_MAX 4096u /* bytes of a --where condition */

static void help(FILE *f)
{
    cli_usage(f, CMD);
    fprintf(f, "\nDeletes rows of table T of the token in DIR; they are erased from its flash.\n"
               "  --all                every row, and the table itself\n"
               "  --id N[,N...]        the rows with these ids (see " CLI_PROG " rows); may be\n"
               "                       repeated; if one id does not exist nothing is deleted\n"
               "  --where CONDITION    the rows a study's WHERE condition would select, as in\n"
               "                       --where \"date < '2026-01-01' AND steps IS NULL\"\n"
               "                       (catalog tables only)\n");
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Add the ids of "N,N,..." to ids[*n]. 0 or -1 (reported). */
static int parse_ids(const struct cli_env *env, const char *text, uint64_t *ids, size_t *n)
{
    const char *p = text;

    for (;;) {
        char one[CLI_U64_DIGITS + 2];
        size_t len = strcspn(p, ",");
        if (len == 0 || len > CLI_U64_DIGITS) {
            cli_usage_error(env, CMD, "--id: expected ids as N[,N...], not '%.40s'", text);
            return -1;
        }
        memcpy(one, p, len);
        one[len] = '\0';
        if (*n == PT_DELETE_IDS_MAX) {
            cli_usage_error(env, CMD, "--id: at most %u ids at once", PT_DELETE_IDS_MAX);
            return -1;
        }
        if (cli_u64(env, CMD, "--id", one, 1, UINT64_MAX, &ids[*n]) != 0)
            return -1;
        (*n)++;
        p += len;
        if (*p == '\0')
            return 0;
        p++;
    }
}

/* The condition's SQL error, with a caret under its column. */
static void show_where_error(const struct cli_env *env, const char *cond, size_t prefix,
                             const struct qr_sql_error *err)
{
    size_t len = strlen(cond), at = err->pos >= prefix ? err->pos - prefix : 0;
    char shown[WHERE_MAX * 4 + 1];

    if (at > len)
        at = len;
    fprintf(env->err, CLI_PROG ": " CMD ": --where: %s\n", err->msg);
    if (strchr(cond, '\n') == NULL) {
        cli_escape(shown, sizeof shown, cond, len);
        fprintf(env->err, "  %s\n  %*s^\n", shown, (int)at, "");
    }
}

/* Compile the condition over a catalog table into a plan whose WHERE selects the rows. */
static int compile_where(const struct cli_env *env, const char *table, const char *cond,
                         uint8_t **plan, size_t *plan_len)
{
    const struct qr_table *t = qr_catalog_find(table);
    struct qr_compile_opts opts = {.study = "owner-delete", .now = env->now};
    struct qr_sql_error err;
    char *sql;
    size_t prefix, n;
    int rc;

    if (t == NULL || strcmp(t->name, table) != 0)
        return cli_usage_error(
            env, CMD, "--where works on catalog tables only; %s is not one (use --id)", table);
    if (strlen(cond) == 0 || strlen(cond) > WHERE_MAX)
        return cli_usage_error(env, CMD, "--where: a condition of 1 to %u bytes", WHERE_MAX);
    n = strlen(cond) + strlen(table) + 64;
    sql = malloc(n);
    if (sql == NULL)
        return cli_fail(env, CLI_TOKEN, CMD, "out of memory");
    /* In parentheses, the condition cannot add clauses of its own. */
    prefix = (size_t)snprintf(sql, n, "SELECT COUNT(*) FROM %s WHERE (", table);
    snprintf(sql + prefix, n - prefix, "%s)", cond);
    memset(&err, 0, sizeof err);
    rc = qr_sql_compile(plan, plan_len, sql, &opts, &err);
    free(sql);
    if (rc == QR_ERR_SQL) {
        show_where_error(env, cond, prefix, &err);
        return CLI_USAGE;
    }
    if (rc != QR_OK)
        return cli_fail(env, CLI_TOKEN, CMD, "--where: %s", qr_strerror(rc));
    return CLI_OK;
}

int cli_delete(int argc, char **argv, const struct cli_env *env)
{
    const char *dir = NULL, *table = NULL, *where = NULL, *v;
    struct cli_session s;
    struct pt_delete d;
    struct pt_changed ch;
    struct pt_table_summary t;
    bool found = false;
    uint64_t *ids = calloc(PT_DELETE_IDS_MAX, sizeof *ids);
    uint8_t *plan = NULL;
    size_t n_ids = 0, plan_len = 0, k = 0;
    bool all = false;
    int rc = CLI_USAGE, m;

    memset(&s, 0, sizeof s);
    if (ids == NULL)
        return cli_fail(env, CLI_TOKEN, CMD, "out of memory");
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            help(env->out);
            rc = CLI_OK;
            goto out;
        }
        if (strcmp(argv[i], "--all") == 0) {
            all = true;
            continue;
        }
        if ((m = cli_opt(env, CMD, argc, argv, &i, "--id", &v)) != 0) {
            if (m < 0 || parse_ids(env, v, ids, &n_ids) != 0)
                goto out;
            continue;
        }
        if ((m = cli_opt(env, CMD, argc, argv, &i, "--dir", &dir)) != 0 ||
            (m = cli_opt(env, CMD, argc, argv, &i, "--table", &table)) != 0 ||
            (m = cli_opt(env, CMD, argc, argv, &i, "--where", &where)) != 0) {
            if (m < 0)
                goto out;
            continue;
        }
        rc = cli_usage_error(env, CMD, "unexpected argument '%.60s'", argv[i]);
        goto out;
    }
    if (dir == NULL || table == NULL) {
        rc = cli_usage_error(env, CMD, "give --dir DIR and --table T");
        goto out;
    }
    if ((all ? 1 : 0) + (n_ids ? 1 : 0) + (where ? 1 : 0) != 1) {
        rc = cli_usage_error(env, CMD, "say which rows with exactly one of --all, --id, --where");
        goto out;
    }
    if (!pt_name_valid(table)) {
        rc = cli_usage_error(env, CMD, "--table: not a table name");
        goto out;
    }
    /* Each id once: the token takes a set. */
    qsort(ids, n_ids, sizeof *ids, cmp_u64);
    for (size_t i = 0; i < n_ids; i++)
        if (k == 0 || ids[i] != ids[k - 1])
            ids[k++] = ids[i];
    n_ids = k;
    if (where != NULL && (rc = compile_where(env, table, where, &plan, &plan_len)) != CLI_OK)
        goto out;
    memset(&d, 0, sizeof d);
    d.all = all;
    d.ids = ids;
    d.n_ids = n_ids;
    d.where_plan = plan;
    d.where_plan_len = plan_len;
    if ((rc = cli_open(env, CMD, dir, false, &s)) != CLI_OK)
        goto out;
    if ((rc = pt_owner_table(&s.o, table, &t, &found)) != 0) {
        rc = cli_owner_fail(env, CMD, &s.o, rc, "cannot list the token's tables");
        goto out;
    }
    if (!found) {
        rc = cli_fail(env, CLI_DATA, CMD,
                      "the token has no table %s (" CLI_PROG " tables lists them); nothing was "
                      "deleted",
                      table);
        goto out;
    }
    rc = pt_owner_delete(&s.o, table, &d, &ch);
    if (rc == PT_ERR_TOKEN && s.o.token_status == TK_ERR_NOT_FOUND) {
        rc = cli_fail(env, CLI_DATA, CMD, "%s; nothing was deleted",
                      n_ids ? "no such row: an id that is not in the table" : "no such table");
        goto out;
    }
    if (rc != 0) {
        rc = cli_owner_fail(env, CMD, &s.o, rc, "nothing was deleted");
        goto out;
    }
    if (all)
        fprintf(env->out, "deleted table %s and its %llu row%s", table, (unsigned long long)ch.rows,
                ch.rows == 1 ? "" : "s");
    else
        fprintf(env->out, "deleted %llu row%s from %s", (unsigned long long)ch.rows,
                ch.rows == 1 ? "" : "s", table);
    fprintf(env->out, "; the token's log: %llu -> %llu bytes\n",
            (unsigned long long)ch.log_bytes_before, (unsigned long long)ch.log_bytes_after);
    rc = CLI_OK;
out:
    cli_close(env, &s);
    free(plan);
    free(ids);
    return rc;
}
