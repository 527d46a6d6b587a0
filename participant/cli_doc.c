/*
 * cohort-participant doc: the owner's documents, from the command line.
 *
 *   doc put  --dir DIR [--docs PATH] --type T [--author A] [--subject S]
 *            [--tag X ...] [--created WHEN] [--id ID --rev N] FILE|-
 *   doc put  --dir DIR [--docs PATH] --id ID --rev N [--reply-out FILE] FILE|-
 *   doc get  --dir DIR [--docs PATH] --id ID [--rev N] [--out FILE]
 *   doc list --dir DIR [--filter TYPE[:FIELD=V,...]] [--json]
 *   doc rm   --dir DIR [--docs PATH] --id ID --rev N
 *
 * The token encrypts and decrypts; the document store (DIR/docs unless
 * --docs) holds only its ciphertext (participant/pt_doc.c). A document
 * read is written out only once the token has checked all of it: to
 * --out FILE through a temporary file renamed at the end (mode 0600), or
 * to stdout from memory after the read succeeded, so that a tampered file
 * never leaves half a document behind. Metadata comes back from the token
 * as the owner's apps gave it: it is escaped for the terminal, quoted for
 * JSON.
 *
 * A new revision without --type keeps the current one's metadata: a
 * received document's from the token's list of shares (no read of the
 * share is spent), an own one's read from the token. A document received
 * in a read-write share goes back to its owner: the token's return
 * package is written to --reply-out FILE (required then), for the owner's
 * `share accept`.
 */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "participant/cli.h"
#include "participant/pt_doc.h"
#include "shell/shell.h"

#define CMD "doc"
#define LIST_LIMIT_MAX 1000000000ull

static void help(FILE *f)
{
    cli_usage(f, CMD);
    fprintf(f, "\nThe owner's documents, kept by the token in DIR: the token encrypts them and\n"
               "keeps their keys and metadata; the document store (DIR/docs, or --docs PATH)\n"
               "holds only ciphertext.\n"
               "  doc put  --dir DIR --type T [--author A] [--subject S] [--tag X ...]\n"
               "           [--created WHEN] [--id ID --rev N] FILE|-\n"
               "           store FILE (- for stdin) as a new document, or as a new revision\n"
               "           of document ID, whose current revision must be N; without\n"
               "           --type the current metadata is kept. A document received in a\n"
               "           read-write share goes back to its owner: --reply-out FILE is\n"
               "           then the return package, for their `share accept`\n"
               "  doc get  --dir DIR --id ID [--rev N] [--out FILE]\n"
               "           the document (revision N, else the current one) to FILE or stdout\n"
               "  doc list --dir DIR [--filter TYPE[:FIELD=V1,V2]] [--limit N] [--json]\n"
               "           the current documents; TYPE may be bank.* or *, FIELD author,\n"
               "           subject or tag\n"
               "  doc rm   --dir DIR --id ID --rev N\n"
               "           delete every revision (the current one must be N) and its files\n");
}

/* Options every subcommand may take: --dir and --docs. 1 taken, 0 not, -1 bad. */
static int common_opt(const struct cli_env *env, int argc, char **argv, int *i, const char **dir,
                      const char **docs)
{
    int m;
    if ((m = cli_opt(env, CMD, argc, argv, i, "--dir", dir)) != 0 ||
        (m = cli_opt(env, CMD, argc, argv, i, "--docs", docs)) != 0)
        return m;
    return 0;
}

static void id_hex(char out[33], const uint8_t id[16])
{
    cli_hex(out, id, 16);
}

/* ---------------------------------------------------------------- put */

struct file_reader {
    FILE *f;
    bool failed;
};

static long file_read(void *ctx, uint8_t *buf, size_t n)
{
    struct file_reader *r = ctx;
    size_t got = fread(buf, 1, n, r->f);
    if (got == 0 && ferror(r->f)) {
        r->failed = true;
        return PT_ERR_IO;
    }
    return (long)got;
}

/* Whether id came in a share (a read-write one if any) and its
 * metadata there. Errors are taken as "not received": the token decides. */
