/*
 * cohort-participant rows: a table's rows, as the token holds them.
 *
 * As a table for a terminal: the row id (what delete --id takes) and every
 * column, aligned on the first CLI_ROWS_MEASURE rows (later ones stream,
 * so a long table costs no memory), NULL as NULL, text escaped. Or, with
 * --csv, as the CSV that import reads back: a header of the columns, no
 * ids, NULL as an empty field, an empty text as "", exact values. (One
 * case does not go back: a NULL in a table whose only column is TEXT is a
 * blank line, which import skips.)
 */
#include <stdlib.h>
#include <string.h>

#include "participant/cli.h"

#define CMD "rows"
#define CLI_ROWS_MEASURE 200u
#define CELL_MAX (PT_TEXT_MAX * 4 + 8) /* an escaped value */
#define ROWS_LIMIT_MAX 1000000000000ull

struct cell_row {
    uint64_t id;
    char cells[PT_COLUMNS_MAX][CELL_MAX];
};

struct printer {
    FILE *out;
    bool csv;
    bool header_done;
    struct cell_row *held; /* the first rows, until the widths are known */
    size_t n_held;
    size_t width[PT_COLUMNS_MAX + 1]; /* [0]: the id */
    struct pt_schema schema;
};

static void csv_field(FILE *f, const struct pt_value *v)
{
    char buf[64];

    if (v->type == PT_NULL)
        return;
    if (v->type != PT_TEXT) {
        pt_value_format(buf, sizeof buf, v);
        fputs(buf, f);
        return;
    }
    if (v->len > 0 && strcspn(v->s, ",\"\r\n") == v->len) {
        fwrite(v->s, 1, v->len, f);
        return;
    }
    fputc('"', f);
    for (size_t i = 0; i < v->len; i++) {
        if (v->s[i] == '"')
            fputc('"', f);
        fputc(v->s[i], f);
    }
    fputc('"', f);
}

static void cell(char *out, const struct pt_value *v)
{
    char buf[PT_TEXT_MAX + 32];

    if (v->type == PT_NULL) {
        strcpy(out, "NULL");
        return;
    }
    pt_value_format(buf, sizeof buf, v);
    cli_escape(out, CELL_MAX, buf, v->type == PT_TEXT ? v->len : strlen(buf));
}

static size_t chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xc0) != 0x80;
    return n;
}

static void print_row(struct printer *p, const struct cell_row *r)
{
    char id[24];

    snprintf(id, sizeof id, "%llu", (unsigned long long)r->id);
    fprintf(p->out, "%*s", (int)p->width[0], id);
    for (size_t c = 0; c < p->schema.n_columns; c++) {
        enum pt_type t = p->schema.columns[c].type;
        fputs("  ", p->out);
        if (t == PT_INT || t == PT_DECIMAL)
            fprintf(p->out, "%*s", (int)p->width[c + 1], r->cells[c]); /* ASCII: digits */
        else
            cli_pad(p->out, r->cells[c], c + 1 < p->schema.n_columns ? p->width[c + 1] : 0);
    }
    fputc('\n', p->out);
}

/* Widths from the header and the rows held, then print them all. */
static void flush(struct printer *p)
{
    p->width[0] = 2;
    for (size_t c = 0; c < p->schema.n_columns; c++)
        p->width[c + 1] = strlen(p->schema.columns[c].name);
    for (size_t i = 0; i < p->n_held; i++) {
        char id[24];
        size_t n = (size_t)snprintf(id, sizeof id, "%llu", (unsigned long long)p->held[i].id);
        if (n > p->width[0])
            p->width[0] = n;
        for (size_t c = 0; c < p->schema.n_columns; c++)
            if (chars(p->held[i].cells[c]) > p->width[c + 1])
                p->width[c + 1] = chars(p->held[i].cells[c]);
    }
    fprintf(p->out, "%*s", (int)p->width[0], "id");
    for (size_t c = 0; c < p->schema.n_columns; c++) {
        enum pt_type t = p->schema.columns[c].type;
        fputs("  ", p->out);
        if (t == PT_INT || t == PT_DECIMAL)
            fprintf(p->out, "%*s", (int)p->width[c + 1], p->schema.columns[c].name);
        else
            cli_pad(p->out, p->schema.columns[c].name,
                    c + 1 < p->schema.n_columns ? p->width[c + 1] : 0);
    }
    fputc('\n', p->out);
    for (size_t i = 0; i < p->n_held; i++)
        print_row(p, &p->held[i]);
    p->n_held = 0;
    p->header_done = true;
}

