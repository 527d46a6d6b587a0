/*
 * cohort-authority certify-researcher: certify a researcher's key within a
 * scope.
 *
 * The request (PREFIX.csr of cohort-querier keygen) is the same message a
 * token makes, signed the same way, and is checked the same way. The
 * certificate (role RESEARCHER) carries the scope a token enforces on every
 * plan the researcher signs: the tables and "table.column"s it may read,
 * the studies it may name and the largest epsilon a plan may ask for. An
 * empty list means "any"; with no scope option at all, the certificate has
 * no scope and allows anything within each owner's consent. Tables and
 * columns are checked against the catalog here, so a typing mistake is
 * caught by the authority and not by every token later; and the whole
 * certificate must fit what a token reads (AU_CERT_BODY_MAX bytes of body).
 *
 * The certificate file written is a CertChain: the researcher's certificate,
 * then this authority's root, as a signed plan carries it.
 */
#include <stdlib.h>
#include <string.h>

#include "authority/au.h"
#include "proto/cohort.pb-c.h"
#include "shell/shell.h"

#define CMD "certify-researcher"
#define ITEM_MAX (2u * AU_SUBJECT_MAX + 2u) /* "table.column" and its NUL */

static void help(FILE *f)
{
    au_usage(f, CMD);
    fprintf(f,
            "\nChecks a researcher's certificate request (PREFIX.csr of cohort-querier keygen),\n"
            "certifies the researcher's key within a scope and writes CERTFILE (mode 0644; it\n"
            "must not exist): the researcher's certificate, then this authority's root.\n\n"
            "  --dir DIR          the authority's directory (cohort-authority init)\n"
            "  --csr FILE         the researcher's certificate request\n"
            "  --out CERTFILE     the certificate file to write\n"
            "  --days N           how long the certificate is valid (default %u, at most %u;\n"
            "                     never past the root's end)\n"
            "  --table T          a catalog table the researcher may query (repeat for more)\n"
            "  --column T.C       a column the researcher may use (repeat for more)\n"
            "  --study S          a study name the researcher may use (repeat for more)\n"
            "  --max-epsilon E    the largest differential-privacy epsilon a plan may ask for\n"
            "                     (0 to %g; default %g when a scope is given)\n\n"
            "A list left out means any. With no scope option, the certificate allows any\n"
            "table, column, study and epsilon (each owner's consent policy still applies).\n",
            AU_RESEARCHER_DAYS, AU_DAYS_MAX, AU_EPSILON_MAX, AU_EPSILON_MAX);
}

static bool listed(const char *const *list, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i], s) == 0)
            return true;
    return false;
}

/* Add s to a list once; -1 (reported) when the list is full. */
static int add(const struct au_env *env, const char *opt, const char **list, size_t *n,
               const char *s)
{
    if (listed(list, *n, s))
        return 0;
    if (*n >= AU_SCOPE_ITEMS_MAX) {
        au_usage_error(env, CMD, "%s: at most %u of them", opt, AU_SCOPE_ITEMS_MAX);
        return -1;
    }
    list[(*n)++] = s;
    return 0;
}

/* A "table.column" of the catalog, within the --table list if there is one. */
static int check_column(const struct au_env *env, const char *text, const char *const *tables,
                        size_t n_tables)
{
    char table[ITEM_MAX];
    const char *dot = strchr(text, '.');
    const struct qr_table *t;
    size_t tl;

    if (dot == NULL || dot == text || dot[1] == '\0' || strchr(dot + 1, '.') != NULL ||
        (tl = (size_t)(dot - text)) >= sizeof table)
        return au_usage_error(env, CMD, "--column: expected TABLE.COLUMN, not '%.70s'", text);
    memcpy(table, text, tl);
    table[tl] = '\0';
    t = qr_catalog_find(table);
    if (t == NULL)
        return au_usage_error(env, CMD, "--column %.70s: the catalog has no table '%.40s'", text,
                              table);
    if (qr_catalog_column(t, dot + 1) < 0)
        return au_usage_error(env, CMD,
                              "--column %.70s: the catalog table %s has no column '%.40s'", text,
                              t->name, dot + 1);
    if (n_tables > 0 && !listed(tables, n_tables, table))
        return au_usage_error(env, CMD, "--column %.70s: its table is not among the --table given",
                              text);
    return AU_OK;
}

/* ", "-separated, or "any". */
static void put_list(FILE *f, const char *const *list, size_t n)
{
    if (n == 0)
        fputs("any", f);
    for (size_t i = 0; i < n; i++) {
        fputs(i > 0 ? ", " : "", f);
        sh_put(f, list[i]);
    }
}

