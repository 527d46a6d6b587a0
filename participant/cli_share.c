/*
 * cohort-participant share: sharing documents with another person's token.
 *
 *   share create --dir DIR [--docs PATH] --to IDENTITY
 *                (--doc ID [--doc ID ...] | --selector TYPE[:FIELD=V,...])
 *                [--read-write] [--expires WHEN] [--max-reads N] --out FILE
 *   share list   --dir DIR [--json]
 *   share revoke --dir DIR --id SHARE --out FILE
 *   share update --dir DIR --id SHARE [--read-only|--read-write]
 *                [--expires WHEN] --out FILE
 *   share sync   --dir DIR [--docs PATH] [--outbox DIR]
 *   share accept --dir DIR [--docs PATH] PACKAGE
 *
 * The recipient's identity is what `cohort-participant identity` prints on
 * their side (their token's device certificate, base64). The token seals
 * the grant (keys, metadata, policy) to that token; the package written
 * to FILE holds the sealed grant and the documents' ciphertext, nothing
 * in the clear, and goes to the recipient by any means; `share accept` on
 * their side hands it to their token, which checks and enforces it. After
 * the owner changes shared documents, `share sync` writes the packages of
 * the shares that are out of date into the outbox (DIR/outbox), one file
 * per share, SHARE.pkg, the latest replacing the earlier: what the HTTP
 * agent delivers itself. `share update` gives a share a new policy (what
 * it does not change is kept): its package tells the recipient's token,
 * e.g. that a read-write share is now read-only.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>

#include "participant/cli.h"
#include "participant/pt_doc.h"
#include "shell/shell.h"

#define CMD "share"
#define SYNC_ROUNDS_MAX 10000u /* packages one sync writes at most */
#define IDENTITY_FILE_MAX 4096u

static void help(FILE *f)
{
    cli_usage(f, CMD);
    fprintf(f, "\nSharing the documents of the token in DIR with another person's token.\n"
               "  share create --dir DIR --to IDENTITY (--doc ID ... | --selector SELECTOR)\n"
               "               [--read-write] [--expires WHEN] [--max-reads N] --out FILE\n"
               "      IDENTITY: a file holding what `" CLI_PROG " identity` prints for the\n"
               "      recipient's token; SELECTOR: TYPE[:FIELD=V1,V2], the documents that\n"
               "      match it now and later; the package for the recipient goes to FILE\n"
               "  share list   --dir DIR [--json]          the shares made and received\n"
               "  share revoke --dir DIR --id SHARE --out FILE\n"
               "      end a share; FILE is the package that tells the recipient's token\n"
               "  share update --dir DIR --id SHARE [--read-only|--read-write]\n"
               "               [--expires WHEN] --out FILE\n"
               "      a new policy for a share made here (the rest is kept); FILE is the\n"
               "      package that tells the recipient's token\n"
               "  share sync   --dir DIR [--outbox DIR]    packages of the shares whose\n"
               "      documents changed, into the outbox (DIR/outbox): SHARE.pkg each\n"
               "  share accept --dir DIR PACKAGE           take a package made for this token\n"
               "  (--docs PATH: the document store, DIR/docs by default)\n");
}

static int write_package(const struct cli_env *env, const char *path, const uint8_t *pkg,
                         size_t len)
{
    char err[CLI_ERR_MAX];
    if (sh_write_file(path, pkg, len, 0600, false, err, sizeof err) != 0)
        return cli_fail_text(env, CLI_DATA, CMD, "", err, NULL);
    return CLI_OK;
}

