/*
 * cohort-participant audit: the token's audit log, for the owner.
 *
 * Every plan the token accepted or refused is a line: when, which study
 * and researcher, which table, what it cost of the privacy budget, and
 * for a refusal the reason the token gave. Owner actions the token logs
 * (a policy change) appear too, by their event name. As a table for a
 * terminal, or with --json as JSON Lines with every field. Names come from
 * researchers' certificates and plans: they are escaped for the terminal,
 * and quoted for JSON.
 */
#include <math.h>
#include <string.h>

#include "participant/cli.h"

#define CMD "audit"
#define AUDIT_LIMIT_MAX 1000000000000ull

struct shown {
    FILE *out;
    bool json;
    bool header_done;
};

static void json_field(FILE *f, const char *name, const char *value)
{
    fprintf(f, ",\"%s\":", name);
    cli_json_string(f, value, strlen(value));
}

static int on_entry(void *ctx, const struct pt_audit_entry *e)
{
    struct shown *s = ctx;
    char when[PT_TIMESTAMP_TEXT], hex[2 * 32 + 1], eps[32], buf[PT_REASON_MAX * 4 + 1];
    const char *event = e->event[0] ? e->event : "collect";

    pt_timestamp_format(when, e->time);
    if (isfinite(e->epsilon))
        snprintf(eps, sizeof eps, "%g", e->epsilon);
    else
        snprintf(eps, sizeof eps, "?");
    if (s->json) {
        fprintf(s->out, "{\"seq\":%llu,\"time\":\"%s\"", (unsigned long long)e->seq, when);
        json_field(s->out, "event", event);
        fprintf(s->out, ",\"accepted\":%s,\"status\":%d", e->accepted ? "true" : "false",
                e->status);
        json_field(s->out, "status_name", e->status ? tk_errname(e->status) : "");
        json_field(s->out, "study", e->study);
        json_field(s->out, "researcher", e->researcher);
        cli_hex(hex, e->researcher_pk, e->has_researcher_pk ? PT_KEY_LEN : 0);
        json_field(s->out, "researcher_pk", hex);
        json_field(s->out, "table", e->table);
        if (isfinite(e->epsilon))
            fprintf(s->out, ",\"epsilon\":%.17g", e->epsilon);
        else
            fprintf(s->out, ",\"epsilon\":null");
        json_field(s->out, "reason", e->reason);
        cli_hex(hex, e->query_id, e->query_id_len);
        json_field(s->out, "query_id", hex);
        if (e->has_object) { /* the personal cloud's events */
            cli_hex(hex, e->object, sizeof e->object);
            json_field(s->out, "object", hex);
        }
        if (e->has_cred) {
            cli_hex(hex, e->cred_id, sizeof e->cred_id);
            json_field(s->out, "credential", hex);
            json_field(s->out, "app", e->app);
        }
        json_field(s->out, "sql", e->sql);
        fprintf(s->out, "}\n");
        return 0;
    }
    if (!s->header_done) {
        fprintf(s->out, "%5s  %-20s  %-8s  %-8s  %-16s  %-16s  %-16s  %7s  %s\n", "SEQ", "TIME",
                "EVENT", "RESULT", "STUDY", "RESEARCHER", "TABLE", "EPSILON", "REASON");
        s->header_done = true;
    }
    fprintf(s->out, "%5llu  %s  ", (unsigned long long)e->seq, when);
    cli_escape(buf, sizeof buf, event, strlen(event));
    cli_pad(s->out, buf, 8);
    fprintf(s->out, "  %-8s  ", e->accepted ? "accepted" : "refused");
    if (e->has_object || e->has_cred || strchr(event, '.') != NULL) {
        /* The personal cloud's events: what, and who asked. */
        cli_hex(hex, e->object, e->has_object ? sizeof e->object : 0);
        fprintf(s->out, "%s  by ", hex[0] ? hex : "-");
        if (e->has_cred) {
            cli_escape(buf, sizeof buf, e->app, strlen(e->app));
            cli_hex(hex, e->cred_id, sizeof e->cred_id);
            fprintf(s->out, "%s (credential %s)", buf[0] ? buf : "?", hex);
        } else {
            fputs("the owner (token link)", s->out);
        }
        if (!e->accepted) {
            fputs(": ", s->out);
            fputs(e->status ? tk_strerror(e->status) : "refused", s->out);
        }
        fputc('\n', s->out);
        return 0;
    }
    cli_escape(buf, sizeof buf, e->study, strlen(e->study));
    cli_pad(s->out, buf[0] ? buf : "-", 16);
    fputs("  ", s->out);
    cli_escape(buf, sizeof buf, e->researcher, strlen(e->researcher));
    cli_pad(s->out, buf[0] ? buf : "-", 16);
    fputs("  ", s->out);
    cli_escape(buf, sizeof buf, e->table, strlen(e->table));
    cli_pad(s->out, buf[0] ? buf : "-", 16);
    fprintf(s->out, "  %7s  ", eps);
    if (e->reason[0]) {
        cli_escape(buf, sizeof buf, e->reason, strlen(e->reason));
        fputs(buf, s->out);
    } else if (!e->accepted && e->status) {
        fputs(tk_strerror(e->status), s->out);
    } else {
        fputs("-", s->out);
    }
    fputc('\n', s->out);
    return 0;
}

static void help(FILE *out)
{
    cli_usage(out, CMD);
    fprintf(out, "\nLists the audit log of the token in DIR: every study it accepted or "
                 "refused,\nwith what it spent of the privacy budget and why it refused.\n"
                 "  --after SEQ   the entries after this one\n"
                 "  --limit N     at most N entries\n"
                 "  --json        one JSON object per line, with every field\n");
}

int cli_audit(int argc, char **argv, const struct cli_env *env)
{
    const char *dir = NULL, *after_text = NULL, *limit_text = NULL;
    struct cli_session s;
    struct shown shown = {env->out, false, false};
    uint64_t after = 0, limit = 0, n = 0;
    int rc;

    const struct cli_arg args[] = {{"--json", NULL, &shown.json, false},
                                   {"--dir", &dir, NULL, false},
                                   {"--after", &after_text, NULL, false},
                                   {"--limit", &limit_text, NULL, false}};
    if ((rc = cli_args(env, CMD, argc, argv, help, args, CLI_NARGS(args))) != CLI_OK)
        return rc == CLI_HELPED ? CLI_OK : rc;
    if (dir == NULL)
        return cli_usage_error(env, CMD, "give the token's directory with --dir DIR");
    if (after_text != NULL && cli_u64(env, CMD, "--after", after_text, 0, UINT64_MAX - 1, &after))
        return CLI_USAGE;
    if (limit_text != NULL &&
        cli_u64(env, CMD, "--limit", limit_text, 1, AUDIT_LIMIT_MAX, &limit) != 0)
        return CLI_USAGE;
    if ((rc = cli_open(env, CMD, dir, false, &s)) != CLI_OK)
        return rc;
    rc = pt_owner_audit(&s.o, after, limit, on_entry, &shown, &n);
    cli_close(env, &s);
    if (rc != 0)
        return cli_owner_fail(env, CMD, &s.o, rc, "cannot read the audit log");
    if (!shown.json && n == 0)
        fprintf(env->out, "the audit log is empty%s\n", after ? " after that entry" : "");
    return CLI_OK;
}
