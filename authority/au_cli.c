/*
 * cohort-authority: the command table, and what the commands share.
 *
 * Every argument is checked before a file is read: numbers are decimal
 * digits within named bounds (no sign, no exponent, no inf or nan), names
 * are valid UTF-8 without control characters, tables and columns are the
 * catalog's. Whatever a file gives back (a token's subject, a study name)
 * is escaped before it reaches a terminal (sh_put). Files are read with a
 * bound and written atomically, never over an existing file.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <sodium.h>

#include "authority/au.h"
#include "shell/shell.h"

struct command {
    const char *name;
    const char *args;
    const char *help;
    int (*run)(int argc, char **argv, const struct au_env *env);
};

static const struct command commands[] = {
    {"init", "--dir DIR --subject NAME [--days N]",
     "create an authority in DIR: keys, group secret, root certificate", au_init},
    {"certify-token", "--dir DIR --csr FILE --out BUNDLE [--days N] [--trust CERTFILE]...",
     "certify a token's request and make its provisioning bundle", au_certify_token},
    {"certify-researcher",
     "--dir DIR --csr FILE --out CERTFILE [--days N] [--table T]... [--column T.C]...\n"
     "          [--study S]... [--max-epsilon E]",
     "certify a researcher's request within a scope", au_certify_researcher},
    {"show", "FILE", "describe a key, certificate, request or bundle file (never a secret)",
     au_show},
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage_all(FILE *f)
{
    fprintf(f, "usage: " AU_PROG " COMMAND [ARGS]   (" AU_PROG " COMMAND --help)\n\n"
               "The deployment's authority: it certifies tokens and researchers, and holds\n"
               "the group secret it gives each token it certifies. Keep its directory offline.\n\n"
               "commands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-19s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\nexit status: 0 done, 1 wrong command line, 2 refused input, 3 file I/O failed\n");
}

void au_usage(FILE *f, const char *cmd)
{
    for (size_t i = 0; i < N_COMMANDS; i++) {
        if (strcmp(commands[i].name, cmd) == 0) {
            fprintf(f, "usage: " AU_PROG " %s %s\n", cmd, commands[i].args);
            return;
        }
    }
    usage_all(f);
}

int au_main(int argc, char **argv)
{
    struct au_env env = {stdout, stderr, (int64_t)time(NULL)};
    int rc = AU_USAGE;

    if (sodium_init() < 0) {
        fprintf(stderr, AU_PROG ": libsodium failed to initialise\n");
        return AU_IO;
    }
    if (argc < 2) {
        usage_all(stderr);
        return AU_USAGE;
    }
    if (au_is_help(argv[1]) || strcmp(argv[1], "help") == 0) {
        if (argc > 2 && strcmp(argv[1], "help") == 0) {
            for (size_t i = 0; i < N_COMMANDS; i++) {
                if (strcmp(argv[2], commands[i].name) == 0) {
                    char *help_argv[] = {argv[2], "--help", NULL};
                    return commands[i].run(2, help_argv, &env);
                }
            }
        }
        usage_all(stdout);
        rc = AU_OK;
    } else {
        size_t i;
        for (i = 0; i < N_COMMANDS; i++)
            if (strcmp(argv[1], commands[i].name) == 0)
                break;
        if (i < N_COMMANDS) {
            rc = commands[i].run(argc - 1, argv + 1, &env);
        } else {
            fprintf(stderr, AU_PROG ": unknown command '");
            sh_put(stderr, argv[1]);
            fprintf(stderr, "'\n");
            usage_all(stderr);
            rc = AU_USAGE;
        }
    }
    if (fflush(stdout) != 0 && rc == AU_OK) {
        fprintf(stderr, AU_PROG ": cannot write to stdout: %s\n", strerror(errno));
        rc = AU_IO;
    }
    return rc;
}

/* ------------------------------------------------------------- errors */

static void vsay(const struct au_env *env, const char *cmd, const char *fmt, va_list ap)
{
    fprintf(env->err, AU_PROG ": %s%s", cmd ? cmd : "", cmd ? ": " : "");
    vfprintf(env->err, fmt, ap);
    fputc('\n', env->err);
}

int au_fail(const struct au_env *env, int status, const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsay(env, cmd, fmt, ap);
    va_end(ap);
    return status;
}

int au_usage_error(const struct au_env *env, const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsay(env, cmd, fmt, ap);
    va_end(ap);
    au_usage(env->err, cmd);
    return AU_USAGE;
}

/* ------------------------------------------------------------ options */

bool au_is_help(const char *arg)
{
    return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0;
}

int au_opt(const struct au_env *env, const char *cmd, int argc, char **argv, int *i,
           const char *name, const char **value)
{
    int m = sh_opt(argc, argv, i, name, value);

    if (m < 0)
        au_usage_error(env, cmd, "%s needs a value", name);
    return m;
}