/* The recipient's certificate from an identity file (base64, or raw). */
static int read_identity(const struct cli_env *env, const char *path, uint8_t cert[PT_CERT_MAX],
                         size_t *cert_len)
{
    uint8_t *data;
    size_t len;

    if (cli_read_file(env, CMD, "--to: ", path, IDENTITY_FILE_MAX, &data, &len) != CLI_OK)
        return CLI_DATA;
    if (sodium_base642bin(cert, PT_CERT_MAX, (const char *)data, len, " \t\r\n", cert_len, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        *cert_len == 0) {
        if (len == 0 || len > PT_CERT_MAX) {
            free(data);
            return cli_fail(env, CLI_DATA, CMD,
                            "--to: not an identity (what `" CLI_PROG " identity` prints)");
        }
        memcpy(cert, data, len);
        *cert_len = len;
    }
    free(data);
    return CLI_OK;
}

static int share_create(int argc, char **argv, const struct cli_env *env)
{
    const char *dir = NULL, *docs = NULL, *to = NULL, *sel_text = NULL, *expires_text = NULL,
               *reads_text = NULL, *out = NULL;
    uint8_t ids[PT_SHARE_DOCS_MAX][PT_DOC_ID_LEN], cert[PT_CERT_MAX], share_id[16], *pkg = NULL;
    struct pt_share_policy policy = {false, 0, 0};
    struct pt_docstore *ds = NULL;
    struct pt_rule selector;
    struct pt_status st;
    struct cli_session s;
    uint32_t n_ids = 0;
    uint64_t reads = 0;
    size_t cert_len = 0, pkg_len = 0;
    char hex[33];
    int rc, m;

    for (int i = 1; i < argc; i++) {
        const char *doc = NULL;
        if (cli_is_help(argv[i])) {
            help(env->out);
            return CLI_OK;
        }
        if (strcmp(argv[i], "--read-write") == 0) {
            policy.read_write = true;
            continue;
        }
        if ((m = cli_opt(env, CMD, argc, argv, &i, "--dir", &dir)) != 0 ||
            (m = cli_opt(env, CMD, argc, argv, &i, "--docs", &docs)) != 0 ||
            (m = cli_opt(env, CMD, argc, argv, &i, "--to", &to)) != 0 ||
            (m = cli_opt(env, CMD, argc, argv, &i, "--selector", &sel_text)) != 0 ||
            (m = cli_opt(env, CMD, argc, argv, &i, "--expires", &expires_text)) != 0 ||
            (m = cli_opt(env, CMD, argc, argv, &i, "--max-reads", &reads_text)) != 0 ||
            (m = cli_opt(env, CMD, argc, argv, &i, "--out", &out)) != 0) {
            if (m < 0)
                return CLI_USAGE;
            continue;
        }
        if ((m = cli_opt(env, CMD, argc, argv, &i, "--doc", &doc)) != 0) {
            if (m < 0)
                return CLI_USAGE;
            if (n_ids == PT_SHARE_DOCS_MAX)
                return cli_usage_error(env, CMD, "at most %u documents", PT_SHARE_DOCS_MAX);
            if (cli_id16(env, CMD, "--doc", doc, ids[n_ids]) != 0)
                return CLI_USAGE;
            n_ids++;
            continue;
        }
        return cli_usage_error(env, CMD, "unexpected argument '%.60s'", argv[i]);
    }
    if (dir == NULL || to == NULL || out == NULL)
        return cli_usage_error(env, CMD,
                               "share create needs --dir DIR, --to IDENTITY and --out FILE");
    if ((n_ids > 0) == (sel_text != NULL))
        return cli_usage_error(env, CMD,
                               "give the documents with --doc ID or --selector, not both");
    if (sel_text != NULL && cli_rule(env, CMD, "--selector", sel_text, false, &selector) != 0)
        return CLI_USAGE;
    if (expires_text != NULL && cli_when(env, CMD, "--expires", expires_text, &policy.expires))
        return CLI_USAGE;
    if (reads_text != NULL &&
        cli_u64(env, CMD, "--max-reads", reads_text, 1, UINT32_MAX, &reads) != 0)
        return CLI_USAGE;
    policy.max_reads = (uint32_t)reads;
    if ((rc = read_identity(env, to, cert, &cert_len)) != CLI_OK)
        return rc;
    if ((rc = cli_open(env, CMD, dir, false, &s)) != CLI_OK)
        return rc;
    if ((rc = cli_docs_open(env, CMD, dir, docs, &ds)) == CLI_OK) {
        rc = pt_share_create(&s.o.link, ds, env->now, NULL, cert, cert_len,
                             (const uint8_t(*)[PT_DOC_ID_LEN])ids, n_ids,
                             sel_text ? &selector : NULL, &policy, share_id, &pkg, &pkg_len, &st);
        rc = rc == 0 ? CLI_OK : cli_doc_fail(env, CMD, rc, &st, "cannot share");
        pt_docstore_close(ds);
    }
    cli_close(env, &s);
    if (rc == CLI_OK && (rc = write_package(env, out, pkg, pkg_len)) == CLI_OK) {
        cli_hex(hex, share_id, 16);
        fprintf(env->out, "created share %s; its package (%zu bytes) is in ", hex, pkg_len);
        cli_put(env->out, out);
        fprintf(env->out, ": give it to the recipient (" CLI_PROG " share accept)\n");
    }
    free(pkg);
    return rc;
}

static void print_share(const struct cli_env *env, const struct pt_share_info *sh, bool json)
{
    char id[33], peer[65], when[PT_TIMESTAMP_TEXT], rule[1024], buf[256];

    cli_hex(id, sh->share_id, 16);
    cli_hex(peer, sh->peer_pk, 32);
    cli_when_text(when, sh->policy.expires);
    if (sh->has_selector)
        cli_rule_text(rule, sizeof rule, &sh->selector);
    if (json) {
        fprintf(env->out,
                "{\"share\":\"%s\",\"incoming\":%s,\"revoked\":%s,\"seq\":%llu,\"peer_pk\":\"%s\","
                "\"peer\":",
                id, sh->incoming ? "true" : "false", sh->revoked ? "true" : "false",
                (unsigned long long)sh->seq, peer);
        cli_json_string(env->out, sh->peer, strlen(sh->peer));
        fprintf(env->out,
                ",\"read_write\":%s,\"expires\":%lld,\"max_reads\":%u,\"created\":%lld,"
                "\"selector\":",
                sh->policy.read_write ? "true" : "false", (long long)sh->policy.expires,
                sh->policy.max_reads, (long long)sh->created);
        if (sh->has_selector)
            cli_json_string(env->out, rule, strlen(rule));
        else
            fputs("null", env->out);
        fputs(",\"docs\":[", env->out);
        for (uint32_t i = 0; i < sh->n_docs; i++) {
            cli_hex(id, sh->refs[i].id, 16);
            fprintf(env->out, "%s{\"id\":\"%s\",\"revision\":%llu,\"size\":%llu,\"reads\":%u}",
                    i ? "," : "", id, (unsigned long long)sh->refs[i].revision,
                    (unsigned long long)sh->refs[i].size, sh->reads[i]);
        }
        fputs("]}\n", env->out);
        return;
    }
    fprintf(env->out, "%s  %-4s  ", id, sh->incoming ? "from" : "to");
    cli_escape(buf, sizeof buf, sh->peer, strlen(sh->peer));
    cli_pad(env->out, buf[0] ? buf : "-", 16);
    fprintf(env->out, "  seq %-4llu  %-10s  %-7s  expires %-20s  ", (unsigned long long)sh->seq,
            sh->policy.read_write ? "read-write" : "read-only", sh->revoked ? "revoked" : "active",
            when);
    if (sh->policy.max_reads)
        fprintf(env->out, "max %u reads  ", sh->policy.max_reads);
    if (sh->has_selector) {
        fputs("selector ", env->out);
        cli_put(env->out, rule);
        fputs("  ", env->out);
    }
    fprintf(env->out, "%u document%s\n", sh->n_docs, sh->n_docs == 1 ? "" : "s");
    for (uint32_t i = 0; i < sh->n_docs; i++) {
        cli_hex(id, sh->refs[i].id, 16);
        fprintf(env->out, "    %s  revision %llu  %llu bytes", id,
                (unsigned long long)sh->refs[i].revision, (unsigned long long)sh->refs[i].size);
        if (sh->incoming)
            fprintf(env->out, "  %u read%s", sh->reads[i], sh->reads[i] == 1 ? "" : "s");
        if (sh->metas[i].type[0] != '\0') {
            cli_escape(buf, sizeof buf, sh->metas[i].type, strlen(sh->metas[i].type));
            fprintf(env->out, "  %s", buf);
        }
        fputc('\n', env->out);
    }
}

/* Every share in the token, printed; or only the one of share_id (not NULL). */
static int list_shares(const struct cli_env *env, struct pt_link *link, bool json,
                       const uint8_t *only, uint32_t *shown, struct pt_status *st)
{
    struct pt_share_info *page = calloc(16, sizeof *page);
    uint64_t after = 0, next = 0;
    uint32_t n = 0;
    bool more = true;
    int rc = 0;

    *shown = 0;
    if (page == NULL)
        return PT_ERR_NOMEM;
    while (more && rc == 0) {
        rc = pt_share_list(link, env->now, NULL, after, 16, page, &n, &more, &next, st);
        for (uint32_t i = 0; rc == 0 && i < n; i++) {
            if (only != NULL && memcmp(page[i].share_id, only, 16) != 0)
                continue;
            print_share(env, &page[i], json);
            (*shown)++;
        }
        after = next;
    }
    free(page);
    return rc;
}

static int share_list(int argc, char **argv, const struct cli_env *env)
{
    const char *dir = NULL;
    struct pt_status st;
    struct cli_session s;
    uint32_t shown = 0;
    bool json = false;
    int rc;

    if ((rc = cli_dir_json(env, CMD, argc, argv, help, &dir, &json)) != CLI_OK || dir == NULL)
        return rc;
    if ((rc = cli_open(env, CMD, dir, false, &s)) != CLI_OK)
        return rc;
    rc = list_shares(env, &s.o.link, json, NULL, &shown, &st);
    cli_close(env, &s);
    if (rc != 0)
        return cli_doc_fail(env, CMD, rc, &st, "cannot list the shares");
    if (!json && shown == 0)
        fprintf(env->out, "no shares\n");
    return CLI_OK;
}

static int share_revoke(int argc, char **argv, const struct cli_env *env)
{
    const char *dir = NULL, *docs = NULL, *id_text = NULL, *out = NULL;
    struct pt_docstore *ds = NULL;
    struct pt_status st;
    struct cli_session s;
    uint8_t id[16], *pkg = NULL;
    size_t pkg_len = 0;
    int rc;

    const struct cli_arg args[] = {{"--dir", &dir, NULL, false},
                                   {"--docs", &docs, NULL, false},
                                   {"--id", &id_text, NULL, false},
                                   {"--out", &out, NULL, false}};
    if ((rc = cli_args(env, CMD, argc, argv, help, args, CLI_NARGS(args))) != CLI_OK)
        return rc == CLI_HELPED ? CLI_OK : rc;
    if (dir == NULL || id_text == NULL || out == NULL)
        return cli_usage_error(env, CMD, "share revoke needs --dir DIR, --id SHARE and --out FILE");
    if (cli_id16(env, CMD, "--id", id_text, id) != 0)
        return CLI_USAGE;
    if ((rc = cli_open(env, CMD, dir, false, &s)) != CLI_OK)
        return rc;
    if ((rc = cli_docs_open(env, CMD, dir, docs, &ds)) == CLI_OK) {
        rc = pt_share_revoke(&s.o.link, ds, env->now, NULL, id, &pkg, &pkg_len, &st);
        rc = rc == 0 ? CLI_OK : cli_doc_fail(env, CMD, rc, &st, "cannot revoke the share");
        pt_docstore_close(ds);
    }
    cli_close(env, &s);
    if (rc == CLI_OK && (rc = write_package(env, out, pkg, pkg_len)) == CLI_OK) {
        fprintf(env->out, "revoked share %s; give the package in ", id_text);
        cli_put(env->out, out);
        fprintf(env->out, " to the recipient, whose token then refuses every read\n");
    }
    free(pkg);
    return rc;
}

/* The policy of a share this token made: 0, PT_ERR_INPUT if it made none
 * of that id, or the agent's error. */
static int sent_policy(struct pt_link *link, int64_t now, const uint8_t id[16],
                       struct pt_share_policy *policy, struct pt_status *st)
{
    enum { PAGE = 2 };
    struct pt_share_info *page = calloc(PAGE, sizeof *page);
    uint64_t after = 0;
    int rc = PT_ERR_NOMEM;

    if (page == NULL)
        return rc;
    for (;;) {
        uint32_t n = 0;
        bool more = false;
        uint64_t next = 0;
        if ((rc = pt_share_list(link, now, NULL, after, PAGE, page, &n, &more, &next, st)) != 0)
            break;
        rc = PT_ERR_INPUT;
        for (uint32_t i = 0; i < n; i++) {
            if (!page[i].incoming && memcmp(page[i].share_id, id, 16) == 0) {
                *policy = page[i].policy;
                rc = 0;
            }
        }
        if (rc == 0 || !more || next <= after)
            break;
        after = next;
    }
    free(page);
    return rc;
}

static int share_update(int argc, char **argv, const struct cli_env *env)
{
    const char *dir = NULL, *docs = NULL, *id_text = NULL, *out = NULL, *expires_text = NULL;
    struct pt_docstore *ds = NULL;
    struct pt_share_policy policy;
    struct pt_status st;
    struct cli_session s;
    uint8_t id[16], *pkg = NULL;
    size_t pkg_len = 0;
    int64_t expires = 0;
    int rw = -1; /* -1 kept, 0 read-only, 1 read-write */
    int rc, m;

    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            help(env->out);
            return CLI_OK;
        }
        if (strcmp(argv[i], "--read-only") == 0 || strcmp(argv[i], "--read-write") == 0) {
            int want = strcmp(argv[i], "--read-write") == 0;
            if (rw >= 0 && rw != want)
                return cli_usage_error(env, CMD, "either --read-only or --read-write");
            rw = want;
            continue;
        }
        if ((m = cli_opt(env, CMD, argc, argv, &i, "--dir", &dir)) != 0 ||
            (m = cli_opt(env, CMD, argc, argv, &i, "--docs", &docs)) != 0 ||
            (m = cli_opt(env, CMD, argc, argv, &i, "--id", &id_text)) != 0 ||
            (m = cli_opt(env, CMD, argc, argv, &i, "--expires", &expires_text)) != 0 ||
            (m = cli_opt(env, CMD, argc, argv, &i, "--out", &out)) != 0) {
            if (m < 0)
                return CLI_USAGE;
            continue;
        }
        return cli_usage_error(env, CMD, "unexpected argument '%.60s'", argv[i]);
    }
    if (dir == NULL || id_text == NULL || out == NULL)
        return cli_usage_error(env, CMD, "share update needs --dir DIR, --id SHARE and --out FILE");
    if (rw < 0 && expires_text == NULL)
        return cli_usage_error(env, CMD,
                               "share update changes --read-only, --read-write or --expires WHEN");
    if (cli_id16(env, CMD, "--id", id_text, id) != 0 ||
        (expires_text != NULL && cli_when(env, CMD, "--expires", expires_text, &expires) != 0))
        return CLI_USAGE;
    if ((rc = cli_open(env, CMD, dir, false, &s)) != CLI_OK)
        return rc;
    if ((rc = cli_docs_open(env, CMD, dir, docs, &ds)) == CLI_OK) {
        rc = sent_policy(&s.o.link, env->now, id, &policy, &st);
        if (rc == PT_ERR_INPUT) {
            rc = cli_fail(env, CLI_DATA, CMD, "this token made no share %s", id_text);
        } else if (rc != 0) {
            rc = cli_doc_fail(env, CMD, rc, &st, "cannot list the shares");
        } else {
            if (rw >= 0)
                policy.read_write = rw == 1;
            if (expires_text != NULL)
                policy.expires = expires;
            rc = pt_share_update(&s.o.link, ds, env->now, NULL, id, &policy, &pkg, &pkg_len, &st);
            rc = rc == 0 ? CLI_OK : cli_doc_fail(env, CMD, rc, &st, "cannot update the share");
        }
        pt_docstore_close(ds);
    }
    cli_close(env, &s);
    if (rc == CLI_OK && (rc = write_package(env, out, pkg, pkg_len)) == CLI_OK) {
        fprintf(env->out, "updated share %s: %s, ", id_text,
                policy.read_write ? "read-write" : "read-only");
        if (policy.expires == 0) {
            fprintf(env->out, "never expires");
        } else {
            char when[PT_TIMESTAMP_TEXT];
            cli_when_text(when, policy.expires);
            fprintf(env->out, "expires %s", when);
        }
        fprintf(env->out, "; give the package in ");
        cli_put(env->out, out);
        fprintf(env->out, " to the recipient\n");
    }
    free(pkg);
    return rc;
}

