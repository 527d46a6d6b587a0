/*
 * test_pt_doc.c: the agent's side of the owner's documents, credentials,
 * shares and backups (participant/pt_doc.c, pt_docstore.c, pt_cred.c,
 * pt_share.c, pt_backup.c), over software tokens in a temporary directory
 * (real files: the token's and the document store's).
 *
 * - Documents of 0 B, 1 B, 4 KiB and 16 MiB round trip through the store,
 *   read by readers and writers that take odd amounts; the file is named
 *   by its hash and has the size the token says.
 * - No plaintext is ever on disk: every file of the store and of the
 *   token's directory is searched for samples of every document and for
 *   its metadata.
 * - A refused write leaves no file (a reader that fails, a stale
 *   revision, a token that refuses the last write); a tampered file is
 *   refused with the token's exact code and gives no plaintext; a stale
 *   revision is a conflict; deleting removes every revision's file.
 * - Credentials: their text form, and the token's rules through the agent.
 * - Shares: the package carries only ciphertext; a forged, foreign or
 *   replayed package stores nothing. A read-write share's recipient writes
 *   a revision that goes back in a return package (addressed to the
 *   owner's agent as its package said) and on to the share's other
 *   recipients; pt_doc_put refuses such a document, a read-only or stale
 *   write or a return package after the share was made read-only stores
 *   nothing.
 * - Backups: exported and restored into a new software token, which then
 *   reads the same documents from the same store.
 */
#define _DEFAULT_SOURCE
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tk_fixture.h"

#include "participant/cli.h"
#include "participant/pt_doc.h"
#include "participant/pt_doc_int.h"
#include "participant/pt_int.h"
#include "participant/pt_owner.h"

#define BIG (16u * 1024u * 1024u)

/* ------------------------------------------------------------ the world */

struct agent {
    char dir[256];  /* the token's directory */
    char docs[256]; /* the document store */
    struct pt_soft *soft;
    struct pt_link link;
    struct pt_docstore *ds;
    uint8_t pk[32];
};

struct world {
    char root[128];
    struct fx_world fx;
    struct agent a, b;
};

static void agent_open(struct agent *ag, const char *root, const char *name)
{
    char err[256];
    snprintf(ag->dir, sizeof ag->dir, "%s/%s", root, name);
    snprintf(ag->docs, sizeof ag->docs, "%s/%s-docs", root, name);
    assert_int_equal(pt_soft_create(&ag->soft, ag->dir, TK_ARENA_DEFAULT, err, sizeof err), 0);
    ag->link = pt_soft_link(ag->soft);
    assert_int_equal(pt_docstore_open(&ag->ds, ag->docs), 0);
}

static void agent_keys(struct agent *ag, const char *subject, uint8_t **csr, size_t *csr_len)
{
    struct pt_owner o;
    pt_owner_init(&o, &ag->link, FX_NOW);
    assert_int_equal(pt_owner_provision_begin(&o, subject, csr, csr_len, ag->pk), 0);
}

static void agent_close(struct agent *ag)
{
    pt_docstore_close(ag->ds);
    pt_soft_close(ag->soft);
    ag->ds = NULL;
    ag->soft = NULL;
}

static int setup(void **state)
{
    struct world *w = fx_alloc(sizeof *w);
    uint8_t *csr;
    size_t csr_len;
    snprintf(w->root, sizeof w->root, "/tmp/test_pt_doc.XXXXXX");
    assert_non_null(mkdtemp(w->root));
    fx_world_init(&w->fx);
    agent_open(&w->a, w->root, "a");
    agent_keys(&w->a, "alice", &csr, &csr_len);
    free(csr);
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    struct world *w = *state;
    agent_close(&w->a);
    agent_close(&w->b);
    fx_rm_tree(w->root);
    free(w);
    return 0;
}

/* -------------------------------------------------- readers and writers */

struct reader {
    const uint8_t *p;
    size_t len, pos, step; /* at most step bytes per call */
    size_t fail_at;        /* fail once pos reaches it (0: never) */
};

static long mem_read(void *ctx, uint8_t *buf, size_t n)
{
    struct reader *r = ctx;
    size_t k = r->len - r->pos;
    if (r->fail_at != 0 && r->pos >= r->fail_at)
        return PT_ERR_INPUT;
    if (k > n)
        k = n;
    if (r->step != 0 && k > r->step)
        k = r->step;
    if (k)
        memcpy(buf, r->p + r->pos, k);
    r->pos += k;
    return (long)k;
}

struct sink {
    uint8_t *p;
    size_t len, cap;
    size_t calls;
};

static int mem_write(void *ctx, const uint8_t *buf, size_t n)
{
    struct sink *s = ctx;
    if (s->len + n > s->cap) {
        s->cap = (s->len + n) * 2 + 64;
        s->p = realloc(s->p, s->cap);
        assert_non_null(s->p);
    }
    memcpy(s->p + s->len, buf, n);
    s->len += n;
    s->calls++;
    return 0;
}

static void sink_free(struct sink *s)
{
    free(s->p);
    memset(s, 0, sizeof *s);
}

/* Random bytes from a seed (reproducible, high entropy). */
static uint8_t *random_bytes(size_t n, uint64_t seed)
{
    uint8_t *p = fx_alloc(n), key[32] = {0}, nonce[8] = {0};
    memcpy(key, &seed, sizeof seed);
    crypto_stream_chacha20(p, n, nonce, key);
    return p;
}

static void meta_init(struct pt_doc_meta *m, const char *type)
{
    memset(m, 0, sizeof *m);
    snprintf(m->type, sizeof m->type, "%s", type);
    snprintf(m->author, sizeof m->author, "Quillfeather Savings Bank");
    snprintf(m->subject, sizeof m->subject, "Statement of account 4471");
    m->n_tags = 2;
    snprintf(m->tags[0], sizeof m->tags[0], "finance");
    snprintf(m->tags[1], sizeof m->tags[1], "zanzibar-2026");
}

static int put(struct agent *ag, const struct pt_cred *who, const uint8_t *id, uint64_t base,
               const struct pt_doc_meta *m, const uint8_t *data, size_t len, size_t step,
               struct pt_doc_ref *ref, struct pt_status *st)
{
    struct reader r = {data, len, 0, step, 0};
    return pt_doc_put(&ag->link, ag->ds, FX_NOW, who, id, base, m, mem_read, &r, ref, st);
}

static int get(struct agent *ag, const struct pt_cred *who, const uint8_t *id, uint64_t rev,
               struct sink *out, struct pt_doc_ref *ref, struct pt_doc_meta *meta,
               struct pt_status *st)
{
    memset(out, 0, sizeof *out);
    return pt_doc_get(&ag->link, ag->ds, FX_NOW, who, id, rev, mem_write, out, ref, meta, st);
}

/* ------------------------------------------------------------- the disk */

static char *store_path(struct agent *ag, const uint8_t hash[32], char *out, size_t cap)
{
    char h[65];
    sodium_bin2hex(h, sizeof h, hash, 32);
    snprintf(out, cap, "%s/%.2s/%s", ag->docs, h, h);
    return out;
}

static void spit(const char *path, const uint8_t *p, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(pt_write_all(fd, p, len), 0);
    close(fd);
}

/* What a directory tree holds: its regular files, and needles found in them. */
struct scan {
    const uint8_t *const *needles;
    const size_t *needle_lens;
    size_t n_needles;
    size_t files, found;
    char where[256];
};
static struct scan *scanning;

static int scan_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    uint8_t *p;
    size_t len;
    (void)ftw;
    if (flag != FTW_F || !S_ISREG(sb->st_mode))
        return 0;
    scanning->files++;
    p = fx_read_file(path, &len);
    for (size_t i = 0; i < scanning->n_needles; i++) {
        if (memmem(p, len, scanning->needles[i], scanning->needle_lens[i]) != NULL) {
            scanning->found++;
            snprintf(scanning->where, sizeof scanning->where, "%s", path);
        }
    }
    free(p);
    return 0;
}

static void scan_tree(struct scan *s, const char *root)
{
    scanning = s;
    assert_int_equal(nftw(root, scan_one, 16, FTW_PHYS), 0);
    scanning = NULL;
}

static size_t count_files(const char *root)
{
    struct scan s;
    memset(&s, 0, sizeof s);
    scan_tree(&s, root);
    return s.files;
}

/* ------------------------------------------------------------ documents */

static void documents_of_0_1_4k_and_16m_round_trip_through_the_store(void **state)
{
    struct world *w = *state;
    static const size_t sizes[] = {0, 1, 4096, BIG};
    static const size_t steps[] = {0, 1, 4095, 65537};

    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        uint8_t *data = random_bytes(sizes[i] + 1, 100 + i), *file;
        struct pt_doc_meta m, got_meta;
        struct pt_doc_ref ref, got_ref;
        struct pt_status st;
        struct sink out;
        char path[512];
        uint8_t hash[32];
        size_t file_len;
        int rc;

        meta_init(&m, "bank.statement");
        rc = put(&w->a, NULL, NULL, 0, &m, data, sizes[i], steps[i], &ref, &st);
        if (rc != 0)
            fail_msg("%zu bytes: %s, %s", sizes[i], pt_strerror(rc), tk_errname(st.token_status));
        assert_int_equal(ref.revision, 1);
        assert_int_equal(ref.size, sizes[i]);
        assert_true(ref.cipher_size > sizes[i]);

        /* The file is named by its hash and has the size the token says. */
        file = fx_read_file(store_path(&w->a, ref.hash, path, sizeof path), &file_len);
        assert_int_equal(file_len, ref.cipher_size);
        crypto_generichash(hash, sizeof hash, file, file_len, NULL, 0);
        assert_memory_equal(hash, ref.hash, 32);
        free(file);

        assert_int_equal(get(&w->a, NULL, ref.id, 0, &out, &got_ref, &got_meta, &st), 0);
        assert_int_equal(out.len, sizes[i]);
        if (sizes[i])
            assert_memory_equal(out.p, data, sizes[i]);
        assert_memory_equal(&got_ref, &ref, sizeof ref);
        assert_string_equal(got_meta.type, "bank.statement");
        assert_string_equal(got_meta.author, m.author);
        assert_int_equal(got_meta.n_tags, 2);
        assert_string_equal(got_meta.tags[1], "zanzibar-2026");
        assert_int_equal(got_meta.size, sizes[i]);
        assert_int_equal(got_meta.created, FX_NOW); /* 0 became the agent's clock */
        sink_free(&out);
        free(data);
    }
}

static void no_plaintext_and_no_metadata_is_ever_on_disk(void **state)
{
    struct world *w = *state;
    enum { N = 3 };
    static const size_t sizes[N] = {1000, 70000, 300000};
    uint8_t *docs[N], *needles[64];
    size_t lens[64], n = 0;
    struct pt_doc_meta m;
    struct pt_doc_ref ref;
    struct pt_status st;
    struct scan s;

    meta_init(&m, "health.record");
    for (int i = 0; i < N; i++) {
        docs[i] = random_bytes(sizes[i], 7 + (uint64_t)i);
        assert_int_equal(put(&w->a, NULL, NULL, 0, &m, docs[i], sizes[i], 0, &ref, &st), 0);
        /* 16-byte samples every 4 KiB, and the start and end of each. */
        for (size_t off = 0; off + 16 <= sizes[i] && n < 60; off += 4096) {
            needles[n] = docs[i] + off;
            lens[n++] = 16;
        }
        needles[n] = docs[i] + sizes[i] - 16;
        lens[n++] = 16;
    }
    needles[n] = (uint8_t *)m.author;
    lens[n++] = strlen(m.author);
    needles[n] = (uint8_t *)"zanzibar-2026";
    lens[n++] = strlen("zanzibar-2026");
    assert_true(n <= 64);

    memset(&s, 0, sizeof s);
    s.needles = (const uint8_t *const *)needles;
    s.needle_lens = lens;
    s.n_needles = n;
    scan_tree(&s, w->a.docs);
    assert_int_equal(s.files, 2 * N); /* the files and their indexes */
    scan_tree(&s, w->a.dir);
    if (s.found != 0)
        fail_msg("plaintext found in %s", s.where);

    /* The scan does find what is there. */
    spit("/tmp/test_pt_doc.canary", docs[1] + 8000, 300);
    memset(&s, 0, sizeof s);
    s.needles = (const uint8_t *const *)needles;
    s.needle_lens = lens;
    s.n_needles = n;
    scanning = &s;
    {
        struct stat sb;
        stat("/tmp/test_pt_doc.canary", &sb);
        scan_one("/tmp/test_pt_doc.canary", &sb, FTW_F, NULL);
    }
    scanning = NULL;
    unlink("/tmp/test_pt_doc.canary");
    assert_int_equal(s.found, 1);
    for (int i = 0; i < N; i++)
        free(docs[i]);
}

/* A link that passes requests to another, but refuses the last DocWrite
 * with `status` instead of sending it (a token that failed to commit). */
struct refusing {
    struct pt_link inner;
    int status;
    uint8_t resp[16];
    int refused;
};

