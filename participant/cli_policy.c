/*
 * cohort-participant policy: the owner's consent policy.
 *
 * `policy show` prints the policy in force. `policy set` replaces the
 * whole policy with the one its options describe (an option not given is
 * the default: no table may be queried, any authority the token trusts,
 * any certified researcher, any study, no thresholds of the owner's own,
 * no differential privacy required, no privacy budget), then prints it as
 * the token now holds it. The token checks every plan against it and
 * writes what it decided to the audit log.
 */
#include <stdlib.h>
#include <string.h>

#include "participant/cli.h"
#include "querier/querier.h"

#define CMD "policy"

static void help(FILE *f)
{
    cli_usage(f, CMD);
    fprintf(f,
            "\n" CLI_PROG " policy show --dir DIR\n"
            "  prints the consent policy of the token in DIR\n\n" CLI_PROG
            " policy set --dir DIR [OPTIONS]\n"
            "  replaces the whole policy with this one, then prints it:\n"
            "  --allow-table T | T.COLUMN   a table (all its columns) or one column studies may\n"
            "                               query; repeat for more. None: nothing may be queried\n"
            "  --allow-study NAME           only these studies (default: any)\n"
            "  --allow-researcher HEX       only researchers with these signing keys (default:\n"
            "                               any researcher an authority certified)\n"
            "  --allow-authority HEX        only researchers certified by these root\n"
            "                               authorities (default: any the token trusts)\n"
            "  --min-participants N         refuse studies that ask for fewer participants\n"
            "  --min-group-size N           refuse studies with smaller groups\n"
            "  --require-dp                 refuse studies without differential privacy\n"
            "  --epsilon-per-study X        privacy budget of each study (default 0: no study\n"
            "                               with differential privacy)\n"
            "  --epsilon-total X            privacy budget over all studies\n");
}

static void keys(FILE *f, const char *label, size_t n, const uint8_t (*k)[PT_KEY_LEN],
                 const char *none)
{
    char hex[2 * PT_KEY_LEN + 1];

    fprintf(f, "  %-22s", label);
    if (n == 0)
        fprintf(f, "%s\n", none);
    for (size_t i = 0; i < n; i++) {
        cli_hex(hex, k[i], PT_KEY_LEN);
        fprintf(f, "%s%s\n", i ? "                        " : "", hex);
    }
}

static void names(FILE *f, const char *label, size_t n, const char *base, size_t stride,
                  const char *none)
{
    fprintf(f, "  %-22s", label);
    if (n == 0)
        fputs(none, f);
    for (size_t i = 0; i < n; i++) {
        fputs(i ? ", " : "", f);
        cli_put(f, base + i * stride);
    }
    fputc('\n', f);
}

static void show(FILE *f, const struct pt_policy *p)
{
    char when[PT_TIMESTAMP_TEXT];

    if (p->set_at == 0 && p->n_tables == 0) {
        fprintf(f, "no consent policy set: no study may query this token\n");
        return;
    }
    pt_timestamp_format(when, p->set_at);
    fprintf(f, "consent policy, set %s\n", when);
    names(f, "tables:", p->n_tables, p->tables[0], sizeof p->tables[0],
          "none (no study may query anything)");
    names(f, "studies:", p->n_studies, p->studies[0], sizeof p->studies[0], "any");
    keys(f, "researchers:", p->n_researchers, p->researchers, "any certified researcher");
    keys(f, "authorities:", p->n_authorities, p->authorities, "any the token trusts");
    fprintf(f, "  %-22s%u\n", "min participants:", p->min_participants);
    fprintf(f, "  %-22s%u\n", "min group size:", p->min_group_size);
    fprintf(f, "  %-22s%s\n", "differential privacy:", p->require_dp ? "required" : "optional");
    fprintf(f, "  %-22s%g per study, %g in total\n", "epsilon budget:", p->epsilon_per_study,
            p->epsilon_total);
}

/* "table" or "table.column"; a catalog table's column must exist. 0 or -1 (reported). */
static int check_table_item(const struct cli_env *env, const char *item)
{
    char table[PT_POLICY_ITEM_MAX + 1];
    const char *dot = strchr(item, '.');
    const struct qr_table *t;
    size_t n = dot ? (size_t)(dot - item) : strlen(item);

    if (strlen(item) > PT_POLICY_ITEM_MAX || n > PT_NAME_MAX)
        goto bad;
    memcpy(table, item, n);
    table[n] = '\0';
    if (!pt_name_valid(table) || (dot != NULL && !pt_name_valid(dot + 1)))
        goto bad;
    t = qr_catalog_find(table);
    if (t != NULL && dot != NULL && qr_catalog_column(t, dot + 1) < 0) {
        cli_usage_error(env, CMD, "--allow-table: the catalog table %s has no column %.40s",
                        t->name, dot + 1);
        return -1;
    }
    return 0;
bad:
    cli_usage_error(env, CMD, "--allow-table: expected TABLE or TABLE.COLUMN, not '%.70s'", item);
    return -1;
}

static bool study_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > PT_STUDY_MAX || !pt_utf8_valid((const uint8_t *)s, n, NULL))
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

static int add_key(const struct cli_env *env, const char *opt, const char *v,
                   uint8_t (*k)[PT_KEY_LEN], size_t *n)
{
    if (*n == PT_POLICY_KEYS_MAX) {
        cli_usage_error(env, CMD, "%s: at most %u keys", opt, PT_POLICY_KEYS_MAX);
        return -1;
    }
    if (cli_hex_key(env, CMD, opt, v, k[*n]) != 0)
        return -1;
    (*n)++;
    return 0;
}

