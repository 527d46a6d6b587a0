/*
 * The token's persistent store, through software tokens in real
 * directories (participant/pt_soft.c) and real processes.
 *
 * - Tables: loads, batches that span requests, pages of rows, deletes by
 *   ids, by WHERE and whole tables, updates, compaction; a schema that does
 *   not match is refused and changes nothing; everything survives a reopen.
 * - RAM: scans and compaction of 20,000 rows in the minimum arena.
 * - Tampering: every kind of change a host can make to the flash, the
 *   image or the counter, each caught with its exact code, at open and (for
 *   the flash, which the token reads again) at the next read, after which
 *   the token refuses to answer.
 * - Crashes: a child process writes to a token and kills itself with
 *   SIGKILL after N bytes written by the file layer, for 200+ seeded N over
 *   the whole range; the reopened token holds exactly the state after the
 *   last acknowledged operation, or after the one in flight.
 *
 * Every directory lives under one mkdtemp directory in /tmp, removed at
 * the end.
 */
#include "tk_fixture.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "participant/pt_int.h"

#define NCOLS 7
#define ERR_LEN 256

static char base[64];

static void dir_path(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", base, name);
}

static void file_path(char *out, size_t n, const char *dir, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
}

static void run_cmd(const char *fmt, const char *a, const char *b)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, fmt, a, b);
    assert_int_equal(system(cmd), 0);
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(base, sizeof base, "/tmp/cohort_store_XXXXXX");
    if (mkdtemp(base) == NULL || tk_library_init() != TK_OK)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    char cmd[128];
    (void)state;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    return system(cmd) == 0 ? 0 : -1;
}

/* ------------------------------------------------------------- files */

/* Rewrite a file in place (same inode: an open token sees it). */
static void write_whole(const char *path, const uint8_t *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, p, n), (ssize_t)n);
    close(fd);
}

static void copy_dir(const char *from, const char *to)
{
    run_cmd("rm -rf '%s' && mkdir -m 700 '%s'", to, to);
    run_cmd("cp -p '%s'/* '%s'/", from, to);
}

/* ------------------------------------------------------------- calls */

static int call(struct pt_soft *s, const Cohort__TokenRequest *req, Cohort__TokenResponse **out)
{
    struct pt_link l = pt_soft_link(s);
    size_t len = cohort__token_request__get_packed_size(req), resp_len;
    uint8_t *buf = fx_alloc(len);
    const uint8_t *resp;
    Cohort__TokenResponse *r;
    int rc;

    cohort__token_request__pack(req, buf);
    assert_int_equal(l.transact(l.ctx, buf, len, &resp, &resp_len), PT_OK);
    free(buf);
    r = cohort__token_response__unpack(NULL, resp_len, resp);
    assert_non_null(r);
    assert_true(r->arena_peak <= TK_ARENA_DEFAULT);
    rc = r->status;
    if (out != NULL)
        *out = r;
    else
        cohort__token_response__free_unpacked(r, NULL);
    return rc;
}

static void request(Cohort__TokenRequest *req, int body, void *msg)
{
    cohort__token_request__init(req);
    req->now = FX_NOW;
    req->body_case = (Cohort__TokenRequest__BodyCase)body;
    switch (body) {
    case COHORT__TOKEN_REQUEST__BODY_INFO:
        req->info = msg;
        break;
    case COHORT__TOKEN_REQUEST__BODY_PROVISION_BEGIN:
        req->provision_begin = msg;
        break;
    case COHORT__TOKEN_REQUEST__BODY_LOAD_TABLE:
        req->load_table = msg;
        break;
    case COHORT__TOKEN_REQUEST__BODY_READ_ROWS:
        req->read_rows = msg;
        break;
    case COHORT__TOKEN_REQUEST__BODY_DELETE_ROWS:
        req->delete_rows = msg;
        break;
    case COHORT__TOKEN_REQUEST__BODY_UPDATE_ROWS:
        req->update_rows = msg;
        break;
    case COHORT__TOKEN_REQUEST__BODY_LIST_TABLES:
        req->list_tables = msg;
        break;
    case COHORT__TOKEN_REQUEST__BODY_COMPACT:
        req->compact = msg;
        break;
    default:
        fail_msg("no such body");
    }
}

static int keys(struct pt_soft *s, uint8_t pk[32])
{
    Cohort__TokenRequest req;
    Cohort__ProvisionBegin pb;
    Cohort__TokenResponse *r;
    int rc;
    cohort__provision_begin__init(&pb);
    pb.subject = "soft";
    request(&req, COHORT__TOKEN_REQUEST__BODY_PROVISION_BEGIN, &pb);
    rc = call(s, &req, &r);
    if (rc == TK_OK && pk != NULL)
        memcpy(pk, r->cert_request->sign_pk.data, 32);
    cohort__token_response__free_unpacked(r, NULL);
    return rc;
}

static int info(struct pt_soft *s, bool *has_keys)
{
    Cohort__TokenRequest req;
    Cohort__GetInfo gi;
    Cohort__TokenResponse *r;
    int rc;
    cohort__get_info__init(&gi);
    request(&req, COHORT__TOKEN_REQUEST__BODY_INFO, &gi);
    rc = call(s, &req, &r);
    if (rc == TK_OK && has_keys != NULL)
        *has_keys = r->info->sign_pk.len == 32;
    cohort__token_response__free_unpacked(r, NULL);
    return rc;
}

/* ------------------------------------------------------- the table */

/* Every column type: k and ver say what the other values are. */
struct schema_pb {
    Cohort__Column cols[NCOLS];
    Cohort__Column *ptrs[NCOLS];
    Cohort__TableSchema s;
    char name[16];
};

static void notes_schema(struct schema_pb *sc, const char *name)
{
    static const char *names[NCOLS] = {"k", "ver", "label", "amount", "day", "at", "ok"};
    static const int types[NCOLS] = {COHORT__VALUE_TYPE__VT_INT,  COHORT__VALUE_TYPE__VT_INT,
                                     COHORT__VALUE_TYPE__VT_TEXT, COHORT__VALUE_TYPE__VT_DECIMAL,
                                     COHORT__VALUE_TYPE__VT_DATE, COHORT__VALUE_TYPE__VT_TIMESTAMP,
                                     COHORT__VALUE_TYPE__VT_BOOL};
    size_t i;
    snprintf(sc->name, sizeof sc->name, "%s", name);
    cohort__table_schema__init(&sc->s);
    for (i = 0; i < NCOLS; i++) {
        cohort__column__init(&sc->cols[i]);
        sc->cols[i].name = (char *)names[i];
        sc->cols[i].type = (Cohort__ValueType)types[i];
        sc->cols[i].scale = types[i] == COHORT__VALUE_TYPE__VT_DECIMAL ? 2 : 0;
        sc->ptrs[i] = &sc->cols[i];
    }
    sc->s.name = sc->name;
    sc->s.n_columns = NCOLS;
    sc->s.columns = sc->ptrs;
}

struct row_pb {
    Cohort__Value v[NCOLS];
    Cohort__Value *vp[NCOLS];
    Cohort__Row r;
    char label[40];
};

static void make_row(struct row_pb *r, uint64_t k, uint64_t ver)
{
    size_t i;
    cohort__row__init(&r->r);
    for (i = 0; i < NCOLS; i++) {
        cohort__value__init(&r->v[i]);
        r->vp[i] = &r->v[i];
    }
    r->v[0].type = COHORT__VALUE_TYPE__VT_INT;
    r->v[0].i = (int64_t)k;
    r->v[1].type = COHORT__VALUE_TYPE__VT_INT;
    r->v[1].i = (int64_t)ver;
    if (k % 7 != 3) { /* else NULL */
        snprintf(r->label, sizeof r->label, "note %llu, version %llu", (unsigned long long)k,
                 (unsigned long long)ver);
        r->v[2].type = COHORT__VALUE_TYPE__VT_TEXT;
        r->v[2].s.data = (uint8_t *)r->label;
        r->v[2].s.len = strlen(r->label);
    }
    r->v[3].type = COHORT__VALUE_TYPE__VT_DECIMAL;
    r->v[3].i = (int64_t)(k * 137 % 100000) - 5000;
    r->v[3].scale = 2;
    r->v[4].type = COHORT__VALUE_TYPE__VT_DATE;
    r->v[4].i = FX_JAN1 + (int64_t)(k % 365);
    r->v[5].type = COHORT__VALUE_TYPE__VT_TIMESTAMP;
    r->v[5].i = FX_NOW - (int64_t)(k * 61);
    r->v[6].type = COHORT__VALUE_TYPE__VT_BOOL;
    r->v[6].i = (int64_t)(k % 2);
    r->r.n_values = NCOLS;
    r->r.values = r->vp;
}

