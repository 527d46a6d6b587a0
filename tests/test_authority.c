/*
 * test_authority.c: the files a deployment passes around.
 *
 * - The shell's file layer (shell/sh_file.c): writes are atomic, have their
 *   mode, leave no temporary file, and an exclusive write never replaces
 *   anything; reads are bounded and refuse what is not a regular file. Its
 *   hex, names, escaping, clocks and log lines.
 * - The researcher's files (querier/rs_keygen.c): keygen writes a private
 *   key and a request and never overwrites them; rs_load_researcher takes a
 *   key with a certificate chain for it and refuses any other pairing.
 * - Interoperation through the real cohort-authority program (built beside
 *   this test): a researcher it certifies signs plans a token accepts
 *   within the scope and refuses outside it; a token made by
 *   `cohort-participant init` (the real token core, in memory) takes the
 *   bundle it makes once, and refuses a bundle for another token or a
 *   secret sealed to another key, with the owner's message for each.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "participant/cli.h"
#include "proto/cohort.pb-c.h"
#include "querier/querier.h"
#include "querier/rs.h"
#include "shell/shell.h"
#include "token/token.h"

#define AUTHORITY COHORT_BINARY_DIR "/authority/cohort-authority"
#define ARENA (64u * 1024u)

struct world {
    char dir[64];
    char paths[4][512]; /* at()'s, used in turn: a call may take several */
    unsigned next_path;
    /* An in-memory token, for the participant commands. */
    struct tk_token *tk;
    struct pt_memflash flash;
    uint8_t *arena;
    struct pt_inproc link;
    bool has_token;
    /* What a command printed. */
    char *out_buf, *err_buf;
    size_t out_len, err_len;
};

static int setup(void **state)
{
    struct world *w = calloc(1, sizeof *w);
    assert_non_null(w);
    assert_int_equal(tk_library_init(), 0);
    snprintf(w->dir, sizeof w->dir, "/tmp/test_authority.XXXXXX");
    assert_non_null(mkdtemp(w->dir));
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    struct world *w = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", w->dir);
    assert_int_equal(system(cmd), 0);
    if (w->has_token) {
        pt_inproc_free(&w->link);
        tk_token_wipe(w->tk);
        pt_memflash_free(&w->flash);
    }
    free(w->tk);
    free(w->arena);
    free(w->out_buf);
    free(w->err_buf);
    free(w);
    return 0;
}

/* w->dir/name, valid until the fourth call after this one. */
static const char *at(struct world *w, const char *name)
{
    char *p = w->paths[w->next_path++ % 4], tmp[sizeof w->paths[0]];
    snprintf(tmp, sizeof tmp, "%s/%s", w->dir, name);
    memcpy(p, tmp, sizeof tmp);
    return p;
}

