/*
 * cohort-participant: the command table, and what the commands share.
 *
 * Every argument is checked before the token is opened: numbers are
 * decimal digits within named bounds (no sign, no "1e3", no silent
 * wrap-around), keys are exactly 64 hex digits, names are names. Whatever
 * the token or a file gives back is escaped before it reaches a terminal:
 * a study name or a researcher's subject comes from a stranger, and a
 * control sequence in it must not rewrite the owner's screen.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "participant/cli.h"
#include "participant/pt_doc.h"
#include "participant/pt_token.h"
#include "shell/shell.h"

_Static_assert(CLI_U64_DIGITS == SH_U64_DIGITS, "an id of --id is a number cli_u64 reads");

struct command {
    const char *name;
    const char *args;
    const char *help;
    int (*run)(int argc, char **argv, const struct cli_env *env);
};

static const struct command commands[] = {
    {"init", "--dir DIR [--subject NAME]",
     "create a token in DIR and write its certificate request DIR/" CLI_CSR_FILE, cli_init},
    {"provision", "--dir DIR BUNDLE",
     "install the bundle an authority made from the request (once)", cli_provision},
    {"import", "--dir DIR --table T [--format csv|jsonl] [--schema \"COLUMNS\"] FILE",
     "load a CSV or JSON Lines file into table T, all or nothing", cli_import},
    {"tables", "--dir DIR", "list the token's tables, their rows and columns", cli_tables},
    {"rows", "--dir DIR --table T [--limit N] [--csv]", "show a table's rows", cli_rows},
    {"delete", "--dir DIR --table T (--all | --id N[,N...] | --where \"CONDITION\")",
     "delete rows, erased from the token's flash", cli_delete},
    {"policy", "show --dir DIR | set --dir DIR [OPTIONS]",
     "show or replace the consent policy (policy set --help)", cli_policy},
    {"audit", "--dir DIR [--after SEQ] [--limit N] [--json]",
     "list the studies the token accepted or refused", cli_audit},
    {"compact", "--dir DIR", "rewrite the token's log with only its live records", cli_compact},
    {"run",
     "--connect URL [--ca FILE] [--server-name NAME] --dir DIR [--dir DIR ...] "
     "[--dirs-from FILE] [--quiet] [--max-backoff SECONDS] [--pace MS]",
     "take part in studies: an agent per token, connected to a querier service", cli_run},
    {"doc", "put|get|list|rm --dir DIR [--docs PATH] ...  (doc SUBCOMMAND --help)",
     "store, read, list and delete documents, encrypted by the token", cli_doc},
    {"app", "add|list|revoke --dir DIR ...  (app SUBCOMMAND --help)",
     "issue, list and revoke the credentials of the owner's apps", cli_app},
    {"share", "create|list|revoke|update|sync|accept --dir DIR ...  (share SUBCOMMAND --help)",
     "share documents with another person's token, and take their shares", cli_share},
    {"backup", "export --dir DIR --out FILE [--new-phrase]",
     "write an encrypted backup of the token, under a recovery phrase", cli_backup},
    {"recover", "--dir DIR [--phrase-file FILE] BACKUP",
     "restore a backup into a new token (made with init)", cli_recover},
    {"identity", "--dir DIR [--json]",
     "print the token's device certificate, for someone who shares with it", cli_identity},
    {"http", "--dir DIR [--docs PATH] [--listen 127.0.0.1:8088]",
     "serve the documents to apps: the local HTTP API, on loopback", cli_http},
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage_all(FILE *f)
{
    fprintf(f,
            "usage: " CLI_PROG " [--token SPEC] COMMAND [ARGS]   (" CLI_PROG " COMMAND --help)\n\n"
            "The owner's tools for a token, and the agent that takes part in studies with it.\n"
            "\ncommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\nThe token (--token SPEC, anywhere on the line; DIR is --dir's by default):\n"
               "  soft:DIR        a software token kept in the directory DIR\n"
               "  usb             the token on USB (vendor and product id 1209:c07b)\n"
               "  usb:VID:PID     the token on USB with other ids (hex)\n"
               "  emulator:PATH   a token emulator (cohort-tokend) on the local socket PATH\n"
               "--dir DIR is always the owner's directory on this computer: with a software\n"
               "token the token itself, with the others the documents, outbox and requests.\n");
}

void cli_usage(FILE *f, const char *cmd)
{
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(commands[i].name, cmd) == 0) {
            fprintf(f, "usage: " CLI_PROG " %s %s\n", cmd, commands[i].args);
            return;
        }
    }
    usage_all(f);
}

/*
 * Take --token SPEC out of argv (into e->token), checking it. CLI_OK, or
 * CLI_USAGE (reported). argv is rewritten in place; *argc shrinks.
 */
