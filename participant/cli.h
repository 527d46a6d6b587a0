/*
 * cohort-participant, the owner's command line: what its commands share.
 *
 * Each subcommand is one file (cli_<name>.c) with one entry point, listed
 * in the table of cli.c, which also holds what they share: option parsing,
 * opening the token, exit statuses, and printing text that came from
 * elsewhere. The commands reach the world only through struct cli_env, so
 * the tests run them against a fake token and capture what they print;
 * main.c gives them the real one (a software token in a directory), the
 * real clock and the real stdout and stderr.
 *
 * Exit statuses: CLI_OK (0) on success; CLI_USAGE (1) for a command line
 * that is wrong (an unknown option, a value out of range, SQL that does
 * not compile); CLI_DATA (2) for data that is refused (a file that does not
 * import, a table or row that does not exist, a token that says no);
 * CLI_TOKEN (3) when the token or its files fail (cannot open, busy,
 * tampered, I/O). Errors go to stderr, one sentence each; nothing secret
 * is ever printed (the token never gives out a secret to print).
 */
#ifndef COHORT_CLI_H
#define COHORT_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "participant/pt_owner.h"

enum cli_status {
    CLI_OK = 0,
    CLI_USAGE = 1,
    CLI_DATA = 2,
    CLI_TOKEN = 3,
};

#define CLI_PROG "cohort-participant"
#define CLI_ERR_MAX 512u              /* a message from opening a token */
#define CLI_U64_DIGITS 20u            /* digits of a number on the command line */
#define CLI_EPSILON_MAX 1000.0        /* the largest epsilon budget accepted */
#define CLI_THRESHOLD_MAX 1000000000u /* min participants, min group size */
#define CLI_SUBJECT_DEFAULT "cohort token"
#define CLI_CSR_FILE "token.csr"
#define CLI_PATH_MAX 4096u /* a path the commands build or write beside */

/* The world, as the commands see it. */
struct cli_env {
    FILE *out;
    FILE *err;
    int64_t now; /* Unix seconds, sent to the token */
    /*
     * Create (init) or open the token, and give a link to it. token is the
     * --token value (pt_token.h), already checked, or NULL for the software
     * token in dir; dir is the owner's directory on this host either way.
     * Returns 0, or a PT_ERR_* with a sentence for the owner in msg.
     */
    int (*open)(void *ctx, const char *token, const char *dir, bool create, struct pt_link *link,
                void **handle, char *msg, size_t msg_len);
    void (*close)(void *ctx, void *handle); /* NULL handle: no-op */
    void *ctx;
    const char *token; /* set by cli_main from --token; NULL: a software token in --dir */
    /* Why the open token's link failed last, as a sentence ("" or NULL when
     * it has not, or cannot say); NULL: the world cannot tell. */
    const char *(*link_error)(void *ctx);
};

/*
 * Run the command line (argv[0] is the program). Returns a CLI_* status.
 * --token SPEC (or --token=SPEC), anywhere on the line, chooses the token
 * every command uses (pt_token.h); it is taken out before the command
 * sees its arguments.
 */
int cli_main(int argc, char **argv, const struct cli_env *env);

/* The subcommands: argv[0] is the command's name. */
int cli_init(int argc, char **argv, const struct cli_env *env);
int cli_provision(int argc, char **argv, const struct cli_env *env);
int cli_import(int argc, char **argv, const struct cli_env *env);
int cli_tables(int argc, char **argv, const struct cli_env *env);
int cli_rows(int argc, char **argv, const struct cli_env *env);
int cli_delete(int argc, char **argv, const struct cli_env *env);
int cli_policy(int argc, char **argv, const struct cli_env *env);
int cli_audit(int argc, char **argv, const struct cli_env *env);
int cli_compact(int argc, char **argv, const struct cli_env *env);
int cli_run(int argc, char **argv, const struct cli_env *env); /* the real network and tokens */
/* The personal cloud: documents, app credentials, shares, backups. */
int cli_doc(int argc, char **argv, const struct cli_env *env);
int cli_app(int argc, char **argv, const struct cli_env *env);
int cli_share(int argc, char **argv, const struct cli_env *env);
int cli_backup(int argc, char **argv, const struct cli_env *env);
int cli_recover(int argc, char **argv, const struct cli_env *env);
int cli_identity(int argc, char **argv, const struct cli_env *env);
int cli_http(int argc, char **argv, const struct cli_env *env); /* the local HTTP API */

