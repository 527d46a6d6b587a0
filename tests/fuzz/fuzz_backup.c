/*
 * Fuzz target: restoring a backup (token/tk_backup.c), on any file.
 *
 * A token's backup and its phrase are made once. Each input is
 *   [mode][split][bytes...]
 * mode bit 0 clear: the bytes are a backup file, fed as they are; set: the
 * bytes are a record stream, which the target seals into a backup by the
 * book under the phrase (its final counts made to match the frames it
 * finds), so that what only someone who knows the phrase can send reaches
 * the record checks. Mode bit 1: a commit, else a verify. The file goes in
 * feeds of 1 + 37 * split bytes, `last` on the final one.
 *
 * Invariants: every call returns 0 or a known TK_ERR_*; the arena's peak
 * stays within the arena; a restore that fails leaves the token exactly as
 * it was, state and flash; a verify that succeeds too; a commit that
 * succeeds leaves a log that reopens from the token's image (and the
 * target then starts again from a fresh token).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <string.h>

#include <cmocka.h>

#include "tests/fuzz/fuzz.h"
#include "tests/tk_fixture.h"

#define HDR 108u
#define CHUNK 2048u
#define ABYTES crypto_secretstream_xchacha20poly1305_ABYTES

static struct fx_world world;
static struct fx_token tok;
static char phrase[64];
static uint8_t resp[1u << 20];
static uint8_t *backup;
static size_t backup_len;
static int ready;
static unsigned long seen[2][-TK_ERR_LAST + 1]; /* restores' ends, by mode */

/* FUZZ_STATS=1: how many restores ended with each status, raw and sealed. */
static void report(void)
{
    int i;
    for (i = 0; i <= -TK_ERR_LAST; i++)
        if (seen[0][i] || seen[1][i])
            fprintf(stderr, "%-24s raw %6lu sealed %6lu\n", tk_errname(-i), seen[0][i], seen[1][i]);
}

static void fresh_token(void)
{
    fx_token_init(&tok, TK_ARENA_MIN);
    fx_provision(&tok, &world, "fuzzed");
}

static int call(struct fx_token *t, const uint8_t *req, size_t len, Cohort__TokenResponse **out)
{
    size_t resp_len = 0, peak = 0;
    Cohort__TokenResponse *r;
    int rc =
        tk_dispatch(&t->tk, t->arena, t->arena_len, req, len, resp, sizeof resp, &resp_len, &peak);
    FUZZ_CHECK(rc <= 0 && rc >= TK_ERR_LAST);
    FUZZ_CHECK(peak <= t->arena_len);
    FUZZ_CHECK(resp_len > 0);
    r = cohort__token_response__unpack(NULL, resp_len, resp);
    FUZZ_CHECK(r != NULL && r->status == rc);
    if (out != NULL)
        *out = r;
    else
        cohort__token_response__free_unpacked(r, NULL);
    return rc;
}

static int call_pb(struct fx_token *t, const Cohort__TokenRequest *req, Cohort__TokenResponse **out)
{
    size_t len;
    uint8_t *buf = fx_pack_request(req, &len);
    int rc = call(t, buf, len, out);
    free(buf);
    return rc;
}

/* The whole backup of a token with documents, a table, a policy. */
static void make_backup(void)
{
    struct fx_token src;
    struct fx_row rows[8];
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__BackupBegin bb = COHORT__BACKUP_BEGIN__INIT;
    Cohort__BackupNext bn = COHORT__BACKUP_NEXT__INIT;
    Cohort__DocBegin db = COHORT__DOC_BEGIN__INIT;
    Cohort__DocMeta meta = COHORT__DOC_META__INIT;
    Cohort__TokenResponse *r;
    uint8_t session[TK_SESSION_ID_LEN];
    size_t i, n = fx_gen_rows(rows, 8, 5);
    bool last = false;

    fx_token_init(&src, TK_ARENA_MIN);
    fx_provision(&src, &world, "source");
    fx_load_health(&src, rows, n);
    meta.type = "bank.statement";
    meta.author = "bank";
    db.meta = &meta;
    req.now = FX_NOW;
    for (i = 0; i < 3; i++) {
        Cohort__DocWrite dw = COHORT__DOC_WRITE__INIT;
        uint8_t *raw, *body, data[100];
        size_t bl, rl;
        req.body_case = COHORT__TOKEN_REQUEST__BODY_DOC_BEGIN;
        req.doc_begin = &db;
        FUZZ_CHECK(call_pb(&src, &req, &r) == TK_OK);
        memcpy(session, r->doc_session->session.data, sizeof session);
        cohort__token_response__free_unpacked(r, NULL);
        memset(data, (int)i, sizeof data);
        dw.session = (ProtobufCBinaryData){sizeof session, session};
        dw.data = (ProtobufCBinaryData){sizeof data, data};
        dw.last = true;
        bl = cohort__doc_write__get_packed_size(&dw);
        body = fx_alloc(bl);
        cohort__doc_write__pack(&dw, body);
        raw = fx_raw_request(&rl, FX_NOW, 20, body, bl);
        FUZZ_CHECK(call(&src, raw, rl, NULL) == TK_OK);
        free(raw);
        free(body);
    }
    req.body_case = COHORT__TOKEN_REQUEST__BODY_BACKUP_BEGIN;
    req.backup_begin = &bb;
    FUZZ_CHECK(call_pb(&src, &req, &r) == TK_OK);
    strcpy(phrase, r->backup_session->phrase);
    memcpy(session, r->backup_session->session.data, sizeof session);
    backup = fx_alloc(HDR);
    memcpy(backup, r->backup_session->header.data, HDR);
    backup_len = HDR;
    cohort__token_response__free_unpacked(r, NULL);
    while (!last) {
        req.body_case = COHORT__TOKEN_REQUEST__BODY_BACKUP_NEXT;
        req.backup_next = &bn;
        bn.session = (ProtobufCBinaryData){sizeof session, session};
        FUZZ_CHECK(call_pb(&src, &req, &r) == TK_OK);
        backup = realloc(backup, backup_len + r->backup_chunk->data.len);
        FUZZ_CHECK(backup != NULL);
        memcpy(backup + backup_len, r->backup_chunk->data.data, r->backup_chunk->data.len);
        backup_len += r->backup_chunk->data.len;
        last = r->backup_chunk->last;
        cohort__token_response__free_unpacked(r, NULL);
    }
    fx_token_free(&src);
}

