/*
 * cohort-querier: the researcher's command line.
 *
 * A thin shell over libcohort_querier: each subcommand is one function in
 * the table below, which parses its own arguments and calls the library.
 * Exit status: 0 on success, 1 when the work fails, 2 for a usage error or
 * SQL that does not compile.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "querier/querier.h"
#include "querier/rs.h"
#include "querier/sv.h"

#define EXIT_USAGE 2

struct command {
    const char *name;
    const char *args;
    const char *help;
    int (*run)(int argc, char **argv);
};

static int cmd_compile(int argc, char **argv);
static int cmd_catalog(int argc, char **argv);
static int cmd_help(int argc, char **argv);

static const struct command commands[] = {
    {"run", "--connect URL --cert FILE \"SQL\"", "run a study through a service, print its result",
     sv_run_main},
    {"status", "--connect URL [QUERY_ID]", "the queries a service holds and their progress",
     sv_status_main},
    {"serve", "--listen URL --journal FILE --authority CERT", "run the querier service",
     sv_serve_main},
    {"keygen", "--out PREFIX [--subject NAME]", "make a researcher key and certificate request",
     rs_keygen_main},
    {"compile", "[--study NAME] [--] \"SQL\"", "compile SQL to a plan and explain it", cmd_compile},
    {"catalog", "", "list the standard tables and their columns", cmd_catalog},
    {"help", "", "show this help", cmd_help},
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f)
{
    fprintf(f, "usage: cohort-querier COMMAND [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++) {
        char head[96];
        snprintf(head, sizeof head, "%s %s", commands[i].name, commands[i].args);
        fprintf(f, "  %-50s %s\n", head, commands[i].help);
    }
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "cohort-querier: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    usage(stderr);
    return EXIT_USAGE;
}

/* The SQL line holding the error, then a caret under its column. */
static void show_sql_error(const char *sql, const struct qr_sql_error *err)
{
    size_t start = err->pos, end = err->pos;
    size_t len = strlen(sql);

    if (start > len)
        start = end = len;
    while (start > 0 && sql[start - 1] != '\n')
        start--;
    while (end < len && sql[end] != '\n')
        end++;
    fprintf(stderr, "error: line %u, column %u: %s\n", err->line, err->col, err->msg);
    fprintf(stderr, "  %.*s\n  ", (int)(end - start), sql + start);
    for (size_t i = start; i < err->pos && i < len; i++)
        fputc(sql[i] == '\t' ? '\t' : ' ', stderr);
    fprintf(stderr, "^\n");
}

static int cmd_compile(int argc, char **argv)
{
    struct qr_compile_opts opts = {0};
    struct qr_sql_error err;
    const char *sql = NULL;
    uint8_t *plan = NULL;
    size_t plan_len = 0;
    char *text;
    int rc;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0 && sql == NULL && i + 1 < argc) {
            sql = argv[++i]; /* SQL that starts with '-', such as a comment */
        } else if (strcmp(argv[i], "--study") == 0) {
            if (i + 1 >= argc)
                return usage_error("%s needs a value", argv[i]);
            opts.study = argv[++i];
        } else if (sql == NULL && (argv[i][0] != '-' || argv[i][1] == '\0')) {
            sql = argv[i];
        } else {
            return usage_error("compile: unexpected argument '%s'", argv[i]);
        }
    }
    if (sql == NULL)
        return usage_error("compile: give the SQL as one argument");
    opts.now = (int64_t)time(NULL);
    rc = qr_sql_compile(&plan, &plan_len, sql, &opts, &err);
    if (rc == QR_ERR_SQL) {
        show_sql_error(sql, &err);
        return EXIT_USAGE;
    }
    if (rc != 0) {
        fprintf(stderr, "cohort-querier: compile failed: %s\n", err.msg);
        return EXIT_FAILURE;
    }
    text = qr_plan_explain(plan, plan_len);
    free(plan);
    if (text == NULL) {
        fprintf(stderr, "cohort-querier: cannot explain the plan\n");
        return EXIT_FAILURE;
    }
    fputs(text, stdout);
    free(text);
    return 0;
}

static const char *type_text(const struct qr_column *c, char *buf, size_t cap)
{
    static const char *const names[] = {"NULL", "INT",  "DECIMAL", "TEXT",
                                        "DATE", "BOOL", "DOUBLE",  "TIMESTAMP"};

    if (c->type == QR_DECIMAL)
        snprintf(buf, cap, "DECIMAL(%u)", c->scale);
    else if ((unsigned)c->type < sizeof names / sizeof names[0])
        snprintf(buf, cap, "%s", names[c->type]);
    else
        snprintf(buf, cap, "?");
    return buf;
}

static int cmd_catalog(int argc, char **argv)
{
    const struct qr_table *t;
    char type[32];

    if (argc > 1)
        return usage_error("catalog: unexpected argument '%s'", argv[1]);
    for (size_t i = 0; qr_catalog_table(i) != NULL; i++) {
        int width = 12;
        t = qr_catalog_table(i);
        for (size_t j = 0; j < t->n_columns; j++)
            if ((int)strlen(t->columns[j].name) > width)
                width = (int)strlen(t->columns[j].name);
        printf("%s%s: %s\n", i ? "\n" : "", t->name, t->doc);
        for (size_t j = 0; j < t->n_columns; j++) {
            const struct qr_column *c = &t->columns[j];
            printf("  %-*s %-11s %-16s %s\n", width, c->name, type_text(c, type, sizeof type),
                   c->per_participant ? "per participant" : "per row", c->doc);
        }
    }
    return 0;
}

static int cmd_help(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    usage(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage_error("missing command");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
        return cmd_help(argc - 1, argv + 1);
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    }
    return usage_error("unknown command '%s'", argv[1]);
}