static int take_token(int *argc, char **argv, struct cli_env *e)
{
    struct pt_token_spec spec;
    char msg[CLI_ERR_MAX];
    int n = 1;

    for (int i = 1; i < *argc; i++) {
        const char *v = NULL;
        if (strcmp(argv[i], "--token") == 0) {
            if (i + 1 >= *argc)
                return cli_fail(e, CLI_USAGE, NULL, "--token needs a value");
            v = argv[++i];
        } else if (strncmp(argv[i], "--token=", 8) == 0) {
            v = argv[i] + 8;
        } else {
            argv[n++] = argv[i];
            continue;
        }
        if (e->token != NULL)
            return cli_fail(e, CLI_USAGE, NULL, "--token is given twice");
        if (pt_token_spec_parse(v, &spec, msg, sizeof msg) != PT_OK)
            return cli_fail(e, CLI_USAGE, NULL, "%s", msg);
        e->token = v;
    }
    argv[n] = NULL;
    *argc = n;
    return CLI_OK;
}

int cli_main(int argc, char **argv, const struct cli_env *env_in)
{
    struct cli_env e = *env_in;
    const struct cli_env *env = &e;

    e.token = NULL;
    if (take_token(&argc, argv, &e) != CLI_OK)
        return CLI_USAGE;
    if (argc < 2) {
        usage_all(env->err);
        return CLI_USAGE;
    }
    if (cli_is_help(argv[1]) || strcmp(argv[1], "help") == 0) {
        usage_all(env->out);
        return CLI_OK;
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1, env);
    fprintf(env->err, CLI_PROG ": unknown command '");
    cli_put(env->err, argv[1]);
    fprintf(env->err, "'\n");
    usage_all(env->err);
    return CLI_USAGE;
}

/* ------------------------------------------------------------- errors */

static void vsay(const struct cli_env *env, const char *cmd, const char *fmt, va_list ap)
{
    fprintf(env->err, CLI_PROG ": %s%s", cmd ? cmd : "", cmd ? ": " : "");
    vfprintf(env->err, fmt, ap);
    fputc('\n', env->err);
}

int cli_fail(const struct cli_env *env, int status, const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsay(env, cmd, fmt, ap);
    va_end(ap);
    return status;
}

int cli_fail_text(const struct cli_env *env, int status, const char *cmd, const char *before,
                  const char *text, const char *why)
{
    fprintf(env->err, CLI_PROG ": %s: %s", cmd, before);
    cli_put(env->err, text);
    if (why != NULL)
        fprintf(env->err, ": %s", why);
    fputc('\n', env->err);
    return status;
}

int cli_usage_error(const struct cli_env *env, const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsay(env, cmd, fmt, ap);
    va_end(ap);
    cli_usage(env->err, cmd);
    return CLI_USAGE;
}

/* ------------------------------------------------------------ options */

bool cli_is_help(const char *arg)
{
    return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0;
}

