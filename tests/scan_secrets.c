/*
 * scan_secrets: search the files of an agent's data directories for any
 * secret of its token and for given plaintexts. The end-to-end test of the
 * personal cloud (tests/e2e_cloud.sh) runs it on both agents once they
 * have stopped.
 *
 *   scan_secrets --token DIR [--token DIR]... [--needle TEXT]...
 *                [--needle-file FILE]... [--skip NAME]... -- PATH...
 *
 * The secrets are read from each software token the way only a test may:
 * its device keys, group secret and storage key from the token's own
 * memory (the chip, which secure.img stands for), and from its log, once
 * decrypted, every document revision's key and every key received in a
 * share. Each is looked for as raw bytes, as lowercase hex and as base64
 * (standard alphabet), in every regular file under each PATH, except files
 * named secure.img (the chip's memory, which on a real token never leaves
 * it) and any --skip NAME. Needles are plaintexts (a document's content, a
 * credential as an app presents it, a recovery phrase) looked for as given.
 *
 * Prints every finding ("found <what> in <file>") and exits 1 if there is
 * one; otherwise prints what it scanned and exits 0. Exit 2: bad usage or
 * a token that does not open.
 */
#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>

#include "participant/participant.h"
#include "proto/cohort.pb-c.h"
#include "token/tk_int.h"

#define MAX_ITEMS 4096u
#define MAX_SKIPS 16u
#define FILE_MAX (256u << 20)
#define PREFIX 8u /* the shortest secret or plaintext looked for */

struct item {
    char what[64];
    uint8_t *p;
    size_t len;
};

static struct item items[MAX_ITEMS];
static size_t n_items;
static const char *skips[MAX_SKIPS];
static size_t n_skips;
static unsigned long files, bytes, findings;

static void die(const char *what)
{
    fprintf(stderr, "scan_secrets: %s\n", what);
    exit(2);
}

static void add(const char *what, const uint8_t *p, size_t len)
{
    struct item *it;
    if (len < PREFIX)
        die("a needle shorter than 8 bytes");
    if (n_items == MAX_ITEMS)
        die("too many secrets");
    it = &items[n_items++];
    snprintf(it->what, sizeof it->what, "%s", what);
    if ((it->p = malloc(len)) == NULL)
        die("out of memory");
    memcpy(it->p, p, len);
    it->len = len;
}

/* A key as raw bytes, hex and base64. */
static void add_key(const char *what, const uint8_t *k, size_t len)
{
    char hex[2 * 64 + 1], b64[sodium_base64_ENCODED_LEN(64, sodium_base64_VARIANT_ORIGINAL)];
    char name[64];
    if (len > 64)
        die("a key longer than 64 bytes");
    if (sodium_is_zero(k, len))
        return; /* not set (a token not provisioned yet) */
    add(what, k, len);
    sodium_bin2hex(hex, sizeof hex, k, len);
    snprintf(name, sizeof name, "%s (hex)", what);
    add(name, (const uint8_t *)hex, strlen(hex));
    sodium_bin2base64(b64, sizeof b64, k, len, sodium_base64_VARIANT_ORIGINAL);
    snprintf(name, sizeof name, "%s (base64)", what);
    /* the last, padded quantum may be written differently: look for the rest */
    add(name, (const uint8_t *)b64, strlen(b64) > 4 ? strlen(b64) - 4 : strlen(b64));
}

static int record_fn(void *ctx, struct tk_arena *a, const uint8_t *plain, size_t len,
                     uint64_t index)
{
    Cohort__StoreRecord *sr;
    size_t i;
    (void)ctx;
    (void)a;
    (void)index;
    if ((sr = cohort__store_record__unpack(NULL, len, plain)) == NULL)
        die("a log record does not decode");
    if (sr->body_case == COHORT__STORE_RECORD__BODY_DOC)
        add_key("a document key", sr->doc->key.data, sr->doc->key.len);
    if (sr->body_case == COHORT__STORE_RECORD__BODY_SHARE)
        for (i = 0; i < sr->share->n_docs; i++)
            add_key("a shared document key", sr->share->docs[i]->key.data,
                    sr->share->docs[i]->key.len);
    cohort__store_record__free_unpacked(sr, NULL);
    return TK_OK;
}

static void token_secrets(const char *dir)
{
    static uint8_t arena[1u << 20] __attribute__((aligned(16)));
    struct pt_soft *s;
    struct tk_token *tk;
    struct tk_arena a;
    char err[512];
    size_t before = n_items;
    if (pt_soft_open(&s, dir, sizeof arena, err, sizeof err) != 0) {
        fprintf(stderr, "scan_secrets: %s\n", err);
        exit(2);
    }
    tk = pt_soft_token(s);
    add_key("the device signing key", tk->sign_sk, 32); /* its secret half */
    add_key("the device box key", tk->box_sk, sizeof tk->box_sk);
    add_key("the group secret", tk->group_secret, sizeof tk->group_secret);
    add_key("the storage key", tk->storage_key, sizeof tk->storage_key);
    tk_arena_init(&a, arena, sizeof arena, 0);
    if (tk_log_scan(tk, &a, false, record_fn, NULL) != TK_OK)
        die("the token's log does not scan");
    printf("%s: %zu secrets to look for\n", dir, (n_items - before) / 3);
    pt_soft_close(s);
}