/* Whether a stored row is exactly make_row(k, ver) for its own k and ver. */
static bool row_is_intact(const Cohort__Row *got, uint64_t *k, uint64_t *ver)
{
    struct row_pb want;
    size_t i;
    if (got->n_values != NCOLS || got->values[0]->type != COHORT__VALUE_TYPE__VT_INT ||
        got->values[1]->type != COHORT__VALUE_TYPE__VT_INT)
        return false;
    *k = (uint64_t)got->values[0]->i;
    *ver = (uint64_t)got->values[1]->i;
    make_row(&want, *k, *ver);
    for (i = 0; i < NCOLS; i++) {
        const Cohort__Value *a = got->values[i], *b = &want.v[i];
        if (a->type != b->type || a->i != b->i || a->scale != b->scale || a->s.len != b->s.len ||
            (a->s.len && memcmp(a->s.data, b->s.data, a->s.len) != 0))
            return false;
    }
    return true;
}

/* Rows k0 .. k0 + n - 1 (version 0) into `table`. */
static int load(struct pt_soft *s, const char *table, uint64_t k0, size_t n, bool more)
{
    struct schema_pb sc;
    struct row_pb *rows = fx_alloc(n * sizeof *rows);
    Cohort__Row **ptrs = fx_alloc(n * sizeof *ptrs);
    Cohort__TokenRequest req;
    Cohort__LoadTable lt;
    size_t i;
    int rc;

    notes_schema(&sc, table);
    for (i = 0; i < n; i++) {
        make_row(&rows[i], k0 + i, 0);
        ptrs[i] = &rows[i].r;
    }
    cohort__load_table__init(&lt);
    lt.schema = &sc.s;
    lt.n_rows = n;
    lt.rows = ptrs;
    lt.more = more;
    request(&req, COHORT__TOKEN_REQUEST__BODY_LOAD_TABLE, &lt);
    rc = call(s, &req, NULL);
    free(rows);
    free(ptrs);
    return rc;
}

struct dump {
    size_t n, cap;
    uint64_t *id, *k, *ver;
};

static void dump_free(struct dump *d)
{
    free(d->id);
    free(d->k);
    free(d->ver);
    memset(d, 0, sizeof *d);
}

static void dump_add(struct dump *d, uint64_t id, uint64_t k, uint64_t ver)
{
    if (d->n == d->cap) {
        d->cap = d->cap ? 2 * d->cap : 64;
        d->id = realloc(d->id, d->cap * sizeof *d->id);
        d->k = realloc(d->k, d->cap * sizeof *d->k);
        d->ver = realloc(d->ver, d->cap * sizeof *d->ver);
        assert_true(d->id && d->k && d->ver);
    }
    d->id[d->n] = id;
    d->k[d->n] = k;
    d->ver[d->n++] = ver;
}

/*
 * Read a whole table a page at a time (max_rows per page; 0: as many as
 * fit). Every row must be intact and ids must grow. Returns the status of
 * the first page that failed, or 0.
 */
static int read_table(struct pt_soft *s, const char *table, uint32_t max_rows, struct dump *d,
                      size_t *pages)
{
    uint64_t after = 0;
    bool more = true;
    memset(d, 0, sizeof *d);
    if (pages != NULL)
        *pages = 0;
    while (more) {
        Cohort__TokenRequest req;
        Cohort__ReadRows rr;
        Cohort__TokenResponse *r;
        size_t i;
        int rc;
        cohort__read_rows__init(&rr);
        rr.table = (char *)table;
        rr.after_id = after;
        rr.max_rows = max_rows;
        request(&req, COHORT__TOKEN_REQUEST__BODY_READ_ROWS, &rr);
        rc = call(s, &req, &r);
        if (rc != TK_OK) {
            cohort__token_response__free_unpacked(r, NULL);
            return rc;
        }
        assert_int_equal(r->body_case, COHORT__TOKEN_RESPONSE__BODY_ROWS);
        assert_non_null(r->rows->schema);
        assert_string_equal(r->rows->schema->name, table);
        assert_int_equal(r->rows->n_ids, r->rows->n_rows);
        if (max_rows)
            assert_true(r->rows->n_rows <= max_rows);
        for (i = 0; i < r->rows->n_rows; i++) {
            uint64_t k = 0, ver = 0;
            assert_true(r->rows->ids[i] > after);
            assert_true(row_is_intact(r->rows->rows[i], &k, &ver));
            after = r->rows->ids[i];
            dump_add(d, after, k, ver);
        }
        more = r->rows->more;
        if (more)
            assert_true(r->rows->n_rows > 0);
        if (pages != NULL)
            (*pages)++;
        cohort__token_response__free_unpacked(r, NULL);
    }
    return TK_OK;
}

/* ListTables: names and row counts, in order. */
struct listing {
    size_t n;
    char name[8][33];
    uint64_t rows[8];
};

static int list_tables(struct pt_soft *s, struct listing *l)
{
    Cohort__TokenRequest req;
    Cohort__ListTables lt;
    Cohort__TokenResponse *r;
    size_t i;
    int rc;
    cohort__list_tables__init(&lt);
    request(&req, COHORT__TOKEN_REQUEST__BODY_LIST_TABLES, &lt);
    memset(l, 0, sizeof *l);
    rc = call(s, &req, &r);
    if (rc == TK_OK) {
        assert_int_equal(r->body_case, COHORT__TOKEN_RESPONSE__BODY_TABLES);
        assert_true(r->tables->n_tables <= 8);
        l->n = r->tables->n_tables;
        for (i = 0; i < l->n; i++) {
            snprintf(l->name[i], sizeof l->name[i], "%s", r->tables->tables[i]->schema->name);
            l->rows[i] = r->tables->tables[i]->rows;
            assert_int_equal(r->tables->tables[i]->schema->n_columns, NCOLS);
        }
    }
    cohort__token_response__free_unpacked(r, NULL);
    return rc;
}

static int changed(struct pt_soft *s, Cohort__TokenRequest *req, uint64_t *rows, uint64_t *before,
                   uint64_t *after)
{
    Cohort__TokenResponse *r;
    int rc = call(s, req, &r);
    if (rc == TK_OK) {
        assert_int_equal(r->body_case, COHORT__TOKEN_RESPONSE__BODY_CHANGED);
        if (rows)
            *rows = r->changed->rows;
        if (before)
            *before = r->changed->log_bytes_before;
        if (after)
            *after = r->changed->log_bytes_after;
    }
    cohort__token_response__free_unpacked(r, NULL);
    return rc;
}

static int delete_ids(struct pt_soft *s, const char *table, uint64_t *ids, size_t n, uint64_t *rows,
                      uint64_t *before, uint64_t *after)
{
    Cohort__TokenRequest req;
    Cohort__DeleteRows dr;
    cohort__delete_rows__init(&dr);
    dr.table = (char *)table;
    dr.ids = ids;
    dr.n_ids = n;
    request(&req, COHORT__TOKEN_REQUEST__BODY_DELETE_ROWS, &dr);
    return changed(s, &req, rows, before, after);
}

/* DELETE FROM table WHERE k < limit */
static int delete_where(struct pt_soft *s, const char *table, int64_t limit, uint64_t *rows,
                        uint64_t *before, uint64_t *after)
{
    Cohort__TokenRequest req;
    Cohort__DeleteRows dr;
    Cohort__Instr in[3], *inp[3] = {&in[0], &in[1], &in[2]};
    Cohort__Value v;
    cohort__delete_rows__init(&dr);
    cohort__instr__init(&in[0]);
    cohort__instr__init(&in[1]);
    cohort__instr__init(&in[2]);
    cohort__value__init(&v);
    in[0].op = COHORT__OP__OP_COLUMN;
    in[0].column = "k";
    v.type = COHORT__VALUE_TYPE__VT_INT;
    v.i = limit;
    in[1].op = COHORT__OP__OP_CONST;
    in[1].value = &v;
    in[2].op = COHORT__OP__OP_LT;
    dr.table = (char *)table;
    dr.where = inp;
    dr.n_where = 3;
    request(&req, COHORT__TOKEN_REQUEST__BODY_DELETE_ROWS, &dr);
    return changed(s, &req, rows, before, after);
}

static int delete_all(struct pt_soft *s, const char *table)
{
    Cohort__TokenRequest req;
    Cohort__DeleteRows dr;
    cohort__delete_rows__init(&dr);
    dr.table = (char *)table;
    dr.all = true;
    request(&req, COHORT__TOKEN_REQUEST__BODY_DELETE_ROWS, &dr);
    return changed(s, &req, NULL, NULL, NULL);
}

/* Rows ids[i] become make_row(ks[i], vers[i]). */
static int update(struct pt_soft *s, const char *table, uint64_t *ids, const uint64_t *ks,
                  const uint64_t *vers, size_t n)
{
    Cohort__TokenRequest req;
    Cohort__UpdateRows ur;
    struct row_pb *rows = fx_alloc(n * sizeof *rows);
    Cohort__Row **ptrs = fx_alloc(n * sizeof *ptrs);
    size_t i;
    int rc;
    for (i = 0; i < n; i++) {
        make_row(&rows[i], ks[i], vers[i]);
        ptrs[i] = &rows[i].r;
    }
    cohort__update_rows__init(&ur);
    ur.table = (char *)table;
    ur.ids = ids;
    ur.n_ids = n;
    ur.rows = ptrs;
    ur.n_rows = n;
    request(&req, COHORT__TOKEN_REQUEST__BODY_UPDATE_ROWS, &ur);
    rc = changed(s, &req, NULL, NULL, NULL);
    free(rows);
    free(ptrs);
    return rc;
}

