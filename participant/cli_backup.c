/*
 * cohort-participant backup export, and recover: the token's backup.
 *
 *   backup export --dir DIR --out FILE [--new-phrase]
 *   recover --dir DIR [--phrase-file FILE] BACKUP
 *
 * The backup holds what the token knows of its owner (documents' keys and
 * metadata, tables, policy, audit log, credentials, shares), encrypted
 * under a recovery phrase the token draws and shows once: the first
 * export, and any with --new-phrase, prints it. It never holds the
 * token's own device keys, nor the documents' ciphertext, which stays in
 * the document store (DIR/docs): keep a copy of that store with the
 * backup. `recover` restores a backup into a new token (made with `init`,
 * holding nothing of an owner yet); the token checks the whole file
 * before it stores anything, so a wrong phrase or a damaged file changes
 * nothing. The phrase is read from a file or from stdin, never from the
 * command line (where other users of the machine could see it).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "participant/cli.h"
#include "participant/pt_doc.h"

#define CMD_BACKUP "backup"
#define CMD_RECOVER "recover"

struct file_out {
    FILE *f;
};

static int file_write(void *ctx, const uint8_t *buf, size_t n)
{
    struct file_out *o = ctx;
    return fwrite(buf, 1, n, o->f) == n ? 0 : PT_ERR_IO;
}

static void help_backup(FILE *out)
{
    cli_usage(out, CMD_BACKUP);
    fprintf(out, "\nWrites an encrypted backup of the token in DIR to FILE: documents' keys and\n"
                 "metadata, tables, policy, audit log, credentials and shares, never the\n"
                 "token's own keys. The first backup prints a recovery phrase, and so does one\n"
                 "with --new-phrase; later ones use the same phrase. The documents' ciphertext\n"
                 "stays in the document store: keep a copy of it with the backup.\n");
}

int cli_backup(int argc, char **argv, const struct cli_env *env)
{
    const char *dir = NULL, *out = NULL;
    char phrase[PT_PHRASE_MAX + 1] = "";
    struct cli_out file;
    struct file_out o = {NULL};
    struct pt_status st;
    struct cli_session s;
    bool new_phrase = false;
    int rc;

    if (argc < 2 || strcmp(argv[1], "export") != 0) {
        if (argc >= 2 && cli_is_help(argv[1])) {
            help_backup(env->out);
            return CLI_OK;
        }
        return cli_usage_error(env, CMD_BACKUP, "the subcommand is export");
    }
    /* the options after the subcommand */
    const struct cli_arg args[] = {{"--new-phrase", NULL, &new_phrase, false},
                                   {"--dir", &dir, NULL, false},
                                   {"--out", &out, NULL, false}};
    if ((rc = cli_args(env, CMD_BACKUP, argc - 1, argv + 1, help_backup, args, CLI_NARGS(args))) !=
        CLI_OK)
        return rc == CLI_HELPED ? CLI_OK : rc;
    if (dir == NULL || out == NULL)
        return cli_usage_error(env, CMD_BACKUP, "backup export needs --dir DIR and --out FILE");
    if ((rc = cli_out_begin(env, CMD_BACKUP, out, &file)) != CLI_OK)
        return rc;
    o.f = file.f;
    if ((rc = cli_open(env, CMD_BACKUP, dir, false, &s)) == CLI_OK) {
        rc = pt_backup_export(&s.o.link, env->now, NULL, new_phrase, file_write, &o, phrase, &st);
        rc = rc == 0 ? CLI_OK : cli_doc_fail(env, CMD_BACKUP, rc, &st, "cannot export a backup");
        cli_close(env, &s);
    }
    if (cli_out_end(&file, rc == CLI_OK) != 0)
        rc = cli_fail(env, CLI_DATA, CMD_BACKUP, "cannot write the backup: %s", strerror(errno));
    if (rc != CLI_OK) {
        sodium_memzero(phrase, sizeof phrase);
        return rc;
    }
    fprintf(env->out, "wrote the backup to ");
    cli_put(env->out, out);
    if (phrase[0] != '\0')
        fprintf(env->out,
                "\nits recovery phrase, shown this once (write it down; later backups use it\n"
                "too, unless --new-phrase):\n  %s\n",
                phrase);
    else
        fprintf(env->out, " under the recovery phrase shown at an earlier backup\n");
    fprintf(env->out, "keep a copy of the document store (DIR/" CLI_DOCS_DIR ") with it\n");
    sodium_memzero(phrase, sizeof phrase);
    return CLI_OK;
}

