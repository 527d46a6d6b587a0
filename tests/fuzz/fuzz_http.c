/*
 * Fuzz target: the agent's local HTTP API (participant/pt_http.c), as a
 * client reaches it: each input is the raw bytes of one connection, sent
 * to a real server on a loopback port in front of a token whose log is in
 * memory. Every "@CRED@" in the input becomes the owner's credential, so
 * that mutations reach the routes behind it; "@ID@" becomes the id of a
 * document stored at start.
 *
 * Invariants. The server answers a well-formed HTTP/1.1 status line, or
 * closes the connection without a word; it never crashes, and it still
 * answers GET /v1/identity after every hundred inputs. No log line holds
 * the credential's secret, the document's content or its metadata (all
 * marked "FUZZMARK"), and no answer that is an error holds them either.
 */
#define _DEFAULT_SOURCE
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ftw.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "participant/pt_doc.h"
#include "participant/pt_http.h"
#include "participant/pt_owner.h"
#include "tests/fuzz/fuzz.h"

#define MARK "FUZZMARK"
#define REQ_MAX (64u << 10)

static struct {
    bool ready;
    char dir[64], docs[96], outbox[96];
    struct pt_memflash flash;
    struct tk_token tk;
    uint8_t *arena;
    struct pt_inproc inproc;
    struct pt_link link;
    struct pt_docstore *ds;
    struct pt_http *h;
    int port;
    char cred[PT_CRED_TEXT_LEN + 1];
    char id[2 * PT_DOC_ID_LEN + 1];
    unsigned long inputs;
} S;