static void put_file(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static uint8_t *get_file(const char *path, size_t *len)
{
    uint8_t *buf = NULL;
    char err[SH_ERR_MAX];
    if (sh_read_file(path, SH_FILE_MAX, &buf, len, err, sizeof err) != 0)
        fail_msg("%s", err);
    return buf;
}

/* The entries of dir other than . and .. */
static int entries(const char *dir)
{
    char cmd[160];
    FILE *p;
    int n = 0, c;
    snprintf(cmd, sizeof cmd, "ls -A '%s'", dir);
    p = popen(cmd, "r");
    assert_non_null(p);
    while ((c = fgetc(p)) != EOF)
        n += c == '\n';
    pclose(p);
    return n;
}

static mode_t mode_of(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_mode & 07777;
}

/* Run cohort-authority with these arguments (NULL-terminated); its exit status. */
static int authority(const char *arg, ...)
{
    const char *argv[32];
    int n = 0, status;
    va_list ap;
    pid_t pid;

    argv[n++] = AUTHORITY;
    va_start(ap, arg);
    for (const char *a = arg; a != NULL && n < 31; a = va_arg(ap, const char *))
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 1);
        execv(AUTHORITY, (char *const *)argv);
        _exit(127);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* --------------------------------------------------------- shell files */

static void a_written_file_has_its_mode_and_bytes_and_no_temporary_file_is_left(void **state)
{
    struct world *w = *state;
    char err[SH_ERR_MAX] = "";
    uint8_t data[1000], *back;
    size_t len;

    randombytes_buf(data, sizeof data);
    assert_int_equal(sh_write_file(at(w, "secret"), data, sizeof data, 0600, true, err, sizeof err),
                     0);
    assert_int_equal(mode_of(at(w, "secret")), 0600);
    assert_int_equal(sh_write_file(at(w, "public"), data, 10, 0644, true, err, sizeof err), 0);
    assert_int_equal(mode_of(at(w, "public")), 0644);
    assert_int_equal(sh_write_file(at(w, "empty"), NULL, 0, 0640, false, err, sizeof err), 0);
    assert_int_equal(mode_of(at(w, "empty")), 0640);
    back = get_file(at(w, "secret"), &len);
    assert_int_equal(len, sizeof data);
    assert_memory_equal(back, data, sizeof data);
    assert_int_equal(back[len], 0); /* one NUL after the data */
    free(back);
    assert_int_equal(entries(w->dir), 3);
}

static void an_exclusive_write_refuses_an_existing_path_and_leaves_it_unchanged(void **state)
{
    struct world *w = *state;
    char err[SH_ERR_MAX] = "", want[600];
    uint8_t *back;
    size_t len;

    put_file(at(w, "key"), "old", 3, 0600);
    errno = 0;
    assert_int_equal(
        sh_write_file(at(w, "key"), (const uint8_t *)"new", 3, 0600, true, err, sizeof err), -1);
    assert_int_equal(errno, EEXIST);
    snprintf(want, sizeof want, "%s exists: refusing to overwrite it", at(w, "key"));
    assert_string_equal(err, want);
    back = get_file(at(w, "key"), &len);
    assert_int_equal(len, 3);
    assert_memory_equal(back, "old", 3);
    free(back);
    /* A dangling symbolic link is a name taken too: nothing is written through it. */
    assert_int_equal(symlink(at(w, "nowhere"), at(w, "link")), 0);
    assert_int_equal(
        sh_write_file(at(w, "link"), (const uint8_t *)"x", 1, 0600, true, err, sizeof err), -1);
    assert_int_equal(access(at(w, "nowhere"), F_OK), -1);
    assert_int_equal(entries(w->dir), 2);
}

static void a_plain_write_replaces_the_file_whole(void **state)
{
    struct world *w = *state;
    char err[SH_ERR_MAX] = "";
    uint8_t *back;
    size_t len;

    put_file(at(w, "state"), "a longer old content", 20, 0644);
    assert_int_equal(
        sh_write_file(at(w, "state"), (const uint8_t *)"new", 3, 0600, false, err, sizeof err), 0);
    back = get_file(at(w, "state"), &len);
    assert_int_equal(len, 3);
    assert_memory_equal(back, "new", 3);
    free(back);
    assert_int_equal(mode_of(at(w, "state")), 0600);
    assert_int_equal(entries(w->dir), 1);
}

static void a_write_into_a_missing_directory_fails_and_creates_nothing(void **state)
{
    struct world *w = *state;
    char err[SH_ERR_MAX] = "";

    assert_int_equal(
        sh_write_file(at(w, "no/such/file"), (const uint8_t *)"x", 1, 0600, true, err, sizeof err),
        -1);
    assert_non_null(strstr(err, "no such file or directory"));
    assert_int_equal(sh_write_file(at(w, ""), (const uint8_t *)"x", 1, 0600, true, err, sizeof err),
                     -1);
    assert_int_equal(entries(w->dir), 0);
}

static void a_read_is_bounded_and_refuses_what_is_not_a_regular_file(void **state)
{
    struct world *w = *state;
    char err[SH_ERR_MAX] = "", want[600];
    uint8_t data[100] = {0}, *buf = (uint8_t *)"untouched";
    size_t len = 7;

    put_file(at(w, "f"), data, sizeof data, 0644);
    assert_int_equal(sh_read_file(at(w, "f"), 100, &buf, &len, err, sizeof err), 0);
    assert_int_equal(len, 100);
    free(buf);
    assert_int_equal(sh_read_file(at(w, "f"), 99, &buf, &len, err, sizeof err), -1);
    assert_null(buf);
    assert_int_equal(len, 0);
    snprintf(want, sizeof want, "%s: larger than 99 bytes", at(w, "f"));
    assert_string_equal(err, want);

    assert_int_equal(sh_read_file(at(w, "missing"), 100, &buf, &len, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s: no such file", at(w, "missing"));
    assert_string_equal(err, want);

    assert_int_equal(sh_read_file(w->dir, 100, &buf, &len, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a regular file"));
    /* A FIFO with no writer would block a read forever: it is refused at once. */
    assert_int_equal(mkfifo(at(w, "fifo"), 0600), 0);
    assert_int_equal(sh_read_file(at(w, "fifo"), 100, &buf, &len, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a regular file"));

    put_file(at(w, "empty"), "", 0, 0644);
    assert_int_equal(sh_read_file(at(w, "empty"), 100, &buf, &len, err, sizeof err), 0);
    assert_int_equal(len, 0);
    assert_non_null(buf);
    assert_int_equal(buf[0], 0);
    free(buf);
}

static void hex_round_trips_and_bad_hex_changes_nothing(void **state)
{
    static const struct {
        const char *text;
        size_t n;
    } bad[] = {{"0", 1}, {"012", 1}, {"0g", 1}, {"g0", 1}, {"00 ", 2}, {"", 1}, {"-1", 1}};
    uint8_t in[33], back[33], keep[2] = {0xaa, 0xbb};
    char hex[67];

    (void)state;
    randombytes_buf(in, sizeof in);
    sh_hex(hex, in, sizeof in);
    assert_int_equal(strlen(hex), 66);
    assert_int_equal(strspn(hex, "0123456789abcdef"), 66);
    assert_int_equal(sh_unhex(back, sizeof back, hex), 0);
    assert_memory_equal(back, in, sizeof in);
    assert_int_equal(sh_unhex(back, 2, "aBcD"), 0);
    assert_int_equal(back[0], 0xab);
    assert_int_equal(back[1], 0xcd);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t out[2] = {0xaa, 0xbb};
        if (sh_unhex(out, bad[i].n, bad[i].text) != -1)
            fail_msg("'%s' was taken as hex", bad[i].text);
        assert_memory_equal(out, keep, 2);
    }
}

static void names_are_utf8_without_control_characters_and_printing_escapes_the_rest(void **state)
{
    static const char *const good[] = {"Alice", "Études cliniques", "東京大学", "a.b-c_d (1)"};
    static const char *const bad[] = {"",
                                      "tab\there",
                                      "new\nline",
                                      "esc\x1b[2J",
                                      "del\x7f",
                                      "c1\xc2\x85",
                                      "\xff",
                                      "\xc0\xaf",
                                      "\xed\xa0\x80 surrogate",
                                      "\xf4\x90\x80\x80",
                                      "\xe2\x82"};
    char *buf = NULL;
    size_t len = 0;
    FILE *f;

    (void)state;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!sh_name_ok(good[i], 63))
            fail_msg("'%s' was refused", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (sh_name_ok(bad[i], 63))
            fail_msg("bad name %zu was taken", i);
    assert_true(sh_name_ok("0123456789", 10));
    assert_false(sh_name_ok("0123456789", 9));
    assert_false(sh_name_ok(NULL, 9));

    f = open_memstream(&buf, &len);
    assert_non_null(f);
    sh_put(f, "ok é \x1b[2J back\\slash \xff\n");
    fclose(f);
    assert_string_equal(buf, "ok é \\x1b[2J back\\\\slash \\xff\\x0a");
    free(buf);
}

static void the_clocks_tell_unix_milliseconds_and_monotonic_time(void **state)
{
    int64_t before = (int64_t)time(NULL) * 1000, now = sh_now_ms(), m1, m2;

    (void)state;
    assert_true(now >= before && now < before + 2000);
    m1 = sh_mono_ms();
    m2 = sh_mono_ms();
    assert_true(m1 > 0 && m2 >= m1);
}

/* What sh_log wrote to stderr while fn ran. */
static void log_capture(struct world *w, void (*fn)(void), char *out, size_t cap)
{
    int saved = dup(2), fd = open(at(w, "log"), O_RDWR | O_CREAT | O_TRUNC, 0600);
    ssize_t n;

    assert_true(saved >= 0 && fd >= 0);
    fflush(stderr);
    dup2(fd, 2);
    fn();
    dup2(saved, 2);
    close(saved);
    n = pread(fd, out, cap - 1, 0);
    close(fd);
    out[n > 0 ? n : 0] = '\0';
}

static void log_two(void)
{
    sh_log_init("cohort-test", false);
    sh_log("admitted token %s, %d plans", "0123456789abcdef", 2);
    sh_log("a name with\ta tab and\x1b[2J an escape\n");
}

static void log_quiet(void)
{
    sh_log_init("cohort-test", true);
    sh_log("never");
}

static void a_log_line_has_the_utc_time_the_program_and_its_pid_and_quiet_silences_it(void **state)
{
    struct world *w = *state;
    char text[1024], want[128], *second;
    int y, mo, d, h, mi, s;
    long pid;

    log_capture(w, log_two, text, sizeof text);
    assert_int_equal(
        sscanf(text, "%4d-%2d-%2dT%2d:%2d:%2dZ cohort-test[%ld]: ", &y, &mo, &d, &h, &mi, &s, &pid),
        7);
    assert_int_equal(pid, (long)getpid());
    assert_true(y >= 2024 && mo >= 1 && mo <= 12);
    snprintf(want, sizeof want, "Z cohort-test[%ld]: admitted token 0123456789abcdef, 2 plans\n",
             pid);
    assert_non_null(strstr(text, want));
    second = strchr(text, '\n') + 1;
    assert_non_null(strstr(second, ": a name with?a tab and?[2J an escape\n"));
    assert_null(strchr(strchr(second, '\n') + 1, '\n')); /* two lines, no more */
    log_capture(w, log_quiet, text, sizeof text);
    assert_string_equal(text, "");
    sh_log_init("cohort-test", false);
}

/* ------------------------------------------------------ researcher files */

static int keygen(const char *prefix, const char *subject)
{
    char *argv[] = {"keygen", "--out", (char *)prefix, "--subject", (char *)subject, NULL};
    int saved = dup(1), fd = open("/dev/null", O_WRONLY), rc;
    fflush(stdout);
    dup2(fd, 1);
    close(fd);
    rc = rs_keygen_main(subject != NULL ? 5 : 3, argv);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    return rc;
}

static void keygen_writes_a_private_key_and_a_request_and_never_overwrites_them(void **state)
{
    struct world *w = *state;
    struct qr_cert_request req;
    char prefix[600];
    uint8_t *csr, *key, *key2;
    size_t csr_len, key_len, key2_len;

    snprintf(prefix, sizeof prefix, "%s", at(w, "alice"));
    assert_int_equal(keygen(prefix, "Alice"), RS_EXIT_OK);
    assert_int_equal(mode_of(at(w, "alice.key")), 0600);
    assert_int_equal(mode_of(at(w, "alice.csr")), 0644);
    key = get_file(at(w, "alice.key"), &key_len);
    csr = get_file(at(w, "alice.csr"), &csr_len);
    /* The request is one an authority takes: signed by the key it names. */
    assert_int_equal(qr_cert_request_check(&req, csr, csr_len), 0);
    assert_string_equal(req.subject, "Alice");

    /* Again, or with only the request there: refused, nothing changed. */
    assert_int_equal(keygen(prefix, "Mallory"), RS_EXIT_FAILED);
    key2 = get_file(at(w, "alice.key"), &key2_len);
    assert_int_equal(key2_len, key_len);
    assert_memory_equal(key2, key, key_len);
    free(key2);
    assert_int_equal(unlink(at(w, "alice.key")), 0);
    assert_int_equal(keygen(prefix, "Mallory"), RS_EXIT_FAILED);
    assert_int_equal(access(at(w, "alice.key"), F_OK), -1);

    assert_int_equal(keygen(prefix, "bad\nname"), RS_EXIT_USAGE);
    assert_int_equal(keygen("", "x"), RS_EXIT_USAGE);
    free(key);
    free(csr);
}

/* The root key of an authority's certificate file. */
static void root_key(const char *path, uint8_t pk[32])
{
    size_t len;
    uint8_t *buf = get_file(path, &len);
    Cohort__CertChain *cc = cohort__cert_chain__unpack(NULL, len, buf);
    Cohort__CertBody *b;

    assert_non_null(cc);
    assert_int_equal(cc->n_certs, 1);
    b = cohort__cert_body__unpack(NULL, cc->certs[0]->body.len, cc->certs[0]->body.data);
    assert_non_null(b);
    assert_int_equal(b->sign_pk.len, 32);
    memcpy(pk, b->sign_pk.data, 32);
    cohort__cert_body__free_unpacked(b, NULL);
    cohort__cert_chain__free_unpacked(cc, NULL);
    free(buf);
}

/* SQL compiled, signed with the researcher's files, judged as a token trusting root would. */
static int token_verdict(const struct qr_identity *id, uint8_t **chain, size_t *lens, size_t n,
                         const uint8_t root[32], const char *sql, const char *study)
{
    struct qr_compile_opts opts;
    struct qr_sql_error serr;
    uint8_t *plan = NULL, *sp = NULL, *scratch = malloc(1u << 16);
    size_t plan_len, sp_len;
    char who[64];
    int rc;

    memset(&opts, 0, sizeof opts);
    opts.study = study;
    opts.now = (int64_t)time(NULL);
    assert_non_null(scratch);
    assert_int_equal(qr_sql_compile(&plan, &plan_len, sql, &opts, &serr), 0);
    assert_int_equal(
        qr_plan_sign(&sp, &sp_len, plan, plan_len, id, (const uint8_t *const *)chain, lens, n), 0);
    rc = tk_plan_verify(sp, sp_len, (const uint8_t(*)[32])root, 1, (int64_t)time(NULL), scratch,
                        1u << 16, who);
    if (rc == 0)
        assert_string_equal(who, "Alice");
    free(scratch);
    free(sp);
    free(plan);
    return rc;
}

static void a_researcher_certified_by_the_authority_signs_plans_tokens_accept_in_scope(void **state)
{
    struct world *w = *state;
    char dir[600], prefix[600], csr[600], cert[600];
    struct qr_identity *id = sodium_malloc(sizeof *id);
    uint8_t root[32], **chain = NULL, zero[sizeof *id];
    size_t *lens = NULL, n = 0;
    char err[SH_ERR_MAX] = "";

    assert_non_null(id);
    snprintf(dir, sizeof dir, "%s", at(w, "auth"));
    snprintf(prefix, sizeof prefix, "%s", at(w, "alice"));
    snprintf(csr, sizeof csr, "%s", at(w, "alice.csr"));
    snprintf(cert, sizeof cert, "%s", at(w, "alice.cert"));
    assert_int_equal(authority("init", "--dir", dir, "--subject", "Test Authority", NULL), 0);
    assert_int_equal(keygen(prefix, "Alice"), RS_EXIT_OK);
    assert_int_equal(authority("certify-researcher", "--dir", dir, "--csr", csr, "--out", cert,
                               "--table", "health", "--study", "sleep-2026", "--max-epsilon", "1",
                               NULL),
                     0);
    root_key(at(w, "auth/authority.cert"), root);

    assert_int_equal(
        rs_load_researcher(at(w, "alice.key"), cert, id, &chain, &lens, &n, err, sizeof err),
        RS_OK);
    assert_int_equal(n, 2);
    assert_int_equal(token_verdict(id, chain, lens, n, root,
                                   "SELECT sex, COUNT(*) FROM health GROUP BY sex", "sleep-2026"),
                     0);
    /* Outside the scope: another table, another study. */
    assert_int_equal(token_verdict(id, chain, lens, n, root, "SELECT COUNT(*) FROM bank_operations",
                                   "sleep-2026"),
                     TK_ERR_SCOPE);
    assert_int_equal(
        token_verdict(id, chain, lens, n, root, "SELECT COUNT(*) FROM health", "other-study"),
        TK_ERR_SCOPE);
    /* A token that trusts another authority refuses it all. */
    root[0] ^= 1;
    assert_int_equal(
        token_verdict(id, chain, lens, n, root, "SELECT COUNT(*) FROM health", "sleep-2026"),
        TK_ERR_UNTRUSTED);
    rs_chain_free(chain, lens, n);
    qr_identity_wipe(id);

    /* Another researcher's key with Alice's certificate: refused, nothing kept. */
    snprintf(prefix, sizeof prefix, "%s", at(w, "bob"));
    assert_int_equal(keygen(prefix, "Bob"), RS_EXIT_OK);
    memset(id, 0x5a, sizeof *id);
    chain = (uint8_t **)&zero;
    assert_int_equal(
        rs_load_researcher(at(w, "bob.key"), cert, id, &chain, &lens, &n, err, sizeof err),
        RS_ERR_DATA);
    assert_non_null(strstr(err, "alice.cert was not issued for this key"));
    assert_null(chain);
    assert_null(lens);
    assert_int_equal(n, 0);
    memset(zero, 0, sizeof zero);
    assert_memory_equal(id, zero, sizeof *id);
    sodium_free(id);
}

/* A CertChain file of these certificates. */
static void put_chain(const char *path, Cohort__Certificate **certs, size_t n)
{
    Cohort__CertChain cc = COHORT__CERT_CHAIN__INIT;
    uint8_t *buf;
    size_t len;

    cc.n_certs = n;
    cc.certs = certs;
    len = cohort__cert_chain__get_packed_size(&cc);
    buf = malloc(len);
    assert_non_null(buf);
    cohort__cert_chain__pack(&cc, buf);
    put_file(path, buf, len, 0644);
    free(buf);
}

static Cohort__Certificate *issue(const struct qr_identity *issuer, int role,
                                  const struct qr_identity *subject)
{
    uint8_t *cert;
    size_t len;
    Cohort__Certificate *c;
    int64_t now = (int64_t)time(NULL);

    assert_int_equal(qr_cert_issue(&cert, &len, issuer, role, "someone", subject->sign_pk,
                                   subject->box_pk, now - 60, now + 3600, NULL),
                     0);
    c = cohort__certificate__unpack(NULL, len, cert);
    assert_non_null(c);
    free(cert);
    return c;
}

/* The researcher's identity as keygen wrote it, through the loader with a chain made here. */
static int load(struct world *w, const char *cert, char *err, size_t err_len)
{
    struct qr_identity id;
    uint8_t **chain = NULL;
    size_t *lens = NULL, n = 0;
    int rc = rs_load_researcher(at(w, "r.key"), cert, &id, &chain, &lens, &n, err, err_len);
    rs_chain_free(chain, lens, n);
    qr_identity_wipe(&id);
    return rc;
}

static void a_chain_that_does_not_verify_or_a_key_others_may_read_is_refused(void **state)
{
    struct world *w = *state;
    struct qr_identity root, other, me;
    Cohort__Certificate *certs[2];
    char prefix[600], cert[600], err[SH_ERR_MAX];
    uint8_t **chain = NULL;
    size_t *lens = NULL, n = 0;

    snprintf(prefix, sizeof prefix, "%s", at(w, "r"));
    snprintf(cert, sizeof cert, "%s", at(w, "r.cert"));
    assert_int_equal(keygen(prefix, "R"), RS_EXIT_OK);
    /* The researcher's own keys, read back to certify them here. */
    assert_int_equal(qr_identity_generate(&root), 0);
    assert_int_equal(qr_identity_generate(&other), 0);
    {
        size_t len;
        uint8_t *buf = get_file(at(w, "r.csr"), &len);
        struct qr_cert_request req;
        assert_int_equal(qr_cert_request_check(&req, buf, len), 0);
        memset(&me, 0, sizeof me);
        memcpy(me.sign_pk, req.sign_pk, 32);
        memcpy(me.box_pk, req.box_pk, 32);
        free(buf);
    }

    /* A good chain loads. */
    certs[0] = issue(&root, 3, &me);
    certs[1] = issue(&root, 1, &root);
    put_chain(cert, certs, 2);
    assert_int_equal(load(w, cert, err, sizeof err), RS_OK);
    assert_int_equal(
        rs_load_researcher(at(w, "r.key"), cert, &me, &chain, &lens, &n, err, sizeof err), RS_OK);
    assert_int_equal(n, 2);
    assert_true(lens[0] > 0 && lens[1] > 0);
    rs_chain_free(chain, lens, n);
    qr_identity_wipe(&me);

    /* One bit of the researcher's certificate's signature flipped. */
    certs[0]->signature.data[0] ^= 1;
    put_chain(cert, certs, 2);
    assert_int_equal(load(w, cert, err, sizeof err), RS_ERR_DATA);
    assert_non_null(strstr(err, "certificate 1 is not signed by the one after it"));
    certs[0]->signature.data[0] ^= 1;

    /* A root that is not self-signed. */
    cohort__certificate__free_unpacked(certs[1], NULL);
    certs[1] = issue(&other, 1, &root);
    put_chain(cert, certs, 2);
    assert_int_equal(load(w, cert, err, sizeof err), RS_ERR_DATA);
    assert_non_null(strstr(err, "its last certificate is not a self-signed root"));

    /* A token's certificate is not a researcher's. */
    cohort__certificate__free_unpacked(certs[0], NULL);
    certs[0] = issue(&root, 2, &root);
    put_chain(cert, certs, 1);
    assert_int_equal(load(w, cert, err, sizeof err), RS_ERR_DATA);
    assert_non_null(strstr(err, "is not a researcher's certificate"));
    cohort__certificate__free_unpacked(certs[0], NULL);
    cohort__certificate__free_unpacked(certs[1], NULL);

    /* Not a certificate file; no file; a key file others may read. */
    put_file(cert, "\xff\xff\xff", 3, 0644);
    assert_int_equal(load(w, cert, err, sizeof err), RS_ERR_DATA);
    assert_non_null(strstr(err, "is not a certificate file"));
    assert_int_equal(load(w, at(w, "none.cert"), err, sizeof err), RS_ERR_IO);
    assert_int_equal(chmod(at(w, "r.key"), 0644), 0);
    assert_int_equal(load(w, cert, err, sizeof err), RS_ERR_DATA);
    assert_non_null(strstr(err, "may be read by others (mode 0644)"));
    /* A request is not a key file. */
    {
        size_t len;
        uint8_t *buf = get_file(at(w, "r.csr"), &len);
        put_file(at(w, "r.key"), buf, len, 0600);
        free(buf);
    }
    assert_int_equal(load(w, cert, err, sizeof err), RS_ERR_DATA);
    assert_non_null(strstr(err, "r.key is not a researcher's key file"));
    qr_identity_wipe(&root);
    qr_identity_wipe(&other);
}

/* ------------------------------------------------------------- tokens */

static int w_open(void *ctx, const char *token, const char *dir, bool create, struct pt_link *link,
                  void **handle, char *msg, size_t msg_len)
{
    (void)token;
    struct world *w = ctx;
    (void)dir;
    (void)msg;
    (void)msg_len;
    if (create) {
        struct tk_flash flash;
        assert_false(w->has_token);
        w->tk = calloc(1, sizeof *w->tk);
        w->arena = calloc(1, ARENA);
        assert_non_null(w->tk);
        assert_non_null(w->arena);
        pt_memflash_init(&w->flash);
        flash = pt_memflash_flash(&w->flash);
        assert_int_equal(tk_token_init(w->tk, &flash, NULL, w->arena, ARENA), 0);
        pt_inproc_init(&w->link, w->tk, w->arena, ARENA);
        w->has_token = true;
    }
    assert_true(w->has_token);
    *link = pt_inproc_link(&w->link);
    *handle = w;
    return 0;
}

static void w_close(void *ctx, void *handle)
{
    assert_ptr_equal(ctx, handle);
}

/* Run a cohort-participant command line against the world's token. */
static int participant(struct world *w, const char *a1, const char *a2, const char *a3,
                       const char *a4, const char *a5)
{
    char *argv[] = {"cohort-participant", (char *)a1, (char *)a2, (char *)a3,
                    (char *)a4,           (char *)a5, NULL};
    struct cli_env env;
    FILE *out, *err;
    int argc = 1, rc;

    while (argv[argc] != NULL)
        argc++;
    free(w->out_buf);
    free(w->err_buf);
    out = open_memstream(&w->out_buf, &w->out_len);
    err = open_memstream(&w->err_buf, &w->err_len);
    assert_non_null(out);
    assert_non_null(err);
    env = (struct cli_env){out, err, (int64_t)time(NULL), w_open, w_close, w, NULL, NULL};
    rc = cli_main(argc, argv, &env);
    fclose(out);
    fclose(err);
    return rc;
}

static bool token_provisioned(struct world *w)
{
    struct pt_owner o;
    struct pt_token_info info;
    struct pt_link link = pt_inproc_link(&w->link);
    pt_owner_init(&o, &link, (int64_t)time(NULL));
    assert_int_equal(pt_owner_info(&o, &info), 0);
    return info.provisioned;
}

static void provision_installs_the_authoritys_bundle_once_and_refuses_another_tokens(void **state)
{
    struct world *w = *state;
    char dir[600], tok[600], csr[600], other_csr[600], bundle[600], other[600];
    struct qr_identity stranger;
    uint8_t *csr_bytes, *cert;
    size_t csr_len, cert_len;

    snprintf(dir, sizeof dir, "%s", at(w, "auth"));
    snprintf(tok, sizeof tok, "%s", at(w, "tok"));
    snprintf(csr, sizeof csr, "%s", at(w, "tok/token.csr"));
    snprintf(other_csr, sizeof other_csr, "%s", at(w, "other.csr"));
    snprintf(bundle, sizeof bundle, "%s", at(w, "tok.bundle"));
    snprintf(other, sizeof other, "%s", at(w, "other.bundle"));
    assert_int_equal(mkdir(tok, 0700), 0);
    assert_int_equal(participant(w, "init", "--dir", tok, "--subject", "token T"), CLI_OK);
    assert_int_equal(authority("init", "--dir", dir, "--subject", "Test Authority", NULL), 0);
    assert_int_equal(authority("certify-token", "--dir", dir, "--csr", csr, "--out", bundle, NULL),
                     0);

    /* A request from another key, as a token would make it: its bundle is refused. */
    assert_int_equal(qr_identity_generate(&stranger), 0);
    {
        Cohort__CertRequest cr = COHORT__CERT_REQUEST__INIT;
        uint8_t msg[256], sig[64];
        size_t p = strlen(TK_SIG_CSR), s = strlen("token T");
        memcpy(msg, TK_SIG_CSR, p);
        memcpy(msg + p, "token T", s);
        memcpy(msg + p + s, stranger.sign_pk, 32);
        memcpy(msg + p + s + 32, stranger.box_pk, 32);
        crypto_sign_detached(sig, NULL, msg, p + s + 64, stranger.sign_sk);
        cr.subject = "token T";
        cr.sign_pk = (ProtobufCBinaryData){32, stranger.sign_pk};
        cr.box_pk = (ProtobufCBinaryData){32, stranger.box_pk};
        cr.signature = (ProtobufCBinaryData){64, sig};
        csr_len = cohort__cert_request__get_packed_size(&cr);
        csr_bytes = malloc(csr_len);
        assert_non_null(csr_bytes);
        cohort__cert_request__pack(&cr, csr_bytes);
        put_file(other_csr, csr_bytes, csr_len, 0644);
        free(csr_bytes);
    }
    assert_int_equal(
        authority("certify-token", "--dir", dir, "--csr", other_csr, "--out", other, NULL), 0);
    assert_int_equal(participant(w, "provision", "--dir", tok, other, NULL), CLI_DATA);
    assert_non_null(strstr(w->err_buf, "the bundle was made for another token"));
    assert_false(token_provisioned(w));

    /* The right certificate, but the secret sealed to another box key: the token says no. */
    {
        Cohort__ProvisionBundle *b;
        uint8_t sealed[32 + crypto_box_SEALBYTES], secret[32] = {1}, *buf;
        size_t len;
        buf = get_file(bundle, &len);
        b = cohort__provision_bundle__unpack(NULL, len, buf);
        assert_non_null(b);
        free(buf);
        crypto_box_seal(sealed, secret, sizeof secret, stranger.box_pk);
        memcpy(b->finish->sealed_group_secret.data, sealed, sizeof sealed);
        len = cohort__provision_bundle__get_packed_size(b);
        buf = malloc(len);
        assert_non_null(buf);
        cohort__provision_bundle__pack(b, buf);
        put_file(other, buf, len, 0600);
        free(buf);
        cohort__provision_bundle__free_unpacked(b, NULL);
    }
    assert_int_equal(participant(w, "provision", "--dir", tok, other, NULL), CLI_DATA);
    assert_non_null(strstr(w->err_buf, "the bundle's group secret was not sealed to this token"));
    assert_false(token_provisioned(w));

    /* What is not a bundle, cut short, or too large. */
    csr_bytes = get_file(bundle, &csr_len);
    put_file(other, csr_bytes, csr_len - 1, 0600);
    free(csr_bytes);
    assert_int_equal(participant(w, "provision", "--dir", tok, other, NULL), CLI_DATA);
    assert_non_null(strstr(w->err_buf, "is not a provisioning bundle"));
    assert_int_equal(participant(w, "provision", "--dir", tok, csr, NULL), CLI_DATA);
    assert_non_null(strstr(w->err_buf, "is not a provisioning bundle"));
    cert = calloc(1, PT_BUNDLE_MAX + 1);
    assert_non_null(cert);
    cert_len = PT_BUNDLE_MAX + 1;
    put_file(other, cert, cert_len, 0600);
    free(cert);
    assert_int_equal(participant(w, "provision", "--dir", tok, other, NULL), CLI_DATA);
    assert_non_null(strstr(w->err_buf, "larger than"));
    assert_int_equal(participant(w, "provision", "--dir", tok, NULL, NULL), CLI_USAGE);
    assert_false(token_provisioned(w));

    /* Its own bundle goes in, once. */
    assert_int_equal(participant(w, "provision", "--dir", tok, bundle, NULL), CLI_OK);
    assert_non_null(strstr(w->out_buf, "provisioned the token in"));
    assert_non_null(strstr(w->out_buf, "(token T)"));
    assert_true(token_provisioned(w));
    assert_int_equal(participant(w, "provision", "--dir", tok, bundle, NULL), CLI_DATA);
    assert_string_equal(w->err_buf, "cohort-participant: provision: the token is already "
                                    "provisioned\n");
    /* The token's own check, past the command's: it refuses a second bundle too. */
    {
        struct pt_owner o;
        struct pt_link link = pt_inproc_link(&w->link);
        size_t len;
        uint8_t *buf = get_file(bundle, &len);
        pt_owner_init(&o, &link, (int64_t)time(NULL));
        assert_int_equal(pt_owner_provision_finish(&o, buf, len), PT_ERR_TOKEN);
        assert_int_equal(o.token_status, TK_ERR_PROVISIONED);
        free(buf);
    }
    qr_identity_wipe(&stranger);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            a_written_file_has_its_mode_and_bytes_and_no_temporary_file_is_left, setup, teardown),
        cmocka_unit_test_setup_teardown(
            an_exclusive_write_refuses_an_existing_path_and_leaves_it_unchanged, setup, teardown),
        cmocka_unit_test_setup_teardown(a_plain_write_replaces_the_file_whole, setup, teardown),
        cmocka_unit_test_setup_teardown(a_write_into_a_missing_directory_fails_and_creates_nothing,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(a_read_is_bounded_and_refuses_what_is_not_a_regular_file,
                                        setup, teardown),
        cmocka_unit_test(hex_round_trips_and_bad_hex_changes_nothing),
        cmocka_unit_test(names_are_utf8_without_control_characters_and_printing_escapes_the_rest),
        cmocka_unit_test(the_clocks_tell_unix_milliseconds_and_monotonic_time),
        cmocka_unit_test_setup_teardown(
            a_log_line_has_the_utc_time_the_program_and_its_pid_and_quiet_silences_it, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            keygen_writes_a_private_key_and_a_request_and_never_overwrites_them, setup, teardown),
        cmocka_unit_test_setup_teardown(
            a_researcher_certified_by_the_authority_signs_plans_tokens_accept_in_scope, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            a_chain_that_does_not_verify_or_a_key_others_may_read_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(
            provision_installs_the_authoritys_bundle_once_and_refuses_another_tokens, setup,
            teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