static void received_doc(struct pt_link *link, int64_t now, const uint8_t id[16], bool *found,
                         bool *read_write, struct pt_doc_meta *meta)
{
    enum { PAGE = 2 };
    struct pt_share_info *page = calloc(PAGE, sizeof *page);
    struct pt_status st;
    uint64_t after = 0;

    *found = *read_write = false;
    if (page == NULL)
        return;
    for (;;) {
        uint32_t n = 0;
        bool more = false;
        uint64_t next = 0;
        if (pt_share_list(link, now, NULL, after, PAGE, page, &n, &more, &next, &st) != 0)
            break;
        for (uint32_t i = 0; i < n; i++) {
            if (!page[i].incoming || page[i].revoked || (*found && *read_write))
                continue;
            for (uint32_t k = 0; k < page[i].n_docs && k < PT_SHARE_DOCS_MAX; k++) {
                if (memcmp(page[i].refs[k].id, id, 16) == 0) {
                    *found = true;
                    *read_write = page[i].policy.read_write;
                    *meta = page[i].metas[k];
                    break;
                }
            }
        }
        if ((*found && *read_write) || !more || next <= after)
            break;
        after = next;
    }
    free(page);
}

static int doc_put(int argc, char **argv, const struct cli_env *env)
{
    const char *dir = NULL, *docs = NULL, *type = NULL, *author = NULL, *subject = NULL,
               *created = NULL, *id_text = NULL, *rev_text = NULL, *file = NULL, *reply_out = NULL;
    struct pt_doc_meta meta, kept;
    struct pt_reply reply;
    bool found = false, read_write = false;
    struct pt_docstore *ds = NULL;
    struct file_reader r = {NULL, false};
    struct pt_doc_ref ref;
    struct pt_status st;
    struct cli_session s;
    uint8_t id[16];
    uint64_t rev = 0;
    char hex[65];
    int rc, m;

    memset(&meta, 0, sizeof meta);
    for (int i = 1; i < argc; i++) {
        const char *tag = NULL;
        if (cli_is_help(argv[i])) {
            help(env->out);
            return CLI_OK;
        }
        if ((m = common_opt(env, argc, argv, &i, &dir, &docs)) != 0 ||
            (m = cli_opt(env, CMD, argc, argv, &i, "--type", &type)) != 0 ||
            (m = cli_opt(env, CMD, argc, argv, &i, "--author", &author)) != 0 ||
            (m = cli_opt(env, CMD, argc, argv, &i, "--subject", &subject)) != 0 ||
            (m = cli_opt(env, CMD, argc, argv, &i, "--created", &created)) != 0 ||
            (m = cli_opt(env, CMD, argc, argv, &i, "--id", &id_text)) != 0 ||
            (m = cli_opt(env, CMD, argc, argv, &i, "--rev", &rev_text)) != 0 ||
            (m = cli_opt(env, CMD, argc, argv, &i, "--reply-out", &reply_out)) != 0) {
            if (m < 0)
                return CLI_USAGE;
            continue;
        }
        if ((m = cli_opt(env, CMD, argc, argv, &i, "--tag", &tag)) != 0) {
            if (m < 0)
                return CLI_USAGE;
            if (meta.n_tags == PT_DOC_TAGS_MAX)
                return cli_usage_error(env, CMD, "at most %u tags", PT_DOC_TAGS_MAX);
            if (strlen(tag) > PT_DOC_TAG_MAX)
                return cli_usage_error(env, CMD, "--tag: at most %u bytes", PT_DOC_TAG_MAX);
            strcpy(meta.tags[meta.n_tags++], tag);
            continue;
        }
        if (argv[i][0] == '-' && strcmp(argv[i], "-") != 0)
            return cli_usage_error(env, CMD, "unexpected option '%.60s'", argv[i]);
        if (file != NULL)
            return cli_usage_error(env, CMD, "one file at a time");
        file = argv[i];
    }
    if (dir == NULL)
        return cli_usage_error(env, CMD, "give the token's directory with --dir DIR");
    if ((type == NULL && id_text == NULL) || file == NULL)
        return cli_usage_error(env, CMD, "doc put needs --type T and a FILE (or - for stdin)");
    if (type == NULL && (author != NULL || subject != NULL || created != NULL || meta.n_tags > 0))
        return cli_usage_error(env, CMD, "new metadata needs its --type T");
    if (reply_out != NULL && id_text == NULL)
        return cli_usage_error(env, CMD, "--reply-out is for a new revision (--id ID --rev N)");
    if (type != NULL && strlen(type) > PT_DOC_TYPE_MAX)
        return cli_usage_error(env, CMD, "--type: at most %u bytes", PT_DOC_TYPE_MAX);
    if (author != NULL && strlen(author) > PT_DOC_TEXT_MAX)
        return cli_usage_error(env, CMD, "--author: at most %u bytes", PT_DOC_TEXT_MAX);
    if (subject != NULL && strlen(subject) > PT_DOC_TEXT_MAX)
        return cli_usage_error(env, CMD, "--subject: at most %u bytes", PT_DOC_TEXT_MAX);
    if ((id_text == NULL) != (rev_text == NULL))
        return cli_usage_error(env, CMD, "a new revision needs both --id ID and --rev N");
    if (id_text != NULL && (cli_id16(env, CMD, "--id", id_text, id) != 0 ||
                            cli_u64(env, CMD, "--rev", rev_text, 1, UINT64_MAX, &rev) != 0))
        return CLI_USAGE;
    if (created != NULL && cli_when(env, CMD, "--created", created, &meta.created) != 0)
        return CLI_USAGE;
    if (type != NULL)
        strcpy(meta.type, type);
    if (author != NULL)
        strcpy(meta.author, author);
    if (subject != NULL)
        strcpy(meta.subject, subject);

    if (strcmp(file, "-") == 0) {
        r.f = stdin;
    } else if ((r.f = fopen(file, "rb")) == NULL) {
        return cli_fail_text(env, CLI_DATA, CMD, "cannot open ", file, strerror(errno));
    }
    if ((rc = cli_open(env, CMD, dir, false, &s)) != CLI_OK)
        goto out;
    memset(&reply, 0, sizeof reply);
    if ((rc = cli_docs_open(env, CMD, dir, docs, &ds)) == CLI_OK) {
        if (id_text != NULL)
            received_doc(&s.o.link, env->now, id, &found, &read_write, &kept);
        rc = 0;
        if (found && read_write && reply_out == NULL) {
            rc = cli_usage_error(env, CMD,
                                 "document %s was received in a read-write share: its new "
                                 "revision goes back to its owner; give --reply-out FILE for "
                                 "the return package",
                                 id_text);
            goto closed;
        }
        if (type == NULL && found && kept.type[0] != '\0') {
            meta = kept;
        } else if (type == NULL) {
            rc = pt_doc_get(&s.o.link, ds, env->now, NULL, id, 0, NULL, NULL, &ref, &meta, &st);
        }
        if (type == NULL) {
            meta.modified = 0;
            meta.size = 0;
        }
        if (rc == 0)
            rc = pt_doc_put_reply(&s.o.link, ds, env->now, NULL, id_text ? id : NULL, rev, &meta,
                                  file_read, &r, &ref, &reply, &st);
        if (rc != 0) {
            if (r.failed)
                rc = cli_fail(env, CLI_DATA, CMD, "cannot read the file: nothing stored");
            else
                rc = cli_doc_fail(env, CMD, rc, &st, "cannot store the document");
        } else {
            id_hex(hex, ref.id);
            fprintf(env->out, "stored document %s revision %llu: %llu bytes (%llu encrypted)\n",
                    hex, (unsigned long long)ref.revision, (unsigned long long)ref.size,
                    (unsigned long long)ref.cipher_size);
            rc = CLI_OK;
            if (reply.pkg != NULL) {
                char err[CLI_ERR_MAX];
                if (sh_write_file(reply_out, reply.pkg, reply.pkg_len, 0600, false, err,
                                  sizeof err) != 0) {
                    rc = cli_fail(env, CLI_DATA, CMD,
                                  "the revision is stored but its return package could not be "
                                  "written: %s",
                                  err);
                } else {
                    fprintf(env->out, "the revision goes back to the document's owner: give ");
                    cli_put(env->out, reply_out);
                    fprintf(env->out, " to them (" CLI_PROG " share accept)");
                    if (reply.reply_to[0] != '\0') {
                        fprintf(env->out, ", or POST it to ");
                        cli_put(env->out, reply.reply_to);
                        fprintf(env->out, "/v1/inbox");
                    }
                    fputc('\n', env->out);
                }
            } else if (reply_out != NULL) {
                fprintf(env->out, "not a document received read-write: nothing written to ");
                cli_put(env->out, reply_out);
                fputc('\n', env->out);
            }
        }
    closed:
        pt_docstore_close(ds);
    }
    cli_close(env, &s);
    free(reply.pkg);
out:
    if (r.f != NULL && r.f != stdin)
        fclose(r.f);
    return rc;
}