static int compact(struct pt_soft *s, uint64_t *before, uint64_t *after)
{
    Cohort__TokenRequest req;
    Cohort__Compact cp;
    cohort__compact__init(&cp);
    request(&req, COHORT__TOKEN_REQUEST__BODY_COMPACT, &cp);
    return changed(s, &req, NULL, before, after);
}

static struct pt_soft *create_token(const char *name, size_t arena)
{
    char dir[128], err[ERR_LEN];
    struct pt_soft *s = NULL;
    dir_path(dir, sizeof dir, name);
    if (pt_soft_create(&s, dir, arena, err, sizeof err) != PT_OK)
        fail_msg("%s", err);
    return s;
}

static struct pt_soft *open_token(const char *name, size_t arena)
{
    char dir[128], err[ERR_LEN];
    struct pt_soft *s = NULL;
    dir_path(dir, sizeof dir, name);
    if (pt_soft_open(&s, dir, arena, err, sizeof err) != PT_OK)
        fail_msg("%s", err);
    return s;
}

/* The flash files of a token directory, and their total size. */
static size_t flash_files(const char *dir, uint64_t *total)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t n = 0;
    *total = 0;
    assert_non_null(d);
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, "flash.", 6) == 0) {
            char path[512];
            struct stat st;
            file_path(path, sizeof path, dir, e->d_name);
            assert_int_equal(stat(path, &st), 0);
            *total += (uint64_t)st.st_size;
            n++;
        }
    closedir(d);
    return n;
}

/* ============================================================ tables */

static void a_soft_token_keeps_its_keys_and_tables_across_a_reopen(void **state)
{
    struct pt_soft *s, *again = NULL;
    uint8_t pk[32], pk2[32];
    char dir[128], path[256], err[ERR_LEN];
    struct listing l;
    struct dump d;
    struct stat st;
    size_t i, pages;
    (void)state;

    s = create_token("reopen", 0);
    assert_int_equal(keys(s, pk), TK_OK);
    assert_int_equal(keys(s, pk2), TK_OK); /* asked again: the same keys */
    assert_memory_equal(pk, pk2, 32);
    assert_int_equal(load(s, "notes", 0, 40, false), TK_OK);
    assert_int_equal(load(s, "other", 500, 3, false), TK_OK);
    assert_int_equal(load(s, "notes", 40, 25, false), TK_OK);

    /* One process at a time. */
    dir_path(dir, sizeof dir, "reopen");
    assert_int_equal(pt_soft_open(&again, dir, 0, err, sizeof err), PT_ERR_BUSY);
    assert_null(again);
    assert_non_null(strstr(err, "busy"));
    pt_soft_close(s);

    s = open_token("reopen", 0);
    assert_int_equal(keys(s, pk2), TK_OK);
    assert_memory_equal(pk, pk2, 32);
    assert_int_equal(list_tables(s, &l), TK_OK);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.name[0], "notes");
    assert_int_equal(l.rows[0], 65);
    assert_string_equal(l.name[1], "other");
    assert_int_equal(l.rows[1], 3);
    assert_int_equal(read_table(s, "notes", 7, &d, &pages), TK_OK);
    assert_int_equal(d.n, 65);
    assert_int_equal(pages, 10);
    for (i = 0; i < d.n; i++) {
        assert_int_equal(d.k[i], i);
        assert_int_equal(d.ver[i], 0);
        assert_int_equal(d.id[i], i < 40 ? i + 1 : i + 4); /* ids 41-43 went to `other` */
    }
    dump_free(&d);
    assert_int_equal(read_table(s, "nothing", 0, &d, NULL), TK_ERR_NOT_FOUND);
    pt_soft_close(s);

    /* The directory is the owner's alone. */
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    file_path(path, sizeof path, dir, "secure.img");
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    file_path(path, sizeof path, dir, "counter");
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    file_path(path, sizeof path, dir, "flash.0");
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
}

static void a_directory_that_is_not_a_new_token_is_refused(void **state)
{
    char dir[128], path[256], err[ERR_LEN];
    struct pt_soft *s = NULL;
    FILE *f;
    (void)state;

    dir_path(dir, sizeof dir, "not-a-token");
    assert_int_equal(mkdir(dir, 0700), 0);
    file_path(path, sizeof path, dir, "stray");
    f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(pt_soft_create(&s, dir, 0, err, sizeof err), PT_ERR_EXISTS);
    assert_int_equal(pt_soft_open(&s, dir, 0, err, sizeof err), PT_ERR_TOKEN);
    assert_non_null(strstr(err, "not a Cohort token"));
    dir_path(dir, sizeof dir, "no-such-dir");
    assert_int_equal(pt_soft_open(&s, dir, 0, err, sizeof err), PT_ERR_IO);
    assert_null(s);
    pt_soft_close(NULL);
}

static void rows_are_read_in_pages_that_fit_the_response(void **state)
{
    struct pt_soft *s;
    struct dump d;
    size_t i, pages;
    (void)state;

    s = create_token("pages", 0);
    assert_int_equal(keys(s, NULL), TK_OK);
    for (i = 0; i < 60; i++)
        assert_int_equal(load(s, "notes", i * 50, 50, i < 59), TK_OK);
    /* As many as fit: the link's 64 KiB response holds fewer than 3,000 rows. */
    assert_int_equal(read_table(s, "notes", 0, &d, &pages), TK_OK);
    assert_int_equal(d.n, 3000);
    assert_true(pages > 1);
    for (i = 0; i < d.n; i++) {
        assert_int_equal(d.id[i], i + 1);
        assert_int_equal(d.k[i], i);
    }
    dump_free(&d);
    assert_int_equal(read_table(s, "notes", 500, &d, &pages), TK_OK);
    assert_int_equal(pages, 6);
    assert_int_equal(d.n, 3000);
    dump_free(&d);
    pt_soft_close(s);
}

static void deletes_by_ids_where_and_all_erase_the_rows_from_the_flash(void **state)
{
    struct pt_soft *s;
    struct dump d;
    struct listing l;
    char dir[128];
    uint64_t ids[3], rows, before, after, total, missing[2];
    size_t i;
    Cohort__TokenRequest req;
    Cohort__DeleteRows dr;
    (void)state;

    s = create_token("delete", 0);
    dir_path(dir, sizeof dir, "delete");
    assert_int_equal(keys(s, NULL), TK_OK);
    for (i = 0; i < 200; i += 50)
        assert_int_equal(load(s, "notes", i, 50, i < 150), TK_OK);
    assert_int_equal(load(s, "other", 0, 10, false), TK_OK);

    /* By ids; an unknown id deletes nothing. */
    ids[0] = 5;
    ids[1] = 100;
    ids[2] = 150;
    missing[0] = 6;
    missing[1] = 205; /* a row of `other` */
    flash_files(dir, &total);
    assert_int_equal(delete_ids(s, "notes", missing, 2, NULL, NULL, NULL), TK_ERR_NOT_FOUND);
    assert_int_equal(flash_files(dir, &after), 1);
    assert_int_equal(after, total);
    missing[1] = 6;
    assert_int_equal(delete_ids(s, "notes", missing, 2, NULL, NULL, NULL), TK_ERR_MALFORMED);
    assert_int_equal(delete_ids(s, "notes", ids, 3, &rows, &before, &after), TK_OK);
    assert_int_equal(rows, 3);
    assert_true(after < before);
    assert_int_equal(before, total);
    assert_int_equal(flash_files(dir, &total), 1); /* the old segment is gone */
    assert_int_equal(total, after);
    assert_int_equal(read_table(s, "notes", 0, &d, NULL), TK_OK);
    assert_int_equal(d.n, 197);
    for (i = 0; i < d.n; i++)
        assert_true(d.id[i] != 5 && d.id[i] != 100 && d.id[i] != 150);
    dump_free(&d);

    /* By WHERE over the table's own columns. */
    assert_int_equal(delete_where(s, "notes", 50, &rows, &before, &after), TK_OK);
    assert_int_equal(rows, 49); /* k 0..49 but k = 4 (id 5) */
    assert_true(after < before);
    assert_int_equal(read_table(s, "notes", 0, &d, NULL), TK_OK);
    assert_int_equal(d.n, 148);
    for (i = 0; i < d.n; i++)
        assert_true(d.k[i] >= 50);
    dump_free(&d);
    assert_int_equal(delete_where(s, "notes", 0, &rows, &before, &after), TK_OK);
    assert_int_equal(rows, 0);
    assert_int_equal(after, before);

    /* Malformed choices, unknown tables. */
    cohort__delete_rows__init(&dr);
    dr.table = "notes";
    request(&req, COHORT__TOKEN_REQUEST__BODY_DELETE_ROWS, &dr);
    assert_int_equal(call(s, &req, NULL), TK_ERR_MALFORMED); /* nothing chosen */
    dr.all = true;
    dr.ids = ids;
    dr.n_ids = 1;
    assert_int_equal(call(s, &req, NULL), TK_ERR_MALFORMED); /* two ways at once */
    assert_int_equal(delete_all(s, "nothing"), TK_ERR_NOT_FOUND);

    /* The whole table, schema and all. */
    assert_int_equal(delete_all(s, "notes"), TK_OK);
    assert_int_equal(read_table(s, "notes", 0, &d, NULL), TK_ERR_NOT_FOUND);
    assert_int_equal(list_tables(s, &l), TK_OK);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.name[0], "other");
    assert_int_equal(l.rows[0], 10);
    pt_soft_close(s);

    /* And after a reopen. */
    s = open_token("delete", 0);
    assert_int_equal(list_tables(s, &l), TK_OK);
    assert_int_equal(l.n, 1);
    assert_int_equal(read_table(s, "other", 0, &d, NULL), TK_OK);
    assert_int_equal(d.n, 10);
    dump_free(&d);
    pt_soft_close(s);
}