/* ------------------------------------------------------------- recover */

struct backup_file {
    const char *path;
    FILE *f;
};

static long backup_read(void *ctx, uint8_t *buf, size_t n)
{
    struct backup_file *b = ctx;
    size_t got = fread(buf, 1, n, b->f);
    return got == 0 && ferror(b->f) ? PT_ERR_IO : (long)got;
}

static int backup_open(void *ctx, pt_read_fn *rd, void **rd_ctx)
{
    struct backup_file *b = ctx;
    if (b->f != NULL)
        fclose(b->f);
    if ((b->f = fopen(b->path, "rb")) == NULL)
        return PT_ERR_IO;
    *rd = backup_read;
    *rd_ctx = b;
    return 0;
}

/* The first line of f, without its end, as the phrase. 0 or -1. */
static int read_phrase(FILE *f, char phrase[PT_PHRASE_MAX + 1])
{
    char line[PT_PHRASE_MAX + 3];
    size_t n;
    if (fgets(line, sizeof line, f) == NULL)
        return -1;
    n = strcspn(line, "\r\n");
    if (n > PT_PHRASE_MAX || (line[n] == '\0' && !feof(f) && n == sizeof line - 1)) {
        sodium_memzero(line, sizeof line);
        return -1;
    }
    memcpy(phrase, line, n);
    phrase[n] = '\0';
    sodium_memzero(line, sizeof line);
    return 0;
}

static void help_recover(FILE *out)
{
    cli_usage(out, CMD_RECOVER);
    fprintf(out, "\nRestores BACKUP (from " CLI_PROG " backup export) into the token in DIR, a\n"
                 "new one made with init that holds nothing of an owner yet. The recovery\n"
                 "phrase is read from --phrase-file FILE, else from stdin. The token checks\n"
                 "the whole backup before it stores anything. Copy the old document store\n"
                 "to DIR/" CLI_DOCS_DIR " (or use --docs with the other commands) to read the "
                 "documents.\n");
}

int cli_recover(int argc, char **argv, const struct cli_env *env)
{
    const char *dir = NULL, *phrase_file = NULL, *file = NULL;
    char phrase[PT_PHRASE_MAX + 1];
    struct backup_file b = {NULL, NULL};
    struct pt_status st;
    struct cli_session s;
    uint64_t documents = 0;
    FILE *pf;
    int rc;

    const struct cli_arg args[] = {{"--dir", &dir, NULL, false},
                                   {"--phrase-file", &phrase_file, NULL, false},
                                   {NULL, &file, NULL, false}};
    if ((rc = cli_args(env, CMD_RECOVER, argc, argv, help_recover, args, CLI_NARGS(args))) !=
        CLI_OK)
        return rc == CLI_HELPED ? CLI_OK : rc;
    if (dir == NULL || file == NULL)
        return cli_usage_error(env, CMD_RECOVER, "recover needs --dir DIR and a BACKUP file");
    if (access(file, R_OK) != 0)
        return cli_fail_text(env, CLI_DATA, CMD_RECOVER, "cannot read ", file, strerror(errno));
    if (phrase_file != NULL) {
        if ((pf = fopen(phrase_file, "r")) == NULL)
            return cli_fail(env, CLI_DATA, CMD_RECOVER, "cannot read the phrase file: %s",
                            strerror(errno));
    } else {
        pf = stdin;
        if (isatty(fileno(stdin)))
            fprintf(env->err, "recovery phrase: ");
    }
    rc = read_phrase(pf, phrase);
    if (pf != stdin)
        fclose(pf);
    if (rc != 0)
        return cli_fail(env, CLI_DATA, CMD_RECOVER, "no recovery phrase was given");
    b.path = file;
    if ((rc = cli_open(env, CMD_RECOVER, dir, false, &s)) == CLI_OK) {
        rc = pt_backup_restore(&s.o.link, env->now, phrase, backup_open, &b, &documents, &st);
        rc = rc == 0 ? CLI_OK
                     : cli_doc_fail(env, CMD_RECOVER, rc, &st,
                                    "the backup is refused, the token is unchanged");
        cli_close(env, &s);
    }
    sodium_memzero(phrase, sizeof phrase);
    if (b.f != NULL)
        fclose(b.f);
    if (rc == CLI_OK)
        fprintf(env->out, "restored the backup into the token: %llu documents\n",
                (unsigned long long)documents);
    return rc;
}
