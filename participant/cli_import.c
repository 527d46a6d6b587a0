/*
 * cohort-participant import: load a CSV or JSON Lines file into a table.
 *
 * The table's schema comes from, in order: the token, if it has the table
 * already (a custom table's --schema is needed only on its first import);
 * the catalog of standard tables, for a catalog name; or --schema. The
 * whole file is read (at most PT_IMPORT_FILE_MAX bytes) and checked
 * before anything is sent, then goes to the token as one batch: a file
 * with one bad value stores nothing, and the owner gets the file, line and
 * column of the first problem (pt_import.h describes the formats).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "participant/cli.h"
#include "participant/pt_import.h"
#include "querier/querier.h"

#define CMD "import"

static void help(FILE *f)
{
    cli_usage(f, CMD);
    fprintf(f,
            "\nLoads FILE (CSV with a header line, or JSON Lines: one flat object per line) into\n"
            "table T of the token in DIR, all or nothing: if any value is wrong, nothing is\n"
            "stored and the file, line and column of the problem are shown.\n\n"
            "  --table T          a catalog table (cohort-querier catalog lists them and their\n"
            "                     columns), or a table of your own\n"
            "  --schema COLUMNS   a new table's columns: \"name type, ...\" with the types int,\n"
            "                     decimal(S), text, date, timestamp, bool (first import only)\n"
            "  --format F         csv or jsonl (default: from the file's extension, or its\n"
            "                     content)\n\n"
            "Values: int; decimal as 12.50 (exact; at most S decimals); text (UTF-8, at most 64\n"
            "bytes); date as 2026-01-31; timestamp as 2026-01-31T08:30:00Z (UTC); bool as true,\n"
            "false, 1 or 0. In CSV an empty field is NULL; in JSON write null.\n");
}

/* Read a whole file, or stdin for "-", of at most PT_IMPORT_FILE_MAX bytes. */
static int read_file(const struct cli_env *env, const char *path, uint8_t **out, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    size_t cap = 64 << 10, n = 0;
    uint8_t *buf;

    if (f == NULL)
        return cli_fail(env, CLI_DATA, CMD, "cannot read %s: %s", path, strerror(errno));
    buf = malloc(cap);
    for (;;) {
        size_t r;
        if (buf == NULL)
            break;
        if (n == cap) {
            uint8_t *bigger;
            if (cap > PT_IMPORT_FILE_MAX)
                break;
            cap *= 2;
            bigger = realloc(buf, cap);
            if (bigger == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger;
        }
        r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
    }
    if (buf != NULL && ferror(f)) {
        int e = errno;
        free(buf);
        if (f != stdin)
            fclose(f);
        return cli_fail(env, CLI_DATA, CMD, "cannot read %s: %s", path, strerror(e));
    }
    if (f != stdin)
        fclose(f);
    if (buf == NULL)
        return cli_fail(env, CLI_TOKEN, CMD, "out of memory reading %s", path);
    if (n > PT_IMPORT_FILE_MAX) {
        free(buf);
        return cli_fail(env, CLI_DATA, CMD,
                        "%s: the file is larger than %u MiB; nothing was "
                        "imported",
                        path, PT_IMPORT_FILE_MAX >> 20);
    }
    *out = buf;
    *len = n;
    return CLI_OK;
}

static void list_catalog(FILE *f)
{
    for (size_t i = 0; qr_catalog_table(i) != NULL; i++)
        fprintf(f, "%s%s", i ? ", " : "", qr_catalog_table(i)->name);
}

/* The schema to import into; *known says whether the token has the table. */
static int find_schema(const struct cli_env *env, struct pt_owner *o, const char *table,
                       const char *schema_text, struct pt_schema *out, bool *known)
{
    const struct qr_table *cat = qr_catalog_find(table);
    struct pt_table_summary have;
    struct pt_schema given;
    char err[256], text[PT_SCHEMA_TEXT_MAX];
    int rc;

    if (cat != NULL) {
        uint8_t *buf = NULL;
        size_t len = 0;
        if (schema_text != NULL)
            return cli_usage_error(env, CMD,
                                   "%s is a catalog table: its columns are fixed (cohort-querier "
                                   "catalog lists them); drop --schema",
                                   cat->name);
        if (qr_catalog_schema(cat, &buf, &len) != QR_OK ||
            pt_schema_decode(&given, buf, len) != 0) {
            free(buf);
            return cli_fail(env, CLI_TOKEN, CMD, "the catalog's schema of %s is invalid",
                            cat->name);
        }
        free(buf);
        table = cat->name; /* its canonical spelling */
    } else if (schema_text != NULL) {
        if (pt_schema_parse(&given, table, schema_text, err, sizeof err) != 0)
            return cli_usage_error(env, CMD, "--schema: %s", err);
    } else if (!pt_name_valid(table)) {
        return cli_usage_error(
            env, CMD, "--table: a name of letters, digits and _, at most %u bytes", PT_NAME_MAX);
    }
    if ((rc = pt_owner_table(o, table, &have, known)) != 0)
        return cli_owner_fail(env, CMD, o, rc, "cannot list the token's tables");
    if (*known) {
        if ((cat != NULL || schema_text != NULL) && !pt_schema_equal(&have.schema, &given)) {
            pt_schema_text(text, sizeof text, &have.schema);
            return cli_fail(env, CLI_DATA, CMD,
                            "the token's table %s has other columns: %s; nothing was imported",
                            table, text);
        }
        *out = have.schema;
        return CLI_OK;
    }
    if (cat == NULL && schema_text == NULL) {
        fprintf(env->err,
                CLI_PROG ": " CMD ": %s is neither a table of this token nor a catalog "
                         "table (",
                table);
        list_catalog(env->err);
        fprintf(env->err, "): give a new table's columns with --schema \"name type, ...\"\n");
        return CLI_USAGE;
    }
    *out = given;
    return CLI_OK;
}

int cli_import(int argc, char **argv, const struct cli_env *env)
{
    const char *dir = NULL, *table = NULL, *format = NULL, *schema_text = NULL, *file = NULL;
    struct cli_session s;
    struct pt_schema schema;
    struct pt_import_error ierr;
    struct pt_token_info info;
    struct pt_table_summary after;
    enum pt_format fmt;
    uint8_t *data = NULL;
    size_t len = 0, request_max;
    uint64_t rows = 0;
    bool known = false, found = false;
    int rc;

    const struct cli_arg args[] = {{"--dir", &dir, NULL, false},
                                   {"--table", &table, NULL, false},
                                   {"--format", &format, NULL, false},
                                   {"--schema", &schema_text, NULL, false},
                                   {NULL, &file, NULL, true}};
    if ((rc = cli_args(env, CMD, argc, argv, help, args, CLI_NARGS(args))) != CLI_OK)
        return rc == CLI_HELPED ? CLI_OK : rc;
    if (dir == NULL || table == NULL || file == NULL)
        return cli_usage_error(env, CMD, "give --dir DIR, --table T and the FILE to import");
    if (format != NULL && strcasecmp(format, "csv") != 0 && strcasecmp(format, "jsonl") != 0)
        return cli_usage_error(env, CMD, "--format: csv or jsonl, not '%.20s'", format);
    if ((rc = read_file(env, file, &data, &len)) != CLI_OK)
        return rc;
    fmt = format == NULL                   ? pt_import_format_guess(file, data, len)
          : strcasecmp(format, "csv") == 0 ? PT_FORMAT_CSV
                                           : PT_FORMAT_JSONL;
    if ((rc = cli_open(env, CMD, dir, false, &s)) != CLI_OK)
        goto out;
    if ((rc = find_schema(env, &s.o, table, schema_text, &schema, &known)) != CLI_OK)
        goto out;
    /*
     * A token decodes a request in its RAM, where rows take about eight
     * times their wire size: requests of a sixteenth of its RAM fit (a
     * 64 KiB token takes 4 KiB ones), and pt_import_load halves them if not.
     */
    if ((rc = pt_owner_info(&s.o, &info)) != 0) {
        rc = cli_owner_fail(env, CMD, &s.o, rc, "cannot reach the token");
        goto out;
    }
    request_max = (size_t)(info.arena_size / 16);
    if (request_max < PT_LOAD_REQUEST_MIN)
        request_max = PT_LOAD_REQUEST_MIN;
    if (request_max > PT_LOAD_REQUEST_MAX)
        request_max = PT_LOAD_REQUEST_MAX;
    rc = pt_import_load(&s.o, data, len, fmt, &schema, file, request_max, &rows, &ierr);
    if (rc == PT_ERR_INPUT && ierr.msg[0] != '\0') {
        fprintf(env->err, CLI_PROG ": " CMD ": %s\n", ierr.msg);
        fprintf(env->err, CLI_PROG ": " CMD ": nothing was imported\n");
        rc = CLI_DATA;
        goto out;
    }
    if (rc != 0) {
        rc = cli_owner_fail(env, CMD, &s.o, rc, "nothing was imported");
        goto out;
    }
    if (pt_owner_table(&s.o, schema.name, &after, &found) != 0 || !found)
        after.rows = 0;
    fprintf(env->out, "imported %llu row%s into %s from %s%s; the table has %llu row%s\n",
            (unsigned long long)rows, rows == 1 ? "" : "s", schema.name, file,
            known ? "" : " (a new table)", (unsigned long long)after.rows,
            after.rows == 1 ? "" : "s");
    rc = CLI_OK;
out:
    cli_close(env, &s);
    free(data);
    return rc;
}