static void setup(void)
{
    if (ready)
        return;
    fx_world_init(&world);
    make_backup();
    fresh_token();
    if (getenv("FUZZ_STATS") != NULL)
        atexit(report);
    ready = 1;
}

static void put64(uint8_t *p, uint64_t v)
{
    int i;
    for (i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    int i;
    for (i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* The phrase's key material (the first 32 symbols' 160 bits). */
static void phrase_keys(uint8_t keys[64], const uint8_t salt[32])
{
    static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    crypto_generichash_state hs;
    uint8_t secret[20];
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t i, n = 0;
    for (i = 0; phrase[i] != '\0' && n < 20; i++) {
        const char *p = strchr(alphabet, phrase[i]);
        if (phrase[i] == '-' || p == NULL)
            continue;
        acc = acc << 5 | (uint32_t)(p - alphabet);
        bits += 5;
        if (bits >= 8) {
            bits -= 8;
            secret[n++] = (uint8_t)(acc >> bits);
        }
    }
    crypto_generichash_init(&hs, secret, sizeof secret, 64);
    crypto_generichash_update(&hs, (const uint8_t *)"cohort-backup-v1", 16);
    crypto_generichash_update(&hs, salt, 32);
    crypto_generichash_final(&hs, keys, 64);
}

/* A backup of the stream s, made by the book, its counts from its frames. */
static uint8_t *seal(const uint8_t *s, size_t len, size_t *out_len)
{
    crypto_secretstream_xchacha20poly1305_state st;
    uint8_t keys[64], trailer[24], *f = fx_alloc(HDR + len + (len / CHUNK + 2) * ABYTES + 24);
    uint64_t records = 0, documents = 0;
    size_t at = 0, pos = HDR;

    while (len - at >= 4) {
        size_t n = get32(s + at);
        Cohort__StoreRecord *sr;
        if (n > len - at - 4)
            break;
        records++;
        sr = cohort__store_record__unpack(NULL, n, s + at + 4);
        if (sr != NULL && sr->body_case == COHORT__STORE_RECORD__BODY_DOC && sr->doc->revision == 1)
            documents++;
        if (sr != NULL)
            cohort__store_record__free_unpacked(sr, NULL);
        at += 4 + n;
    }
    memcpy(f, "cohortbk\x01\0\0\0", 12);
    randombytes_buf(f + 12, 32);
    phrase_keys(keys, f + 12);
    crypto_secretstream_xchacha20poly1305_init_push(&st, f + 44, keys);
    put64(f + 68, len);
    crypto_generichash(f + 76, 32, f, 76, keys + 32, 32);
    for (at = 0; at < len;) {
        size_t n = len - at < CHUNK ? len - at : CHUNK;
        crypto_secretstream_xchacha20poly1305_push(
            &st, f + pos, NULL, s + at, n, NULL, 0,
            crypto_secretstream_xchacha20poly1305_TAG_MESSAGE);
        pos += n + ABYTES;
        at += n;
    }
    put64(trailer, records);
    put64(trailer + 8, documents);
    put64(trailer + 16, len);
    crypto_secretstream_xchacha20poly1305_push(&st, f + pos, NULL, trailer, sizeof trailer, NULL, 0,
                                               crypto_secretstream_xchacha20poly1305_TAG_FINAL);
    *out_len = pos + sizeof trailer + ABYTES;
    return f;
}

/* The record stream of the backup made at setup (its plaintext). */
static uint8_t *unseal(size_t *out_len)
{
    crypto_secretstream_xchacha20poly1305_state st;
    uint8_t keys[64], *s;
    unsigned long long m;
    unsigned char tag;
    size_t len = (size_t)get64(backup + 68), at = 0, pos = HDR;
    phrase_keys(keys, backup + 12);
    FUZZ_CHECK(crypto_secretstream_xchacha20poly1305_init_pull(&st, backup + 44, keys) == 0);
    s = fx_alloc(len);
    while (at < len) {
        size_t n = len - at < CHUNK ? len - at : CHUNK;
        FUZZ_CHECK(crypto_secretstream_xchacha20poly1305_pull(&st, s + at, &m, &tag, backup + pos,
                                                              n + ABYTES, NULL, 0) == 0);
        pos += n + ABYTES;
        at += n;
    }
    *out_len = len;
    return s;
}

void fuzz_one(const uint8_t *data, size_t size)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__RestoreBegin rb = COHORT__RESTORE_BEGIN__INIT;
    Cohort__TokenResponse *r;
    struct tk_token before;
    uint8_t session[TK_SESSION_ID_LEN], *file, *owned = NULL;
    size_t len, piece, at = 0, store_before;
    bool commit, done = false;
    int rc;

    setup();
    if (size < 2)
        return;
    commit = (data[0] & 2) != 0;
    piece = 1 + 37u * data[1];
    if (data[0] & 1) {
        owned = seal(data + 2, size - 2, &len);
        file = owned;
    } else {
        file = (uint8_t *)(uintptr_t)(data + 2);
        len = size - 2;
    }
    before = tok.tk;
    store_before = fx_flash_size(&tok);

    rb.phrase = phrase;
    rb.commit = commit;
    req.now = FX_NOW;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_RESTORE_BEGIN;
    req.restore_begin = &rb;
    rc = call_pb(&tok, &req, &r);
    FUZZ_CHECK(rc == TK_OK);
    memcpy(session, r->backup_session->session.data, sizeof session);
    cohort__token_response__free_unpacked(r, NULL);
    do {
        Cohort__RestoreFeed rf = COHORT__RESTORE_FEED__INIT;
        uint8_t *body, *raw;
        size_t n = len - at < piece ? len - at : piece, bl, rl;
        rf.session = (ProtobufCBinaryData){sizeof session, session};
        rf.data = (ProtobufCBinaryData){n, file + at};
        rf.last = at + n == len;
        bl = cohort__restore_feed__get_packed_size(&rf);
        body = fx_alloc(bl);
        cohort__restore_feed__pack(&rf, body);
        raw = fx_raw_request(&rl, FX_NOW, 37, body, bl);
        rc = call(&tok, raw, rl, &r);
        free(raw);
        free(body);
        if (rc == TK_OK) {
            FUZZ_CHECK(r->body_case == COHORT__TOKEN_RESPONSE__BODY_RESTORE_DONE);
            done = r->restore_done->done;
            FUZZ_CHECK(!done || at + n == len);
        }
        cohort__token_response__free_unpacked(r, NULL);
        at += n;
    } while (rc == TK_OK && at < len);
    free(owned);
    seen[data[0] & 1][-rc]++;

    if (rc != TK_OK || !commit) {
        FUZZ_CHECK(rc != TK_OK || done);
        memcpy(before.session, tok.tk.session, sizeof before.session);
        FUZZ_CHECK(memcmp(&before, &tok.tk, sizeof before) == 0);
        FUZZ_CHECK(fx_flash_size(&tok) == store_before);
        return;
    }
    /* Committed: the log holds together. Start again from a fresh token. */
    FUZZ_CHECK(done);
    {
        uint8_t image[TK_IMAGE_MAX];
        size_t image_len;
        FUZZ_CHECK(tk_token_image(&tok.tk, image, sizeof image, &image_len) == TK_OK);
        fx_token_reopen(&tok, image, image_len);
    }
    fx_token_free(&tok);
    fresh_token();
}

void fuzz_seeds(void (*add)(const uint8_t *data, size_t size))
{
    uint8_t *buf, *s;
    size_t len;
    int mode;

    setup();
    s = unseal(&len);
    buf = fx_alloc(2 + (backup_len > len ? backup_len : len));
    for (mode = 0; mode < 4; mode++) {
        buf[0] = (uint8_t)mode;
        buf[1] = (uint8_t)(mode * 40);
        if (mode & 1) {
            memcpy(buf + 2, s, len);
            add(buf, 2 + len);
        } else {
            memcpy(buf + 2, backup, backup_len);
            add(buf, 2 + backup_len);
        }
    }
    free(buf);
    free(s);
}

#ifdef COHORT_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_one(data, size);
    return 0;
}
#endif