static int share_sync(int argc, char **argv, const struct cli_env *env)
{
    const char *dir = NULL, *docs = NULL, *outbox = NULL;
    struct pt_docstore *ds = NULL;
    struct pt_status st;
    struct cli_session s;
    char path[CLI_PATH_MAX], box[CLI_PATH_MAX], hex[33];
    uint32_t written = 0;
    int rc;

    const struct cli_arg args[] = {{"--dir", &dir, NULL, false},
                                   {"--docs", &docs, NULL, false},
                                   {"--outbox", &outbox, NULL, false}};
    if ((rc = cli_args(env, CMD, argc, argv, help, args, CLI_NARGS(args))) != CLI_OK)
        return rc == CLI_HELPED ? CLI_OK : rc;
    if (dir == NULL)
        return cli_usage_error(env, CMD, "give the token's directory with --dir DIR");
    if (outbox == NULL) {
        if ((size_t)snprintf(box, sizeof box, "%s/" CLI_OUTBOX_DIR, dir) >= sizeof box)
            return cli_usage_error(env, CMD, "the token's directory name is too long");
        outbox = box;
    }
    if (mkdir(outbox, 0700) != 0 && errno != EEXIST)
        return cli_fail_text(env, CLI_DATA, CMD, "cannot make the outbox ", outbox,
                             strerror(errno));
    if ((rc = cli_open(env, CMD, dir, false, &s)) != CLI_OK)
        return rc;
    if ((rc = cli_docs_open(env, CMD, dir, docs, &ds)) == CLI_OK) {
        for (;;) {
            uint8_t share_id[16], *pkg = NULL;
            size_t pkg_len = 0;
            if (written == SYNC_ROUNDS_MAX) {
                rc = cli_fail(env, CLI_TOKEN, CMD, "the token keeps answering shares: stopped");
                break;
            }
            rc = pt_share_sync(&s.o.link, ds, env->now, NULL, share_id, &pkg, &pkg_len, &st);
            if (rc != 0) {
                rc = cli_doc_fail(env, CMD, rc, &st, "cannot bring the shares up to date");
                break;
            }
            if (pkg == NULL)
                break;
            cli_hex(hex, share_id, 16);
            if ((size_t)snprintf(path, sizeof path, "%s/%s.pkg", outbox, hex) >= sizeof path) {
                free(pkg);
                rc = cli_usage_error(env, CMD, "the outbox's name is too long");
                break;
            }
            rc = write_package(env, path, pkg, pkg_len);
            free(pkg);
            if (rc != CLI_OK)
                break;
            fprintf(env->out, "share %s: a new package, ", hex);
            cli_put(env->out, path);
            fputc('\n', env->out);
            written++;
        }
        pt_docstore_close(ds);
    }
    cli_close(env, &s);
    if (rc == CLI_OK && written == 0)
        fprintf(env->out, "every share is up to date\n");
    return rc;
}