static void updates_replace_rows_by_id_all_or_nothing(void **state)
{
    struct pt_soft *s;
    struct dump d;
    uint64_t ids[2] = {3, 7}, ks[2] = {2, 6}, vers[2] = {5, 9}, bad[2] = {3, 999};
    Cohort__TokenRequest req;
    Cohort__UpdateRows ur;
    struct row_pb wrong;
    Cohort__Row *wp = &wrong.r;
    size_t i;
    (void)state;

    s = create_token("update", 0);
    assert_int_equal(keys(s, NULL), TK_OK);
    assert_int_equal(load(s, "notes", 0, 10, false), TK_OK);
    assert_int_equal(update(s, "notes", bad, ks, vers, 2), TK_ERR_NOT_FOUND);
    /* A row of another shape. */
    make_row(&wrong, 1, 1);
    wrong.v[0].type = COHORT__VALUE_TYPE__VT_TEXT;
    cohort__update_rows__init(&ur);
    ur.table = "notes";
    ur.ids = ids;
    ur.n_ids = 1;
    ur.rows = &wp;
    ur.n_rows = 1;
    request(&req, COHORT__TOKEN_REQUEST__BODY_UPDATE_ROWS, &ur);
    assert_int_equal(call(s, &req, NULL), TK_ERR_SCHEMA);
    ur.n_ids = 2;
    assert_int_equal(call(s, &req, NULL), TK_ERR_MALFORMED); /* 2 ids, 1 row */
    assert_int_equal(read_table(s, "notes", 0, &d, NULL), TK_OK);
    for (i = 0; i < d.n; i++)
        assert_int_equal(d.ver[i], 0);
    dump_free(&d);

    assert_int_equal(update(s, "notes", ids, ks, vers, 2), TK_OK);
    pt_soft_close(s);
    s = open_token("update", 0);
    assert_int_equal(read_table(s, "notes", 0, &d, NULL), TK_OK);
    assert_int_equal(d.n, 10);
    for (i = 0; i < d.n; i++) {
        assert_int_equal(d.id[i], i + 1);
        assert_int_equal(d.ver[i], i == 2 ? 5 : i == 6 ? 9 : 0);
    }
    dump_free(&d);
    pt_soft_close(s);
}

static void a_batch_is_committed_by_its_last_request_or_not_at_all(void **state)
{
    struct pt_soft *s;
    struct dump d;
    struct listing l;
    (void)state;

    s = create_token("batch", 0);
    assert_int_equal(keys(s, NULL), TK_OK);
    assert_int_equal(load(s, "notes", 0, 5, false), TK_OK);

    /* Interrupted by another request: none of it, ever. */
    assert_int_equal(load(s, "notes", 100, 5, true), TK_OK);
    assert_int_equal(load(s, "notes", 105, 5, true), TK_OK);
    assert_int_equal(list_tables(s, &l), TK_OK);
    assert_int_equal(l.rows[0], 5);
    assert_int_equal(load(s, "notes", 110, 5, false), TK_OK); /* a batch of its own */
    assert_int_equal(read_table(s, "notes", 0, &d, NULL), TK_OK);
    assert_int_equal(d.n, 10);
    assert_int_equal(d.k[5], 110);
    assert_int_equal(d.id[5], 6); /* the dropped batch's ids are given again */
    dump_free(&d);

    /* A failure inside a batch drops all of it. */
    assert_int_equal(load(s, "notes", 200, 5, true), TK_OK);
    assert_int_equal(load(s, "other", 205, 5, true), TK_ERR_SCHEMA); /* a batch is one table */
    assert_int_equal(load(s, "notes", 210, 5, false), TK_OK);
    assert_int_equal(read_table(s, "notes", 0, &d, NULL), TK_OK);
    assert_int_equal(d.n, 15);
    assert_int_equal(d.k[10], 210);
    dump_free(&d);

    /* A new table declared by a batch that never ends does not exist. */
    assert_int_equal(load(s, "later", 300, 5, true), TK_OK);
    pt_soft_close(s);
    s = open_token("batch", 0);
    assert_int_equal(read_table(s, "later", 0, &d, NULL), TK_ERR_NOT_FOUND);

    /* A batch that ends. */
    assert_int_equal(load(s, "later", 300, 5, true), TK_OK);
    assert_int_equal(load(s, "later", 305, 5, true), TK_OK);
    assert_int_equal(load(s, "later", 310, 5, false), TK_OK);
    pt_soft_close(s);
    s = open_token("batch", 0);
    assert_int_equal(read_table(s, "later", 0, &d, NULL), TK_OK);
    assert_int_equal(d.n, 15);
    dump_free(&d);
    pt_soft_close(s);
}

static void a_schema_that_does_not_match_is_refused_and_nothing_is_stored(void **state)
{
    struct pt_soft *s;
    struct schema_pb sc;
    struct row_pb row;
    Cohort__Row *rp = &row.r;
    Cohort__TokenRequest req;
    Cohort__LoadTable lt;
    char dir[128], path[256];
    uint8_t *img0, *img1, *fl0, *fl1;
    size_t n0, n1, f0, f1;
    (void)state;

    s = create_token("schema", 0);
    dir_path(dir, sizeof dir, "schema");
    assert_int_equal(keys(s, NULL), TK_OK);
    assert_int_equal(load(s, "notes", 0, 5, false), TK_OK);
    file_path(path, sizeof path, dir, "secure.img");
    img0 = fx_read_file(path, &n0);
    file_path(path, sizeof path, dir, "flash.0");
    fl0 = fx_read_file(path, &f0);

    notes_schema(&sc, "notes");
    sc.cols[3].scale = 3;
    make_row(&row, 9, 0);
    row.v[3].scale = 3;
    cohort__load_table__init(&lt);
    lt.schema = &sc.s;
    lt.rows = &rp;
    lt.n_rows = 1;
    request(&req, COHORT__TOKEN_REQUEST__BODY_LOAD_TABLE, &lt);
    assert_int_equal(call(s, &req, NULL), TK_ERR_SCHEMA);
    notes_schema(&sc, "notes");
    make_row(&row, 9, 0);
    row.r.n_values = NCOLS - 1;
    assert_int_equal(call(s, &req, NULL), TK_ERR_SCHEMA);

    file_path(path, sizeof path, dir, "secure.img");
    img1 = fx_read_file(path, &n1);
    file_path(path, sizeof path, dir, "flash.0");
    fl1 = fx_read_file(path, &f1);
    assert_int_equal(n0, n1);
    assert_memory_equal(img0, img1, n0);
    assert_int_equal(f0, f1);
    assert_memory_equal(fl0, fl1, f0);
    free(img0);
    free(img1);
    free(fl0);
    free(fl1);
    pt_soft_close(s);
}

static void compaction_repacks_the_log_and_keeps_every_live_record(void **state)
{
    struct pt_soft *s;
    struct dump d;
    struct listing l;
    uint64_t before, after, total;
    char dir[128];
    size_t i;
    (void)state;

    s = create_token("compact", 0);
    dir_path(dir, sizeof dir, "compact");
    assert_int_equal(keys(s, NULL), TK_OK);
    for (i = 0; i < 100; i++)
        assert_int_equal(load(s, i % 2 ? "notes" : "other", i, 1, false), TK_OK);
    assert_int_equal(compact(s, &before, &after), TK_OK);
    assert_true(after < before);
    assert_int_equal(flash_files(dir, &total), 1);
    assert_int_equal(total, after);
    pt_soft_close(s);
    s = open_token("compact", 0);
    assert_int_equal(list_tables(s, &l), TK_OK);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.name[0], "other");
    assert_int_equal(l.rows[0], 50);
    assert_int_equal(l.rows[1], 50);
    assert_int_equal(read_table(s, "notes", 0, &d, NULL), TK_OK);
    assert_int_equal(d.n, 50);
    for (i = 0; i < d.n; i++) {
        assert_int_equal(d.k[i], 2 * i + 1);
        assert_int_equal(d.id[i], 2 * i + 2);
    }
    dump_free(&d);
    assert_int_equal(compact(s, &before, &after), TK_OK);
    assert_int_equal(after, before);
    pt_soft_close(s);
}