int cli_args(const struct cli_env *env, const char *cmd, int argc, char **argv,
             void (*help)(FILE *out), const struct cli_arg *args, size_t n)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        size_t k;
        int m = 0;

        if (cli_is_help(a)) {
            if (help != NULL)
                help(env->out);
            else
                cli_usage(env->out, cmd);
            return CLI_HELPED;
        }
        for (k = 0; k < n; k++) {
            const struct cli_arg *o = &args[k];
            if (o->name == NULL) {
                /* the operand, once: not an option, unless "-" is allowed */
                if (*o->value == NULL && (a[0] != '-' || (o->dash && a[1] == '\0'))) {
                    *o->value = a;
                    break;
                }
            } else if (o->flag != NULL) {
                if (strcmp(a, o->name) == 0) {
                    *o->flag = true;
                    break;
                }
            } else if ((m = cli_opt(env, cmd, argc, argv, &i, o->name, o->value)) != 0) {
                break;
            }
        }
        if (m < 0)
            return CLI_USAGE;
        if (k == n)
            return cli_usage_error(env, cmd, "unexpected argument '%.60s'", a);
    }
    return CLI_OK;
}

/* --dir DIR, and --json when json is not NULL; --help prints the usage
 * and about, or help(out) when about is NULL. */
static int dir_line(const struct cli_env *env, const char *cmd, int argc, char **argv,
                    void (*help)(FILE *out), const char *about, const char **dir, bool *json)
{
    const struct cli_arg args[] = {{"--dir", dir, NULL, false}, {"--json", NULL, json, false}};
    int rc;

    *dir = NULL;
    rc = cli_args(env, cmd, argc, argv, help, args, json != NULL ? 2 : 1);
    if (rc == CLI_HELPED) {
        if (about != NULL)
            fprintf(env->out, "\n%s\n", about);
        *dir = NULL;
        return CLI_OK;
    }
    if (rc != CLI_OK)
        return rc;
    if (*dir == NULL)
        return cli_usage_error(env, cmd, "give the token's directory with --dir DIR");
    return CLI_OK;
}

int cli_dir_only(const struct cli_env *env, const char *cmd, int argc, char **argv,
                 const char *about, const char **dir)
{
    return dir_line(env, cmd, argc, argv, NULL, about, dir, NULL);
}

int cli_dir_json(const struct cli_env *env, const char *cmd, int argc, char **argv,
                 void (*help)(FILE *out), const char **dir, bool *json)
{
    *json = false;
    return dir_line(env, cmd, argc, argv, help, NULL, dir, json);
}

int cli_opt(const struct cli_env *env, const char *cmd, int argc, char **argv, int *i,
            const char *name, const char **value)
{
    int m = sh_opt(argc, argv, i, name, value);

    if (m < 0)
        cli_usage_error(env, cmd, "%s needs a value", name);
    return m;
}

int cli_u64(const struct cli_env *env, const char *cmd, const char *opt, const char *text,
            uint64_t min, uint64_t max, uint64_t *out)
{
    if (sh_parse_u64(text, min, max, out) == 0)
        return 0;
    cli_usage_error(env, cmd, "%s: expected a whole number from %llu to %llu, not '%.40s'", opt,
                    (unsigned long long)min, (unsigned long long)max, text);
    return -1;
}

int cli_double(const struct cli_env *env, const char *cmd, const char *opt, const char *text,
               double min, double max, double *out)
{
    if (sh_parse_double(text, min, max, out) == 0)
        return 0;
    cli_usage_error(env, cmd, "%s: expected a number from %g to %g, not '%.40s'", opt, min, max,
                    text);
    return -1;
}

int cli_hex_key(const struct cli_env *env, const char *cmd, const char *opt, const char *text,
                uint8_t key[static PT_KEY_LEN])
{
    if (sh_unhex(key, PT_KEY_LEN, text) == 0)
        return 0;
    cli_usage_error(env, cmd, "%s: expected a public key as 64 hex digits, not '%.70s'", opt, text);
    return -1;
}