/* ---------------------------------------------------------------- get */

struct mem_out {
    uint8_t *p;
    size_t len, cap;
    FILE *f; /* or straight into a file */
};

static int out_write(void *ctx, const uint8_t *buf, size_t n)
{
    struct mem_out *o = ctx;
    if (o->f != NULL)
        return fwrite(buf, 1, n, o->f) == n ? 0 : PT_ERR_IO;
    if (o->len + n > o->cap) {
        size_t cap = (o->len + n) * 2;
        uint8_t *p = malloc(cap);
        if (p == NULL)
            return PT_ERR_NOMEM;
        if (o->len > 0)
            memcpy(p, o->p, o->len);
        if (o->p != NULL) {
            sodium_memzero(o->p, o->len);
            free(o->p);
        }
        o->p = p;
        o->cap = cap;
    }
    memcpy(o->p + o->len, buf, n);
    o->len += n;
    return 0;
}

static int doc_get(int argc, char **argv, const struct cli_env *env)
{
    const char *dir = NULL, *docs = NULL, *id_text = NULL, *rev_text = NULL, *out_path = NULL;
    struct mem_out o = {NULL, 0, 0, NULL};
    struct pt_docstore *ds = NULL;
    struct pt_doc_ref ref;
    struct pt_status st;
    struct cli_session s;
    struct cli_out file;
    uint8_t id[16];
    uint64_t rev = 0;
    int rc;

    const struct cli_arg args[] = {{"--dir", &dir, NULL, false},
                                   {"--docs", &docs, NULL, false},
                                   {"--id", &id_text, NULL, false},
                                   {"--rev", &rev_text, NULL, false},
                                   {"--out", &out_path, NULL, false}};
    if ((rc = cli_args(env, CMD, argc, argv, help, args, CLI_NARGS(args))) != CLI_OK)
        return rc == CLI_HELPED ? CLI_OK : rc;
    if (dir == NULL || id_text == NULL)
        return cli_usage_error(env, CMD, "doc get needs --dir DIR and --id ID");
    if (cli_id16(env, CMD, "--id", id_text, id) != 0 ||
        (rev_text != NULL && cli_u64(env, CMD, "--rev", rev_text, 1, UINT64_MAX, &rev) != 0))
        return CLI_USAGE;
    if (out_path != NULL) {
        if ((rc = cli_out_begin(env, CMD, out_path, &file)) != CLI_OK)
            return rc;
        o.f = file.f;
    }
    if ((rc = cli_open(env, CMD, dir, false, &s)) != CLI_OK)
        goto out;
    if ((rc = cli_docs_open(env, CMD, dir, docs, &ds)) == CLI_OK) {
        rc = pt_doc_get(&s.o.link, ds, env->now, NULL, id, rev, out_write, &o, &ref, NULL, &st);
        rc = rc == 0 ? CLI_OK : cli_doc_fail(env, CMD, rc, &st, "cannot read the document");
        pt_docstore_close(ds);
    }
    cli_close(env, &s);
out:
    if (o.f != NULL) {
        if (cli_out_end(&file, rc == CLI_OK) != 0)
            rc = cli_fail(env, CLI_DATA, CMD, "cannot write the document: %s", strerror(errno));
    } else if (rc == CLI_OK && o.len > 0 && fwrite(o.p, 1, o.len, env->out) != o.len) {
        rc = cli_fail(env, CLI_DATA, CMD, "cannot write the document to stdout");
    }
    if (o.p != NULL) {
        sodium_memzero(o.p, o.len);
        free(o.p);
    }
    return rc;
}