/* ================================================================ RAM */

static void scans_and_rewrites_of_20000_rows_fit_the_minimum_arena(void **state)
{
    enum { ROWS = 20000, PER = 10 };
    struct pt_soft *s;
    struct dump d;
    struct listing l;
    uint64_t rows, before, after, total, ids[3] = {2, 10000, 19999}, ks[3] = {1, 9999, 19998},
                                         vers[3] = {1, 1, 1};
    char dir[128];
    size_t i;
    (void)state;

    s = create_token("small-arena", TK_ARENA_MIN);
    dir_path(dir, sizeof dir, "small-arena");
    assert_int_equal(keys(s, NULL), TK_OK);
    for (i = 0; i < ROWS; i += PER)
        assert_int_equal(load(s, "notes", i, PER, i + PER < ROWS), TK_OK);
    flash_files(dir, &total);
    assert_true(total > 50 * TK_ARENA_MIN);
    pt_soft_close(s);

    s = open_token("small-arena", TK_ARENA_MIN); /* verifies every record, in 16 KiB */
    assert_int_equal(list_tables(s, &l), TK_OK);
    assert_int_equal(l.rows[0], ROWS);
    assert_int_equal(read_table(s, "notes", 2500, &d, NULL), TK_OK);
    assert_int_equal(d.n, ROWS);
    dump_free(&d);
    assert_int_equal(update(s, "notes", ids, ks, vers, 3), TK_OK);
    assert_int_equal(delete_where(s, "notes", 5000, &rows, &before, &after), TK_OK);
    assert_int_equal(rows, 5000);
    assert_int_equal(compact(s, &before, &after), TK_OK);
    assert_int_equal(read_table(s, "notes", 0, &d, NULL), TK_OK);
    assert_int_equal(d.n, ROWS - 5000);
    for (i = 0; i < d.n; i++)
        assert_int_equal(d.ver[i], d.k[i] == 9999 || d.k[i] == 19998 ? 1 : 0);
    dump_free(&d);
    /* The largest arena any of these calls used. */
    {
        struct pt_link l2 = pt_soft_link(s);
        struct pt_inproc *in = l2.ctx;
        print_message("peak arena over 20,000 rows: %zu of %u bytes\n", in->peak, TK_ARENA_MIN);
        assert_true(in->peak <= TK_ARENA_MIN);
    }
    pt_soft_close(s);
}

/* ========================================================= tampering */

/* Records of a flash file: offsets and sizes. */
struct recs {
    size_t n;
    size_t off[64], len[64];
};

static void parse_records(struct recs *r, const uint8_t *p, size_t n)
{
    size_t off = 0;
    memset(r, 0, sizeof *r);
    while (off < n) {
        size_t box = (size_t)p[off] | (size_t)p[off + 1] << 8 | (size_t)p[off + 2] << 16 |
                     (size_t)p[off + 3] << 24;
        assert_true(r->n < 64);
        r->off[r->n] = off;
        r->len[r->n++] = 4 + 24 + box;
        off += 4 + 24 + box;
    }
    assert_int_equal(off, n);
}

/* The reference token and what was saved along the way. */
struct ref {
    uint8_t *flash, *old_flash, *other_flash, *aborted_flash, *old_img, *old_counter;
    size_t flash_len, old_flash_len, other_len, aborted_len, old_img_len, old_counter_len;
    struct recs recs, other_recs, aborted_recs;
};

static struct ref R;

/* The whole provisioning ceremony, trusting two authorities. */
static void provision(struct pt_soft *s)
{
    static struct fx_world w;
    static bool made;
    Cohort__TokenRequest req;
    Cohort__ProvisionFinish pf;
    Cohort__Certificate c;
    struct fx_cert cert;
    ProtobufCBinaryData tr[2];
    uint8_t pk[32], box_pk[32], sealed[32 + crypto_box_SEALBYTES];
    Cohort__ProvisionBegin pb;
    Cohort__TokenResponse *r;

    if (!made) {
        fx_world_init(&w);
        made = true;
    }
    cohort__provision_begin__init(&pb);
    pb.subject = "soft";
    request(&req, COHORT__TOKEN_REQUEST__BODY_PROVISION_BEGIN, &pb);
    assert_int_equal(call(s, &req, &r), TK_OK);
    memcpy(pk, r->cert_request->sign_pk.data, 32);
    memcpy(box_pk, r->cert_request->box_pk.data, 32);
    cohort__token_response__free_unpacked(r, NULL);
    fx_cert_issue(&cert, COHORT__ROLE__ROLE_TOKEN, "soft", pk, box_pk, &w.maker, FX_NOW - FX_DAY,
                  FX_NOW + 365 * FX_DAY, NULL);
    crypto_box_seal(sealed, w.secret, 32, box_pk);
    cohort__provision_finish__init(&pf);
    fx_cert_pb(&c, &cert);
    pf.device_cert = &c;
    pf.sealed_group_secret.data = sealed;
    pf.sealed_group_secret.len = sizeof sealed;
    tr[0].data = w.authority.pk;
    tr[1].data = w.maker.pk;
    tr[0].len = tr[1].len = 32;
    pf.trusted_authorities = tr;
    pf.n_trusted_authorities = 2;
    cohort__token_request__init(&req);
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_PROVISION_FINISH;
    req.provision_finish = &pf;
    assert_int_equal(call(s, &req, NULL), TK_OK);
}

static void build_history(struct pt_soft *s, const char *dir, bool keep)
{
    char path[256];
    provision(s);
    assert_int_equal(load(s, "notes", 0, 20, false), TK_OK);
    assert_int_equal(load(s, "notes", 20, 20, false), TK_OK);
    if (keep) {
        file_path(path, sizeof path, dir, "flash.0");
        R.old_flash = fx_read_file(path, &R.old_flash_len);
        file_path(path, sizeof path, dir, "secure.img");
        R.old_img = fx_read_file(path, &R.old_img_len);
        file_path(path, sizeof path, dir, "counter");
        R.old_counter = fx_read_file(path, &R.old_counter_len);
    }
    assert_int_equal(load(s, "notes", 40, 20, false), TK_OK);
    /* A record appended and then dropped, at the index the next load takes. */
    assert_int_equal(load(s, "notes", 900, 20, true), TK_OK);
    if (keep) {
        file_path(path, sizeof path, dir, "flash.0");
        R.aborted_flash = fx_read_file(path, &R.aborted_len);
    }
    assert_int_equal(info(s, NULL), TK_OK);
    assert_int_equal(load(s, "notes", 60, 20, false), TK_OK);
    assert_int_equal(load(s, "notes", 80, 20, false), TK_OK);
}

static int tamper_setup(void **state)
{
    struct pt_soft *s;
    char dir[128], path[256];
    (void)state;
    s = create_token("ref", 0);
    dir_path(dir, sizeof dir, "ref");
    build_history(s, dir, true);
    pt_soft_close(s);
    file_path(path, sizeof path, dir, "flash.0");
    R.flash = fx_read_file(path, &R.flash_len);
    parse_records(&R.recs, R.flash, R.flash_len);
    parse_records(&R.aborted_recs, R.aborted_flash, R.aborted_len);
    assert_int_equal(R.recs.n, 6); /* the schema and five batches */

    s = create_token("ref-other", 0);
    dir_path(dir, sizeof dir, "ref-other");
    build_history(s, dir, false);
    pt_soft_close(s);
    file_path(path, sizeof path, dir, "flash.0");
    R.other_flash = fx_read_file(path, &R.other_len);
    parse_records(&R.other_recs, R.other_flash, R.other_len);
    return 0;
}

static int tamper_teardown(void **state)
{
    (void)state;
    free(R.flash);
    free(R.old_flash);
    free(R.other_flash);
    free(R.aborted_flash);
    free(R.old_img);
    free(R.old_counter);
    return 0;
}

/* A changed copy of the reference flash. */
typedef size_t (*flash_edit)(uint8_t *out, int arg);

static size_t edit_cut_record(uint8_t *out, int arg)
{
    (void)arg;
    memcpy(out, R.flash, R.flash_len);
    return R.recs.off[R.recs.n - 1];
}

static size_t edit_cut_byte(uint8_t *out, int arg)
{
    (void)arg;
    memcpy(out, R.flash, R.flash_len);
    return R.flash_len - 1;
}