void cli_hex(char *out, const uint8_t *data, size_t n)
{
    sh_hex(out, data, n);
}

int cli_read_file(const struct cli_env *env, const char *cmd, const char *before, const char *path,
                  size_t max, uint8_t **data, size_t *len)
{
    char err[CLI_ERR_MAX];

    if (sh_read_file(path, max, data, len, err, sizeof err) != 0)
        return cli_fail_text(env, CLI_DATA, cmd, before, err, NULL);
    return CLI_OK;
}

int cli_out_begin(const struct cli_env *env, const char *cmd, const char *path, struct cli_out *o)
{
    int fd;

    o->f = NULL;
    o->path = path;
    if ((size_t)snprintf(o->tmp, sizeof o->tmp, "%s.XXXXXX", path) >= sizeof o->tmp)
        return cli_usage_error(env, cmd, "--out: the path is too long");
    if ((fd = mkstemp(o->tmp)) < 0 || (o->f = fdopen(fd, "wb")) == NULL) {
        if (fd >= 0) {
            close(fd);
            unlink(o->tmp);
        }
        return cli_fail_text(env, CLI_DATA, cmd, "cannot write beside ", path, strerror(errno));
    }
    return CLI_OK;
}

int cli_out_end(struct cli_out *o, bool keep)
{
    int e = 0;

    if (keep && (fflush(o->f) != 0 || fsync(fileno(o->f)) != 0))
        e = errno;
    if (fclose(o->f) != 0 && e == 0)
        e = errno;
    o->f = NULL;
    if (keep && e == 0 && rename(o->tmp, o->path) != 0)
        e = errno;
    if (keep && e == 0)
        return 0;
    unlink(o->tmp);
    errno = e;
    return keep ? -1 : 0;
}

/* -------------------------------------------------------------- token */

int cli_open(const struct cli_env *env, const char *cmd, const char *dir, bool create,
             struct cli_session *s)
{
    char msg[CLI_ERR_MAX] = "";
    struct pt_link link;
    int rc;

    memset(s, 0, sizeof *s);
    rc = env->open(env->ctx, env->token, dir, create, &link, &s->handle, msg, sizeof msg);
    if (rc != 0) {
        s->handle = NULL;
        if (msg[0] == '\0')
            snprintf(msg, sizeof msg, "%s", pt_strerror(rc));
        if (env->token != NULL)
            return cli_fail(env, rc == PT_ERR_EXISTS && create ? CLI_DATA : CLI_TOKEN, cmd,
                            "cannot open the token %s: %s", env->token, msg);
        return cli_fail(env, rc == PT_ERR_EXISTS && create ? CLI_DATA : CLI_TOKEN, cmd, "%s %s: %s",
                        create ? "cannot create a token in" : "cannot open the token", dir, msg);
    }
    pt_owner_init(&s->o, &link, env->now);
    return CLI_OK;
}

void cli_close(const struct cli_env *env, struct cli_session *s)
{
    if (s->handle != NULL)
        env->close(env->ctx, s->handle);
    s->handle = NULL;
}

/* Is a token status about the token itself (its store, its RAM) rather than the request? */
static bool token_trouble(int status)
{
    return status == TK_ERR_STORE || status == TK_ERR_TAMPERED || status == TK_ERR_ROLLBACK ||
           status == TK_ERR_RANDOM || status == TK_ERR_NO_MEMORY || status == TK_ERR_RESPONSE_SPACE;
}

/* pt_strerror(rc), with the link's own reason when the link failed. */
static void say_error(const struct cli_env *env, const char *cmd, const char *what, int rc)
{
    const char *why = NULL;
    if (rc == PT_ERR_LINK && env->link_error != NULL)
        why = env->link_error(env->ctx);
    if (why != NULL && why[0] != '\0')
        cli_fail(env, CLI_TOKEN, cmd, "%s: %s: %s", what, pt_strerror(rc), why);
    else
        cli_fail(env, CLI_TOKEN, cmd, "%s: %s", what, pt_strerror(rc));
}