/* Parse `policy set`'s options into p. CLI_OK or CLI_USAGE (reported). */
static int parse_set(const struct cli_env *env, int argc, char **argv, const char **dir,
                     struct pt_policy *p)
{
    const char *v;
    uint64_t u;
    int m;

    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--require-dp") == 0) {
            p->require_dp = true;
        } else if ((m = cli_opt(env, CMD, argc, argv, &i, "--dir", dir)) != 0) {
            if (m < 0)
                return CLI_USAGE;
        } else if ((m = cli_opt(env, CMD, argc, argv, &i, "--allow-authority", &v)) != 0) {
            if (m < 0 || add_key(env, "--allow-authority", v, p->authorities, &p->n_authorities))
                return CLI_USAGE;
        } else if ((m = cli_opt(env, CMD, argc, argv, &i, "--allow-researcher", &v)) != 0) {
            if (m < 0 || add_key(env, "--allow-researcher", v, p->researchers, &p->n_researchers))
                return CLI_USAGE;
        } else if ((m = cli_opt(env, CMD, argc, argv, &i, "--allow-study", &v)) != 0) {
            if (m < 0)
                return CLI_USAGE;
            if (!study_ok(v))
                return cli_usage_error(env, CMD,
                                       "--allow-study: 1 to %u bytes of text without "
                                       "control characters",
                                       PT_STUDY_MAX);
            if (p->n_studies == PT_POLICY_NAMES_MAX)
                return cli_usage_error(env, CMD, "at most %u studies", PT_POLICY_NAMES_MAX);
            strcpy(p->studies[p->n_studies++], v);
        } else if ((m = cli_opt(env, CMD, argc, argv, &i, "--allow-table", &v)) != 0) {
            if (m < 0 || check_table_item(env, v) != 0)
                return CLI_USAGE;
            if (p->n_tables == PT_POLICY_NAMES_MAX)
                return cli_usage_error(env, CMD, "at most %u tables and columns",
                                       PT_POLICY_NAMES_MAX);
            strcpy(p->tables[p->n_tables++], v);
        } else if ((m = cli_opt(env, CMD, argc, argv, &i, "--min-participants", &v)) != 0) {
            if (m < 0 || cli_u64(env, CMD, "--min-participants", v, 0, CLI_THRESHOLD_MAX, &u) != 0)
                return CLI_USAGE;
            p->min_participants = (uint32_t)u;
        } else if ((m = cli_opt(env, CMD, argc, argv, &i, "--min-group-size", &v)) != 0) {
            if (m < 0 || cli_u64(env, CMD, "--min-group-size", v, 0, CLI_THRESHOLD_MAX, &u) != 0)
                return CLI_USAGE;
            p->min_group_size = (uint32_t)u;
        } else if ((m = cli_opt(env, CMD, argc, argv, &i, "--epsilon-per-study", &v)) != 0) {
            if (m < 0 || cli_double(env, CMD, "--epsilon-per-study", v, 0, CLI_EPSILON_MAX,
                                    &p->epsilon_per_study) != 0)
                return CLI_USAGE;
        } else if ((m = cli_opt(env, CMD, argc, argv, &i, "--epsilon-total", &v)) != 0) {
            if (m < 0 || cli_double(env, CMD, "--epsilon-total", v, 0, CLI_EPSILON_MAX,
                                    &p->epsilon_total) != 0)
                return CLI_USAGE;
        } else {
            return cli_usage_error(env, CMD, "unexpected argument '%.60s'", argv[i]);
        }
    }
    return CLI_OK;
}

int cli_policy(int argc, char **argv, const struct cli_env *env)
{
    const char *dir = NULL;
    struct pt_policy *p = NULL;
    struct cli_session s;
    bool set;
    int rc;

    memset(&s, 0, sizeof s);
    if (argc < 2 || cli_is_help(argv[1])) {
        help(argc < 2 ? env->err : env->out);
        return argc < 2 ? CLI_USAGE : CLI_OK;
    }
    if (strcmp(argv[1], "show") != 0 && strcmp(argv[1], "set") != 0)
        return cli_usage_error(env, CMD, "show or set, not '%.30s'", argv[1]);
    set = strcmp(argv[1], "set") == 0;
    for (int i = 2; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            help(env->out);
            return CLI_OK;
        }
    }
    p = calloc(1, sizeof *p);
    if (p == NULL)
        return cli_fail(env, CLI_TOKEN, CMD, "out of memory");
    if (set) {
        rc = parse_set(env, argc, argv, &dir, p);
    } else {
        /* after "show"; --help was answered above */
        const struct cli_arg args[] = {{"--dir", &dir, NULL, false}};
        rc = cli_args(env, CMD, argc - 1, argv + 1, help, args, CLI_NARGS(args));
    }
    if (rc != CLI_OK)
        goto out;
    if (dir == NULL) {
        rc = cli_usage_error(env, CMD, "give the token's directory with --dir DIR");
        goto out;
    }
    if ((rc = cli_open(env, CMD, dir, false, &s)) != CLI_OK)
        goto out;
    if (set && (rc = pt_owner_policy_set(&s.o, p)) != 0) {
        rc = cli_owner_fail(env, CMD, &s.o, rc, "the policy was not changed");
        goto out;
    }
    rc = pt_owner_policy_get(&s.o, p);
    if (rc == PT_ERR_TOKEN && s.o.token_status == TK_ERR_NOT_FOUND && !set) {
        memset(p, 0, sizeof *p); /* a token that never had a policy may say so */
        rc = 0;
    }
    if (rc != 0) {
        rc = cli_owner_fail(env, CMD, &s.o, rc, "cannot read the policy");
        goto out;
    }
    show(env->out, p);
    rc = CLI_OK;
out:
    cli_close(env, &s);
    free(p);
    return rc;
}