static int share_accept(int argc, char **argv, const struct cli_env *env)
{
    const char *dir = NULL, *docs = NULL, *file = NULL;
    struct pt_docstore *ds = NULL;
    struct pt_status st;
    struct cli_session s;
    char hex[33];
    uint8_t share_id[16], *pkg = NULL;
    uint32_t shown = 0;
    size_t len = 0;
    int rc;

    const struct cli_arg args[] = {
        {"--dir", &dir, NULL, false}, {"--docs", &docs, NULL, false}, {NULL, &file, NULL, false}};
    if ((rc = cli_args(env, CMD, argc, argv, help, args, CLI_NARGS(args))) != CLI_OK)
        return rc == CLI_HELPED ? CLI_OK : rc;
    if (dir == NULL || file == NULL)
        return cli_usage_error(env, CMD, "share accept needs --dir DIR and a PACKAGE file");
    if ((rc = cli_read_file(env, CMD, "", file, PT_PACKAGE_MAX, &pkg, &len)) != CLI_OK)
        return rc;
    if ((rc = cli_open(env, CMD, dir, false, &s)) != CLI_OK) {
        free(pkg);
        return rc;
    }
    if ((rc = cli_docs_open(env, CMD, dir, docs, &ds)) == CLI_OK) {
        rc = pt_share_accept(&s.o.link, ds, env->now, NULL, pkg, len, share_id, &st);
        if (rc != 0) {
            rc = cli_doc_fail(env, CMD, rc, &st, "the package is refused, nothing is stored");
        } else {
            cli_hex(hex, share_id, 16);
            fprintf(env->out, "accepted share %s:\n", hex);
            if (list_shares(env, &s.o.link, false, share_id, &shown, &st) != 0 || shown == 0)
                fprintf(env->out, "  (the token does not list it)\n");
            rc = CLI_OK;
        }
        pt_docstore_close(ds);
    }
    cli_close(env, &s);
    free(pkg);
    return rc;
}

int cli_share(int argc, char **argv, const struct cli_env *env)
{
    static const struct {
        const char *name;
        int (*run)(int, char **, const struct cli_env *);
    } subs[] = {{"create", share_create}, {"list", share_list}, {"revoke", share_revoke},
                {"update", share_update}, {"sync", share_sync}, {"accept", share_accept}};

    if (argc < 2)
        return cli_usage_error(env, CMD, "which: create, list, revoke, update, sync or accept?");
    if (cli_is_help(argv[1])) {
        help(env->out);
        return CLI_OK;
    }
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++)
        if (strcmp(argv[1], subs[i].name) == 0)
            return subs[i].run(argc - 1, argv + 1, env);
    return cli_usage_error(
        env, CMD, "unknown subcommand '%.40s' (create, list, revoke, update, sync or accept)",
        argv[1]);
}