int au_certify_researcher(int argc, char **argv, const struct au_env *env)
{
    struct au_certify_args args = {NULL, NULL, NULL, NULL};
    const char *eps_text = NULL;
    const char *tables[AU_SCOPE_ITEMS_MAX], *columns[AU_SCOPE_ITEMS_MAX],
        *studies[AU_SCOPE_ITEMS_MAX], *value;
    char id[AU_ID_TEXT], from[AU_TIME_TEXT], to[AU_TIME_TEXT];
    struct au_authority *a = NULL;
    struct qr_cert_request req;
    struct qr_scope scope;
    uint8_t *csr = NULL, *cert = NULL, *file = NULL;
    size_t n_tables = 0, n_columns = 0, n_studies = 0, csr_len = 0, cert_len = 0, file_len = 0,
           body_len, i;
    uint64_t days = AU_RESEARCHER_DAYS;
    double epsilon = AU_EPSILON_MAX;
    int64_t not_before, not_after;
    bool cut = false, has_scope;
    int rc, m;

    for (int j = 1; j < argc; j++) {
        if (au_is_help(argv[j])) {
            help(env->out);
            return AU_OK;
        }
        if ((m = au_opt(env, CMD, argc, argv, &j, "--table", &value)) != 0) {
            if (m < 0)
                return AU_USAGE;
            if (qr_catalog_find(value) == NULL)
                return au_usage_error(env, CMD,
                                      "--table: the catalog has no table '%.40s' (cohort-querier "
                                      "catalog lists them)",
                                      value);
            if (add(env, "--table", tables, &n_tables, value) != 0)
                return AU_USAGE;
            continue;
        }
        if ((m = au_opt(env, CMD, argc, argv, &j, "--column", &value)) != 0) {
            if (m < 0 || add(env, "--column", columns, &n_columns, value) != 0)
                return AU_USAGE;
            continue;
        }
        if ((m = au_opt(env, CMD, argc, argv, &j, "--study", &value)) != 0) {
            if (m < 0)
                return AU_USAGE;
            if (!sh_name_ok(value, AU_STUDY_MAX))
                return au_usage_error(env, CMD,
                                      "--study: 1 to %u bytes of UTF-8 text without control "
                                      "characters",
                                      AU_STUDY_MAX);
            if (add(env, "--study", studies, &n_studies, value) != 0)
                return AU_USAGE;
            continue;
        }
        if ((m = au_certify_opt(env, CMD, argc, argv, &j, &args)) != 0 ||
            (m = au_opt(env, CMD, argc, argv, &j, "--max-epsilon", &eps_text)) != 0) {
            if (m < 0)
                return AU_USAGE;
            continue;
        }
        return au_usage_error(env, CMD, "unexpected argument '%.60s'", argv[j]);
    }
    if ((rc = au_certify_check(env, CMD, &args, "CERTFILE", &days)) != AU_OK)
        return rc;
    if (eps_text != NULL &&
        au_double(env, CMD, "--max-epsilon", eps_text, 0, AU_EPSILON_MAX, &epsilon) != 0)
        return AU_USAGE;
    /* Columns last: they are checked against the tables given, in any order. */
    for (i = 0; i < n_columns; i++)
        if ((rc = check_column(env, columns[i], tables, n_tables)) != AU_OK)
            return rc;
    has_scope = n_tables > 0 || n_columns > 0 || n_studies > 0 || eps_text != NULL;
    memset(&scope, 0, sizeof scope);
    scope.tables = tables;
    scope.n_tables = n_tables;
    scope.columns = columns;
    scope.n_columns = n_columns;
    scope.studies = studies;
    scope.n_studies = n_studies;
    scope.max_epsilon = epsilon;
    if ((rc = au_check_new(env, CMD, args.out)) != AU_OK)
        return rc;

    if ((rc = au_authority_load(env, CMD, args.dir, &a)) != AU_OK)
        return rc;
    if ((rc = au_cert_window(env, CMD, a, days, &not_before, &not_after, &cut)) != AU_OK)
        goto cleanup;
    if ((rc = au_csr_read(env, CMD, args.csr, &req, &csr, &csr_len)) != AU_OK)
        goto cleanup;
    rc = qr_cert_issue(&cert, &cert_len, &a->id, COHORT__ROLE__ROLE_RESEARCHER, req.subject,
                       req.sign_pk, req.box_pk, not_before, not_after, has_scope ? &scope : NULL);
    if (rc != 0) {
        rc = au_fail(env, AU_DATA, CMD, "cannot certify the researcher: %s", qr_strerror(rc));
        goto cleanup;
    }
    body_len = au_cert_body_len(cert, cert_len);
    if (body_len == 0 || body_len > AU_CERT_BODY_MAX) {
        rc = au_usage_error(env, CMD,
                            "the scope makes a certificate of %zu bytes, more than the %u a token "
                            "reads: name fewer tables, columns or studies",
                            body_len, AU_CERT_BODY_MAX);
        goto cleanup;
    }
    {
        const uint8_t *certs[] = {cert, a->root};
        const size_t lens[] = {cert_len, a->root_len};
        if (au_chain_pack(&file, &file_len, certs, lens, 2) != 0) {
            rc = au_fail(env, AU_IO, CMD, "out of memory");
            goto cleanup;
        }
    }
    if ((rc = au_write(env, CMD, args.out, file, file_len, 0644)) != AU_OK)
        goto cleanup;

    au_id(id, req.sign_pk);
    au_time(from, not_before);
    au_time(to, not_after);
    fprintf(env->out, "certified the researcher ");
    sh_put(env->out, req.subject);
    fprintf(env->out, "\n  key id:        %s\n  valid:         %s to %s%s\n  scope:         ", id,
            from, to, cut ? " (the root's end)" : "");
    if (!has_scope) {
        fprintf(env->out, "none (any table, column, study and epsilon)");
    } else {
        fprintf(env->out, "tables ");
        put_list(env->out, tables, n_tables);
        fprintf(env->out, "; columns ");
        put_list(env->out, columns, n_columns);
        fprintf(env->out, "; studies ");
        put_list(env->out, studies, n_studies);
        fprintf(env->out, "; epsilon at most %g", epsilon);
    }
    fprintf(env->out, "\n  certificate:   ");
    sh_put(env->out, args.out);
    fprintf(env->out, " (for the researcher: the certificate, then this root)\n");
    rc = AU_OK;

cleanup:
    free(file);
    free(cert);
    free(csr);
    au_authority_free(a);
    return rc;
}