static bool skipped(const char *name)
{
    size_t i;
    if (strcmp(name, "secure.img") == 0)
        return true;
    for (i = 0; i < n_skips; i++)
        if (strcmp(name, skips[i]) == 0)
            return true;
    return false;
}

/* Items sorted by their first 8 bytes, so that each position of a file is
 * looked up once (a file of 16 MiB against a thousand secrets). */
static uint64_t prefix(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static int item_cmp(const void *a, const void *b)
{
    uint64_t x = prefix(((const struct item *)a)->p), y = prefix(((const struct item *)b)->p);
    return x < y ? -1 : x > y;
}

static void scan_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf;
    size_t len, i;
    struct stat st;
    if (f == NULL || fstat(fileno(f), &st) != 0)
        die("a file that cannot be read");
    if ((uint64_t)st.st_size > FILE_MAX)
        die("a file larger than 256 MiB");
    len = (size_t)st.st_size;
    if ((buf = malloc(len + 1)) == NULL)
        die("out of memory");
    if (len > 0 && fread(buf, 1, len, f) != len)
        die("a short read");
    fclose(f);
    files++;
    bytes += len;
    for (i = 0; i + PREFIX <= len; i++) {
        uint64_t v = prefix(buf + i);
        size_t lo = 0, hi = n_items, k;
        while (lo < hi) { /* the first item whose prefix is >= v */
            size_t mid = lo + (hi - lo) / 2;
            if (prefix(items[mid].p) < v)
                lo = mid + 1;
            else
                hi = mid;
        }
        for (k = lo; k < n_items && prefix(items[k].p) == v; k++)
            if (items[k].len <= len - i && memcmp(buf + i, items[k].p, items[k].len) == 0) {
                printf("found %s in %s\n", items[k].what, path);
                findings++;
            }
    }
    free(buf);
}

static void scan(const char *path)
{
    struct stat st;
    DIR *d;
    struct dirent *e;
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    if (lstat(path, &st) != 0)
        die("a path that does not exist");
    if (S_ISREG(st.st_mode)) {
        if (!skipped(base))
            scan_file(path);
        return;
    }
    if (!S_ISDIR(st.st_mode))
        return;
    if ((d = opendir(path)) == NULL)
        die("a directory that cannot be read");
    while ((e = readdir(d)) != NULL) {
        char sub[4096];
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if ((size_t)snprintf(sub, sizeof sub, "%s/%s", path, e->d_name) >= sizeof sub)
            die("a path too long");
        scan(sub);
    }
    closedir(d);
}

int main(int argc, char **argv)
{
    int i;
    size_t tokens = 0, needles = 0;
    if (sodium_init() < 0)
        die("libsodium does not start");
    for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (i + 1 >= argc)
            die("an option without its value");
        if (strcmp(argv[i], "--token") == 0) {
            token_secrets(argv[++i]);
            tokens++;
        } else if (strcmp(argv[i], "--needle") == 0) {
            add("a plaintext needle", (const uint8_t *)argv[i + 1], strlen(argv[i + 1]));
            needles++;
            i++;
        } else if (strcmp(argv[i], "--needle-file") == 0) {
            FILE *f = fopen(argv[++i], "rb");
            uint8_t buf[1u << 16];
            size_t n;
            if (f == NULL)
                die("a needle file that cannot be read");
            n = fread(buf, 1, sizeof buf, f);
            fclose(f);
            add("the content of a needle file", buf, n);
            needles++;
        } else if (strcmp(argv[i], "--skip") == 0) {
            if (n_skips == MAX_SKIPS)
                die("too many --skip");
            skips[n_skips++] = argv[++i];
        } else {
            die("usage: scan_secrets --token DIR [--needle TEXT]... [--needle-file FILE]... "
                "[--skip NAME]... -- PATH...");
        }
    }
    if (i >= argc - 1 || tokens == 0)
        die("nothing to scan (give --token DIR and -- PATH...)");
    qsort(items, n_items, sizeof items[0], item_cmp);
    for (i++; i < argc; i++)
        scan(argv[i]);
    printf("scanned %lu files (%lu bytes) for %zu secrets of %zu tokens and %zu plaintexts: %lu "
           "found\n",
           files, bytes, (n_items - needles) / 3, tokens, needles, findings);
    for (size_t k = 0; k < n_items; k++)
        free(items[k].p);
    return findings ? 1 : 0;
}