static size_t edit_swap(uint8_t *out, int arg)
{
    size_t a = R.recs.off[1], la = R.recs.len[1], lb = R.recs.len[2];
    (void)arg;
    memcpy(out, R.flash, R.flash_len);
    memcpy(out + a, R.flash + R.recs.off[2], lb);
    memcpy(out + a + lb, R.flash + R.recs.off[1], la);
    return R.flash_len;
}

static size_t edit_other_token(uint8_t *out, int arg)
{
    size_t i = 2;
    (void)arg;
    assert_int_equal(R.other_recs.len[i], R.recs.len[i]);
    memcpy(out, R.flash, R.flash_len);
    memcpy(out + R.recs.off[i], R.other_flash + R.other_recs.off[i], R.recs.len[i]);
    return R.flash_len;
}

/* The last record replaced by the record appended and dropped at its index. */
static size_t edit_aborted_record(uint8_t *out, int arg)
{
    size_t i = R.recs.n - 2; /* the index the dropped record had */
    (void)arg;
    assert_int_equal(R.aborted_recs.n, i + 1);
    memcpy(out, R.flash, R.recs.off[i]);
    memcpy(out + R.recs.off[i], R.aborted_flash + R.aborted_recs.off[i], R.aborted_recs.len[i]);
    memcpy(out + R.recs.off[i] + R.aborted_recs.len[i], R.flash + R.recs.off[i + 1],
           R.recs.len[i + 1]);
    return R.recs.off[i] + R.aborted_recs.len[i] + R.recs.len[i + 1];
}

static size_t edit_duplicate(uint8_t *out, int arg)
{
    size_t i = 2, end = R.recs.off[i] + R.recs.len[i];
    (void)arg;
    memcpy(out, R.flash, end);
    memcpy(out + end, R.flash + R.recs.off[i], R.recs.len[i]);
    memcpy(out + end + R.recs.len[i], R.flash + end, R.flash_len - end);
    return R.flash_len + R.recs.len[i];
}

static size_t edit_old_flash(uint8_t *out, int arg)
{
    (void)arg;
    memcpy(out, R.old_flash, R.old_flash_len);
    return R.old_flash_len;
}

/* arg: record (0 first, 1 middle, 2 last) * 4 + region (0 length, 1 nonce, 2 box, 3 tag). */
static size_t edit_flip(uint8_t *out, int arg)
{
    size_t rec = arg / 4 == 0 ? 0 : arg / 4 == 1 ? R.recs.n / 2 : R.recs.n - 1;
    size_t off = R.recs.off[rec], at;
    switch (arg % 4) {
    case 0:
        at = off; /* the length's low byte */
        break;
    case 1:
        at = off + 4 + 11;
        break;
    case 2:
        at = off + 28 + 3;
        break;
    default:
        at = off + R.recs.len[rec] - 1;
    }
    memcpy(out, R.flash, R.flash_len);
    out[at] ^= 0x20;
    return R.flash_len;
}

struct flash_case {
    const char *name;
    flash_edit edit;
    int arg;
};

static const struct flash_case flash_cases[] = {
    {"the last record cut off", edit_cut_record, 0},
    {"the last byte cut off", edit_cut_byte, 0},
    {"two records swapped", edit_swap, 0},
    {"a record of another token", edit_other_token, 0},
    {"a dropped record at the same index", edit_aborted_record, 0},
    {"a record duplicated", edit_duplicate, 0},
    {"the flash rolled back", edit_old_flash, 0},
    {"first record: length", edit_flip, 0},
    {"first record: nonce", edit_flip, 1},
    {"first record: box", edit_flip, 2},
    {"first record: tag", edit_flip, 3},
    {"middle record: length", edit_flip, 4},
    {"middle record: nonce", edit_flip, 5},
    {"middle record: box", edit_flip, 6},
    {"middle record: tag", edit_flip, 7},
    {"last record: length", edit_flip, 8},
    {"last record: nonce", edit_flip, 9},
    {"last record: box", edit_flip, 10},
    {"last record: tag", edit_flip, 11},
};

static void expect_open_refused(const char *name, int code, const char *what)
{
    char dir[128], err[ERR_LEN];
    struct pt_soft *s = NULL;
    dir_path(dir, sizeof dir, name);
    if (pt_soft_open(&s, dir, 0, err, sizeof err) != PT_ERR_TOKEN || s != NULL ||
        strstr(err, tk_errname(code)) == NULL)
        fail_msg("%s: opened, or not with %s: %s", what, tk_errname(code), err);
}

/* A token refuses every request that needs its store. */
static void expect_refusals(struct pt_soft *s, int code)
{
    struct dump d;
    struct listing l;
    assert_int_equal(read_table(s, "notes", 0, &d, NULL), code);
    assert_int_equal(list_tables(s, &l), code);
    assert_int_equal(load(s, "notes", 5000, 1, false), code);
    assert_int_equal(info(s, NULL), code);
}

static void every_change_to_the_flash_is_caught_at_open_and_at_read(void **state)
{
    char dir[128], ref[128], path[256];
    uint8_t *buf = fx_alloc(2 * R.flash_len + 4096);
    size_t i, n;
    (void)state;

    dir_path(ref, sizeof ref, "ref");
    dir_path(dir, sizeof dir, "tampered");
    file_path(path, sizeof path, dir, "flash.0");
    for (i = 0; i < sizeof flash_cases / sizeof flash_cases[0]; i++) {
        const struct flash_case *c = &flash_cases[i];
        struct pt_soft *s;

        /* At open. */
        copy_dir(ref, dir);
        n = c->edit(buf, c->arg);
        write_whole(path, buf, n);
        expect_open_refused("tampered", TK_ERR_TAMPERED, c->name);

        /* At read: the host changes the flash under an open token. */
        copy_dir(ref, dir);
        s = open_token("tampered", 0);
        assert_int_equal(list_tables(s, &(struct listing){0}), TK_OK);
        write_whole(path, buf, n);
        {
            struct dump d;
            int rc = read_table(s, "notes", 0, &d, NULL);
            if (rc != TK_ERR_TAMPERED)
                fail_msg("%s: a read after it gave %s", c->name, tk_errname(rc));
        }
        expect_refusals(s, TK_ERR_TAMPERED);
        pt_soft_close(s);
    }
    print_message("%zu changes of the flash, each caught at open and at read\n", i);
    free(buf);
}

/* Each field of a protobuf message: where its payload starts and ends. */
static size_t image_fields(const uint8_t *p, size_t n, size_t *start, size_t *end, size_t max)
{
    size_t pos = 0, k = 0;
    while (pos < n && k < max) {
        uint64_t key = 0, len = 0;
        unsigned shift = 0;
        do
            key |= (uint64_t)(p[pos] & 0x7f) << shift, shift += 7;
        while (p[pos++] & 0x80);
        switch (key & 7) {
        case 0:
            start[k] = pos;
            while (p[pos++] & 0x80)
                ;
            end[k++] = pos;
            break;
        case 1:
            start[k] = pos;
            pos += 8;
            end[k++] = pos;
            break;
        case 2:
            shift = 0;
            do
                len |= (uint64_t)(p[pos] & 0x7f) << shift, shift += 7;
            while (p[pos++] & 0x80);
            start[k] = pos;
            pos += (size_t)len;
            end[k++] = pos;
            break;
        default:
            fail_msg("unexpected wire type in the image");
        }
    }
    assert_int_equal(pos, n);
    return k;
}