int cli_owner_fail(const struct cli_env *env, const char *cmd, const struct pt_owner *o, int rc,
                   const char *what)
{
    char reason[PT_REASON_MAX * 4 + 1];

    if (rc == PT_ERR_TOKEN) {
        fprintf(env->err, CLI_PROG ": %s: %s: the token refused: %s (%s)", cmd, what,
                tk_strerror(o->token_status), tk_errname(o->token_status));
        if (o->reason[0] != '\0') {
            cli_escape(reason, sizeof reason, o->reason, strlen(o->reason));
            fprintf(env->err, ": %s", reason);
        }
        fputc('\n', env->err);
        return token_trouble(o->token_status) ? CLI_TOKEN : CLI_DATA;
    }
    if (rc == PT_ERR_INPUT)
        return cli_fail(env, CLI_DATA, cmd, "%s: invalid input", what);
    say_error(env, cmd, what, rc);
    return CLI_TOKEN;
}

/* ------------------------------------------------------------ printing */

size_t cli_escape(char *out, size_t cap, const char *s, size_t len)
{
    size_t k = 0, chars = 0, i = 0;

    if (cap == 0)
        return 0;
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        size_t n = 1, bad;
        if (c >= 0x80) {
            /* A whole valid character, or one bad byte. */
            n = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
            if (i + n > len || !pt_utf8_valid((const uint8_t *)s + i, n, &bad))
                n = 0;
        } else if (c < 0x20 || c == 0x7f || c == '\\') {
            n = 0;
        }
        if (n == 0) {
            char esc[5];
            if (c == '\\')
                memcpy(esc, "\\\\", 3);
            else
                snprintf(esc, sizeof esc, "\\x%02x", c);
            if (k + strlen(esc) >= cap)
                break;
            memcpy(out + k, esc, strlen(esc));
            k += strlen(esc);
            chars += strlen(esc);
            i++;
            continue;
        }
        if (k + n >= cap)
            break;
        memcpy(out + k, s + i, n);
        k += n;
        i += n;
        chars++;
    }
    out[k] = '\0';
    return chars;
}

void cli_put(FILE *f, const char *s)
{
    char buf[256];
    size_t len = strlen(s), i = 0;

    /* In slices, cut between whole characters (each slice ends before a lead byte). */
    while (i < len) {
        size_t n = len - i > 64 ? 64 : len - i;
        while (i + n < len && n > 1 && ((unsigned char)s[i + n] & 0xc0) == 0x80)
            n--;
        cli_escape(buf, sizeof buf, s + i, n);
        fputs(buf, f);
        i += n;
    }
}

void cli_pad(FILE *f, const char *s, size_t width)
{
    size_t chars = 0;
    for (const char *p = s; *p; p++)
        chars += ((unsigned char)*p & 0xc0) != 0x80;
    fputs(s, f);
    for (; chars < width; chars++)
        fputc(' ', f);
}

void cli_json_string(FILE *f, const char *s, size_t len)
{
    size_t i = 0;

    fputc('"', f);
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) {
            size_t n = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
            if (i + n <= len && pt_utf8_valid((const uint8_t *)s + i, n, NULL)) {
                fwrite(s + i, 1, n, f);
                i += n;
            } else {
                fputs("\\ufffd", f);
                i++;
            }
            continue;
        }
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
        i++;
    }
    fputc('"', f);
}

/* --------------------------------------------- the personal cloud's */

int cli_docs_open(const struct cli_env *env, const char *cmd, const char *dir, const char *docs,
                  struct pt_docstore **ds)
{
    char path[CLI_PATH_MAX];
    int rc;