/* --------------------------------------------------------------- list */

static void json_str(FILE *f, const char *name, const char *value, bool comma)
{
    fprintf(f, "%s\"%s\":", comma ? "," : "", name);
    cli_json_string(f, value, strlen(value));
}

static void print_doc(const struct cli_env *env, const struct pt_doc_ref *r,
                      const struct pt_doc_meta *m, bool json)
{
    char id[33], hash[65], when[PT_TIMESTAMP_TEXT], buf[PT_DOC_TEXT_MAX * 4 + 1];

    id_hex(id, r->id);
    cli_hex(hash, r->hash, 32);
    if (json) {
        fprintf(env->out, "{\"id\":\"%s\",\"revision\":%llu", id, (unsigned long long)r->revision);
        json_str(env->out, "type", m->type, true);
        json_str(env->out, "author", m->author, true);
        json_str(env->out, "subject", m->subject, true);
        fprintf(env->out, ",\"tags\":[");
        for (uint32_t i = 0; i < m->n_tags; i++) {
            if (i)
                fputc(',', env->out);
            cli_json_string(env->out, m->tags[i], strlen(m->tags[i]));
        }
        fprintf(env->out, "],\"created\":%lld,\"modified\":%lld,\"size\":%llu,\"hash\":\"%s\"}\n",
                (long long)m->created, (long long)m->modified, (unsigned long long)r->size, hash);
        return;
    }
    pt_timestamp_format(when, m->modified);
    fprintf(env->out, "%s  %4llu  ", id, (unsigned long long)r->revision);
    cli_escape(buf, sizeof buf, m->type, strlen(m->type));
    cli_pad(env->out, buf, 20);
    fprintf(env->out, "  %10llu  %s  ", (unsigned long long)r->size, when);
    cli_escape(buf, sizeof buf, m->author, strlen(m->author));
    cli_pad(env->out, buf[0] ? buf : "-", 16);
    fputs("  ", env->out);
    cli_escape(buf, sizeof buf, m->subject, strlen(m->subject));
    fputs(buf[0] ? buf : "-", env->out);
    for (uint32_t i = 0; i < m->n_tags; i++) {
        cli_escape(buf, sizeof buf, m->tags[i], strlen(m->tags[i]));
        fprintf(env->out, "%s#%s", i ? " " : "  ", buf);
    }
    fputc('\n', env->out);
}