static int refusing_transact(void *ctx, const uint8_t *req, size_t req_len, const uint8_t **resp,
                             size_t *resp_len)
{
    struct refusing *f = ctx;
    Cohort__TokenRequest *r = cohort__token_request__unpack(NULL, req_len, req);
    bool last_write;
    assert_non_null(r);
    last_write = r->body_case == COHORT__TOKEN_REQUEST__BODY_DOC_WRITE && r->doc_write->last;
    cohort__token_request__free_unpacked(r, NULL);
    if (last_write && f->status != 0) {
        Cohort__TokenResponse out = COHORT__TOKEN_RESPONSE__INIT;
        out.status = f->status;
        *resp_len = cohort__token_response__pack(&out, f->resp);
        *resp = f->resp;
        f->refused++;
        return 0;
    }
    return f->inner.transact(f->inner.ctx, req, req_len, resp, resp_len);
}

static void a_refused_write_leaves_no_file(void **state)
{
    struct world *w = *state;
    uint8_t *data = random_bytes(200000, 3);
    struct refusing f = {w->a.link, TK_ERR_STORE, {0}, 0};
    struct pt_link faulty = {&f, refusing_transact};
    struct reader r = {data, 200000, 0, 0, 150000};
    struct pt_doc_meta m;
    struct pt_doc_ref ref, ref2;
    struct pt_doc_page page;
    struct pt_status st;
    uint8_t bad_id[16] = {1};

    meta_init(&m, "bank.statement");
    /* A reader that fails half-way: its error, no file, no document. */
    assert_int_equal(
        pt_doc_put(&w->a.link, w->a.ds, FX_NOW, NULL, NULL, 0, &m, mem_read, &r, &ref, &st),
        PT_ERR_INPUT);
    assert_int_equal(count_files(w->a.docs), 0);

    /* The token refuses the last write: its code, no file. */
    assert_int_equal(pt_doc_put(&faulty, w->a.ds, FX_NOW, NULL, NULL, 0, &m, mem_read,
                                &(struct reader){data, 200000, 0, 0, 0}, &ref, &st),
                     PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_STORE);
    assert_int_equal(f.refused, 1);
    assert_int_equal(count_files(w->a.docs), 0);

    /* Metadata the token refuses at the start: nothing is written at all. */
    snprintf(m.type, sizeof m.type, "Bank Statement");
    assert_int_equal(put(&w->a, NULL, NULL, 0, &m, data, 10, 0, &ref, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_MALFORMED);
    meta_init(&m, "bank.statement");
    assert_int_equal(put(&w->a, NULL, bad_id, 1, &m, data, 10, 0, &ref, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_NOT_FOUND);
    assert_int_equal(count_files(w->a.docs), 0);

    assert_int_equal(pt_doc_list(&w->a.link, FX_NOW, NULL, NULL, 0, 64, &page, &st), 0);
    assert_int_equal(page.n, 0);

    /* A stale revision: a conflict, and no file beyond the first's. */
    assert_int_equal(put(&w->a, NULL, NULL, 0, &m, data, 1000, 0, &ref, &st), 0);
    assert_int_equal(put(&w->a, NULL, ref.id, 1, &m, data, 2000, 0, &ref2, &st), 0);
    assert_int_equal(count_files(w->a.docs), 3); /* two files and the index */
    assert_int_equal(put(&w->a, NULL, ref.id, 1, &m, data, 3000, 0, &ref2, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_CONFLICT);
    assert_int_equal(count_files(w->a.docs), 3);
    free(data);
}

static void a_stale_revision_is_a_conflict_and_old_revisions_stay_readable(void **state)
{
    struct world *w = *state;
    uint8_t *v1 = random_bytes(5000, 1), *v2 = random_bytes(9000, 2);
    struct pt_doc_meta m, got_meta;
    struct pt_doc_ref r1, r2, got;
    struct pt_status st;
    struct sink out;

    meta_init(&m, "note");
    m.created = FX_NOW - 100;
    assert_int_equal(put(&w->a, NULL, NULL, 0, &m, v1, 5000, 0, &r1, &st), 0);
    snprintf(m.subject, sizeof m.subject, "second thoughts");
    assert_int_equal(put(&w->a, NULL, r1.id, 1, &m, v2, 9000, 0, &r2, &st), 0);
    assert_memory_equal(r2.id, r1.id, 16);
    assert_int_equal(r2.revision, 2);
    assert_int_equal(put(&w->a, NULL, r1.id, 1, &m, v1, 10, 0, &got, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_CONFLICT);
    assert_string_equal(tk_errname(st.token_status), "TK_ERR_CONFLICT");
    assert_int_equal(put(&w->a, NULL, r1.id, 3, &m, v1, 10, 0, &got, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_CONFLICT);

    assert_int_equal(get(&w->a, NULL, r1.id, 0, &out, &got, &got_meta, &st), 0);
    assert_int_equal(got.revision, 2);
    assert_int_equal(out.len, 9000);
    assert_memory_equal(out.p, v2, 9000);
    assert_string_equal(got_meta.subject, "second thoughts");
    assert_int_equal(got_meta.created, FX_NOW - 100);
    sink_free(&out);
    assert_int_equal(get(&w->a, NULL, r1.id, 1, &out, &got, &got_meta, &st), 0);
    assert_int_equal(got.revision, 1);
    assert_memory_equal(out.p, v1, 5000);
    sink_free(&out);
    assert_int_equal(get(&w->a, NULL, r1.id, 3, &out, &got, NULL, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_NOT_FOUND);
    sink_free(&out);

    /* Without a writer: what the token says of the revision, nothing read. */
    memset(&got, 0, sizeof got);
    assert_int_equal(
        pt_doc_get(&w->a.link, w->a.ds, FX_NOW, NULL, r1.id, 1, NULL, NULL, &got, &got_meta, &st),
        0);
    assert_memory_equal(&got, &r1, sizeof got);
    free(v1);
    free(v2);
}

enum tamper {
    FLIP_HEADER,
    FLIP_CHUNK,
    FLIP_LENGTH,
    FLIP_LAST,
    CUT_ONE,
    CUT_CHUNK,
    ADD_ONE,
    EMPTY,
    SWAP,
    MISSING
};

static void every_tampered_file_is_refused_with_its_code(void **state)
{
    struct world *w = *state;
    static const struct {
        enum tamper how;
        int rc, status;
    } cases[] = {
        {FLIP_HEADER, PT_ERR_TOKEN, TK_ERR_DECRYPT},  {FLIP_CHUNK, PT_ERR_TOKEN, TK_ERR_DECRYPT},
        {FLIP_LENGTH, PT_ERR_TOKEN, TK_ERR_TAMPERED}, {FLIP_LAST, PT_ERR_TOKEN, TK_ERR_DECRYPT},
        {CUT_ONE, PT_ERR_TOKEN, TK_ERR_TAMPERED},     {CUT_CHUNK, PT_ERR_TOKEN, TK_ERR_TAMPERED},
        {ADD_ONE, PT_ERR_TOKEN, TK_ERR_TAMPERED},     {EMPTY, PT_ERR_TOKEN, TK_ERR_TAMPERED},
        {SWAP, PT_ERR_TOKEN, TK_ERR_DECRYPT},         {MISSING, PT_ERR_IO, 0},
    };
    uint8_t *data = random_bytes(10000, 9), *other = random_bytes(10000, 10), *file, *copy;
    struct pt_doc_meta m;
    struct pt_doc_ref ref, ref2;
    struct pt_status st;
    struct sink out;
    char path[512], path2[512];
    size_t len, len2;

    meta_init(&m, "bank.statement");
    assert_int_equal(put(&w->a, NULL, NULL, 0, &m, data, 10000, 0, &ref, &st), 0);
    assert_int_equal(put(&w->a, NULL, NULL, 0, &m, other, 10000, 0, &ref2, &st), 0);
    file = fx_read_file(store_path(&w->a, ref.hash, path, sizeof path), &len);
    store_path(&w->a, ref2.hash, path2, sizeof path2);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = len;
        copy = fx_alloc(len + 1);
        memcpy(copy, file, len);
        switch (cases[i].how) {
        case FLIP_HEADER:
            copy[3] ^= 1;
            break;
        case FLIP_CHUNK:
            copy[24 + 4 + 100] ^= 0x80;
            break;
        case FLIP_LENGTH:
            copy[24 + 1] ^= 0x40;
            break;
        case FLIP_LAST:
            copy[len - 1] ^= 1;
            break;
        case CUT_ONE:
            n = len - 1;
            break;
        case CUT_CHUNK:
            n = 24 + 4 + 4096 + 17;
            break;
        case ADD_ONE:
            copy[len] = 0;
            n = len + 1;
            break;
        case EMPTY:
            n = 0;
            break;
        case SWAP: {
            size_t l2;
            uint8_t *o = fx_read_file(path2, &l2);
            assert_int_equal(l2, len);
            memcpy(copy, o, len);
            free(o);
            break;
        }
        case MISSING:
            break;
        }
        if (cases[i].how == MISSING)
            unlink(path);
        else
            spit(path, copy, n);
        assert_int_equal(get(&w->a, NULL, ref.id, 0, &out, NULL, NULL, &st), cases[i].rc);
        assert_int_equal(st.token_status, cases[i].status);
        if (cases[i].how == MISSING)
            assert_non_null(strstr(st.reason, "lacks"));
        /* No plaintext of a refused read may be used, and little came out. */
        assert_true(out.len < 10000);
        sink_free(&out);
        free(copy);
        spit(path, file, len);
    }
    /* The file restored reads again. */
    assert_int_equal(get(&w->a, NULL, ref.id, 0, &out, NULL, NULL, &st), 0);
    assert_int_equal(out.len, 10000);
    assert_memory_equal(out.p, data, 10000);
    sink_free(&out);
    (void)len2;
    free(file);
    free(data);
    free(other);
}

static void deleting_removes_every_revision_and_its_files(void **state)
{
    struct world *w = *state;
    uint8_t *data = random_bytes(30000, 4);
    struct pt_doc_meta m;
    struct pt_doc_ref ref, keep, got;
    struct pt_doc_page page;
    struct pt_status st;
    struct sink out;
    char path[512];

    meta_init(&m, "photo");
    assert_int_equal(put(&w->a, NULL, NULL, 0, &m, data, 30000, 0, &keep, &st), 0);
    assert_int_equal(put(&w->a, NULL, NULL, 0, &m, data, 100, 0, &ref, &st), 0);
    assert_int_equal(put(&w->a, NULL, ref.id, 1, &m, data, 200, 0, &ref, &st), 0);
    assert_int_equal(put(&w->a, NULL, ref.id, 2, &m, data, 300, 0, &ref, &st), 0);
    assert_int_equal(count_files(w->a.docs), 6); /* 4 files, 2 indexes */

    /* A stale delete: a conflict, everything stays. */
    assert_int_equal(pt_doc_delete(&w->a.link, w->a.ds, FX_NOW, NULL, ref.id, 2, &st),
                     PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_CONFLICT);
    assert_int_equal(count_files(w->a.docs), 6);

    assert_int_equal(pt_doc_delete(&w->a.link, w->a.ds, FX_NOW, NULL, ref.id, 3, &st), 0);
    assert_int_equal(count_files(w->a.docs), 2); /* the other document's file and index */
    assert_true(access(store_path(&w->a, keep.hash, path, sizeof path), F_OK) == 0);
    assert_int_equal(get(&w->a, NULL, ref.id, 0, &out, &got, NULL, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_NOT_FOUND);
    sink_free(&out);
    assert_int_equal(pt_doc_delete(&w->a.link, w->a.ds, FX_NOW, NULL, ref.id, 3, &st),
                     PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_NOT_FOUND);
    assert_int_equal(pt_doc_list(&w->a.link, FX_NOW, NULL, NULL, 0, 64, &page, &st), 0);
    assert_int_equal(page.n, 1);
    assert_memory_equal(page.refs[0].id, keep.id, 16);

    assert_int_equal(pt_doc_delete(&w->a.link, w->a.ds, FX_NOW, NULL, keep.id, 1, &st), 0);
    assert_int_equal(count_files(w->a.docs), 0);
    free(data);
}

static void the_list_pages_through_the_current_revisions_and_filters_them(void **state)
{
    struct world *w = *state;
    static const char *types[] = {"bank.statement", "bank.card", "health.visit", "photo"};
    struct pt_doc_meta m;
    struct pt_doc_ref ref, first;
    struct pt_doc_page page;
    struct pt_rule filter;
    struct pt_status st;
    uint64_t after = 0;
    size_t seen = 0, pages = 0;
    uint8_t byte = 1;

    for (int i = 0; i < 20; i++) {
        meta_init(&m, types[i % 4]);
        snprintf(m.author, sizeof m.author, "author-%d", i % 3);
        assert_int_equal(put(&w->a, NULL, NULL, 0, &m, &byte, 1, 0, &ref, &st), 0);
        if (i == 0)
            first = ref;
    }
    meta_init(&m, "bank.statement");
    snprintf(m.author, sizeof m.author, "author-0");
    assert_int_equal(put(&w->a, NULL, first.id, 1, &m, &byte, 1, 0, &ref, &st), 0);

    do {
        assert_int_equal(pt_doc_list(&w->a.link, FX_NOW, NULL, NULL, after, 7, &page, &st), 0);
        assert_true(page.n <= 7);
        for (uint32_t i = 0; i < page.n; i++)
            if (memcmp(page.refs[i].id, first.id, 16) == 0)
                assert_int_equal(page.refs[i].revision, 2);
        seen += page.n;
        after = page.next;
        pages++;
    } while (page.more && pages < 10);
    assert_int_equal(seen, 20);

    memset(&filter, 0, sizeof filter);
    snprintf(filter.type, sizeof filter.type, "bank.*");
    assert_int_equal(pt_doc_list(&w->a.link, FX_NOW, NULL, &filter, 0, 64, &page, &st), 0);
    assert_int_equal(page.n, 10);
    for (uint32_t i = 0; i < page.n; i++)
        assert_int_equal(strncmp(page.metas[i].type, "bank.", 5), 0);
    snprintf(filter.field, sizeof filter.field, "author");
    filter.n_values = 1;
    snprintf(filter.values[0], sizeof filter.values[0], "author-0");
    assert_int_equal(pt_doc_list(&w->a.link, FX_NOW, NULL, &filter, 0, 64, &page, &st), 0);
    for (uint32_t i = 0; i < page.n; i++)
        assert_string_equal(page.metas[i].author, "author-0");

    assert_int_equal(pt_doc_list(&w->a.link, FX_NOW, NULL, NULL, 0, 0, &page, &st), PT_ERR_INPUT);
    assert_int_equal(pt_doc_list(&w->a.link, FX_NOW, NULL, NULL, 0, 65, &page, &st), PT_ERR_INPUT);
}

/* ---------------------------------------------------------- credentials */

static void a_credential_reads_back_from_its_text_and_bad_texts_are_refused(void **state)
{
    struct pt_cred c, back;
    char text[PT_CRED_TEXT_LEN + 1], bad[PT_CRED_TEXT_LEN + 2];
    (void)state;
    randombytes_buf(&c, sizeof c);
    pt_cred_format(&c, text);
    assert_int_equal(strlen(text), PT_CRED_TEXT_LEN);
    assert_int_equal(pt_cred_parse(&back, text, strlen(text)), 0);
    assert_memory_equal(&back, &c, sizeof c);
    for (size_t i = 0; i < PT_CRED_TEXT_LEN; i++)
        assert_true((text[i] >= '0' && text[i] <= '9') || (text[i] >= 'a' && text[i] <= 'f'));
    assert_int_equal(pt_cred_parse(&back, text, PT_CRED_TEXT_LEN - 1), PT_ERR_INPUT);
    memcpy(bad, text, sizeof text);
    bad[10] = 'g';
    assert_int_equal(pt_cred_parse(&back, bad, PT_CRED_TEXT_LEN), PT_ERR_INPUT);
    bad[10] = ' ';
    assert_int_equal(pt_cred_parse(&back, bad, PT_CRED_TEXT_LEN), PT_ERR_INPUT);
    memcpy(bad, text, sizeof text);
    bad[PT_CRED_TEXT_LEN] = '0';
    bad[PT_CRED_TEXT_LEN + 1] = '\0';
    assert_int_equal(pt_cred_parse(&back, bad, PT_CRED_TEXT_LEN + 1), PT_ERR_INPUT);
    assert_int_equal(pt_cred_parse(&back, NULL, 0), PT_ERR_INPUT);
    for (size_t i = 0; i < PT_CRED_TEXT_LEN; i++)
        text[i] = (char)toupper((unsigned char)text[i]);
    assert_int_equal(pt_cred_parse(&back, text, PT_CRED_TEXT_LEN), 0);
    assert_memory_equal(&back, &c, sizeof c);
}

static void rule_set(struct pt_rule *r, const char *type, uint32_t verbs, const char *field,
                     const char *value)
{
    memset(r, 0, sizeof *r);
    snprintf(r->type, sizeof r->type, "%s", type);
    r->verbs = verbs;
    if (field != NULL) {
        snprintf(r->field, sizeof r->field, "%s", field);
        r->n_values = 1;
        snprintf(r->values[0], sizeof r->values[0], "%s", value);
    }
}

static void an_app_reads_and_writes_only_what_its_rules_allow(void **state)
{
    struct world *w = *state;
    uint8_t *data = random_bytes(20000, 21);
    struct pt_doc_meta m;
    struct pt_doc_ref stmt, card, visit, ref;
    struct pt_doc_page page;
    struct pt_cred_info info, list[8];
    struct pt_rule rules[2];
    struct pt_cred budget, uploader, forged;
    struct pt_status st;
    struct sink out;
    uint32_t n = 0;
    size_t files;

    meta_init(&m, "bank.statement");
    assert_int_equal(put(&w->a, NULL, NULL, 0, &m, data, 20000, 0, &stmt, &st), 0);
    meta_init(&m, "bank.card");
    snprintf(m.author, sizeof m.author, "Card Co");
    assert_int_equal(put(&w->a, NULL, NULL, 0, &m, data, 300, 0, &card, &st), 0);
    meta_init(&m, "health.visit");
    assert_int_equal(put(&w->a, NULL, NULL, 0, &m, data, 400, 0, &visit, &st), 0);

    rule_set(&rules[0], "bank.*", PT_VERB_GET, "author", "Quillfeather Savings Bank");
    assert_int_equal(
        pt_cred_issue(&w->a.link, FX_NOW, NULL, "budget", rules, 1, 0, false, &budget, &info, &st),
        0);
    assert_string_equal(info.name, "budget");
    assert_int_equal(info.n_rules, 1);
    assert_string_equal(info.rules[0].type, "bank.*");
    assert_string_equal(info.rules[0].values[0], "Quillfeather Savings Bank");
    assert_false(info.owner);
    assert_false(info.has_parent);
    assert_memory_equal(info.id, budget.id, 16);
    rule_set(&rules[0], "bank.statement", PT_VERB_POST, NULL, NULL);
    assert_int_equal(pt_cred_issue(&w->a.link, FX_NOW, NULL, "uploader", rules, 1, FX_NOW + FX_DAY,
                                   false, &uploader, NULL, &st),
                     0);

    /* The budget app sees the bank's statement, and nothing else. */
    assert_int_equal(get(&w->a, &budget, stmt.id, 0, &out, NULL, NULL, &st), 0);
    assert_int_equal(out.len, 20000);
    sink_free(&out);
    assert_int_equal(get(&w->a, &budget, card.id, 0, &out, NULL, NULL, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_DENIED);
    assert_int_equal(out.len, 0);
    sink_free(&out);
    assert_int_equal(get(&w->a, &budget, visit.id, 0, &out, NULL, NULL, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_DENIED);
    sink_free(&out);
    assert_int_equal(pt_doc_list(&w->a.link, FX_NOW, &budget, NULL, 0, 64, &page, &st), 0);
    assert_int_equal(page.n, 1);
    assert_memory_equal(page.refs[0].id, stmt.id, 16);

    /* Writing needs POST (new) or PUT (update): refused, and no file left. */
    files = count_files(w->a.docs);
    meta_init(&m, "bank.statement");
    assert_int_equal(put(&w->a, &budget, NULL, 0, &m, data, 100, 0, &ref, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_DENIED);
    assert_int_equal(put(&w->a, &budget, stmt.id, 1, &m, data, 100, 0, &ref, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_DENIED);
    assert_int_equal(pt_doc_delete(&w->a.link, w->a.ds, FX_NOW, &budget, stmt.id, 1, &st),
                     PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_DENIED);
    assert_int_equal(count_files(w->a.docs), files);

    /* The uploader may create statements, nothing else. */
    assert_int_equal(put(&w->a, &uploader, NULL, 0, &m, data, 5000, 1000, &ref, &st), 0);
    assert_int_equal(count_files(w->a.docs), files + 2);
    meta_init(&m, "health.visit");
    assert_int_equal(put(&w->a, &uploader, NULL, 0, &m, data, 100, 0, &ref, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_DENIED);
    assert_int_equal(get(&w->a, &uploader, stmt.id, 0, &out, NULL, NULL, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_DENIED);
    sink_free(&out);
    assert_int_equal(count_files(w->a.docs), files + 2);

    /* A wrong secret: the credential does not authenticate. */
    forged = budget;
    forged.secret[0] ^= 1;
    assert_int_equal(get(&w->a, &forged, stmt.id, 0, &out, NULL, NULL, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_AUTH);
    sink_free(&out);
    assert_int_equal(pt_cred_check(&w->a.link, FX_NOW, &forged, &info, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_AUTH);
    assert_int_equal(pt_cred_check(&w->a.link, FX_NOW, &budget, &info, &st), 0);
    assert_string_equal(info.name, "budget");

    /* Expiry, by the clock the agent gives the token. */
    assert_int_equal(pt_cred_check(&w->a.link, FX_NOW + 2 * FX_DAY, &uploader, &info, &st),
                     PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_AUTH);

    /* The credentials are the owner's to list. */
    assert_int_equal(pt_cred_list(&w->a.link, FX_NOW, &budget, list, 8, &n, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_DENIED);
    assert_int_equal(pt_cred_list(&w->a.link, FX_NOW, NULL, list, 8, &n, &st), 0);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].name, "budget");
    assert_string_equal(list[1].name, "uploader");
    assert_int_equal(list[1].expires, FX_NOW + FX_DAY);

    /* Revoked: refused from the next request on. */
    assert_int_equal(pt_cred_revoke(&w->a.link, FX_NOW, NULL, budget.id, &st), 0);
    assert_int_equal(get(&w->a, &budget, stmt.id, 0, &out, NULL, NULL, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_AUTH);
    sink_free(&out);
    free(data);
}

static void a_delegated_credential_stays_within_its_parent_and_falls_with_it(void **state)
{
    struct world *w = *state;
    uint8_t byte = 7;
    struct pt_doc_meta m;
    struct pt_doc_ref stmt;
    struct pt_cred_info info, list[8];
    struct pt_rule rule;
    struct pt_cred parent, child;
    struct pt_status st;
    struct sink out;
    uint32_t n = 0;

    meta_init(&m, "bank.statement");
    assert_int_equal(put(&w->a, NULL, NULL, 0, &m, &byte, 1, 0, &stmt, &st), 0);
    rule_set(&rule, "bank.*", PT_VERB_GET | PT_VERB_POST, NULL, NULL);
    assert_int_equal(pt_cred_issue(&w->a.link, FX_NOW, NULL, "aggregator", &rule, 1, 0, false,
                                   &parent, NULL, &st),
                     0);

    /* Wider than the parent, or an owner's: refused. */
    rule_set(&rule, "health.*", PT_VERB_GET, NULL, NULL);
    assert_int_equal(
        pt_cred_issue(&w->a.link, FX_NOW, &parent, "wide", &rule, 1, 0, false, &child, NULL, &st),
        PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_DENIED);
    rule_set(&rule, "bank.statement", PT_VERB_GET | PT_VERB_DELETE, NULL, NULL);
    assert_int_equal(
        pt_cred_issue(&w->a.link, FX_NOW, &parent, "wide", &rule, 1, 0, false, &child, NULL, &st),
        PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_DENIED);
    assert_int_equal(
        pt_cred_issue(&w->a.link, FX_NOW, &parent, "owner", NULL, 0, 0, true, &child, NULL, &st),
        PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_DENIED);

    /* Within it: issued, and it reads. */
    rule_set(&rule, "bank.statement", PT_VERB_GET, NULL, NULL);
    assert_int_equal(pt_cred_issue(&w->a.link, FX_NOW, &parent, "reader", &rule, 1, 0, false,
                                   &child, &info, &st),
                     0);
    assert_true(info.has_parent);
    assert_memory_equal(info.parent, parent.id, 16);
    assert_int_equal(get(&w->a, &child, stmt.id, 0, &out, NULL, NULL, &st), 0);
    assert_int_equal(out.len, 1);
    sink_free(&out);

    /* The parent revoked: the child falls with it. */
    assert_int_equal(pt_cred_revoke(&w->a.link, FX_NOW, NULL, parent.id, &st), 0);
    assert_int_equal(get(&w->a, &child, stmt.id, 0, &out, NULL, NULL, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_AUTH);
    sink_free(&out);
    assert_int_equal(pt_cred_list(&w->a.link, FX_NOW, NULL, list, 8, &n, &st), 0);
    assert_int_equal(n, 2);
    assert_true(list[0].revoked);
}

/* ------------------------------------------------------------- shares */

/* Provision the token with a device certificate from maker, trusting
 * maker and also (for a token that must trust another maker's) `also`. */
static void agent_provision_by(struct agent *ag, const struct fx_world *w,
                               const struct fx_key *maker, const struct fx_key *also,
                               const char *subject)
{
    Cohort__CertRequest *csr;
    Cohort__ProvisionBundle bundle = COHORT__PROVISION_BUNDLE__INIT;
    Cohort__ProvisionFinish pf = COHORT__PROVISION_FINISH__INIT;
    Cohort__Certificate c;
    ProtobufCBinaryData trusted[3];
    struct fx_cert cert;
    struct pt_owner o;
    uint8_t sealed[32 + crypto_box_SEALBYTES], *csr_bytes, *buf;
    size_t csr_len, len;

    agent_keys(ag, subject, &csr_bytes, &csr_len);
    csr = cohort__cert_request__unpack(NULL, csr_len, csr_bytes);
    assert_non_null(csr);
    fx_cert_issue(&cert, COHORT__ROLE__ROLE_TOKEN, subject, csr->sign_pk.data, csr->box_pk.data,
                  maker, FX_NOW - FX_DAY, FX_NOW + 365 * FX_DAY, NULL);
    crypto_box_seal(sealed, w->secret, 32, csr->box_pk.data);
    fx_cert_pb(&c, &cert);
    trusted[0] = (ProtobufCBinaryData){32, (uint8_t *)w->authority.pk};
    trusted[1] = (ProtobufCBinaryData){32, (uint8_t *)maker->pk};
    if (also != NULL)
        trusted[2] = (ProtobufCBinaryData){32, (uint8_t *)also->pk};
    pf.device_cert = &c;
    pf.sealed_group_secret = (ProtobufCBinaryData){sizeof sealed, sealed};
    pf.n_trusted_authorities = also != NULL ? 3 : 2;
    pf.trusted_authorities = trusted;
    bundle.finish = &pf;
    bundle.subject = (char *)subject;
    len = cohort__provision_bundle__get_packed_size(&bundle);
    buf = fx_alloc(len);
    cohort__provision_bundle__pack(&bundle, buf);
    pt_owner_init(&o, &ag->link, FX_NOW);
    assert_int_equal(pt_owner_provision_finish(&o, buf, len), 0);
    free(buf);
    cohort__cert_request__free_unpacked(csr, NULL);
    free(csr_bytes);
}

/* Two agents whose tokens are certified by the same maker. */
static int setup_two(void **state)
{
    struct world *w = fx_alloc(sizeof *w);
    snprintf(w->root, sizeof w->root, "/tmp/test_pt_doc.XXXXXX");
    assert_non_null(mkdtemp(w->root));
    fx_world_init(&w->fx);
    agent_open(&w->a, w->root, "a");
    agent_provision_by(&w->a, &w->fx, &w->fx.maker, NULL, "alice");
    agent_open(&w->b, w->root, "b");
    agent_provision_by(&w->b, &w->fx, &w->fx.maker, NULL, "bob");
    *state = w;
    return 0;
}

static void identity_of(struct agent *ag, uint8_t cert[PT_CERT_MAX], size_t *len)
{
    struct pt_status st;
    uint8_t pk[32];
    assert_int_equal(pt_identity(&ag->link, FX_NOW, pk, cert, len, &st), 0);
    assert_true(*len > 0);
    assert_memory_equal(pk, ag->pk, 32);
}

static uint32_t share_count(struct agent *ag)
{
    struct pt_share_info *page = fx_alloc(16 * sizeof *page);
    struct pt_status st;
    uint32_t n = 0;
    uint64_t next = 0;
    bool more = false;
    assert_int_equal(pt_share_list(&ag->link, FX_NOW, NULL, 0, 16, page, &n, &more, &next, &st), 0);
    free(page);
    return n;
}

static int accept_pkg(struct agent *ag, int64_t now, const uint8_t *pkg, size_t len,
                      struct pt_status *st)
{
    uint8_t sid[16];
    return pt_share_accept(&ag->link, ag->ds, now, NULL, pkg, len, sid, st);
}

static void a_share_carries_only_ciphertext_and_reaches_the_recipient(void **state)
{
    struct world *w = *state;
    uint8_t *data = random_bytes(30000, 41), *v2 = random_bytes(7000, 42), cert[PT_CERT_MAX];
    uint8_t sid[16], sid2[16], ids[1][16], *pkg = NULL, *pkg2 = NULL, *needles[16];
    size_t cert_len, pkg_len = 0, pkg2_len = 0, lens[16], n = 0;
    struct pt_share_policy policy = {false, 0, 0};
    struct pt_share_info *info = fx_alloc(16 * sizeof *info);
    Cohort__SharePackage *sp;
    struct pt_doc_meta m;
    struct pt_doc_ref ref, got;
    struct pt_status st;
    struct sink out;
    struct scan s;
    uint32_t count = 0;
    uint64_t next = 0;
    bool more = false;
    char path[512];

    meta_init(&m, "health.record");
    assert_int_equal(put(&w->a, NULL, NULL, 0, &m, data, 30000, 0, &ref, &st), 0);
    memcpy(ids[0], ref.id, 16);
    identity_of(&w->b, cert, &cert_len);
    assert_int_equal(pt_share_create(&w->a.link, w->a.ds, FX_NOW, NULL, cert, cert_len,
                                     (const uint8_t(*)[16])ids, 1, NULL, &policy, sid, &pkg,
                                     &pkg_len, &st),
                     0);

    /* The package: the token's sealed grant and the very ciphertext file. */
    sp = cohort__share_package__unpack(NULL, pkg_len, pkg);
    assert_non_null(sp);
    assert_memory_equal(sp->out->share_id.data, sid, 16);
    assert_int_equal(sp->out->seq, 1);
    assert_int_equal(sp->n_blobs, 1);
    {
        uint8_t *file;
        size_t len;
        file = fx_read_file(store_path(&w->a, ref.hash, path, sizeof path), &len);
        assert_int_equal(sp->blobs[0]->data.len, len);
        assert_memory_equal(sp->blobs[0]->data.data, file, len);
        free(file);
    }
    cohort__share_package__free_unpacked(sp, NULL);
    for (size_t off = 0; off + 16 <= 30000 && n < 13; off += 2500) {
        needles[n] = data + off;
        lens[n++] = 16;
    }
    needles[n] = (uint8_t *)m.author;
    lens[n++] = strlen(m.author);
    needles[n] = (uint8_t *)m.subject;
    lens[n++] = strlen(m.subject);
    needles[n] = (uint8_t *)"zanzibar-2026";
    lens[n++] = strlen("zanzibar-2026");
    for (size_t i = 0; i < n; i++)
        assert_null(memmem(pkg, pkg_len, needles[i], lens[i]));

    /* The recipient takes it and reads the document. */
    assert_int_equal(pt_share_accept(&w->b.link, w->b.ds, FX_NOW, NULL, pkg, pkg_len, sid2, &st),
                     0);
    assert_memory_equal(sid2, sid, 16);
    assert_int_equal(get(&w->b, NULL, ref.id, 0, &out, &got, NULL, &st), 0);
    assert_int_equal(out.len, 30000);
    assert_memory_equal(out.p, data, 30000);
    sink_free(&out);
    assert_int_equal(
        pt_share_list(&w->b.link, FX_NOW, NULL, 0, 16, info, &count, &more, &next, &st), 0);
    assert_int_equal(count, 1);
    assert_true(info[0].incoming);
    assert_string_equal(info[0].peer, "alice");
    assert_memory_equal(info[0].peer_pk, w->a.pk, 32);
    assert_int_equal(info[0].n_docs, 1);
    assert_memory_equal(info[0].refs[0].id, ref.id, 16);

    /* Read-only: the recipient cannot write a revision of it. */
    assert_int_equal(put(&w->b, NULL, ref.id, 1, &m, data, 10, 0, &got, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_DENIED);

    /* Neither agent's disk holds the plaintext; the recipient's has the file. */
    memset(&s, 0, sizeof s);
    s.needles = (const uint8_t *const *)needles;
    s.needle_lens = lens;
    s.n_needles = n;
    scan_tree(&s, w->root);
    if (s.found != 0)
        fail_msg("plaintext in %s", s.where);
    assert_true(access(store_path(&w->b, ref.hash, path, sizeof path), F_OK) == 0);

    /* The owner's update reaches the recipient with the next sync. */
    assert_int_equal(pt_share_sync(&w->a.link, w->a.ds, FX_NOW, NULL, sid2, &pkg2, &pkg2_len, &st),
                     0);
    assert_null(pkg2); /* nothing changed yet */
    assert_int_equal(put(&w->a, NULL, ref.id, 1, &m, v2, 7000, 0, &ref, &st), 0);
    assert_int_equal(pt_share_sync(&w->a.link, w->a.ds, FX_NOW, NULL, sid2, &pkg2, &pkg2_len, &st),
                     0);
    assert_non_null(pkg2);
    assert_memory_equal(sid2, sid, 16);
    assert_int_equal(accept_pkg(&w->b, FX_NOW, pkg2, pkg2_len, &st), 0);
    assert_int_equal(get(&w->b, NULL, ref.id, 0, &out, &got, NULL, &st), 0);
    assert_int_equal(got.revision, 2);
    assert_int_equal(out.len, 7000);
    assert_memory_equal(out.p, v2, 7000);
    sink_free(&out);
    free(pkg2);
    pkg2 = NULL;
    assert_int_equal(pt_share_sync(&w->a.link, w->a.ds, FX_NOW, NULL, sid2, &pkg2, &pkg2_len, &st),
                     0);
    assert_null(pkg2);

    /* Revoked: the recipient's token refuses every read from then on. */
    assert_int_equal(pt_share_revoke(&w->a.link, w->a.ds, FX_NOW, NULL, sid, &pkg2, &pkg2_len, &st),
                     0);
    assert_int_equal(accept_pkg(&w->b, FX_NOW, pkg2, pkg2_len, &st), 0);
    assert_int_equal(get(&w->b, NULL, ref.id, 0, &out, &got, NULL, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_DENIED);
    sink_free(&out);
    free(pkg2);
    free(pkg);
    free(info);
    free(data);
    free(v2);
}

static void a_forged_foreign_or_replayed_package_stores_nothing(void **state)
{
    struct world *w = *state;
    struct agent c, d;
    struct fx_key other_maker;
    uint8_t *data = random_bytes(12000, 51), cert[PT_CERT_MAX], ids[1][16], sid[16];
    uint8_t *pkg = NULL, *pkg2 = NULL, *foreign = NULL, *untrusted = NULL, *bad;
    size_t cert_len, pkg_len, pkg2_len, foreign_len, untrusted_len;
    struct pt_share_policy policy = {false, 0, 0};
    Cohort__SharePackage *sp;
    struct pt_doc_meta m;
    struct pt_doc_ref ref, shared;
    struct pt_status st;
    size_t files;
    uint32_t shares;

    /* c: a token of the same maker, which the package below is not for;
     * d: one whose maker b does not trust. */
    memset(&c, 0, sizeof c);
    memset(&d, 0, sizeof d);
    agent_open(&c, w->root, "c");
    agent_provision_by(&c, &w->fx, &w->fx.maker, NULL, "carol");
    fx_key_make(&other_maker);
    agent_open(&d, w->root, "d");
    agent_provision_by(&d, &w->fx, &other_maker, &w->fx.maker, "dave");

    meta_init(&m, "health.record");
    assert_int_equal(put(&w->a, NULL, NULL, 0, &m, data, 12000, 0, &shared, &st), 0);
    memcpy(ids[0], shared.id, 16);
    identity_of(&w->b, cert, &cert_len);
    assert_int_equal(pt_share_create(&w->a.link, w->a.ds, FX_NOW, NULL, cert, cert_len,
                                     (const uint8_t(*)[16])ids, 1, NULL, &policy, sid, &pkg,
                                     &pkg_len, &st),
                     0);
    identity_of(&c, cert, &cert_len);
    assert_int_equal(pt_share_create(&w->a.link, w->a.ds, FX_NOW, NULL, cert, cert_len,
                                     (const uint8_t(*)[16])ids, 1, NULL, &policy, sid, &foreign,
                                     &foreign_len, &st),
                     0);
    assert_int_equal(put(&d, NULL, NULL, 0, &m, data, 500, 0, &ref, &st), 0);
    memcpy(ids[0], ref.id, 16);
    identity_of(&w->b, cert, &cert_len);
    assert_int_equal(pt_share_create(&d.link, d.ds, FX_NOW, NULL, cert, cert_len,
                                     (const uint8_t(*)[16])ids, 1, NULL, &policy, sid, &untrusted,
                                     &untrusted_len, &st),
                     0);

    files = count_files(w->b.docs);
    shares = share_count(&w->b);
    {
        static const struct {
            const char *what;
            int how;
            int rc, status;
        } cases[] = {
            {"a bit of the sealed grant flipped", 0, PT_ERR_TOKEN, TK_ERR_DECRYPT},
            {"a package sealed to another token", 1, PT_ERR_TOKEN, TK_ERR_DECRYPT},
            {"a sender whose maker is not trusted", 2, PT_ERR_TOKEN, TK_ERR_UNTRUSTED},
            {"a file that is not its hash's", 3, PT_ERR_INPUT, 0},
            {"a file missing", 4, PT_ERR_INPUT, 0},
            {"a package cut short", 5, PT_ERR_INPUT, 0},
            {"bytes that are no package", 6, PT_ERR_INPUT, 0},
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            uint8_t *p = NULL;
            size_t len = pkg_len;
            int rc;
            sp = cohort__share_package__unpack(NULL, pkg_len, pkg);
            assert_non_null(sp);
            switch (cases[i].how) {
            case 0:
                sp->out->sealed.data[sp->out->sealed.len / 2] ^= 1;
                break;
            case 3:
                sp->blobs[0]->data.data[100] ^= 1;
                break;
            case 4:
                sp->n_blobs = 0;
                break;
            default:
                break;
            }
            if (cases[i].how == 1) {
                p = fx_alloc(foreign_len);
                memcpy(p, foreign, foreign_len);
                len = foreign_len;
            } else if (cases[i].how == 2) {
                p = fx_alloc(untrusted_len);
                memcpy(p, untrusted, untrusted_len);
                len = untrusted_len;
            } else if (cases[i].how == 5) {
                p = fx_alloc(pkg_len);
                memcpy(p, pkg, pkg_len);
                len = pkg_len / 2;
            } else if (cases[i].how == 6) {
                p = random_bytes(4000, 52);
                len = 4000;
            } else {
                len = cohort__share_package__get_packed_size(sp);
                p = fx_alloc(len);
                cohort__share_package__pack(sp, p);
            }
            sp->n_blobs = sp->n_blobs == 0 ? 1 : sp->n_blobs; /* what it was, to be freed */
            cohort__share_package__free_unpacked(sp, NULL);
            rc = accept_pkg(&w->b, FX_NOW, p, len, &st);
            if (rc != cases[i].rc || st.token_status != cases[i].status)
                fail_msg("%s: %s, %s", cases[i].what, pt_strerror(rc), tk_errname(st.token_status));
            assert_int_equal(count_files(w->b.docs), files);
            assert_int_equal(share_count(&w->b), shares);
            free(p);
        }
    }
    bad = fx_alloc(16);
    assert_int_equal(accept_pkg(&w->b, FX_NOW, bad, (size_t)PT_PACKAGE_MAX + 1, &st),
                     PT_ERR_TOO_LARGE);
    free(bad);

    /* Accepted once; the same package again, or an older one after a newer: replays. */
    assert_int_equal(accept_pkg(&w->b, FX_NOW, pkg, pkg_len, &st), 0);
    files = count_files(w->b.docs);
    assert_int_equal(accept_pkg(&w->b, FX_NOW, pkg, pkg_len, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_REPLAY);
    assert_int_equal(put(&w->a, NULL, shared.id, 1, &m, data, 100, 0, &ref, &st), 0);
    assert_int_equal(pt_share_sync(&w->a.link, w->a.ds, FX_NOW, NULL, sid, &pkg2, &pkg2_len, &st),
                     0);
    assert_non_null(pkg2);
    assert_int_equal(accept_pkg(&w->b, FX_NOW, pkg2, pkg2_len, &st), 0);
    files = count_files(w->b.docs);
    assert_int_equal(accept_pkg(&w->b, FX_NOW, pkg, pkg_len, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_REPLAY);
    assert_int_equal(accept_pkg(&w->b, FX_NOW, pkg2, pkg2_len, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_REPLAY);
    assert_int_equal(count_files(w->b.docs), files);

    agent_close(&c);
    agent_close(&d);
    free(pkg);
    free(pkg2);
    free(foreign);
    free(untrusted);
    free(data);
}

static void the_recipient_enforces_max_reads_and_expiry(void **state)
{
    struct world *w = *state;
    uint8_t *data = random_bytes(3000, 61), cert[PT_CERT_MAX], ids[2][16], sid[16], *pkg = NULL;
    struct pt_share_policy policy = {false, FX_NOW + 1000, 2};
    struct pt_doc_meta m;
    struct pt_doc_ref r1, r2;
    struct pt_status st;
    struct sink out;
    size_t cert_len, pkg_len;

    meta_init(&m, "note");
    assert_int_equal(put(&w->a, NULL, NULL, 0, &m, data, 3000, 0, &r1, &st), 0);
    assert_int_equal(put(&w->a, NULL, NULL, 0, &m, data, 2000, 0, &r2, &st), 0);
    memcpy(ids[0], r1.id, 16);
    memcpy(ids[1], r2.id, 16);
    identity_of(&w->b, cert, &cert_len);
    assert_int_equal(pt_share_create(&w->a.link, w->a.ds, FX_NOW, NULL, cert, cert_len,
                                     (const uint8_t(*)[16])ids, 2, NULL, &policy, sid, &pkg,
                                     &pkg_len, &st),
                     0);
    assert_int_equal(accept_pkg(&w->b, FX_NOW, pkg, pkg_len, &st), 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(get(&w->b, NULL, r1.id, 0, &out, NULL, NULL, &st), 0);
        assert_int_equal(out.len, 3000);
        sink_free(&out);
    }
    assert_int_equal(get(&w->b, NULL, r1.id, 0, &out, NULL, NULL, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_DENIED);
    sink_free(&out);
    /* The other document has its own count; past the expiry, nothing. */
    assert_int_equal(get(&w->b, NULL, r2.id, 0, &out, NULL, NULL, &st), 0);
    sink_free(&out);
    assert_int_equal(pt_doc_get(&w->b.link, w->b.ds, FX_NOW + 2000, NULL, r2.id, 0, mem_write, &out,
                                NULL, NULL, &st),
                     PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_EXPIRED);
    sink_free(&out);
    free(pkg);
    free(data);
}

/* Write a received document back (the recipient's agent). */
static int put_back(struct agent *ag, const uint8_t *id, uint64_t base, const struct pt_doc_meta *m,
                    const uint8_t *data, size_t len, struct pt_doc_ref *ref, struct pt_reply *reply,
                    struct pt_status *st)
{
    struct reader r = {data, len, 0, 0, 0};
    return pt_doc_put_reply(&ag->link, ag->ds, FX_NOW, NULL, id, base, m, mem_read, &r, ref, reply,
                            st);
}

static void
a_read_write_share_carries_the_recipients_revision_back_in_a_return_package(void **state)
{
    struct world *w = *state;
    struct agent c;
    uint8_t *v1 = random_bytes(30000, 71), *v2 = random_bytes(20000, 72),
            *v3 = random_bytes(500, 73);
    uint8_t cert[PT_CERT_MAX], ids[1][16], sid[16], sid_c[16], got_sid[16], *pkg = NULL,
                                                                            *pkg_c = NULL;
    uint8_t *addressed = NULL, *sync = NULL, *p = NULL;
    size_t cert_len, pkg_len, pkg_c_len, addressed_len, sync_len, len, files_a, files_b;
    struct pt_share_policy rw = {true, 0, 0}, ro = {false, 0, 0};
    char reply_to[PT_REPLY_TO_MAX + 1], path[512], long_url[PT_REPLY_TO_MAX + 2];
    struct pt_doc_meta m;
    struct pt_doc_ref ref, got, bob2;
    struct pt_reply reply, again;
    struct pt_status st;
    struct sink out;
    Cohort__SharePackage *sp;

    memset(&c, 0, sizeof c);
    agent_open(&c, w->root, "c");
    agent_provision_by(&c, &w->fx, &w->fx.maker, NULL, "carol");
    meta_init(&m, "health.record");
    assert_int_equal(put(&w->a, NULL, NULL, 0, &m, v1, 30000, 0, &ref, &st), 0);
    memcpy(ids[0], ref.id, 16);
    identity_of(&w->b, cert, &cert_len);
    assert_int_equal(pt_share_create(&w->a.link, w->a.ds, FX_NOW, NULL, cert, cert_len,
                                     (const uint8_t(*)[16])ids, 1, NULL, &rw, sid, &pkg, &pkg_len,
                                     &st),
                     0);
    identity_of(&c, cert, &cert_len);
    assert_int_equal(pt_share_create(&w->a.link, w->a.ds, FX_NOW, NULL, cert, cert_len,
                                     (const uint8_t(*)[16])ids, 1, NULL, &ro, sid_c, &pkg_c,
                                     &pkg_c_len, &st),
                     0);

    /* Alice's agent says where its inbox is as it delivers; Bob's keeps it. */
    assert_int_equal(pt_share_package_peek(pkg, pkg_len, got_sid, reply_to), 0);
    assert_memory_equal(got_sid, sid, 16);
    assert_string_equal(reply_to, "");
    memset(long_url, 'a', sizeof long_url - 1);
    memcpy(long_url, "http://", 7);
    long_url[sizeof long_url - 1] = '\0';
    {
        static const char *const bad[] = {"ftp://127.0.0.1:8088", "http://a b", "http://", "",
                                          "127.0.0.1:8088"};
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
            assert_int_equal(
                pt_share_package_reply_to(pkg, pkg_len, bad[i], &addressed, &addressed_len),
                PT_ERR_INPUT);
        assert_int_equal(
            pt_share_package_reply_to(pkg, pkg_len, long_url, &addressed, &addressed_len),
            PT_ERR_INPUT);
        assert_null(addressed);
    }
    assert_int_equal(pt_share_package_reply_to(pkg, pkg_len, "http://127.0.0.1:8088", &addressed,
                                               &addressed_len),
                     0);
    assert_int_equal(pt_share_package_peek(addressed, addressed_len, got_sid, reply_to), 0);
    assert_string_equal(reply_to, "http://127.0.0.1:8088");
    assert_int_equal(accept_pkg(&w->b, FX_NOW, addressed, addressed_len, &st), 0);
    assert_int_equal(accept_pkg(&c, FX_NOW, pkg_c, pkg_c_len, &st), 0);

    /* pt_doc_put has nowhere to give the return package: it stops first. */
    files_b = count_files(w->b.docs);
    assert_int_equal(put(&w->b, NULL, ref.id, 1, &m, v2, 100, 0, &got, &st), PT_ERR_INPUT);
    assert_int_equal(count_files(w->b.docs), files_b);

    /* Bob writes revision 2; his agent gets the package for Alice's. */
    assert_int_equal(put_back(&w->b, ref.id, 1, &m, v2, 20000, &got, &reply, &st), 0);
    assert_int_equal(got.revision, 2);
    bob2 = got;
    assert_non_null(reply.pkg);
    assert_memory_equal(reply.share_id, sid, 16);
    assert_string_equal(reply.reply_to, "http://127.0.0.1:8088");
    assert_null(memmem(reply.pkg, reply.pkg_len, v2 + 1000, 32));
    assert_null(memmem(reply.pkg, reply.pkg_len, m.author, strlen(m.author)));
    sp = cohort__share_package__unpack(NULL, reply.pkg_len, reply.pkg);
    assert_non_null(sp);
    assert_int_equal(sp->n_blobs, 1);
    assert_int_equal(sp->blobs[0]->data.len, got.cipher_size);
    cohort__share_package__free_unpacked(sp, NULL);
    assert_int_equal(get(&w->b, NULL, ref.id, 0, &out, NULL, NULL, &st), 0);
    assert_int_equal(out.len, 20000);
    assert_memory_equal(out.p, v2, 20000);
    sink_free(&out);

    /* Alice's agent takes it: her token's revision 2 is Bob's, its file kept. */
    files_a = count_files(w->a.docs);
    {
        uint8_t flipped_sid[16];
        p = fx_alloc(reply.pkg_len);
        memcpy(p, reply.pkg, reply.pkg_len);
        sp = cohort__share_package__unpack(NULL, reply.pkg_len, reply.pkg);
        sp->out->sealed.data[10] ^= 1;
        len = cohort__share_package__get_packed_size(sp);
        free(p);
        p = fx_alloc(len);
        cohort__share_package__pack(sp, p);
        cohort__share_package__free_unpacked(sp, NULL);
        assert_int_equal(
            pt_share_accept(&w->a.link, w->a.ds, FX_NOW, NULL, p, len, flipped_sid, &st),
            PT_ERR_TOKEN);
        assert_int_equal(st.token_status, TK_ERR_DECRYPT);
        assert_int_equal(count_files(w->a.docs), files_a);
        free(p);
        p = NULL;
    }
    assert_int_equal(
        pt_share_accept(&w->a.link, w->a.ds, FX_NOW, NULL, reply.pkg, reply.pkg_len, got_sid, &st),
        0);
    assert_memory_equal(got_sid, sid, 16);
    assert_int_equal(access(store_path(&w->a, bob2.hash, path, sizeof path), F_OK), 0);
    assert_int_equal(get(&w->a, NULL, ref.id, 0, &out, &got, NULL, &st), 0);
    assert_int_equal(got.revision, 2);
    assert_int_equal(out.len, 20000);
    assert_memory_equal(out.p, v2, 20000);
    sink_free(&out);
    files_a = count_files(w->a.docs);
    assert_int_equal(
        pt_share_accept(&w->a.link, w->a.ds, FX_NOW, NULL, reply.pkg, reply.pkg_len, got_sid, &st),
        PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_REPLAY);
    assert_int_equal(count_files(w->a.docs), files_a);

    /* Alice's syncs carry it to Bob's share and to Carol's. */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(
            pt_share_sync(&w->a.link, w->a.ds, FX_NOW, NULL, got_sid, &sync, &sync_len, &st), 0);
        assert_non_null(sync);
        if (memcmp(got_sid, sid_c, 16) == 0)
            assert_int_equal(accept_pkg(&c, FX_NOW, sync, sync_len, &st), 0);
        else
            assert_int_equal(accept_pkg(&w->b, FX_NOW, sync, sync_len, &st), 0);
        free(sync);
        sync = NULL;
    }
    assert_int_equal(
        pt_share_sync(&w->a.link, w->a.ds, FX_NOW, NULL, got_sid, &sync, &sync_len, &st), 0);
    assert_null(sync);
    assert_int_equal(get(&c, NULL, ref.id, 0, &out, &got, NULL, &st), 0);
    assert_int_equal(got.revision, 2);
    assert_memory_equal(out.p, v2, 20000);
    sink_free(&out);

    /* Carol's share is read-only; Bob's base 1 is stale now. Neither
     * leaves a file. */
    files_b = count_files(c.docs);
    assert_int_equal(put_back(&c, ref.id, 2, &m, v3, 500, &got, &again, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_DENIED);
    assert_null(again.pkg);
    assert_int_equal(count_files(c.docs), files_b);
    files_b = count_files(w->b.docs);
    assert_int_equal(put_back(&w->b, ref.id, 1, &m, v3, 500, &got, &again, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_CONFLICT);
    assert_int_equal(count_files(w->b.docs), files_b);

    /* Bob writes 3, Alice makes the share read-only before it arrives:
     * refused, nothing kept; Bob's next write is refused at his token. */
    assert_int_equal(put_back(&w->b, ref.id, 2, &m, v3, 500, &got, &again, &st), 0);
    assert_non_null(again.pkg);
    assert_int_equal(
        pt_share_update(&w->a.link, w->a.ds, FX_NOW, NULL, sid, &ro, &sync, &sync_len, &st), 0);
    files_a = count_files(w->a.docs);
    assert_int_equal(
        pt_share_accept(&w->a.link, w->a.ds, FX_NOW, NULL, again.pkg, again.pkg_len, got_sid, &st),
        PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_DENIED);
    assert_int_equal(count_files(w->a.docs), files_a);
    assert_int_equal(accept_pkg(&w->b, FX_NOW, sync, sync_len, &st), 0);
    assert_int_equal(get(&w->b, NULL, ref.id, 0, &out, &got, NULL, &st), 0);
    assert_int_equal(got.revision, 2);
    sink_free(&out);
    free(again.pkg);
    assert_int_equal(put_back(&w->b, ref.id, 2, &m, v3, 500, &got, &again, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_DENIED);

    /* Deleting the document removes Bob's revision's file from Alice's store. */
    {
        struct pt_reply none;
        struct pt_doc_ref cur;
        assert_int_equal(get(&w->a, NULL, ref.id, 0, &out, &cur, NULL, &st), 0);
        sink_free(&out);
        assert_int_equal(put_back(&w->a, ref.id, 2, &m, v3, 500, &cur, &none, &st), 0);
        assert_null(none.pkg); /* Alice's own: nothing goes back */
        assert_int_equal(pt_doc_delete(&w->a.link, w->a.ds, FX_NOW, NULL, ref.id, 3, &st), 0);
        assert_int_equal(access(store_path(&w->a, bob2.hash, path, sizeof path), F_OK), -1);
    }
    free(sync);
    free(reply.pkg);
    free(addressed);
    free(pkg);
    free(pkg_c);
    free(v1);
    free(v2);
    free(v3);
    agent_close(&c);
}

/* ------------------------------------------------------------ backups */

struct mem_backup {
    const uint8_t *p;
    size_t len;
    struct reader r;
    int opens;
};

static int mem_backup_open(void *ctx, pt_read_fn *rd, void **rd_ctx)
{
    struct mem_backup *b = ctx;
    b->r = (struct reader){b->p, b->len, 0, 7777, 0};
    b->opens++;
    *rd = mem_read;
    *rd_ctx = &b->r;
    return 0;
}

static int restore(struct agent *ag, const char *phrase, const uint8_t *p, size_t len,
                   uint64_t *docs, struct pt_status *st)
{
    struct mem_backup b = {p, len, {0}, 0};
    return pt_backup_restore(&ag->link, FX_NOW, phrase, mem_backup_open, &b, docs, st);
}

static uint32_t doc_count(struct agent *ag)
{
    struct pt_doc_page page;
    struct pt_status st;
    assert_int_equal(pt_doc_list(&ag->link, FX_NOW, NULL, NULL, 0, 64, &page, &st), 0);
    return page.n;
}

static void a_backup_restored_into_a_new_token_reads_the_same_documents(void **state)
{
    struct world *w = *state;
    static const size_t sizes[] = {0, 5000, 200000};
    uint8_t *docs[3], *flipped;
    struct pt_doc_ref refs[3], old;
    struct pt_doc_meta m;
    struct pt_rule rule;
    struct pt_cred app;
    struct pt_cred_info info;
    struct pt_status st;
    struct sink backup = {0}, again = {0}, third = {0}, out;
    struct agent c;
    char phrase[PT_PHRASE_MAX + 1], phrase2[PT_PHRASE_MAX + 1], wrong[PT_PHRASE_MAX + 1],
        other[PT_PHRASE_MAX + 1];
    uint8_t *csr;
    size_t csr_len;
    uint64_t restored = 0;

    meta_init(&m, "bank.statement");
    for (int i = 0; i < 3; i++) {
        docs[i] = random_bytes(sizes[i] + 1, 70 + (uint64_t)i);
        assert_int_equal(put(&w->a, NULL, NULL, 0, &m, docs[i], sizes[i], 0, &refs[i], &st), 0);
    }
    old = refs[1];
    assert_int_equal(put(&w->a, NULL, refs[1].id, 1, &m, docs[2], 999, 0, &refs[1], &st), 0);
    rule_set(&rule, "bank.*", PT_VERB_GET, NULL, NULL);
    assert_int_equal(
        pt_cred_issue(&w->a.link, FX_NOW, NULL, "reader", &rule, 1, 0, false, &app, &info, &st), 0);

    assert_int_equal(
        pt_backup_export(&w->a.link, FX_NOW, NULL, false, mem_write, &backup, phrase, &st), 0);
    assert_true(strlen(phrase) >= 20); /* the first backup draws the phrase */
    assert_true(backup.len > 0);
    assert_int_equal(
        pt_backup_export(&w->a.link, FX_NOW, NULL, false, mem_write, &again, phrase2, &st), 0);
    assert_string_equal(phrase2, ""); /* later ones use it */
    assert_int_equal(
        pt_backup_export(&w->a.link, FX_NOW, NULL, true, mem_write, &third, other, &st), 0);
    assert_true(strlen(other) >= 20 && strcmp(other, phrase) != 0);
    for (int i = 1; i < 3; i++)
        for (size_t off = 0; off + 16 <= sizes[i]; off += 4096)
            assert_null(memmem(backup.p, backup.len, docs[i] + off, 16));
    assert_null(memmem(backup.p, backup.len, m.author, strlen(m.author)));
    assert_null(memmem(backup.p, backup.len, phrase, strlen(phrase)));

    /* A new token over the same document store: nothing readable yet. */
    memset(&c, 0, sizeof c);
    agent_open(&c, w->root, "c");
    agent_keys(&c, "alice again", &csr, &csr_len);
    free(csr);
    pt_docstore_close(c.ds);
    assert_int_equal(pt_docstore_open(&c.ds, w->a.docs), 0);
    assert_int_equal(get(&c, NULL, refs[2].id, 0, &out, NULL, NULL, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_NOT_FOUND);
    sink_free(&out);

    /* A typo, another phrase, a flipped bit, a cut file: refused, nothing stored. */
    snprintf(wrong, sizeof wrong, "%s", phrase);
    wrong[0] = wrong[0] == '7' ? '8' : '7';
    assert_int_equal(restore(&c, wrong, backup.p, backup.len, &restored, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_MALFORMED);
    assert_int_equal(restore(&c, other, backup.p, backup.len, &restored, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_AUTH);
    flipped = fx_alloc(backup.len);
    memcpy(flipped, backup.p, backup.len);
    flipped[backup.len / 2] ^= 1;
    assert_int_equal(restore(&c, phrase, flipped, backup.len, &restored, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_DECRYPT);
    assert_int_equal(restore(&c, phrase, backup.p, backup.len - 1, &restored, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_TRUNCATED);
    assert_int_equal(restore(&c, phrase, backup.p, 0, &restored, &st), PT_ERR_TOKEN);
    assert_true(st.token_status < 0);
    assert_int_equal(doc_count(&c), 0);
    free(flipped);

    /* The real thing: the same documents and revisions. */
    assert_int_equal(restore(&c, phrase, again.p, again.len, &restored, &st), 0);
    assert_int_equal(restored, 3);
    assert_int_equal(doc_count(&c), 3);
    for (int i = 0; i < 3; i++) {
        struct pt_doc_ref got;
        assert_int_equal(get(&c, NULL, refs[i].id, 0, &out, &got, NULL, &st), 0);
        assert_memory_equal(&got, &refs[i], sizeof got);
        assert_int_equal(out.len, i == 1 ? 999 : sizes[i]);
        if (out.len)
            assert_memory_equal(out.p, i == 1 ? docs[2] : docs[i], out.len);
        sink_free(&out);
    }
    assert_int_equal(get(&c, NULL, old.id, 1, &out, NULL, NULL, &st), 0);
    assert_int_equal(out.len, 5000);
    assert_memory_equal(out.p, docs[1], 5000);
    sink_free(&out);
    /* The credential is restored, and the app's credential works on the
     * new token as it did on the old one. */
    {
        struct pt_cred_info list[4];
        uint32_t n = 0;
        assert_int_equal(pt_cred_list(&c.link, FX_NOW, NULL, list, 4, &n, &st), 0);
        assert_int_equal(n, 1);
        assert_string_equal(list[0].name, "reader");
        assert_memory_equal(list[0].id, app.id, 16);
        assert_int_equal(pt_cred_check(&c.link, FX_NOW, &app, &info, &st), 0);
        assert_string_equal(info.name, "reader");
    }

    /* A token that holds documents already takes no backup. */
    assert_int_equal(restore(&c, phrase, backup.p, backup.len, &restored, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_CONFLICT);
    assert_int_equal(doc_count(&c), 3);

    agent_close(&c);
    sink_free(&backup);
    sink_free(&again);
    sink_free(&third);
    for (int i = 0; i < 3; i++)
        free(docs[i]);
}

/* ------------------------------------------------------ the commands */

/* cohort-participant's commands, run through cli_main on software tokens
 * in the world's directory, their output captured. */
struct cli_run {
    char *out, *err;
    size_t out_len, err_len;
};

static int soft_open(void *ctx, const char *token, const char *dir, bool create,
                     struct pt_link *link, void **handle, char *msg, size_t msg_len)
{
    (void)token;
    struct pt_soft *s = NULL;
    int rc;
    (void)ctx;
    rc = create ? pt_soft_create(&s, dir, TK_ARENA_DEFAULT, msg, msg_len)
                : pt_soft_open(&s, dir, TK_ARENA_DEFAULT, msg, msg_len);
    if (rc != 0)
        return rc;
    *link = pt_soft_link(s);
    *handle = s;
    return 0;
}

static void soft_close(void *ctx, void *handle)
{
    (void)ctx;
    pt_soft_close(handle);
}

static void cli_free(struct cli_run *r)
{
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof *r);
}

/* Run a command line: words separated by '|', '@' standing for the world's root. */
static int cli(struct world *w, struct cli_run *r, const char *line)
{
    char *argv[40], words[40][600], *copy = strdup(line), *save = NULL;
    struct cli_env env;
    FILE *out, *err;
    int argc = 0, rc;

    assert_non_null(copy);
    cli_free(r);
    argv[argc++] = "cohort-participant";
    for (char *t = strtok_r(copy, "|", &save); t != NULL; t = strtok_r(NULL, "|", &save)) {
        size_t k = 0;
        assert_true(argc < 40);
        for (const char *p = t; *p && k + 200 < sizeof words[0]; p++) {
            if (*p == '@')
                k += (size_t)snprintf(words[argc] + k, sizeof words[0] - k, "%s", w->root);
            else
                words[argc][k++] = *p;
        }
        words[argc][k] = '\0';
        argv[argc] = words[argc];
        argc++;
    }
    free(copy);
    out = open_memstream(&r->out, &r->out_len);
    err = open_memstream(&r->err, &r->err_len);
    env = (struct cli_env){out, err, FX_NOW, soft_open, soft_close, NULL, NULL, NULL};
    rc = cli_main(argc, argv, &env);
    fclose(out);
    fclose(err);
    return rc;
}

/* cli with the line formatted from fmt and its arguments, as printf does. */
static int clif(struct world *w, struct cli_run *r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int clif(struct world *w, struct cli_run *r, const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < sizeof line);
    return cli(w, r, line);
}

/* The file `name` in the world's directory, holding the len bytes at p. */
static void root_put(struct world *w, const char *name, const uint8_t *p, size_t len)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", w->root, name);
    spit(path, p, len);
}

/* The 32 hex digits after `after` in text, as an id. */
static void id_after(uint8_t id[16], char hex[33], const char *text, const char *after)
{
    const char *p = strstr(text, after);
    if (p == NULL)
        fail_msg("'%s' not in: %s", after, text);
    p += strlen(after);
    memcpy(hex, p, 32);
    hex[32] = '\0';
    assert_int_equal(sodium_hex2bin(id, 16, hex, 32, NULL, NULL, NULL), 0);
}

static void expect_has(const char *text, const char *part)
{
    if (text == NULL || strstr(text, part) == NULL)
        fail_msg("'%s' not in: %s", part, text ? text : "(null)");
}

static int setup_cli(void **state)
{
    struct world *w = fx_alloc(sizeof *w);
    snprintf(w->root, sizeof w->root, "/tmp/test_pt_doc.XXXXXX");
    assert_non_null(mkdtemp(w->root));
    fx_world_init(&w->fx);
    *state = w;
    return 0;
}

static void the_doc_commands_store_read_list_and_delete_documents(void **state)
{
    struct world *w = *state;
    uint8_t *data = random_bytes(150000, 31), *back, id[16];
    struct cli_run r = {0};
    char path[512], hex[33];
    size_t len;

    assert_int_equal(cli(w, &r, "init|--dir|@/t"), CLI_OK);
    root_put(w, "in.bin", data, 150000);
    assert_int_equal(cli(w, &r,
                         "doc|put|--dir|@/t|--type|bank.statement|--author|Quillfeather "
                         "Bank|--tag|2026|@/in.bin"),
                     CLI_OK);
    expect_has(r.out, "revision 1: 150000 bytes");
    id_after(id, hex, r.out, "stored document ");

    assert_int_equal(cli(w, &r, "doc|list|--dir|@/t|--json"), CLI_OK);
    expect_has(r.out, hex);
    expect_has(r.out, "\"author\":\"Quillfeather Bank\",\"subject\":\"\",\"tags\":[\"2026\"]");

    assert_int_equal(clif(w, &r, "doc|get|--dir|@/t|--id|%s|--out|@/out.bin", hex), CLI_OK);
    snprintf(path, sizeof path, "%s/out.bin", w->root);
    back = fx_read_file(path, &len);
    assert_int_equal(len, 150000);
    assert_memory_equal(back, data, len);
    free(back);

    /* A new revision; the old one still reads, to stdout. */
    root_put(w, "in2.bin", data, 10);
    assert_int_equal(
        clif(w, &r, "doc|put|--dir|@/t|--type|bank.statement|--id|%s|--rev|1|@/in2.bin", hex),
        CLI_OK);
    expect_has(r.out, "revision 2: 10 bytes");
    /* Revision 1 is stale now. */
    assert_int_equal(
        clif(w, &r, "doc|put|--dir|@/t|--type|bank.statement|--id|%s|--rev|1|@/in2.bin", hex),
        CLI_DATA);
    expect_has(r.err, "TK_ERR_CONFLICT");
    assert_int_equal(clif(w, &r, "doc|get|--dir|@/t|--id|%s", hex), CLI_OK);
    assert_int_equal(r.out_len, 10);
    assert_memory_equal(r.out, data, 10);
    assert_int_equal(clif(w, &r, "doc|get|--dir|@/t|--id|%s|--rev|1", hex), CLI_OK);
    assert_int_equal(r.out_len, 150000);

    /* Deleting: a stale revision is refused, the current one removes the files. */
    snprintf(path, sizeof path, "%s/t/docs", w->root);
    assert_int_equal(count_files(path), 3);
    assert_int_equal(clif(w, &r, "doc|rm|--dir|@/t|--id|%s|--rev|1", hex), CLI_DATA);
    expect_has(r.err, "TK_ERR_CONFLICT");
    assert_int_equal(clif(w, &r, "doc|rm|--dir|@/t|--id|%s|--rev|2", hex), CLI_OK);
    assert_int_equal(count_files(path), 0);
    assert_int_equal(cli(w, &r, "doc|list|--dir|@/t"), CLI_OK);
    expect_has(r.out, "no documents");
    assert_int_equal(clif(w, &r, "doc|get|--dir|@/t|--id|%s", hex), CLI_DATA);
    expect_has(r.err, "TK_ERR_NOT_FOUND");
    cli_free(&r);
    free(data);
}

static void a_tampered_document_is_never_written_out(void **state)
{
    struct world *w = *state;
    uint8_t *data = random_bytes(9000, 32), id[16], *file;
    struct cli_run r = {0};
    char path[1024], hex[33], line[2048], store[256];
    size_t len;
    DIR *d;
    struct dirent *e;

    assert_int_equal(cli(w, &r, "init|--dir|@/t"), CLI_OK);
    root_put(w, "in.bin", data, 9000);
    assert_int_equal(cli(w, &r, "doc|put|--dir|@/t|--docs|@/store|--type|x|@/in.bin"), CLI_OK);
    id_after(id, hex, r.out, "stored document ");

    /* Find the file (the only one under DIR/xx/) and flip a bit near its end. */
    snprintf(store, sizeof store, "%s/store", w->root);
    assert_non_null(d = opendir(store));
    while ((e = readdir(d)) != NULL)
        if (strlen(e->d_name) == 2 && e->d_name[0] != '.')
            snprintf(path, sizeof path, "%s/%s", store, e->d_name);
    closedir(d);
    assert_non_null(d = opendir(path));
    while ((e = readdir(d)) != NULL)
        if (strlen(e->d_name) == 64)
            snprintf(line, sizeof line, "%s/%s", path, e->d_name);
    closedir(d);
    file = fx_read_file(line, &len);
    file[len - 20] ^= 4;
    spit(line, file, len);
    free(file);

    assert_int_equal(clif(w, &r, "doc|get|--dir|@/t|--docs|@/store|--id|%s|--out|@/out.bin", hex),
                     CLI_DATA);
    expect_has(r.err, "TK_ERR_DECRYPT");
    snprintf(path, sizeof path, "%s/out.bin", w->root);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(clif(w, &r, "doc|get|--dir|@/t|--docs|@/store|--id|%s", hex), CLI_DATA);
    assert_int_equal(r.out_len, 0); /* nothing on stdout either */
    /* No temporary file was left beside out.bin. */
    assert_non_null(d = opendir(w->root));
    while ((e = readdir(d)) != NULL)
        assert_null(strstr(e->d_name, "out.bin"));
    closedir(d);
    cli_free(&r);
    free(data);
}

static void app_add_prints_a_credential_that_works_once_and_bad_lines_are_usage_errors(void **state)
{
    struct world *w = *state;
    static const char *bad[] = {
        "app|add|--dir|@/t|--name|x|--rule|bank.*",
        "app|add|--dir|@/t|--name|x|--rule|bank.*:GET:color=red",
        "app|add|--dir|@/t|--name|x|--rule|bank.*:FETCH",
        "app|add|--dir|@/t|--name|x|--rule|:GET",
        "app|add|--dir|@/t|--name|x|--rule|bank.*:GET|--expires|tomorrow",
        "app|add|--dir|@/t|--name|x",
        "app|revoke|--dir|@/t|--id|12",
        "doc|get|--dir|@/t|--id|zz000000000000000000000000000000",
        "doc|put|--dir|@/t|@/in.bin",
        "doc|list|--dir|@/t|--filter|bank.*:GET",
        "doc|rm|--dir|@/t|--id|00000000000000000000000000000000",
        "doc|frobnicate|--dir|@/t",
        "share|create|--dir|@/t|--to|@/x|--out|@/y",
        "share|create|--dir|@/t|--to|@/x|--out|@/y|--doc|00000000000000000000000000000000|"
        "--selector|x",
    };
    struct cli_run r = {0};
    struct pt_soft *soft;
    struct pt_link link;
    struct pt_cred cred;
    struct pt_doc_page page;
    struct pt_status st;
    char err[256];

    assert_int_equal(cli(w, &r, "init|--dir|@/t"), CLI_OK);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (cli(w, &r, bad[i]) != CLI_USAGE)
            fail_msg("not a usage error: %s: %s", bad[i], r.err);
        expect_has(r.err, "usage: cohort-participant");
    }
    assert_int_equal(cli(w, &r, "app|add|--dir|@/t|--name|reader|--rule|note:GET:tag=a,b|--quiet"),
                     CLI_OK);
    assert_int_equal(r.out_len, PT_CRED_TEXT_LEN + 1);
    assert_int_equal(r.err_len, 0);
    assert_int_equal(pt_cred_parse(&cred, r.out, PT_CRED_TEXT_LEN), 0);
    assert_int_equal(cli(w, &r, "app|list|--dir|@/t"), CLI_OK);
    expect_has(r.out, "note:GET:tag=a,b");
    assert_null(strstr(r.out, "Bearer")); /* the secret is never listed */

    snprintf(err, sizeof err, "%s/t", w->root);
    assert_int_equal(pt_soft_open(&soft, err, TK_ARENA_DEFAULT, err, sizeof err), 0);
    link = pt_soft_link(soft);
    assert_int_equal(pt_doc_list(&link, FX_NOW, &cred, NULL, 0, 64, &page, &st), 0);
    assert_int_equal(page.n, 0);
    cred.secret[31] ^= 1;
    assert_int_equal(pt_doc_list(&link, FX_NOW, &cred, NULL, 0, 64, &page, &st), PT_ERR_TOKEN);
    assert_int_equal(st.token_status, TK_ERR_AUTH);
    pt_soft_close(soft);
    cli_free(&r);
}

/* A provisioning bundle for the token in dir, from its certificate request, in a file. */
static void bundle_file(struct world *w, const char *dir, const char *subject, char *path,
                        size_t cap)
{
    Cohort__CertRequest *csr;
    Cohort__ProvisionBundle bundle = COHORT__PROVISION_BUNDLE__INIT;
    Cohort__ProvisionFinish pf = COHORT__PROVISION_FINISH__INIT;
    Cohort__Certificate c;
    ProtobufCBinaryData trusted[2];
    struct fx_cert cert;
    uint8_t sealed[32 + crypto_box_SEALBYTES], *bytes, *buf;
    char csr_path[600];
    size_t len;

    snprintf(csr_path, sizeof csr_path, "%s/%s/" CLI_CSR_FILE, w->root, dir);
    bytes = fx_read_file(csr_path, &len);
    csr = cohort__cert_request__unpack(NULL, len, bytes);
    assert_non_null(csr);
    fx_cert_issue(&cert, COHORT__ROLE__ROLE_TOKEN, subject, csr->sign_pk.data, csr->box_pk.data,
                  &w->fx.maker, FX_NOW - FX_DAY, FX_NOW + 365 * FX_DAY, NULL);
    crypto_box_seal(sealed, w->fx.secret, 32, csr->box_pk.data);
    fx_cert_pb(&c, &cert);
    trusted[0] = (ProtobufCBinaryData){32, (uint8_t *)w->fx.authority.pk};
    trusted[1] = (ProtobufCBinaryData){32, (uint8_t *)w->fx.maker.pk};
    pf.device_cert = &c;
    pf.sealed_group_secret = (ProtobufCBinaryData){sizeof sealed, sealed};
    pf.n_trusted_authorities = 2;
    pf.trusted_authorities = trusted;
    bundle.finish = &pf;
    bundle.subject = (char *)subject;
    len = cohort__provision_bundle__get_packed_size(&bundle);
    buf = fx_alloc(len);
    cohort__provision_bundle__pack(&bundle, buf);
    snprintf(path, cap, "%s/%s.bundle", w->root, subject);
    spit(path, buf, len);
    free(buf);
    cohort__cert_request__free_unpacked(csr, NULL);
    free(bytes);
}

static void cli_token(struct world *w, struct cli_run *r, const char *dir, const char *subject)
{
    char line[1024], path[600];
    snprintf(line, sizeof line, "init|--dir|@/%s|--subject|%s", dir, subject);
    assert_int_equal(cli(w, r, line), CLI_OK);
    bundle_file(w, dir, subject, path, sizeof path);
    snprintf(line, sizeof line, "provision|--dir|@/%s|%s", dir, path);
    if (cli(w, r, line) != CLI_OK)
        fail_msg("provision: %s", r->err);
}

static void the_share_commands_carry_a_document_to_another_token_and_revoke_it(void **state)
{
    struct world *w = *state;
    uint8_t *data = random_bytes(60000, 81), *v2 = random_bytes(333, 82), id[16], sid[16];
    struct cli_run r = {0};
    char hex[33], share[33];

    cli_token(w, &r, "a", "alice");
    cli_token(w, &r, "b", "bob");
    root_put(w, "in.bin", data, 60000);
    assert_int_equal(cli(w, &r, "doc|put|--dir|@/a|--type|health.record|@/in.bin"), CLI_OK);
    id_after(id, hex, r.out, "stored document ");

    assert_int_equal(cli(w, &r, "identity|--dir|@/b"), CLI_OK);
    assert_int_equal(r.out[r.out_len - 1], '\n');
    root_put(w, "bob.id", (const uint8_t *)r.out, r.out_len);
    assert_int_equal(cli(w, &r, "identity|--dir|@/b|--json"), CLI_OK);
    expect_has(r.out, "{\"token\":\"");

    assert_int_equal(
        clif(w, &r, "share|create|--dir|@/a|--to|@/bob.id|--doc|%s|--max-reads|5|--out|@/p1", hex),
        CLI_OK);
    id_after(sid, share, r.out, "created share ");
    assert_int_equal(cli(w, &r, "share|accept|--dir|@/b|@/p1"), CLI_OK);
    expect_has(r.out, share);
    expect_has(r.out, "alice");
    expect_has(r.out, hex);
    assert_int_equal(clif(w, &r, "doc|get|--dir|@/b|--id|%s", hex), CLI_OK);
    assert_int_equal(r.out_len, 60000);
    assert_memory_equal(r.out, data, 60000);
    assert_int_equal(cli(w, &r, "share|accept|--dir|@/b|@/p1"), CLI_DATA);
    expect_has(r.err, "TK_ERR_REPLAY");
    expect_has(r.err, "nothing is stored");

    /* An update, through the outbox. */
    root_put(w, "in2.bin", v2, 333);
    assert_int_equal(
        clif(w, &r, "doc|put|--dir|@/a|--type|health.record|--id|%s|--rev|1|@/in2.bin", hex),
        CLI_OK);
    assert_int_equal(cli(w, &r, "share|sync|--dir|@/a"), CLI_OK);
    expect_has(r.out, share);
    assert_int_equal(clif(w, &r, "share|accept|--dir|@/b|@/a/outbox/%s.pkg", share), CLI_OK);
    assert_int_equal(cli(w, &r, "share|sync|--dir|@/a"), CLI_OK);
    expect_has(r.out, "every share is up to date");
    assert_int_equal(clif(w, &r, "doc|get|--dir|@/b|--id|%s", hex), CLI_OK);
    assert_int_equal(r.out_len, 333);
    assert_memory_equal(r.out, v2, 333);

    assert_int_equal(cli(w, &r, "share|list|--dir|@/a"), CLI_OK);
    expect_has(r.out, "to    bob");
    assert_int_equal(cli(w, &r, "share|list|--dir|@/b|--json"), CLI_OK);
    expect_has(r.out, "\"incoming\":true");
    expect_has(r.out, "\"peer\":\"alice\"");

    /* Revoked. */
    assert_int_equal(clif(w, &r, "share|revoke|--dir|@/a|--id|%s|--out|@/p3", share), CLI_OK);
    assert_int_equal(cli(w, &r, "share|accept|--dir|@/b|@/p3"), CLI_OK);
    assert_int_equal(clif(w, &r, "doc|get|--dir|@/b|--id|%s", hex), CLI_DATA);
    expect_has(r.err, "TK_ERR_DENIED");
    assert_int_equal(r.out_len, 0);
    cli_free(&r);
    free(data);
    free(v2);
}

static void a_revision_of_a_document_received_read_write_goes_back_in_a_reply_file(void **state)
{
    struct world *w = *state;
    uint8_t *data = random_bytes(5000, 83), *v2 = random_bytes(700, 84), id[16], sid[16];
    struct cli_run r = {0};
    char path[1024], hex[33], share[33];

    cli_token(w, &r, "a", "alice");
    cli_token(w, &r, "b", "bob");
    root_put(w, "in.bin", data, 5000);
    assert_int_equal(cli(w, &r, "doc|put|--dir|@/a|--type|health.record|--tag|lab|@/in.bin"),
                     CLI_OK);
    id_after(id, hex, r.out, "stored document ");
    assert_int_equal(cli(w, &r, "identity|--dir|@/b"), CLI_OK);
    root_put(w, "bob.id", (const uint8_t *)r.out, r.out_len);
    assert_int_equal(
        clif(w, &r,
             "share|create|--dir|@/a|--to|@/bob.id|--doc|%s|--read-write|--max-reads|3|--out|@/p1",
             hex),
        CLI_OK);
    id_after(sid, share, r.out, "created share ");
    assert_int_equal(cli(w, &r, "share|accept|--dir|@/b|@/p1"), CLI_OK);

    /* Without --reply-out the revision has nowhere to go: a usage error,
     * and nothing is written. */
    root_put(w, "v2.bin", v2, 700);
    assert_int_equal(clif(w, &r, "doc|put|--dir|@/b|--id|%s|--rev|1|@/v2.bin", hex), CLI_USAGE);
    expect_has(r.err, "read-write share");
    expect_has(r.err, "--reply-out FILE");
    /* New metadata is not Bob's to give either. */
    assert_int_equal(clif(w, &r, "doc|put|--dir|@/b|--id|%s|--rev|1|--author|bob|@/v2.bin", hex),
                     CLI_USAGE);
    expect_has(r.err, "--type");

    /* With it, the owner's metadata is kept (no --type) and no read is spent. */
    if (clif(w, &r, "doc|put|--dir|@/b|--id|%s|--rev|1|--reply-out|@/back|@/v2.bin", hex) != CLI_OK)
        fail_msg("doc put: %s", r.err);
    expect_has(r.out, "revision 2");
    expect_has(r.out, "goes back to the document's owner");
    assert_int_equal(cli(w, &r, "share|list|--dir|@/b|--json"), CLI_OK);
    expect_has(r.out, "\"reads\":0}");
    /* A stale revision is the token's conflict. */
    assert_int_equal(
        clif(w, &r, "doc|put|--dir|@/b|--id|%s|--rev|1|--reply-out|@/back2|@/v2.bin", hex),
        CLI_DATA);
    expect_has(r.err, "TK_ERR_CONFLICT");

    /* Alice takes the return package: revision 2 of her document is Bob's. */
    assert_int_equal(cli(w, &r, "share|accept|--dir|@/a|@/back"), CLI_OK);
    assert_int_equal(clif(w, &r, "doc|get|--dir|@/a|--id|%s", hex), CLI_OK);
    assert_int_equal(r.out_len, 700);
    assert_memory_equal(r.out, v2, 700);
    assert_int_equal(cli(w, &r, "share|accept|--dir|@/a|@/back"), CLI_DATA);
    expect_has(r.err, "TK_ERR_REPLAY");

    /* --reply-out on an own document writes nothing. */
    assert_int_equal(
        clif(w, &r, "doc|put|--dir|@/a|--id|%s|--rev|2|--reply-out|@/none|@/in.bin", hex), CLI_OK);
    expect_has(r.out, "nothing written");
    snprintf(path, sizeof path, "%s/none", w->root);
    assert_int_equal(access(path, F_OK), -1);
    cli_free(&r);
    free(data);
    free(v2);
}

static void share_update_makes_a_read_write_share_read_only_at_the_recipient(void **state)
{
    struct world *w = *state;
    uint8_t *data = random_bytes(900, 85), id[16], sid[16];
    struct cli_run r = {0};
    char path[1024], hex[33], share[33];

    cli_token(w, &r, "a", "alice");
    cli_token(w, &r, "b", "bob");
    root_put(w, "in.bin", data, 900);
    assert_int_equal(cli(w, &r, "doc|put|--dir|@/a|--type|note|@/in.bin"), CLI_OK);
    id_after(id, hex, r.out, "stored document ");
    assert_int_equal(cli(w, &r, "identity|--dir|@/b"), CLI_OK);
    root_put(w, "bob.id", (const uint8_t *)r.out, r.out_len);
    assert_int_equal(
        clif(w, &r, "share|create|--dir|@/a|--to|@/bob.id|--doc|%s|--read-write|--out|@/p1", hex),
        CLI_OK);
    id_after(sid, share, r.out, "created share ");
    assert_int_equal(cli(w, &r, "share|accept|--dir|@/b|@/p1"), CLI_OK);

    /* Bad lines are usage errors; an unknown share is the data's. */
    assert_int_equal(clif(w, &r, "share|update|--dir|@/a|--id|%s|--read-only", share), CLI_USAGE);
    assert_int_equal(clif(w, &r, "share|update|--dir|@/a|--id|%s|--out|@/p2", share), CLI_USAGE);
    assert_int_equal(
        clif(w, &r, "share|update|--dir|@/a|--id|%s|--read-only|--read-write|--out|@/p2", share),
        CLI_USAGE);
    assert_int_equal(cli(w, &r,
                         "share|update|--dir|@/a|--id|00000000000000000000000000000000|"
                         "--read-only|--out|@/p2"),
                     CLI_DATA);
    expect_has(r.err, "no share");

    if (clif(w, &r, "share|update|--dir|@/a|--id|%s|--read-only|--expires|30d|--out|@/p2", share) !=
        CLI_OK)
        fail_msg("share update: %s", r.err);
    expect_has(r.out, "read-only");
    expect_has(r.out, "expires ");
    assert_int_equal(cli(w, &r, "share|list|--dir|@/a|--json"), CLI_OK);
    expect_has(r.out, "\"read_write\":false");
    assert_int_equal(cli(w, &r, "share|accept|--dir|@/b|@/p2"), CLI_OK);
    assert_int_equal(cli(w, &r, "share|list|--dir|@/b|--json"), CLI_OK);
    expect_has(r.out, "\"read_write\":false");

    /* Bob can still read it, and can no longer write it. */
    assert_int_equal(clif(w, &r, "doc|get|--dir|@/b|--id|%s", hex), CLI_OK);
    assert_int_equal(r.out_len, 900);
    assert_int_equal(
        clif(w, &r, "doc|put|--dir|@/b|--id|%s|--rev|1|--reply-out|@/back|@/in.bin", hex),
        CLI_DATA);
    expect_has(r.err, "TK_ERR_DENIED");
    snprintf(path, sizeof path, "%s/back", w->root);
    assert_int_equal(access(path, F_OK), -1);
    cli_free(&r);
    free(data);
}

static void backup_export_and_recover_bring_the_documents_to_a_new_token(void **state)
{
    struct world *w = *state;
    uint8_t *data = random_bytes(40000, 91), id[16];
    struct cli_run r = {0};
    char path[1024], hex[33], line[2048], phrase[PT_PHRASE_MAX + 1];
    const char *p;
    size_t n;

    assert_int_equal(cli(w, &r, "init|--dir|@/a"), CLI_OK);
    root_put(w, "in.bin", data, 40000);
    assert_int_equal(cli(w, &r, "doc|put|--dir|@/a|--type|bank.statement|@/in.bin"), CLI_OK);
    id_after(id, hex, r.out, "stored document ");
    assert_int_equal(cli(w, &r, "backup|export|--dir|@/a|--out|@/a.backup"), CLI_OK);
    expect_has(r.out, "recovery phrase");
    p = strstr(r.out, "\n  ");
    assert_non_null(p);
    p += 3;
    n = strcspn(p, "\n");
    assert_true(n > 0 && n <= PT_PHRASE_MAX);
    memcpy(phrase, p, n);
    phrase[n] = '\0';
    assert_int_equal(cli(w, &r, "backup|export|--dir|@/a|--out|@/a2.backup"), CLI_OK);
    assert_null(strstr(r.out, phrase));

    assert_int_equal(cli(w, &r, "init|--dir|@/c"), CLI_OK);
    root_put(w, "wrong", (const uint8_t *)"ABCD-EFGH-JKMN-PQRS-TVWX-YZ01-2345-6789-ABCD\n", 45);
    assert_int_equal(cli(w, &r, "recover|--dir|@/c|--phrase-file|@/wrong|@/a.backup"), CLI_DATA);
    expect_has(r.err, "the token is unchanged");
    snprintf(path, sizeof path, "%s/phrase", w->root);
    snprintf(line, sizeof line, "%s\n", phrase);
    spit(path, (const uint8_t *)line, strlen(line));
    assert_int_equal(cli(w, &r, "recover|--dir|@/c|--phrase-file|@/phrase|@/a.backup"), CLI_OK);
    expect_has(r.out, "1 documents");
    assert_int_equal(clif(w, &r, "doc|get|--dir|@/c|--docs|@/a/docs|--id|%s", hex), CLI_OK);
    assert_int_equal(r.out_len, 40000);
    assert_memory_equal(r.out, data, 40000);
    cli_free(&r);
    free(data);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_credential_reads_back_from_its_text_and_bad_texts_are_refused),
        cmocka_unit_test_setup_teardown(documents_of_0_1_4k_and_16m_round_trip_through_the_store,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(no_plaintext_and_no_metadata_is_ever_on_disk, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_refused_write_leaves_no_file, setup, teardown),
        cmocka_unit_test_setup_teardown(
            a_stale_revision_is_a_conflict_and_old_revisions_stay_readable, setup, teardown),
        cmocka_unit_test_setup_teardown(every_tampered_file_is_refused_with_its_code, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(deleting_removes_every_revision_and_its_files, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            the_list_pages_through_the_current_revisions_and_filters_them, setup, teardown),
        cmocka_unit_test_setup_teardown(an_app_reads_and_writes_only_what_its_rules_allow, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            a_delegated_credential_stays_within_its_parent_and_falls_with_it, setup, teardown),
        cmocka_unit_test_setup_teardown(the_doc_commands_store_read_list_and_delete_documents,
                                        setup_cli, teardown),
        cmocka_unit_test_setup_teardown(a_tampered_document_is_never_written_out, setup_cli,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            app_add_prints_a_credential_that_works_once_and_bad_lines_are_usage_errors, setup_cli,
            teardown),
        cmocka_unit_test_setup_teardown(a_share_carries_only_ciphertext_and_reaches_the_recipient,
                                        setup_two, teardown),
        cmocka_unit_test_setup_teardown(a_forged_foreign_or_replayed_package_stores_nothing,
                                        setup_two, teardown),
        cmocka_unit_test_setup_teardown(the_recipient_enforces_max_reads_and_expiry, setup_two,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            a_read_write_share_carries_the_recipients_revision_back_in_a_return_package, setup_two,
            teardown),
        cmocka_unit_test_setup_teardown(a_backup_restored_into_a_new_token_reads_the_same_documents,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            the_share_commands_carry_a_document_to_another_token_and_revoke_it, setup_cli,
            teardown),
        cmocka_unit_test_setup_teardown(
            a_revision_of_a_document_received_read_write_goes_back_in_a_reply_file, setup_cli,
            teardown),
        cmocka_unit_test_setup_teardown(
            share_update_makes_a_read_write_share_read_only_at_the_recipient, setup_cli, teardown),
        cmocka_unit_test_setup_teardown(
            backup_export_and_recover_bring_the_documents_to_a_new_token, setup_cli, teardown),
    };
    if (tk_library_init() != TK_OK)
        return 1;
    return cmocka_run_group_tests_name("agent documents", tests, NULL, NULL);
}