static void every_change_to_the_image_or_the_counter_is_caught_at_open(void **state)
{
    char dir[128], ref[128], img[256], ctr[256], err[ERR_LEN];
    uint8_t *image, *counter, *buf;
    size_t image_len, counter_len, start[32], end[32], nf, i, cases = 0;
    struct pt_soft *s;
    (void)state;

    dir_path(ref, sizeof ref, "ref");
    dir_path(dir, sizeof dir, "tampered");
    file_path(img, sizeof img, ref, "secure.img");
    image = fx_read_file(img, &image_len);
    file_path(ctr, sizeof ctr, ref, "counter");
    counter = fx_read_file(ctr, &counter_len);
    file_path(img, sizeof img, dir, "secure.img");
    file_path(ctr, sizeof ctr, dir, "counter");
    buf = fx_alloc(image_len + 64);

    /* One byte of every field of the image, and of its digest. */
    nf = image_fields(image, image_len - 32, start, end, 32);
    assert_true(nf >= 17); /* every field of a provisioned token, two authorities */
    for (i = 0; i <= nf; i++) {
        copy_dir(ref, dir);
        memcpy(buf, image, image_len);
        if (i < nf)
            buf[(start[i] + end[i]) / 2] ^= 0x01;
        else
            buf[image_len - 5] ^= 0x01;
        write_whole(img, buf, image_len);
        expect_open_refused("tampered", TK_ERR_TAMPERED, "a byte of the image");
        cases++;
    }
    /* The image cut short, or swapped for another token's. */
    copy_dir(ref, dir);
    write_whole(img, image, image_len - 1);
    expect_open_refused("tampered", TK_ERR_TAMPERED, "the image cut short");
    copy_dir(ref, dir);
    {
        char other[256];
        uint8_t *o;
        size_t ol;
        dir_path(other, sizeof other, "ref-other");
        file_path(other + strlen(other), sizeof other - strlen(other), "", "secure.img");
        o = fx_read_file(other, &ol);
        write_whole(img, o, ol);
        free(o);
    }
    expect_open_refused("tampered", TK_ERR_TAMPERED, "another token's image");
    cases += 2;

    /* The image rolled back: older than the counter. */
    copy_dir(ref, dir);
    write_whole(img, R.old_img, R.old_img_len);
    expect_open_refused("tampered", TK_ERR_ROLLBACK, "an older image");
    cases++;

    /* The counter: each byte of its value and of its digest, cut, gone. */
    for (i = 0; i < counter_len; i++) {
        copy_dir(ref, dir);
        memcpy(buf, counter, counter_len);
        buf[i] ^= 0x04;
        write_whole(ctr, buf, counter_len);
        expect_open_refused("tampered", TK_ERR_TAMPERED, "a byte of the counter");
        cases++;
    }
    copy_dir(ref, dir);
    write_whole(ctr, counter, counter_len - 1);
    expect_open_refused("tampered", TK_ERR_TAMPERED, "the counter cut short");
    copy_dir(ref, dir);
    assert_int_equal(unlink(ctr), 0);
    expect_open_refused("tampered", TK_ERR_TAMPERED, "the counter gone");
    cases += 2;
    /* A counter ahead of the image is a rolled-back image. */
    copy_dir(ref, dir);
    memcpy(buf, counter, counter_len);
    buf[0]++;
    crypto_generichash(buf + 8, 32, buf, 8, NULL, 0);
    write_whole(ctr, buf, counter_len);
    expect_open_refused("tampered", TK_ERR_ROLLBACK, "a counter ahead of the image");
    cases++;

    /* An image one ahead of the counter: a commit cut between the two;
     * the token finishes it. */
    copy_dir(ref, dir);
    memcpy(buf, counter, counter_len);
    buf[0]--;
    crypto_generichash(buf + 8, 32, buf, 8, NULL, 0);
    write_whole(ctr, buf, counter_len);
    assert_int_equal(pt_soft_open(&s, dir, 0, err, sizeof err), PT_OK);
    pt_soft_close(s);
    free(buf);
    buf = fx_read_file(ctr, &i);
    assert_int_equal(i, counter_len);
    assert_memory_equal(buf, counter, counter_len);
    print_message("%zu changes of the image and the counter, each caught\n", cases);
    free(buf);
    free(image);
    free(counter);
}

/*
 * The limit of a software token, stated as a test: rolling back the image
 * and the counter together (with the flash) is not detected, because both
 * are files the host controls. A chip's counter cannot be rolled back.
 */
static void rolling_back_image_and_counter_together_is_not_caught_by_a_software_token(void **state)
{
    char dir[128], ref[128], path[256];
    struct pt_soft *s;
    struct listing l;
    (void)state;

    dir_path(ref, sizeof ref, "ref");
    dir_path(dir, sizeof dir, "tampered");
    copy_dir(ref, dir);
    file_path(path, sizeof path, dir, "secure.img");
    write_whole(path, R.old_img, R.old_img_len);
    file_path(path, sizeof path, dir, "counter");
    write_whole(path, R.old_counter, R.old_counter_len);
    s = open_token("tampered", 0);
    assert_int_equal(list_tables(s, &l), TK_OK);
    assert_int_equal(l.rows[0], 40); /* the older state, silently */
    pt_soft_close(s);
}

/* ============================================================ crashes */

/*
 * The workload of the crash test, and a plain model of what the token
 * should hold after each operation. Operations that need ids pick them
 * from the model, so that the child and the parent agree.
 */
enum { W_KEYS, W_LOAD, W_BATCH, W_DEL_IDS, W_DEL_WHERE, W_DEL_ALL, W_UPDATE, W_COMPACT };

struct wop {
    int kind;
    int table;
    uint64_t k0;
    size_t n; /* rows; W_BATCH: in `parts` requests */
    int parts;
    size_t pick[3]; /* W_DEL_IDS, W_UPDATE: positions among the table's live rows */
    size_t n_pick;
};

static const char *const wtables[2] = {"notes", "extra"};

static const struct wop workload[] = {
    {W_KEYS, 0, 0, 0, 0, {0}, 0},           {W_LOAD, 0, 0, 30, 1, {0}, 0},
    {W_BATCH, 0, 30, 30, 3, {0}, 0},        {W_LOAD, 1, 1000, 10, 1, {0}, 0},
    {W_DEL_IDS, 0, 0, 0, 0, {2, 5, 17}, 3}, {W_UPDATE, 0, 0, 0, 0, {0, 3}, 2},
    {W_BATCH, 1, 1010, 20, 2, {0}, 0},      {W_DEL_WHERE, 0, 12, 0, 0, {0}, 0},
    {W_COMPACT, 0, 0, 0, 0, {0}, 0},        {W_LOAD, 0, 60, 10, 1, {0}, 0},
    {W_DEL_ALL, 1, 0, 0, 0, {0}, 0},        {W_LOAD, 1, 2000, 5, 1, {0}, 0},
    {W_UPDATE, 1, 0, 0, 0, {1}, 1},
};
#define WORKLOAD_OPS (sizeof workload / sizeof workload[0])

struct mtable {
    bool exists;
    size_t n;
    uint64_t id[128], k[128], ver[128];
};

struct model {
    bool keys;
    uint64_t next_id;
    struct mtable t[2];
};

static void model_apply(struct model *m, const struct wop *op)
{
    struct mtable *t = &m->t[op->table];
    size_t i, j, w;
    switch (op->kind) {
    case W_KEYS:
        m->keys = true;
        break;
    case W_LOAD:
    case W_BATCH:
        t->exists = true;
        for (i = 0; i < op->n; i++) {
            t->id[t->n] = m->next_id++;
            t->k[t->n] = op->k0 + i;
            t->ver[t->n++] = 0;
        }
        break;
    case W_DEL_IDS:
        for (w = 0, i = 0; i < t->n; i++) {
            bool gone = false;
            for (j = 0; j < op->n_pick; j++)
                gone |= op->pick[j] == i;
            if (!gone) {
                t->id[w] = t->id[i];
                t->k[w] = t->k[i];
                t->ver[w++] = t->ver[i];
            }
        }
        t->n = w;
        break;
    case W_DEL_WHERE:
        for (w = 0, i = 0; i < t->n; i++)
            if (t->k[i] >= op->k0) {
                t->id[w] = t->id[i];
                t->k[w] = t->k[i];
                t->ver[w++] = t->ver[i];
            }
        t->n = w;
        break;
    case W_DEL_ALL:
        t->exists = false;
        t->n = 0;
        break;
    case W_UPDATE:
        for (j = 0; j < op->n_pick; j++)
            t->ver[op->pick[j]]++;
        break;
    default:
        break;
    }
}

/* Run one operation on the token; 0 or the failing status. */
static int wop_run(struct pt_soft *s, const struct model *m, const struct wop *op)
{
    const struct mtable *t = &m->t[op->table];
    const char *name = wtables[op->table];
    uint64_t ids[3], ks[3], vers[3];
    size_t j, per;
    int p, rc;

    switch (op->kind) {
    case W_KEYS:
        return keys(s, NULL);
    case W_LOAD:
        return load(s, name, op->k0, op->n, false);
    case W_BATCH:
        per = op->n / (size_t)op->parts;
        for (p = 0; p < op->parts; p++)
            if ((rc = load(s, name, op->k0 + (size_t)p * per, per, p + 1 < op->parts)) != TK_OK)
                return rc;
        return TK_OK;
    case W_DEL_IDS:
        for (j = 0; j < op->n_pick; j++)
            ids[j] = t->id[op->pick[j]];
        return delete_ids(s, name, ids, op->n_pick, NULL, NULL, NULL);
    case W_DEL_WHERE:
        return delete_where(s, name, (int64_t)op->k0, NULL, NULL, NULL);
    case W_DEL_ALL:
        return delete_all(s, name);
    case W_UPDATE:
        for (j = 0; j < op->n_pick; j++) {
            ids[j] = t->id[op->pick[j]];
            ks[j] = t->k[op->pick[j]];
            vers[j] = t->ver[op->pick[j]] + 1;
        }
        return update(s, name, ids, ks, vers, op->n_pick);
    default:
        return compact(s, NULL, NULL);
    }
}

/*
 * The child: create the token, run the workload, report on `fd` each
 * operation the token acknowledged (its index + 1; 0 for the creation)
 * and, at the end, 0xff and the bytes the file layer wrote. It never
 * returns; a workload failure exits with 2.
 */
