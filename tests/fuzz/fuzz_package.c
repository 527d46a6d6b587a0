/*
 * Fuzz target: a share package taken in by the recipient's agent,
 * pt_share_accept, on any bytes, over a real recipient token and a real
 * document store in a temporary directory.
 *
 * Invariants: it returns 0 or a PT_ERR_*; a package it refuses stores
 * nothing (the store holds the same files as before); no temporary file is
 * ever left in the store.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "participant/pt_doc.h"
#include "tests/fuzz/fuzz.h"
#include "tests/tk_fixture.h"

static struct fx_world world;
static struct fx_token sender, recipient;
static struct pt_inproc sender_link, recipient_link;
static struct pt_docstore *sender_ds, *recipient_ds;
static char root[64];
static uint8_t *seed[2];
static size_t seed_len[2];
static int ready;

static size_t files, temporaries;

static int count(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    if (flag == FTW_F) {
        files++;
        if (strncmp(path + ftw->base, ".tmp-", 5) == 0)
            temporaries++;
    }
    return 0;
}

static size_t store_files(void)
{
    char path[128];
    files = temporaries = 0;
    snprintf(path, sizeof path, "%s/recipient", root);
    FUZZ_CHECK(nftw(path, count, 8, FTW_PHYS) == 0);
    FUZZ_CHECK(temporaries == 0);
    return files;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void cleanup(void)
{
    nftw(root, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

static long zero_read(void *ctx, uint8_t *buf, size_t n)
{
    size_t *left = ctx, k = *left < n ? *left : n;
    memset(buf, 0x5a, k);
    *left -= k;
    return (long)k;
}

/* A document of the sender's, shared with the recipient: the package. */
static void share_one(struct pt_link *s, const uint8_t *cert, size_t cert_len, size_t size,
                      int which)
{
    struct pt_doc_meta m;
    struct pt_doc_ref ref;
    struct pt_status st;
    struct pt_share_policy policy = {false, 0, (uint32_t)which};
    uint8_t sid[16];
    size_t left = size;

    memset(&m, 0, sizeof m);
    snprintf(m.type, sizeof m.type, "fuzz.doc");
    FUZZ_CHECK(pt_doc_put(s, sender_ds, FX_NOW, NULL, NULL, 0, &m, zero_read, &left, &ref, &st) ==
               0);
    FUZZ_CHECK(pt_share_create(s, sender_ds, FX_NOW, NULL, cert, cert_len,
                               (const uint8_t(*)[PT_DOC_ID_LEN])ref.id, 1, NULL, &policy, sid,
                               &seed[which], &seed_len[which], &st) == 0);
}

static void setup(void)
{
    struct pt_link s, r;
    struct pt_status st;
    uint8_t pk[32], cert[PT_CERT_MAX];
    size_t cert_len;
    char path[128];

    if (ready)
        return;
    snprintf(root, sizeof root, "/tmp/fuzz_package.XXXXXX");
    FUZZ_CHECK(mkdtemp(root) != NULL);
    atexit(cleanup);
    fx_world_init(&world);
    fx_token_init(&sender, TK_ARENA_DEFAULT);
    fx_provision(&sender, &world, "sender");
    fx_token_init(&recipient, TK_ARENA_DEFAULT);
    fx_provision(&recipient, &world, "recipient");
    pt_inproc_init(&sender_link, &sender.tk, sender.arena, sender.arena_len);
    pt_inproc_init(&recipient_link, &recipient.tk, recipient.arena, recipient.arena_len);
    s = pt_inproc_link(&sender_link);
    r = pt_inproc_link(&recipient_link);
    snprintf(path, sizeof path, "%s/sender", root);
    FUZZ_CHECK(pt_docstore_open(&sender_ds, path) == 0);
    snprintf(path, sizeof path, "%s/recipient", root);
    FUZZ_CHECK(pt_docstore_open(&recipient_ds, path) == 0);
    FUZZ_CHECK(pt_identity(&r, FX_NOW, pk, cert, &cert_len, &st) == 0 && cert_len > 0);
    share_one(&s, cert, cert_len, 5000, 0);
    share_one(&s, cert, cert_len, 70, 1);
    ready = 1;
}

void fuzz_seeds(void (*add)(const uint8_t *data, size_t size))
{
    setup();
    add(seed[0], seed_len[0]);
    add(seed[1], seed_len[1]);
}

void fuzz_one(const uint8_t *data, size_t size)
{
    struct pt_link r;
    struct pt_status st;
    uint8_t sid[16];
    size_t before;
    int rc;

    setup();
    r = pt_inproc_link(&recipient_link);
    before = store_files();
    rc = pt_share_accept(&r, recipient_ds, FX_NOW, NULL, data, size, sid, &st);
    FUZZ_CHECK(rc <= 0);
    if (rc != 0)
        FUZZ_CHECK(store_files() == before);
    else
        FUZZ_CHECK(store_files() >= before);
}