    if (docs == NULL) {
        if ((size_t)snprintf(path, sizeof path, "%s/" CLI_DOCS_DIR, dir) >= sizeof path)
            return cli_fail(env, CLI_USAGE, cmd, "the token's directory name is too long");
        docs = path;
    }
    if ((rc = pt_docstore_open(ds, docs)) != 0)
        return cli_fail_text(env, CLI_TOKEN, cmd, "cannot open the document store ", docs,
                             pt_strerror(rc));
    return CLI_OK;
}

int cli_doc_fail(const struct cli_env *env, const char *cmd, int rc, const struct pt_status *st,
                 const char *what)
{
    char reason[sizeof st->reason * 4 + 1] = "";

    if (st->reason[0] != '\0')
        cli_escape(reason, sizeof reason, st->reason, strlen(st->reason));
    if (rc == PT_ERR_TOKEN) {
        fprintf(env->err, CLI_PROG ": %s: %s: the token refused: %s (%s)", cmd, what,
                tk_strerror(st->token_status), tk_errname(st->token_status));
        if (reason[0] != '\0')
            fprintf(env->err, ": %s", reason);
        fputc('\n', env->err);
        return token_trouble(st->token_status) ? CLI_TOKEN : CLI_DATA;
    }
    if (reason[0] != '\0')
        return cli_fail(env, rc == PT_ERR_INPUT ? CLI_DATA : CLI_TOKEN, cmd, "%s: %s", what,
                        reason);
    if (rc == PT_ERR_INPUT)
        return cli_fail(env, CLI_DATA, cmd, "%s: invalid input", what);
    say_error(env, cmd, what, rc);
    return CLI_TOKEN;
}

int cli_id16(const struct cli_env *env, const char *cmd, const char *opt, const char *text,
             uint8_t id[static 16])
{
    if (strlen(text) == 32 && sh_unhex(id, 16, text) == 0)
        return 0;
    cli_usage_error(env, cmd, "%s: expected an id of 32 hex digits, not '%.40s'", opt, text);
    return -1;
}

static int verb_bit(const char *s, size_t n)
{
    static const struct {
        const char *name;
        uint32_t bit;
    } verbs[] = {{"GET", PT_VERB_GET},
                 {"POST", PT_VERB_POST},
                 {"PUT", PT_VERB_PUT},
                 {"DELETE", PT_VERB_DELETE},
                 {"ALL", PT_VERB_ALL}};
    for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
        if (strlen(verbs[i].name) == n && strncasecmp(verbs[i].name, s, n) == 0)
            return (int)verbs[i].bit;
    return -1;
}

static int rule_error(const struct cli_env *env, const char *cmd, const char *opt, const char *text,
                      const char *why)
{
    char shown[256];
    cli_escape(shown, sizeof shown, text, strlen(text));
    cli_usage_error(env, cmd, "%s '%s': %s", opt, shown, why);
    return -1;
}