static int doc_list(int argc, char **argv, const struct cli_env *env)
{
    const char *dir = NULL, *docs = NULL, *filter_text = NULL, *limit_text = NULL;
    struct pt_rule filter;
    struct pt_doc_page *page;
    struct pt_status st;
    struct cli_session s;
    uint64_t after = 0, limit = 0, shown = 0;
    bool json = false;
    int rc;

    const struct cli_arg args[] = {{"--json", NULL, &json, false},
                                   {"--dir", &dir, NULL, false},
                                   {"--docs", &docs, NULL, false},
                                   {"--filter", &filter_text, NULL, false},
                                   {"--limit", &limit_text, NULL, false}};
    if ((rc = cli_args(env, CMD, argc, argv, help, args, CLI_NARGS(args))) != CLI_OK)
        return rc == CLI_HELPED ? CLI_OK : rc;
    if (dir == NULL)
        return cli_usage_error(env, CMD, "give the token's directory with --dir DIR");
    if (filter_text != NULL && cli_rule(env, CMD, "--filter", filter_text, false, &filter) != 0)
        return CLI_USAGE;
    if (limit_text != NULL && cli_u64(env, CMD, "--limit", limit_text, 1, LIST_LIMIT_MAX, &limit))
        return CLI_USAGE;
    if ((page = malloc(sizeof *page)) == NULL)
        return cli_fail(env, CLI_TOKEN, CMD, "out of memory");
    if ((rc = cli_open(env, CMD, dir, false, &s)) != CLI_OK) {
        free(page);
        return rc;
    }
    do {
        rc = pt_doc_list(&s.o.link, env->now, NULL, filter_text ? &filter : NULL, after,
                         PT_DOC_LIST_MAX, page, &st);
        if (rc != 0)
            break;
        if (!json && shown == 0 && page->n > 0)
            fprintf(env->out, "%-32s  %4s  %-20s  %10s  %-20s  %-16s  %s\n", "ID", "REV", "TYPE",
                    "SIZE", "MODIFIED", "AUTHOR", "SUBJECT, #TAGS");
        for (uint32_t i = 0; i < page->n && (limit == 0 || shown < limit); i++, shown++)
            print_doc(env, &page->refs[i], &page->metas[i], json);
        after = page->next;
    } while (page->more && (limit == 0 || shown < limit));
    cli_close(env, &s);
    free(page);
    if (rc != 0)
        return cli_doc_fail(env, CMD, rc, &st, "cannot list the documents");
    if (!json && shown == 0)
        fprintf(env->out, "no documents%s\n", filter_text ? " match" : "");
    return CLI_OK;
}

