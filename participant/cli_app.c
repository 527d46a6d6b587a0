/*
 * cohort-participant app: the credentials of the owner's apps.
 *
 *   app add    --dir DIR --name NAME --rule RULE [--rule RULE ...]
 *              [--expires WHEN] [--owner] [--quiet]
 *   app list   --dir DIR [--json]
 *   app revoke --dir DIR --id ID
 *
 * A credential is what an app presents to the agent's HTTP API
 * ("Authorization: Bearer <96 hex digits>"); the token keeps only a keyed
 * hash of its secret and evaluates its rules on every request (default
 * deny). `add` prints the credential this once: it is the only copy, and
 * it goes to stdout only (never to stderr or a log). --owner makes a
 * credential for the owner's own endpoints (every document, the
 * credentials, shares and audit log). Revoking one revokes every
 * credential delegated from it, from the next request on.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "participant/cli.h"
#include "participant/pt_doc.h"

#define CMD "app"
#define LIST_MAX 256u /* credentials listed (about 34 KiB each) */

static void help(FILE *f)
{
    cli_usage(f, CMD);
    fprintf(f, "\nThe credentials of the owner's apps, kept by the token in DIR.\n"
               "  app add --dir DIR --name NAME --rule RULE [--rule RULE ...]\n"
               "          [--expires WHEN] [--owner] [--quiet]\n"
               "          issue a credential, printed this once (with --quiet, alone)\n"
               "          RULE: TYPE:VERBS[:FIELD=V1,V2,...], e.g. bank.*:GET,POST or\n"
               "          health.record:GET:author=Dr Kaur; VERBS from GET, POST, PUT,\n"
               "          DELETE, ALL; FIELD author, subject or tag\n"
               "          WHEN: YYYY-MM-DD, YYYY-MM-DDTHH:MM:SS, 30d, 12h, or never\n"
               "          --owner: the owner's own credential (no rules needed)\n"
               "  app list --dir DIR [--json]\n"
               "  app revoke --dir DIR --id ID\n"
               "          revoke it, and every credential delegated from it\n");
}

static int app_add(int argc, char **argv, const struct cli_env *env)
{
    const char *dir = NULL, *name = NULL, *expires_text = NULL;
    struct pt_rule *rules;
    uint32_t n_rules = 0;
    struct pt_cred cred;
    struct pt_cred_info info;
    struct pt_status st;
    struct cli_session s;
    char text[PT_CRED_TEXT_LEN + 1], id[33], when[PT_TIMESTAMP_TEXT];
    int64_t expires = 0;
    bool owner = false, quiet = false;
    int rc = CLI_USAGE, m;

    if ((rules = calloc(PT_RULES_MAX, sizeof *rules)) == NULL)
        return cli_fail(env, CLI_TOKEN, CMD, "out of memory");
    for (int i = 1; i < argc; i++) {
        const char *rule = NULL;
        if (cli_is_help(argv[i])) {
            help(env->out);
            rc = CLI_OK;
            goto out;
        }
        if (strcmp(argv[i], "--owner") == 0 || strcmp(argv[i], "--quiet") == 0) {
            *(argv[i][2] == 'o' ? &owner : &quiet) = true;
            continue;
        }
        if ((m = cli_opt(env, CMD, argc, argv, &i, "--dir", &dir)) != 0 ||
            (m = cli_opt(env, CMD, argc, argv, &i, "--name", &name)) != 0 ||
            (m = cli_opt(env, CMD, argc, argv, &i, "--expires", &expires_text)) != 0) {
            if (m < 0)
                goto out;
            continue;
        }
        if ((m = cli_opt(env, CMD, argc, argv, &i, "--rule", &rule)) != 0) {
            if (m < 0)
                goto out;
            if (n_rules == PT_RULES_MAX) {
                cli_usage_error(env, CMD, "at most %u rules", PT_RULES_MAX);
                goto out;
            }
            if (cli_rule(env, CMD, "--rule", rule, true, &rules[n_rules]) != 0)
                goto out;
            n_rules++;
            continue;
        }
        cli_usage_error(env, CMD, "unexpected argument '%.60s'", argv[i]);
        goto out;
    }
    if (dir == NULL || name == NULL) {
        cli_usage_error(env, CMD, "app add needs --dir DIR and --name NAME");
        goto out;
    }
    if (name[0] == '\0' || strlen(name) > PT_CRED_NAME_MAX) {
        cli_usage_error(env, CMD, "--name: 1 to %u bytes", PT_CRED_NAME_MAX);
        goto out;
    }
    if (n_rules == 0 && !owner) {
        cli_usage_error(env, CMD, "give the app's rules with --rule (or --owner)");
        goto out;
    }
    if (expires_text != NULL && cli_when(env, CMD, "--expires", expires_text, &expires) != 0)
        goto out;
    if ((rc = cli_open(env, CMD, dir, false, &s)) != CLI_OK)
        goto out;
    rc = pt_cred_issue(&s.o.link, env->now, NULL, name, rules, n_rules, expires, owner, &cred,
                       &info, &st);
    cli_close(env, &s);
    if (rc != 0) {
        rc = cli_doc_fail(env, CMD, rc, &st, "cannot issue the credential");
        goto out;
    }
    pt_cred_format(&cred, text);
    sodium_memzero(&cred, sizeof cred);
    if (quiet) {
        fprintf(env->out, "%s\n", text);
    } else {
        cli_hex(id, info.id, 16);
        cli_when_text(when, info.expires);
        fprintf(env->out, "issued %s credential '", info.owner ? "an owner" : "a");
        cli_put(env->out, info.name);
        fprintf(env->out,
                "' (id %s, expires %s); the app sends it as\n"
                "  Authorization: Bearer %s\n"
                "(shown this once: the token keeps only a hash of it)\n",
                id, when, text);
    }
    sodium_memzero(text, sizeof text);
    rc = CLI_OK;
out:
    free(rules);
    return rc;
}