int cli_rule(const struct cli_env *env, const char *cmd, const char *opt, const char *text,
             bool need_verbs, struct pt_rule *out)
{
    const char *p = text, *colon = strchr(text, ':');
    size_t n = colon ? (size_t)(colon - text) : strlen(text);
    bool have_verbs = false, have_field = false;

    memset(out, 0, sizeof *out);
    if (n == 0 || n > PT_DOC_TYPE_MAX)
        return rule_error(env, cmd, opt, text, "expected a document type first (1 to 64 bytes)");
    memcpy(out->type, p, n);
    p += n;
    while (*p == ':') {
        const char *part = ++p, *eq;
        n = strcspn(part, ":");
        eq = memchr(part, '=', n);
        p = part + n;
        if (eq == NULL) {
            const char *v = part;
            if (have_verbs || have_field || !need_verbs)
                return rule_error(env, cmd, opt, text,
                                  need_verbs ? "the verbs come once, before the selector"
                                             : "a filter has no verbs: TYPE[:FIELD=V1,V2]");
            while (v < part + n) {
                size_t k = strcspn(v, ",:");
                int bit = verb_bit(v, k);
                if (bit < 0)
                    return rule_error(env, cmd, opt, text,
                                      "verbs are GET, POST, PUT, DELETE or ALL, separated by ','");
                out->verbs |= (uint32_t)bit;
                v += k;
                if (*v == ',')
                    v++;
            }
            have_verbs = true;
            continue;
        }
        if (have_field)
            return rule_error(env, cmd, opt, text, "one selector at most");
        if ((size_t)(eq - part) >= sizeof out->field ||
            !((eq - part == 6 && strncmp(part, "author", 6) == 0) ||
              (eq - part == 7 && strncmp(part, "subject", 7) == 0) ||
              (eq - part == 3 && strncmp(part, "tag", 3) == 0)))
            return rule_error(env, cmd, opt, text, "a selector's field is author, subject or tag");
        memcpy(out->field, part, (size_t)(eq - part));
        for (const char *v = eq + 1; v <= part + n;) {
            size_t k = strcspn(v, ",:");
            if (k == 0 || k > PT_DOC_TEXT_MAX || out->n_values == PT_VALUES_MAX)
                return rule_error(env, cmd, opt, text,
                                  "a selector has 1 to 16 values of 1 to 128 bytes");
            memcpy(out->values[out->n_values++], v, k);
            v += k + 1;
        }
        have_field = true;
    }
    if (need_verbs && out->verbs == 0)
        return rule_error(env, cmd, opt, text, "a rule needs its verbs: TYPE:GET,POST,...");
    return 0;
}

void cli_rule_text(char *out, size_t cap, const struct pt_rule *r)
{
    static const char *names[] = {"GET", "POST", "PUT", "DELETE"};
    size_t k = (size_t)snprintf(out, cap, "%s", r->type);
    bool first = true;

    for (int i = 0; i < 4 && k < cap; i++) {
        if (!(r->verbs & (1u << i)))
            continue;
        k += (size_t)snprintf(out + k, cap - k, "%s%s", first ? ":" : ",", names[i]);
        first = false;
    }
    if (r->field[0] != '\0' && k < cap)
        k += (size_t)snprintf(out + k, cap - k, ":%s=", r->field);
    for (uint32_t i = 0; i < r->n_values && k < cap; i++)
        k += (size_t)snprintf(out + k, cap - k, "%s%s", i ? "," : "", r->values[i]);
}

int cli_when(const struct cli_env *env, const char *cmd, const char *opt, const char *text,
             int64_t *out)
{
    size_t len = strlen(text);
    int64_t v;

    if (strcmp(text, "never") == 0) {
        *out = 0;
        return 0;
    }
    if (len >= 2 && len <= 12 && strchr("smhd", text[len - 1]) != NULL) {
        char digits[16];
        uint64_t n;
        static const int64_t unit[] = {1, 60, 3600, 86400};
        memcpy(digits, text, len - 1);
        digits[len - 1] = '\0';
        if (sh_parse_u64(digits, 1, 100000000, &n) == 0) {
            *out = env->now + (int64_t)n * unit[strchr("smhd", text[len - 1]) - "smhd"];
            return 0;
        }
    }
    if (pt_date_parse(&v, text, len) == 0) {
        *out = v * 86400;
        return 0;
    }
    if (pt_timestamp_parse(&v, text, len) == 0) {
        *out = v;
        return 0;
    }
    cli_usage_error(env, cmd,
                    "%s: expected YYYY-MM-DD, YYYY-MM-DDTHH:MM:SS, a duration such as 30d or "
                    "12h, or never; not '%.40s'",
                    opt, text);
    return -1;
}

void cli_when_text(char out[PT_TIMESTAMP_TEXT], int64_t t)
{
    if (t == 0)
        snprintf(out, PT_TIMESTAMP_TEXT, "never");
    else
        pt_timestamp_format(out, t);
}