static void check_line(void *ctx, const char *line)
{
    (void)ctx;
    FUZZ_CHECK(strstr(line, MARK) == NULL);
    FUZZ_CHECK(strstr(line, S.cred + 2 * 16) == NULL);
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void stop(void)
{
    pt_http_stop(S.h);
    pt_docstore_close(S.ds);
    pt_inproc_free(&S.inproc);
    tk_token_wipe(&S.tk);
    pt_memflash_free(&S.flash);
    free(S.arena);
    nftw(S.dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

static long read_mark(void *ctx, uint8_t *buf, size_t n)
{
    int *done = ctx;
    const char *text = "content " MARK;
    size_t k = strlen(text);
    if (*done || n < k)
        return 0;
    memcpy(buf, text, k);
    *done = 1;
    return (long)k;
}

static void start(void)
{
    struct tk_flash fl;
    struct pt_owner o;
    struct pt_cred secret;
    struct pt_cred_info *info = calloc(1, sizeof *info);
    struct pt_doc_meta *meta = calloc(1, sizeof *meta);
    struct pt_doc_ref ref;
    struct pt_status st;
    struct pt_http_config cfg;
    uint8_t *csr = NULL, pk[32];
    size_t csr_len = 0;
    char err[256];
    int done = 0;

    FUZZ_CHECK(tk_library_init() == 0 && info != NULL && meta != NULL);
    snprintf(S.dir, sizeof S.dir, "/tmp/fuzz_http.XXXXXX");
    FUZZ_CHECK(mkdtemp(S.dir) != NULL);
    snprintf(S.docs, sizeof S.docs, "%s/docs", S.dir);
    snprintf(S.outbox, sizeof S.outbox, "%s/outbox", S.dir);
    S.arena = malloc(TK_ARENA_DEFAULT);
    pt_memflash_init(&S.flash);
    fl = pt_memflash_flash(&S.flash);
    FUZZ_CHECK(tk_token_init(&S.tk, &fl, NULL, S.arena, TK_ARENA_DEFAULT) == 0);
    pt_inproc_init(&S.inproc, &S.tk, S.arena, TK_ARENA_DEFAULT);
    S.link = pt_inproc_link(&S.inproc);
    pt_owner_init(&o, &S.link, 1785000000);
    FUZZ_CHECK(pt_owner_provision_begin(&o, "fuzz", &csr, &csr_len, pk) == 0);
    free(csr);
    FUZZ_CHECK(pt_docstore_open(&S.ds, S.docs) == 0);
    FUZZ_CHECK(pt_cred_issue(&S.link, 1785000000, NULL, "owner", NULL, 0, 0, true, &secret, info,
                             &st) == 0);
    pt_cred_format(&secret, S.cred);
    snprintf(meta->type, sizeof meta->type, "fuzzmark.doc");
    snprintf(meta->author, sizeof meta->author, "author " MARK);
    FUZZ_CHECK(pt_doc_put(&S.link, S.ds, 1785000000, NULL, NULL, 0, meta, read_mark, &done, &ref,
                          &st) == 0);
    for (size_t i = 0; i < PT_DOC_ID_LEN; i++)
        snprintf(S.id + 2 * i, 3, "%02x", ref.id[i]);
    memset(&cfg, 0, sizeof cfg);
    cfg.listen = "127.0.0.1:0";
    cfg.link = S.link;
    cfg.ds = S.ds;
    cfg.outbox = S.outbox;
    cfg.log = check_line;
    cfg.body_ms = 2000;
    FUZZ_CHECK(pt_http_start(&S.h, &cfg, err, sizeof err) == 0);
    S.port = pt_http_port(S.h);
    S.ready = true;
    free(info);
    free(meta);
    atexit(stop);
}

/* Send bytes on a new connection, half-close it, and read the answer (at most cap - 1 bytes). */
static size_t exchange(const uint8_t *req, size_t len, char *resp, size_t cap)
{
    struct sockaddr_in sa;
    struct timeval tv = {10, 0};
    size_t got = 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    FUZZ_CHECK(fd >= 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)S.port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    FUZZ_CHECK(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    for (size_t off = 0; off < len;) {
        ssize_t k = send(fd, req + off, len - off, MSG_NOSIGNAL);
        if (k <= 0)
            break;
        off += (size_t)k;
    }
    shutdown(fd, SHUT_WR);
    for (;;) {
        char sink[4096];
        ssize_t k = recv(fd, got < cap - 1 ? resp + got : sink,
                         got < cap - 1 ? cap - 1 - got : sizeof sink, 0);
        if (k <= 0)
            break;
        if (got < cap - 1)
            got += (size_t)k;
    }
    resp[got] = '\0';
    close(fd);
    return got;
}

/* Replace the placeholders; the request in out (at most REQ_MAX bytes). */
static size_t expand(const uint8_t *data, size_t size, uint8_t *out)
{
    size_t n = 0;
    for (size_t i = 0; i < size && n < REQ_MAX - 128;) {
        if (size - i >= 6 && memcmp(data + i, "@CRED@", 6) == 0) {
            memcpy(out + n, S.cred, PT_CRED_TEXT_LEN);
            n += PT_CRED_TEXT_LEN;
            i += 6;
        } else if (size - i >= 4 && memcmp(data + i, "@ID@", 4) == 0) {
            memcpy(out + n, S.id, 2 * PT_DOC_ID_LEN);
            n += 2 * PT_DOC_ID_LEN;
            i += 4;
        } else {
            out[n++] = data[i++];
        }
    }
    return n;
}

void fuzz_one(const uint8_t *data, size_t size)
{
    static uint8_t req[REQ_MAX];
    static char resp[1 << 16];
    size_t len, got;

    if (!S.ready)
        start();
    len = expand(data, size, req);
    got = exchange(req, len, resp, sizeof resp);
    if (got > 0) {
        int status;
        FUZZ_CHECK(got >= 12 && memcmp(resp, "HTTP/1.1 ", 9) == 0);
        status = atoi(resp + 9);
        FUZZ_CHECK(status >= 100 && status <= 599);
        if (status >= 400) {
            FUZZ_CHECK(strstr(resp, MARK) == NULL);
            FUZZ_CHECK(strstr(resp, S.cred + 2 * 16) == NULL);
        }
    }
    if (++S.inputs % 100 == 0) {
        static const char alive[] =
            "GET /v1/identity HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        got = exchange((const uint8_t *)alive, sizeof alive - 1, resp, sizeof resp);
        FUZZ_CHECK(got > 12 && memcmp(resp, "HTTP/1.1 200", 12) == 0);
    }
}

void fuzz_seeds(void (*add)(const uint8_t *data, size_t size))
{
    static const char *seeds[] = {
        "GET /v1/identity HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "GET /v1/docs/@ID@ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer @CRED@\r\n\r\n",
        "GET /v1/docs/@ID@/meta?rev=1 HTTP/1.1\r\nHost: localhost\r\n"
        "Authorization: Bearer @CRED@\r\n\r\n",
        "GET /v1/docs?type=fuzzmark.*&field=author&value=x&limit=3 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Authorization: Bearer @CRED@\r\n\r\n",
        "POST /v1/docs?type=note.text&author=FUZZMARK&tag=a&tag=b HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Authorization: Bearer @CRED@\r\nContent-Length: 14\r\n\r\nhello FUZZMARK",
        "PUT /v1/docs/@ID@?rev=1&type=x.y HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Authorization: Bearer @CRED@\r\nContent-Length: 8\r\n\r\nFUZZMARK",
        "DELETE /v1/docs/@ID@?rev=9 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Authorization: Bearer @CRED@\r\n\r\n",
        "POST /v1/credentials HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer @CRED@\r\n"
        "Content-Length: "
        "84\r\n\r\n{\"name\":\"FUZZMARK\",\"rules\":[{\"type\":\"a.*\",\"verbs\":[\"GET\"],"
        "\"field\":\"tag\",\"values\":[\"x\"]}]}",
        "GET /v1/credentials HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer @CRED@\r\n\r\n",
        "POST /v1/shares HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer @CRED@\r\n"
        "Content-Length: "
        "60\r\n\r\n{\"recipient\":\"AAAA\",\"docs\":[\"@ID@\"],\"policy\":{\"max_reads\":1}}",
        "POST /v1/inbox HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\n\r\n\x0a\x02\x0a\x00",
        "GET /v1/audit?after=0&limit=5 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Authorization: Bearer @CRED@\r\n\r\n",
        "GET /v1/docs/..%2f..%2fetc/passwd HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "POST /v1/docs?type=a HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer @CRED@\r\n"
        "Expect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    };
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++)
        add((const uint8_t *)seeds[i], strlen(seeds[i]));
}