static void crash_child(const char *dir, uint64_t crash_at, int fd)
{
    struct model m;
    struct pt_soft *s = NULL;
    char err[ERR_LEN];
    uint8_t b;
    size_t i;

    memset(&m, 0, sizeof m);
    m.next_id = 1;
    pt_bytes_written = 0;
    pt_crash_after_bytes = crash_at;
    if (pt_soft_create(&s, dir, 0, err, sizeof err) != PT_OK)
        _exit(2);
    b = 0;
    if (write(fd, &b, 1) != 1)
        _exit(2);
    for (i = 0; i < WORKLOAD_OPS; i++) {
        if (wop_run(s, &m, &workload[i]) != TK_OK)
            _exit(2);
        model_apply(&m, &workload[i]);
        b = (uint8_t)(i + 1);
        if (write(fd, &b, 1) != 1)
            _exit(2);
    }
    pt_soft_close(s);
    b = 0xff;
    if (write(fd, &b, 1) != 1 || write(fd, &pt_bytes_written, 8) != 8)
        _exit(2);
    _exit(0);
}

/* The state as text: keys, then each table (by name) and its rows. */
static void model_text(char *out, size_t cap, const struct model *m)
{
    size_t len = 0, t, i;
    len += (size_t)snprintf(out + len, cap - len, "%s", m->keys ? "K" : "-");
    for (t = 0; t < 2; t++) {
        const struct mtable *x = &m->t[t == 0 ? 1 : 0]; /* "extra" < "notes" */
        if (!x->exists)
            continue;
        len += (size_t)snprintf(out + len, cap - len, "|%s:%zu", wtables[t == 0 ? 1 : 0], x->n);
        for (i = 0; i < x->n && len < cap; i++)
            len += (size_t)snprintf(out + len, cap - len, " %llu/%llu/%llu",
                                    (unsigned long long)x->id[i], (unsigned long long)x->k[i],
                                    (unsigned long long)x->ver[i]);
    }
}

static void token_text(char *out, size_t cap, struct pt_soft *s)
{
    struct model m;
    struct listing l;
    struct dump d;
    bool has_keys = false;
    size_t i, j;

    memset(&m, 0, sizeof m);
    assert_int_equal(info(s, &has_keys), TK_OK);
    m.keys = has_keys;
    if (has_keys) {
        assert_int_equal(list_tables(s, &l), TK_OK);
        for (i = 0; i < l.n; i++) {
            int t = strcmp(l.name[i], "notes") == 0 ? 0 : 1;
            assert_int_equal(read_table(s, l.name[i], 0, &d, NULL), TK_OK);
            assert_int_equal(d.n, l.rows[i]);
            assert_true(d.n <= 128);
            m.t[t].exists = true;
            m.t[t].n = d.n;
            for (j = 0; j < d.n; j++) {
                m.t[t].id[j] = d.id[j];
                m.t[t].k[j] = d.k[j];
                m.t[t].ver[j] = d.ver[j];
            }
            dump_free(&d);
        }
    }
    model_text(out, cap, &m);
}

/* Fork a child that crashes at byte crash_at; the last op it acknowledged
 * (-1: none; WORKLOAD_OPS: all and it finished), and its status. */
static int crash_run(const char *dir, uint64_t crash_at, int *status, uint64_t *total)
{
    int fds[2], last = -1;
    uint8_t b;
    pid_t pid;

    assert_int_equal(pipe(fds), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        crash_child(dir, crash_at, fds[1]);
    }
    close(fds[1]);
    while (read(fds[0], &b, 1) == 1) {
        if (b == 0xff) {
            assert_int_equal(read(fds[0], total, 8), 8);
            last = (int)WORKLOAD_OPS;
            break;
        }
        last = (int)b - 1 + 1; /* 0: created; i + 1: op i done */
    }
    close(fds[0]);
    assert_int_equal(waitpid(pid, status, 0), pid);
    return last;
}

static void a_writer_killed_at_any_byte_reopens_to_its_last_commit(void **state)
{
    static char want[2][16384], got[16384];
    struct model models[WORKLOAD_OPS + 1];
    uint64_t total = 0, seed, rng;
    char dir[128], err[ERR_LEN];
    int status, last, k;
    size_t i, runs = 0, in_flight_done = 0;
    (void)state;

    /* The models after creation (0) and after each operation (i + 1). */
    memset(&models[0], 0, sizeof models[0]);
    models[0].next_id = 1;
    for (i = 0; i < WORKLOAD_OPS; i++) {
        models[i + 1] = models[i];
        model_apply(&models[i + 1], &workload[i]);
    }

    /* A run without a crash: how many bytes the whole workload writes. */
    dir_path(dir, sizeof dir, "crash");
    run_cmd("rm -rf '%s'%s", dir, "");
    last = crash_run(dir, 0, &status, &total);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(last, WORKLOAD_OPS);
    assert_true(total > 0);

    seed = getenv("COHORT_CRASH_SEED") ? strtoull(getenv("COHORT_CRASH_SEED"), NULL, 10)
                                       : (uint64_t)time(NULL);
    print_message("crash test: seed %llu (COHORT_CRASH_SEED), %llu bytes per workload\n",
                  (unsigned long long)seed, (unsigned long long)total);
    rng = seed | 1;
    for (k = 0; k < 240; k++) {
        /* One point in each of 240 equal slices of the bytes written. */
        uint64_t lo = total * (uint64_t)k / 240, span = total / 240 + 1, at;
        struct pt_soft *s = NULL;
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        at = lo + rng % span + 1;
        if (at > total)
            at = total;
        run_cmd("rm -rf '%s'%s", dir, "");
        last = crash_run(dir, at, &status, &total);
        if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
            fail_msg("seed %llu, byte %llu: the child was not killed (status %d)",
                     (unsigned long long)seed, (unsigned long long)at, status);
        runs++;
        if (pt_soft_open(&s, dir, 0, err, sizeof err) != PT_OK) {
            /* Only a token whose creation never finished may be missing. */
            if (last >= 0 || strstr(err, "not a Cohort token") == NULL)
                fail_msg("seed %llu, byte %llu, after op %d: %s", (unsigned long long)seed,
                         (unsigned long long)at, last, err);
            continue;
        }
        token_text(got, sizeof got, s);
        pt_soft_close(s);
        model_text(want[0], sizeof want[0], &models[last < 0 ? 0 : last]);
        model_text(want[1], sizeof want[1],
                   &models[last + 1 <= (int)WORKLOAD_OPS ? last + 1 : last]);
        if (strcmp(got, want[0]) == 0)
            continue;
        if (strcmp(got, want[1]) == 0) {
            in_flight_done++;
            continue;
        }
        fail_msg("seed %llu, byte %llu of %llu, after op %d:\n got  %s\n want %s\n or   %s",
                 (unsigned long long)seed, (unsigned long long)at, (unsigned long long)total, last,
                 got, want[0], want[1]);
    }
    run_cmd("rm -rf '%s'%s", dir, "");
    print_message("%zu crashes, each reopened to its last commit (%zu to the one in flight)\n",
                  runs, in_flight_done);
}

int main(void)
{
    const struct CMUnitTest tables[] = {
        cmocka_unit_test(a_soft_token_keeps_its_keys_and_tables_across_a_reopen),
        cmocka_unit_test(a_directory_that_is_not_a_new_token_is_refused),
        cmocka_unit_test(rows_are_read_in_pages_that_fit_the_response),
        cmocka_unit_test(deletes_by_ids_where_and_all_erase_the_rows_from_the_flash),
        cmocka_unit_test(updates_replace_rows_by_id_all_or_nothing),
        cmocka_unit_test(a_batch_is_committed_by_its_last_request_or_not_at_all),
        cmocka_unit_test(a_schema_that_does_not_match_is_refused_and_nothing_is_stored),
        cmocka_unit_test(compaction_repacks_the_log_and_keeps_every_live_record),
        cmocka_unit_test(scans_and_rewrites_of_20000_rows_fit_the_minimum_arena),
    };
    const struct CMUnitTest tamper[] = {
        cmocka_unit_test(every_change_to_the_flash_is_caught_at_open_and_at_read),
        cmocka_unit_test(every_change_to_the_image_or_the_counter_is_caught_at_open),
        cmocka_unit_test(rolling_back_image_and_counter_together_is_not_caught_by_a_software_token),
    };
    const struct CMUnitTest crash[] = {
        cmocka_unit_test(a_writer_killed_at_any_byte_reopens_to_its_last_commit),
    };
    int failed;
    if (group_setup(NULL) != 0)
        return 1;
    failed = cmocka_run_group_tests_name("store: tables", tables, NULL, NULL);
    failed +=
        cmocka_run_group_tests_name("store: tampering", tamper, tamper_setup, tamper_teardown);
    failed += cmocka_run_group_tests_name("store: crashes", crash, NULL, NULL);
    group_teardown(NULL);
    return failed;
}