int au_u64(const struct au_env *env, const char *cmd, const char *opt, const char *text,
           uint64_t min, uint64_t max, uint64_t *out)
{
    if (sh_parse_u64(text, min, max, out) == 0)
        return 0;
    au_usage_error(env, cmd, "%s: expected a whole number from %llu to %llu, not '%.40s'", opt,
                   (unsigned long long)min, (unsigned long long)max, text);
    return -1;
}

int au_double(const struct au_env *env, const char *cmd, const char *opt, const char *text,
              double min, double max, double *out)
{
    if (sh_parse_double(text, min, max, out) == 0)
        return 0;
    au_usage_error(env, cmd, "%s: expected a number from %g to %g, not '%.40s'", opt, min, max,
                   text);
    return -1;
}

int au_certify_opt(const struct au_env *env, const char *cmd, int argc, char **argv, int *i,
                   struct au_certify_args *args)
{
    int m;

    if ((m = au_opt(env, cmd, argc, argv, i, "--dir", &args->dir)) != 0 ||
        (m = au_opt(env, cmd, argc, argv, i, "--csr", &args->csr)) != 0 ||
        (m = au_opt(env, cmd, argc, argv, i, "--out", &args->out)) != 0 ||
        (m = au_opt(env, cmd, argc, argv, i, "--days", &args->days)) != 0)
        return m;
    return 0;
}

int au_certify_check(const struct au_env *env, const char *cmd, const struct au_certify_args *args,
                     const char *out_name, uint64_t *days)
{
    if (args->dir == NULL || args->dir[0] == '\0' || args->csr == NULL || args->csr[0] == '\0' ||
        args->out == NULL || args->out[0] == '\0')
        return au_usage_error(env, cmd, "give --dir DIR, --csr FILE and --out %s", out_name);
    if (args->days != NULL && au_u64(env, cmd, "--days", args->days, 1, AU_DAYS_MAX, days) != 0)
        return AU_USAGE;
    return AU_OK;
}

/* ------------------------------------------------------------ printing */

void au_id(char out[static AU_ID_TEXT], const uint8_t *pk)
{
    sh_hex(out, pk, AU_ID_BYTES);
}

void au_time(char out[static AU_TIME_TEXT], int64_t secs)
{
    struct tm tm;
    time_t t;

    /* Years 1 to 9999 print as such; anything beyond is clamped. */
    if (secs < -62135596800LL)
        secs = -62135596800LL;
    if (secs > 253402300799LL)
        secs = 253402300799LL;
    t = (time_t)secs;
    if (gmtime_r(&t, &tm) == NULL || strftime(out, AU_TIME_TEXT, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, AU_TIME_TEXT, "?");
}

/* --------------------------------------------------------------- files */

int au_read(const struct au_env *env, const char *cmd, const char *path, size_t max, uint8_t **buf,
            size_t *len)
{
    char err[SH_ERR_MAX];
    struct stat st;

    *buf = NULL;
    *len = 0;
    if (stat(path, &st) == 0 && (!S_ISREG(st.st_mode) || (uintmax_t)st.st_size > max)) {
        fprintf(env->err, AU_PROG ": %s: ", cmd);
        sh_put(env->err, path);
        if (!S_ISREG(st.st_mode))
            fprintf(env->err, ": not a regular file\n");
        else
            fprintf(env->err, ": larger than %zu bytes: not a file this command reads\n", max);
        return AU_DATA;
    }
    if (sh_read_file(path, max, buf, len, err, sizeof err) != 0) {
        fprintf(env->err, AU_PROG ": %s: ", cmd);
        sh_put(env->err, err);
        fputc('\n', env->err);
        return AU_IO;
    }
    return AU_OK;
}

int au_check_new(const struct au_env *env, const char *cmd, const char *path)
{
    struct stat st;

    if (lstat(path, &st) != 0)
        return AU_OK;
    fprintf(env->err, AU_PROG ": %s: ", cmd);
    sh_put(env->err, path);
    fprintf(env->err, " exists: refusing to overwrite it\n");
    return AU_DATA;
}

int au_write(const struct au_env *env, const char *cmd, const char *path, const uint8_t *data,
             size_t len, unsigned mode)
{
    char err[SH_ERR_MAX];

    errno = 0;
    if (sh_write_file(path, data, len, (mode_t)mode, true, err, sizeof err) == 0)
        return AU_OK;
    fprintf(env->err, AU_PROG ": %s: ", cmd);
    sh_put(env->err, err);
    fputc('\n', env->err);
    return errno == EEXIST ? AU_DATA : AU_IO;
}

int au_path(const struct au_env *env, const char *cmd, char out[static AU_PATH_MAX],
            const char *dir, const char *name)
{
    if ((size_t)snprintf(out, AU_PATH_MAX, "%s/%s", dir, name) >= AU_PATH_MAX)
        return au_usage_error(env, cmd, "--dir: the path is too long");
    return AU_OK;
}