static int on_row(void *ctx, const struct pt_schema *s, uint64_t id, const struct pt_value *v)
{
    struct printer *p = ctx;
    struct cell_row one, *r;

    p->schema = *s;
    if (p->csv) {
        if (!p->header_done) {
            for (size_t c = 0; c < s->n_columns; c++)
                fprintf(p->out, "%s%s", c ? "," : "", s->columns[c].name);
            fputc('\n', p->out);
            p->header_done = true;
        }
        for (size_t c = 0; c < s->n_columns; c++) {
            if (c)
                fputc(',', p->out);
            if (s->n_columns == 1 && v[c].type == PT_NULL && s->columns[c].type != PT_TEXT)
                fputs("\"\"", p->out); /* not a blank line, which import skips */
            else
                csv_field(p->out, &v[c]);
        }
        fputc('\n', p->out);
        return 0;
    }
    r = !p->header_done && p->n_held < CLI_ROWS_MEASURE ? &p->held[p->n_held] : &one;
    r->id = id;
    for (size_t c = 0; c < s->n_columns; c++)
        cell(r->cells[c], &v[c]);
    if (r != &one) {
        p->n_held++;
        return 0;
    }
    if (!p->header_done)
        flush(p);
    print_row(p, r);
    return 0;
}

static void help(FILE *out)
{
    cli_usage(out, CMD);
    fprintf(out, "\nShows the rows of table T of the token in DIR, with their ids.\n"
                 "  --limit N   the first N rows only\n"
                 "  --csv       as CSV that import reads back (no ids)\n");
}

int cli_rows(int argc, char **argv, const struct cli_env *env)
{
    const char *dir = NULL, *table = NULL, *limit_text = NULL;
    struct cli_session s;
    struct printer *p;
    struct pt_table_summary t;
    uint64_t limit = 0, n = 0;
    bool csv = false, found = false;
    int rc;

    const struct cli_arg args[] = {{"--csv", NULL, &csv, false},
                                   {"--dir", &dir, NULL, false},
                                   {"--table", &table, NULL, false},
                                   {"--limit", &limit_text, NULL, false}};
    if ((rc = cli_args(env, CMD, argc, argv, help, args, CLI_NARGS(args))) != CLI_OK)
        return rc == CLI_HELPED ? CLI_OK : rc;
    if (dir == NULL || table == NULL)
        return cli_usage_error(env, CMD, "give --dir DIR and --table T");
    if (limit_text != NULL &&
        cli_u64(env, CMD, "--limit", limit_text, 1, ROWS_LIMIT_MAX, &limit) != 0)
        return CLI_USAGE;
    p = calloc(1, sizeof *p);
    if (p == NULL || (!csv && (p->held = calloc(CLI_ROWS_MEASURE, sizeof *p->held)) == NULL)) {
        free(p);
        return cli_fail(env, CLI_TOKEN, CMD, "out of memory");
    }
    p->out = env->out;
    p->csv = csv;
    if ((rc = cli_open(env, CMD, dir, false, &s)) != CLI_OK)
        goto out;
    rc = pt_owner_table(&s.o, table, &t, &found);
    if (rc == 0 && !found) {
        rc = cli_fail(env, CLI_DATA, CMD,
                      "the token has no table %s (" CLI_PROG " tables lists "
                      "them)",
                      table);
        goto out;
    }
    if (rc == 0) {
        p->schema = t.schema;
        rc = pt_owner_rows(&s.o, table, limit, on_row, p, &n);
    }
    if (rc != 0) {
        rc = cli_owner_fail(env, CMD, &s.o, rc, "cannot read the rows");
        goto out;
    }
    if (csv && !p->header_done)
        for (size_t c = 0; c < p->schema.n_columns; c++)
            fprintf(env->out, "%s%s", c ? "," : "", p->schema.columns[c].name);
    if (csv && !p->header_done)
        fputc('\n', env->out);
    if (!csv) {
        if (!p->header_done)
            flush(p);
        fprintf(env->out, "(%llu row%s%s)\n", (unsigned long long)n, n == 1 ? "" : "s",
                limit && n == limit && n < t.rows ? ", --limit reached" : "");
    }
    rc = CLI_OK;
out:
    cli_close(env, &s);
    if (p != NULL)
        free(p->held);
    free(p);
    return rc;
}