/* ----------------------------------------------------------------- rm */

static int doc_rm(int argc, char **argv, const struct cli_env *env)
{
    const char *dir = NULL, *docs = NULL, *id_text = NULL, *rev_text = NULL;
    struct pt_docstore *ds = NULL;
    struct pt_status st;
    struct cli_session s;
    uint8_t id[16];
    uint64_t rev = 0;
    char hex[33];
    int rc;

    const struct cli_arg args[] = {{"--dir", &dir, NULL, false},
                                   {"--docs", &docs, NULL, false},
                                   {"--id", &id_text, NULL, false},
                                   {"--rev", &rev_text, NULL, false}};
    if ((rc = cli_args(env, CMD, argc, argv, help, args, CLI_NARGS(args))) != CLI_OK)
        return rc == CLI_HELPED ? CLI_OK : rc;
    if (dir == NULL || id_text == NULL || rev_text == NULL)
        return cli_usage_error(env, CMD, "doc rm needs --dir DIR, --id ID and --rev N");
    if (cli_id16(env, CMD, "--id", id_text, id) != 0 ||
        cli_u64(env, CMD, "--rev", rev_text, 1, UINT64_MAX, &rev) != 0)
        return CLI_USAGE;
    if ((rc = cli_open(env, CMD, dir, false, &s)) != CLI_OK)
        return rc;
    if ((rc = cli_docs_open(env, CMD, dir, docs, &ds)) == CLI_OK) {
        rc = pt_doc_delete(&s.o.link, ds, env->now, NULL, id, rev, &st);
        if (rc != 0) {
            rc = cli_doc_fail(env, CMD, rc, &st, "cannot delete the document");
        } else {
            id_hex(hex, id);
            fprintf(env->out, "deleted document %s: every revision, its keys and its files\n", hex);
        }
        pt_docstore_close(ds);
    }
    cli_close(env, &s);
    return rc;
}

int cli_doc(int argc, char **argv, const struct cli_env *env)
{
    static const struct {
        const char *name;
        int (*run)(int, char **, const struct cli_env *);
    } subs[] = {{"put", doc_put}, {"get", doc_get}, {"list", doc_list}, {"rm", doc_rm}};

    if (argc < 2)
        return cli_usage_error(env, CMD, "which: put, get, list or rm?");
    if (cli_is_help(argv[1])) {
        help(env->out);
        return CLI_OK;
    }
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
        if (strcmp(argv[1], subs[i].name) == 0)
            return subs[i].run(argc - 1, argv + 1, env);
    return cli_usage_error(env, CMD, "unknown subcommand '%.40s' (put, get, list or rm)", argv[1]);
}