static int app_list(int argc, char **argv, const struct cli_env *env)
{
    const char *dir = NULL;
    struct pt_cred_info *infos;
    struct pt_status st;
    struct cli_session s;
    uint32_t n = 0;
    bool json = false;
    int rc;

    if ((rc = cli_dir_json(env, CMD, argc, argv, help, &dir, &json)) != CLI_OK || dir == NULL)
        return rc;
    if ((infos = calloc(LIST_MAX, sizeof *infos)) == NULL)
        return cli_fail(env, CLI_TOKEN, CMD, "out of memory");
    if ((rc = cli_open(env, CMD, dir, false, &s)) != CLI_OK) {
        free(infos);
        return rc;
    }
    rc = pt_cred_list(&s.o.link, env->now, NULL, infos, LIST_MAX, &n, &st);
    cli_close(env, &s);
    if (rc != 0) {
        free(infos);
        return cli_doc_fail(env, CMD, rc, &st, "cannot list the credentials");
    }
    if (!json && n == 0)
        fprintf(env->out, "no credentials\n");
    if (!json && n > 0)
        fprintf(env->out, "%-32s  %-16s  %-7s  %-20s  %-32s  %s\n", "ID", "NAME", "STATE",
                "EXPIRES", "DELEGATED FROM", "RULES");
    for (uint32_t i = 0; i < n; i++) {
        const struct pt_cred_info *c = &infos[i];
        char id[33], parent[33] = "-", when[PT_TIMESTAMP_TEXT], rule[1024],
                     buf[PT_CRED_NAME_MAX * 4 + 1];
        const char *state = c->revoked                                    ? "revoked"
                            : (c->expires != 0 && c->expires <= env->now) ? "expired"
                                                                          : "valid";
        cli_hex(id, c->id, 16);
        if (c->has_parent)
            cli_hex(parent, c->parent, 16);
        cli_when_text(when, c->expires);
        if (json) {
            fprintf(env->out, "{\"id\":\"%s\",\"name\":", id);
            cli_json_string(env->out, c->name, strlen(c->name));
            fprintf(env->out,
                    ",\"owner\":%s,\"revoked\":%s,\"expires\":%lld,\"created\":%lld,\"parent\":",
                    c->owner ? "true" : "false", c->revoked ? "true" : "false",
                    (long long)c->expires, (long long)c->created);
            if (c->has_parent)
                fprintf(env->out, "\"%s\"", parent);
            else
                fprintf(env->out, "null");
            fprintf(env->out, ",\"rules\":[");
            for (uint32_t k = 0; k < c->n_rules; k++) {
                cli_rule_text(rule, sizeof rule, &c->rules[k]);
                if (k)
                    fputc(',', env->out);
                cli_json_string(env->out, rule, strlen(rule));
            }
            fprintf(env->out, "]}\n");
            continue;
        }
        fprintf(env->out, "%s  ", id);
        cli_escape(buf, sizeof buf, c->name, strlen(c->name));
        cli_pad(env->out, buf, 16);
        fprintf(env->out, "  %-7s  %-20s  %-32s  ", state, when, parent);
        if (c->owner)
            fputs("(owner: everything)", env->out);
        for (uint32_t k = 0; k < c->n_rules; k++) {
            cli_rule_text(rule, sizeof rule, &c->rules[k]);
            if (k)
                fputs("  ", env->out);
            cli_put(env->out, rule);
        }
        fputc('\n', env->out);
    }
    free(infos);
    return CLI_OK;
}

static int app_revoke(int argc, char **argv, const struct cli_env *env)
{
    const char *dir = NULL, *id_text = NULL;
    struct pt_status st;
    struct cli_session s;
    uint8_t id[16];
    int rc;

    const struct cli_arg args[] = {{"--dir", &dir, NULL, false}, {"--id", &id_text, NULL, false}};
    if ((rc = cli_args(env, CMD, argc, argv, help, args, CLI_NARGS(args))) != CLI_OK)
        return rc == CLI_HELPED ? CLI_OK : rc;
    if (dir == NULL || id_text == NULL)
        return cli_usage_error(env, CMD, "app revoke needs --dir DIR and --id ID");
    if (cli_id16(env, CMD, "--id", id_text, id) != 0)
        return CLI_USAGE;
    if ((rc = cli_open(env, CMD, dir, false, &s)) != CLI_OK)
        return rc;
    rc = pt_cred_revoke(&s.o.link, env->now, NULL, id, &st);
    cli_close(env, &s);
    if (rc != 0)
        return cli_doc_fail(env, CMD, rc, &st, "cannot revoke the credential");
    fprintf(env->out, "revoked credential %s and every credential delegated from it\n", id_text);
    return CLI_OK;
}

int cli_app(int argc, char **argv, const struct cli_env *env)
{
    if (argc < 2)
        return cli_usage_error(env, CMD, "which: add, list or revoke?");
    if (cli_is_help(argv[1])) {
        help(env->out);
        return CLI_OK;
    }
    if (strcmp(argv[1], "add") == 0)
        return app_add(argc - 1, argv + 1, env);
    if (strcmp(argv[1], "list") == 0)
        return app_list(argc - 1, argv + 1, env);
    if (strcmp(argv[1], "revoke") == 0)
        return app_revoke(argc - 1, argv + 1, env);
    return cli_usage_error(env, CMD, "unknown subcommand '%.40s' (add, list or revoke)", argv[1]);
}