/* ------------------------------------------------------------ helpers */

/* An error for the owner: "cohort-participant: CMD: ..." on stderr; returns status. */
int cli_fail(const struct cli_env *env, int status, const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/*
 * An error that names text from elsewhere (a path, a message that holds
 * one), escaped: "cohort-participant: CMD: BEFORE<text>: WHY" on stderr,
 * without ": WHY" when why is NULL; returns status.
 */
int cli_fail_text(const struct cli_env *env, int status, const char *cmd, const char *before,
                  const char *text, const char *why);

/* A usage error, followed by the command's usage line. Returns CLI_USAGE. */
int cli_usage_error(const struct cli_env *env, const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Print a command's usage (to out for --help, to err after an error). */
void cli_usage(FILE *f, const char *cmd);

/*
 * Options. cli_opt matches argv[*i] against name ("--dir", or "--dir=X"):
 * 0 if it is another option; 1 with *value set (advancing *i past a
 * separate value); -1 when the value is missing (reported already).
 */
int cli_opt(const struct cli_env *env, const char *cmd, int argc, char **argv, int *i,
            const char *name, const char **value);
bool cli_is_help(const char *arg);
/*
 * What a command line may hold, for cli_args: an option "--name VALUE"
 * (value set to the last one given), a flag "--name" (flag set), or, with
 * name NULL, one operand that is not an option (value; "-" too when dash).
 */
struct cli_arg {
    const char *name;
    const char **value;
    bool *flag;
    bool dash;
};
#define CLI_HELPED (-1) /* not an exit status: --help was printed */
#define CLI_NARGS(args) (sizeof(args) / sizeof((args)[0]))
/*
 * A command line made only of args[0..n), read in order: CLI_OK;
 * CLI_USAGE (reported: a missing value, an unexpected argument); or
 * CLI_HELPED when --help came first and printed help(out), or the usage
 * line when help is NULL.
 */
int cli_args(const struct cli_env *env, const char *cmd, int argc, char **argv,
             void (*help)(FILE *out), const struct cli_arg *args, size_t n);
/*
 * The command line of a command that takes only --dir DIR: CLI_OK with
 * *dir set; CLI_USAGE (reported); or CLI_OK with *dir NULL when --help
 * printed the usage and `about` (one paragraph, no final newline).
 */
int cli_dir_only(const struct cli_env *env, const char *cmd, int argc, char **argv,
                 const char *about, const char **dir);
/*
 * The command line of a command that takes --dir DIR and --json: CLI_OK
 * with *dir and *json set; CLI_USAGE (reported); or CLI_OK with *dir NULL
 * when --help printed help(out).
 */
int cli_dir_json(const struct cli_env *env, const char *cmd, int argc, char **argv,
                 void (*help)(FILE *out), const char **dir, bool *json);

/* Strict numbers: decimal digits only, within [min, max]. 0 or -1 (reported). */
int cli_u64(const struct cli_env *env, const char *cmd, const char *opt, const char *text,
            uint64_t min, uint64_t max, uint64_t *out);
int cli_double(const struct cli_env *env, const char *cmd, const char *opt, const char *text,
               double min, double max, double *out);

/* 64 hex digits into a key. 0 or -1 (reported). */
int cli_hex_key(const struct cli_env *env, const char *cmd, const char *opt, const char *text,
                uint8_t key[static PT_KEY_LEN]);
void cli_hex(char *out, const uint8_t *data, size_t n); /* out: 2n + 1 bytes */

/*
 * A whole file of at most max bytes (sh_read_file): CLI_OK with *data
 * (malloc'd, the caller frees it) and *len, or CLI_DATA with the reason
 * reported after `before` ("" or "--to: ").
 */
int cli_read_file(const struct cli_env *env, const char *cmd, const char *before, const char *path,
                  size_t max, uint8_t **data, size_t *len);

/*
 * A file that takes the place of path only once it is whole: cli_out_begin
 * opens a temporary file beside path (CLI_OK; CLI_USAGE when the path is
 * too long; CLI_DATA when it cannot be made; reported). cli_out_end
 * flushes, syncs and closes it, then renames it over path when keep, or
 * removes it: 0, or -1 with errno set (the caller words the sentence).
 */
struct cli_out {
    FILE *f;
    const char *path;
    char tmp[CLI_PATH_MAX];
};
int cli_out_begin(const struct cli_env *env, const char *cmd, const char *path, struct cli_out *o);
int cli_out_end(struct cli_out *o, bool keep);

/* A session with the token of dir: *o is ready when it returns CLI_OK. */
struct cli_session {
    void *handle;
    struct pt_owner o;
};
int cli_open(const struct cli_env *env, const char *cmd, const char *dir, bool create,
             struct cli_session *s);
void cli_close(const struct cli_env *env, struct cli_session *s);

/* Report a failed owner operation (PT_ERR_*, with the token's status and
 * reason for PT_ERR_TOKEN); returns the matching CLI_* status. */
int cli_owner_fail(const struct cli_env *env, const char *cmd, const struct pt_owner *o, int rc,
                   const char *what);

/* --------------------------------------------- the personal cloud's */

#define CLI_DOCS_DIR "docs"     /* the document store: DIR/docs unless --docs PATH */
#define CLI_OUTBOX_DIR "outbox" /* share packages to deliver: DIR/outbox */

struct pt_docstore;
struct pt_status;
struct pt_rule;

/* The document store of the token in dir: docs, or dir/docs when docs is NULL. */
int cli_docs_open(const struct cli_env *env, const char *cmd, const char *dir, const char *docs,
                  struct pt_docstore **ds);

/* Report a failed document, credential, share or backup call (pt_doc.h). */
int cli_doc_fail(const struct cli_env *env, const char *cmd, int rc, const struct pt_status *st,
                 const char *what);

/* A document, credential or share id: 32 hex digits. 0 or -1 (reported). */
int cli_id16(const struct cli_env *env, const char *cmd, const char *opt, const char *text,
             uint8_t id[static 16]);

/*
 * A rule, a filter or a selector as text: TYPE[:VERBS][:FIELD=V1,V2,...],
 * as in "bank.*:GET,POST:author=Quillfeather Bank". VERBS is a list of
 * GET, POST, PUT, DELETE (or ALL), in any case; values may hold any
 * character but ','. need_verbs: a rule (verbs required) or a filter (no
 * verbs allowed). 0 or -1 (reported).
 */
int cli_rule(const struct cli_env *env, const char *cmd, const char *opt, const char *text,
             bool need_verbs, struct pt_rule *out);
/* The rule as that text (for listing). */
void cli_rule_text(char *out, size_t cap, const struct pt_rule *r);

/*
 * A moment: YYYY-MM-DD (midnight UTC), YYYY-MM-DDTHH:MM:SS[Z], or a
 * duration from now: N followed by s, m, h or d ("30d"). "never" is 0.
 * 0 or -1 (reported).
 */
int cli_when(const struct cli_env *env, const char *cmd, const char *opt, const char *text,
             int64_t *out);
/* "never", or the moment as YYYY-MM-DDTHH:MM:SSZ. */
void cli_when_text(char out[PT_TIMESTAMP_TEXT], int64_t t);

/*
 * Text from elsewhere, made safe for a terminal: control bytes and bytes
 * that are not UTF-8 become \xNN (and a backslash \\). cli_escape writes at
 * most cap - 1 bytes (cut at a character) and returns the number of
 * characters written, for alignment.
 */
size_t cli_escape(char *out, size_t cap, const char *s, size_t len);
void cli_put(FILE *f, const char *s);
/* s padded with spaces to width characters (s is already escaped). */
void cli_pad(FILE *f, const char *s, size_t width);
/* A JSON string literal of s (invalid UTF-8 becomes U+FFFD). */
void cli_json_string(FILE *f, const char *s, size_t len);

#endif
