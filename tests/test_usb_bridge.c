/*
 * usb-bridge (tests/usb_bridge.c) as a program: it runs another program
 * against an emulated USB token whose device side is a software token in a
 * directory, and that program reaches the token through the real libusb
 * (participant/pt_usb.c) at the kernel interface.
 *
 * The program is this test binary in a child mode (`test_usb_bridge
 * --child TASK ARGS...`): it opens the token with pt_usb_open, does its
 * task with cmocka's assertions and exits 0 when all of them held, 1
 * otherwise. The parent runs build/tests/usb-bridge around it, with the
 * bridge's stdout and stderr in a log file (shown when a run surprises),
 * and checks the bridge's exit status, its log, and the token directory
 * afterwards, opened directly with pt_soft_open.
 *
 * What is checked: a blank token made by --create is provisioned through
 * the bridge, and the public key the program read over USB is the one in
 * the directory; a document written in one run reads back in a second run
 * and directly from the directory; an unplug in the middle of a document's
 * DATA frames is PT_ERR_LINK with PT_USB_E_NO_DEVICE, and after the replug
 * pt_usb_wait opens the token again and the retried document goes through;
 * SIGUSR1 and SIGUSR2 unplug and replug; SIGTERM reaches the program; the
 * bridge exits with the program's status (128 + the signal when it was
 * killed); two programs under one bridge see one device, which the second
 * cannot claim while the first has it; two bridges run side by side; a
 * token held by one bridge is refused to another; a bad command line is 125
 * with one sentence.
 */
#define _GNU_SOURCE
#include "usb_fixture.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "participant/pt_usb.h"
#include "token/tk_usb.h"

#define BRIDGE COHORT_BINARY_DIR "/tests/usb-bridge"
#define DOC_LEN 20000u /* five DATA frames of a DocWrite at 4 KiB each */
#define WAIT_MS 20000u /* the most any wait here lasts */
#define LOG_MAX 65536u

static char self_exe[4096];

/* ------------------------------------------------------------ helpers */

static void sleep_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

static void write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Waits (bounded) for a file another process makes. */
static void wait_for_file(const char *path)
{
    unsigned waited;
    for (waited = 0; waited < WAIT_MS && !exists(path); waited += 10)
        sleep_ms(10);
    assert_true(exists(path));
}

/* ------------------------------------------- requests through any path */

/* GetInfo: whether the token is provisioned, and its public key. */
static bool info_through(usb_through_fn through, void *ctx, uint8_t pk[32])
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__GetInfo gi = COHORT__GET_INFO__INIT;
    Cohort__TokenResponse *r;
    bool provisioned;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_INFO;
    req.info = &gi;
    r = usb_call(through, ctx, &req);
    assert_int_equal(r->status, TK_OK);
    assert_int_equal(r->body_case, COHORT__TOKEN_RESPONSE__BODY_INFO);
    provisioned = r->info->provisioned;
    memset(pk, 0, 32);
    if (r->info->sign_pk.len == 32)
        memcpy(pk, r->info->sign_pk.data, 32);
    cohort__token_response__free_unpacked(r, NULL);
    return provisioned;
}

/* tk_fixture.h's fx_provision, over a path: the ceremony with the
 * manufacturer and study authority of w, and consent to the health table. */
static void provision_through(usb_through_fn through, void *ctx, const struct fx_world *w,
                              const char *subject)
{
    Cohort__TokenRequest req = COHORT__TOKEN_REQUEST__INIT;
    Cohort__SetPolicy sp = COHORT__SET_POLICY__INIT;
    Cohort__ConsentPolicy policy = COHORT__CONSENT_POLICY__INIT;
    Cohort__TokenResponse *r;
    char *tables[] = {"health"};

    usb_provision(through, ctx, w, subject, NULL);
    policy.n_tables = 1;
    policy.tables = tables;
    policy.epsilon_per_study = 1000.0;
    policy.epsilon_total = 1000.0;
    sp.policy = &policy;
    req.body_case = COHORT__TOKEN_REQUEST__BODY_SET_POLICY;
    req.set_policy = &sp;
    r = usb_call(through, ctx, &req);
    assert_int_equal(r->status, TK_OK);
    cohort__token_response__free_unpacked(r, NULL);
}

/* A new document of DOC_LEN bytes; what reading it back needs goes to
 * file: the id's length (1 byte), the id, the revision (8 bytes LE), then
 * the ciphertext. */
static void doc_put(usb_through_fn through, void *ctx, const char *file)
{
    Cohort__TokenResponse *r = usb_document_write(through, ctx, DOC_LEN);
    const Cohort__DocRef *ref = r->doc_cipher->ref;
    uint8_t *out;
    size_t at = 0, i;

    assert_true(ref->doc_id.len > 0 && ref->doc_id.len < 256);
    out = fx_alloc(1 + ref->doc_id.len + 8 + r->doc_cipher->data.len);
    out[at++] = (uint8_t)ref->doc_id.len;
    memcpy(out + at, ref->doc_id.data, ref->doc_id.len);
    at += ref->doc_id.len;
    for (i = 0; i < 8; i++)
        out[at++] = (uint8_t)(ref->revision >> (8 * i));
    memcpy(out + at, r->doc_cipher->data.data, r->doc_cipher->data.len);
    at += r->doc_cipher->data.len;
    write_file(file, out, at);
    free(out);
    cohort__token_response__free_unpacked(r, NULL);
}

/* The document doc_put saved in file reads back as what was written. */
static void doc_get(usb_through_fn through, void *ctx, const char *file)
{
    Cohort__DocRef ref = COHORT__DOC_REF__INIT;
    Cohort__DocCipher dc = COHORT__DOC_CIPHER__INIT;
    uint8_t *saved;
    size_t n, at, i;

    saved = fx_read_file(file, &n);
    assert_true(n > 9 && n > 1 + (size_t)saved[0] + 8);
    ref.doc_id = (ProtobufCBinaryData){saved[0], saved + 1};
    at = 1 + (size_t)saved[0];
    for (i = 0; i < 8; i++)
        ref.revision |= (uint64_t)saved[at++] << (8 * i);
    dc.ref = &ref;
    dc.data = (ProtobufCBinaryData){n - at, saved + at};
    usb_document_read_back(through, ctx, &dc, DOC_LEN);
    free(saved);
}

/* ------------------------------------------- the child: a libusb program */

struct child {
    struct pt_usb *u;
    struct pt_link link;
};

static int child_argc;
static char **child_argv; /* TASK ARGS... */

static Cohort__TokenResponse *through_usb(void *ctx, const uint8_t *req, size_t len)
{
    struct child *c = ctx;
    const uint8_t *resp;
    size_t resp_len;
    Cohort__TokenResponse *out;
    int rc = c->link.transact(c->link.ctx, req, len, &resp, &resp_len);
    if (rc != PT_OK)
        fprintf(stderr, "child: the request failed: %s\n", pt_usb_strerror(pt_usb_error(c->u)));
    assert_int_equal(rc, PT_OK);
    assert_int_equal(pt_usb_error(c->u), PT_USB_OK);
    out = cohort__token_response__unpack(NULL, resp_len, resp);
    assert_non_null(out);
    return out;
}

static void child_open(struct child *c)
{
    char err[256];
    int rc = pt_usb_open(&c->u, NULL, err, sizeof err);
    if (rc != PT_USB_OK)
        fprintf(stderr, "child: %s\n", err);
    assert_int_equal(rc, PT_USB_OK);
    c->link = pt_usb_link(c->u);
}

static void child_info_request(struct child *c, int *rc)
{
    const uint8_t *resp;
    size_t resp_len, len;
    uint8_t *req = usb_info_request(&len);
    *rc = c->link.transact(c->link.ctx, req, len, &resp, &resp_len);
    free(req);
}

/* The tasks. Each gets child_argv[1...] as its arguments. */

/* provision KEYFILE: a blank token is provisioned over USB; its public key
 * goes to KEYFILE. */
static void task_provision(struct child *c)
{
    struct fx_world w;
    uint8_t pk[32];
    fx_world_init(&w);
    assert_false(info_through(through_usb, c, pk));
    provision_through(through_usb, c, &w, "token-usbbridge");
    assert_true(info_through(through_usb, c, pk));
    write_file(child_argv[1], pk, sizeof pk);
}

/* info KEYFILE: the public key of a provisioned token to KEYFILE. */
static void task_info(struct child *c)
{
    uint8_t pk[32];
    assert_true(info_through(through_usb, c, pk));
    write_file(child_argv[1], pk, sizeof pk);
}

/* doc-put FILE: a round trip, then a document saved to FILE. */
static void task_doc_put(struct child *c)
{
    usb_document_round_trip(through_usb, c, 3000);
    doc_put(through_usb, c, child_argv[1]);
}

/* doc-get FILE: the document doc-put saved, read back. */
static void task_doc_get(struct child *c)
{
    doc_get(through_usb, c, child_argv[1]);
}

/* unplug: the bridge cuts DATA frame 4, inside the DocWrite (frames 3 to
 * 7, after GetInfo's and DocBegin's); after the replug the retried
 * document goes through. */
static void task_unplug(struct child *c)
{
    uint8_t pk[32], session[TK_SESSION_ID_LEN], *plain = fx_alloc(DOC_LEN), *buf;
    const uint8_t *resp;
    size_t len, resp_len;

    assert_true(info_through(through_usb, c, pk));
    usb_document_begin(through_usb, c, session);
    usb_document_plain(plain, DOC_LEN);
    buf = usb_doc_stream_request(&len, 20, session, plain, DOC_LEN, true);
    assert_int_equal(c->link.transact(c->link.ctx, buf, len, &resp, &resp_len), PT_ERR_LINK);
    free(buf);
    free(plain);
    assert_int_equal(pt_usb_error(c->u), PT_USB_E_NO_DEVICE);
    assert_false(pt_usb_connected(c->u));

    /* Plugged back in: a power cycle lost the session, so the agent's
     * retry is the whole document. */
    assert_int_equal(pt_usb_wait(c->u, WAIT_MS), PT_USB_OK);
    assert_true(pt_usb_connected(c->u));
    usb_document_round_trip(through_usb, c, DOC_LEN);
}

/* signals DIR: DIR/ready once the token answered; DIR/gone once it is
 * unplugged (SIGUSR1 to the bridge); back after SIGUSR2. */
static void task_signals(struct child *c)
{
    char path[4096];
    uint8_t pk[32];
    unsigned waited;
    int rc = PT_OK;

    assert_true(info_through(through_usb, c, pk));
    snprintf(path, sizeof path, "%s/ready", child_argv[1]);
    write_file(path, "", 0);
    for (waited = 0; waited < WAIT_MS; waited += 20) {
        child_info_request(c, &rc);
        if (rc != PT_OK)
            break;
        sleep_ms(20);
    }
    assert_int_equal(rc, PT_ERR_LINK);
    assert_int_equal(pt_usb_error(c->u), PT_USB_E_NO_DEVICE);
    snprintf(path, sizeof path, "%s/gone", child_argv[1]);
    write_file(path, "", 0);
    assert_int_equal(pt_usb_wait(c->u, WAIT_MS), PT_USB_OK);
    assert_true(info_through(through_usb, c, pk));
}

/* hold DIR: DIR/held while the token is open here; closes it once
 * DIR/tried appears, then DIR/closed. */
static void task_hold(struct child *c)
{
    char path[4096];
    uint8_t pk[32];
    assert_true(info_through(through_usb, c, pk));
    snprintf(path, sizeof path, "%s/held", child_argv[1]);
    write_file(path, "", 0);
    snprintf(path, sizeof path, "%s/tried", child_argv[1]);
    wait_for_file(path);
    pt_usb_close(c->u);
    c->u = NULL;
    snprintf(path, sizeof path, "%s/closed", child_argv[1]);
    write_file(path, "", 0);
}

/* busy DIR: another program holds the token (DIR/held): opening it is
 * PT_USB_E_BUSY; once that one closed it (DIR/closed), it opens. */
static void task_busy(struct child *c)
{
    char path[4096], err[256];
    uint8_t pk[32];
    snprintf(path, sizeof path, "%s/held", child_argv[1]);
    wait_for_file(path);
    assert_int_equal(pt_usb_open(&c->u, NULL, err, sizeof err), PT_USB_E_BUSY);
    assert_null(c->u);
    snprintf(path, sizeof path, "%s/tried", child_argv[1]);
    write_file(path, "", 0);
    snprintf(path, sizeof path, "%s/closed", child_argv[1]);
    wait_for_file(path);
    assert_int_equal(pt_usb_open(&c->u, NULL, err, sizeof err), PT_USB_OK);
    c->link = pt_usb_link(c->u);
    assert_true(info_through(through_usb, c, pk));
}

static const struct child_task {
    const char *name;
    int argc; /* with the name */
    void (*run)(struct child *c);
    bool opens; /* the task opens the token itself */
} child_tasks[] = {
    {"provision", 2, task_provision, false}, {"info", 2, task_info, false},
    {"doc-put", 2, task_doc_put, false},     {"doc-get", 2, task_doc_get, false},
    {"unplug", 1, task_unplug, false},       {"signals", 2, task_signals, false},
    {"hold", 2, task_hold, false},           {"busy", 2, task_busy, true},
};

static const struct child_task *child_task;

static void child_runs_its_task_against_the_token(void **state)
{
    struct child c = {NULL, {NULL, NULL}};
    (void)state;
    if (!child_task->opens)
        child_open(&c);
    child_task->run(&c);
    pt_usb_close(c.u);
}

static volatile sig_atomic_t got_term;

static void on_term(int sig)
{
    (void)sig;
    got_term = 1;
}

/* test_usb_bridge --child TASK ARGS... */
static int child_main(void)
{
    const struct CMUnitTest one[] = {
        cmocka_unit_test(child_runs_its_task_against_the_token),
    };
    size_t i;

    /* Tasks without the token. */
    if (strcmp(child_argv[0], "exit") == 0 && child_argc == 2)
        return atoi(child_argv[1]);
    if (strcmp(child_argv[0], "kill-self") == 0) {
        raise(SIGTERM);
        return 1;
    }
    if (strcmp(child_argv[0], "wait-term") == 0 && child_argc == 2) {
        /* READYFILE once the handler is in; 3 on SIGTERM. */
        struct sigaction sa;
        unsigned waited;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_term;
        sigaction(SIGTERM, &sa, NULL);
        write_file(child_argv[1], "", 0);
        for (waited = 0; waited < WAIT_MS && !got_term; waited += 10)
            sleep_ms(10);
        return got_term ? 3 : 1;
    }
    for (i = 0; i < sizeof child_tasks / sizeof child_tasks[0]; i++)
        if (strcmp(child_argv[0], child_tasks[i].name) == 0 && child_argc == child_tasks[i].argc)
            child_task = &child_tasks[i];
    if (child_task == NULL) {
        fprintf(stderr, "child: no task %s\n", child_argv[0]);
        return 2;
    }
    return cmocka_run_group_tests_name(child_task->name, one, NULL, NULL) == 0 ? 0 : 1;
}

/* ------------------------------------------------------- the bridge runs */

/* Starts usb-bridge BRIDGE_ARGS -- COMMAND, its stdout and stderr to log.
 * Both lists end with NULL; without a command, no "--" either. */
static pid_t bridge_start_command(const char *log, const char *const *bridge_args,
                                  const char *const *command)
{
    const char *argv[64];
    size_t n = 0;
    pid_t pid;
    argv[n++] = BRIDGE;
    while (*bridge_args != NULL)
        argv[n++] = *bridge_args++;
    if (command != NULL) {
        argv[n++] = "--";
        while (*command != NULL)
            argv[n++] = *command++;
    }
    argv[n] = NULL;
    assert_true(n < sizeof argv / sizeof argv[0]);
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
            _exit(99);
        execv(BRIDGE, (char *const *)argv);
        _exit(98);
    }
    return pid;
}

/* usb-bridge BRIDGE_ARGS -- self --child CHILD_ARGS. */
static pid_t bridge_start(const char *log, const char *const *bridge_args,
                          const char *const *child_args)
{
    const char *command[32];
    size_t n = 0;
    if (child_args == NULL)
        return bridge_start_command(log, bridge_args, NULL);
    command[n++] = self_exe;
    command[n++] = "--child";
    while (*child_args != NULL && n < sizeof command / sizeof command[0] - 1)
        command[n++] = *child_args++;
    command[n] = NULL;
    return bridge_start_command(log, bridge_args, command);
}

static void show_log(const char *log)
{
    size_t n;
    uint8_t *p = fx_read_file(log, &n);
    fprintf(stderr, "--- %s\n%s--- end\n", log, (const char *)p);
    free(p);
}

/* Waits for the bridge pid to end; fails the test, showing its log, unless
 * it exits with expect. */
static void bridge_end(pid_t pid, int expect, const char *log)
{
    int rc = usb_wait_exit(pid);
    if (rc != expect)
        show_log(log);
    assert_int_equal(rc, expect);
}

/* Runs the bridge to its end, as bridge_end. */
static void bridge_run(int expect, const char *log, const char *const *bridge_args,
                       const char *const *child_args)
{
    bridge_end(bridge_start(log, bridge_args, child_args), expect, log);
}

static bool log_has(const char *log, const char *text)
{
    size_t n;
    uint8_t *p = fx_read_file(log, &n);
    bool has = strstr((const char *)p, text) != NULL;
    if (!has) {
        fprintf(stderr, "no \"%s\" in:\n", text);
        show_log(log);
    }
    free(p);
    return has;
}

struct tmp {
    char root[64];
    char tok[128], log[128], file[128];
};

static void tmp_make(struct tmp *t)
{
    snprintf(t->root, sizeof t->root, "/tmp/cohort-usbbridge-XXXXXX");
    assert_non_null(mkdtemp(t->root));
    snprintf(t->tok, sizeof t->tok, "%s/token", t->root);
    snprintf(t->log, sizeof t->log, "%s/bridge.log", t->root);
    snprintf(t->file, sizeof t->file, "%s/out", t->root);
}

static void tmp_free(struct tmp *t)
{
    fx_rm_tree(t->root);
}

/* A token in dir, provisioned directly; its public key in pk. */
static void token_make(const char *dir, uint8_t pk[32])
{
    struct fx_world w;
    struct pt_soft *s;
    struct pt_link link;
    char err[256];
    fx_world_init(&w);
    assert_int_equal(pt_soft_create(&s, dir, TK_ARENA_DEFAULT, err, sizeof err), PT_OK);
    link = pt_soft_link(s);
    provision_through(usb_through_link, &link, &w, "token-usbbridge");
    memcpy(pk, pt_soft_token(s)->sign_pk, 32);
    pt_soft_close(s);
}

/* The token in dir, opened directly once no bridge holds it. */
static struct pt_soft *token_open(const char *dir)
{
    struct pt_soft *s;
    char err[256];
    int rc = pt_soft_open(&s, dir, TK_ARENA_DEFAULT, err, sizeof err);
    if (rc != PT_OK)
        fprintf(stderr, "%s: %s\n", dir, err);
    assert_int_equal(rc, PT_OK);
    return s;
}

/* ------------------------------------------------------------ tests */

static void a_program_provisions_a_blank_token_through_libusb_and_the_bridge(void **state)
{
    struct tmp t;
    struct pt_soft *s;
    struct pt_link link;
    uint8_t pk_usb[32], pk_dir[32], zero[32] = {0};
    size_t n;
    uint8_t *p;
    (void)state;
    tmp_make(&t);
    bridge_run(0, t.log, (const char *const[]){"--token", t.tok, "--create", NULL},
               (const char *const[]){"provision", t.file, NULL});
    p = fx_read_file(t.file, &n);
    assert_int_equal(n, 32);
    memcpy(pk_usb, p, 32);
    free(p);
    assert_memory_not_equal(pk_usb, zero, 32);

    /* The directory holds the token the program provisioned. */
    s = token_open(t.tok);
    memcpy(pk_dir, pt_soft_token(s)->sign_pk, 32);
    assert_memory_equal(pk_usb, pk_dir, 32);
    link = pt_soft_link(s);
    assert_true(info_through(usb_through_link, &link, pk_dir));
    assert_memory_equal(pk_usb, pk_dir, 32);
    pt_soft_close(s);

    /* A later run reaches the same token, without --create. */
    bridge_run(0, t.log, (const char *const[]){"--token", t.tok, NULL},
               (const char *const[]){"info", t.file, NULL});
    p = fx_read_file(t.file, &n);
    assert_int_equal(n, 32);
    assert_memory_equal(p, pk_usb, 32);
    free(p);
    tmp_free(&t);
}

static void
a_document_written_in_one_run_reads_back_in_the_next_and_from_the_directory(void **state)
{
    struct tmp t;
    struct pt_soft *s;
    struct pt_link link;
    uint8_t pk[32];
    (void)state;
    tmp_make(&t);
    token_make(t.tok, pk);
    bridge_run(0, t.log, (const char *const[]){"--token", t.tok, "--stats", NULL},
               (const char *const[]){"doc-put", t.file, NULL});
    /* A round trip (four requests), DocBegin and DocWrite. */
    assert_true(log_has(t.log, "dispatched 6, duplicates 0, naks 0, bad_crc 0, resends 0, "
                               "unplugs 0\n"));
    bridge_run(0, t.log, (const char *const[]){"--token", t.tok, NULL},
               (const char *const[]){"doc-get", t.file, NULL});
    s = token_open(t.tok);
    link = pt_soft_link(s);
    doc_get(usb_through_link, &link, t.file);
    pt_soft_close(s);
    tmp_free(&t);
}

static void
an_unplug_in_a_document_put_is_a_link_error_and_the_retry_after_the_replug_works(void **state)
{
    struct tmp t;
    uint8_t pk[32];
    (void)state;
    tmp_make(&t);
    token_make(t.tok, pk);
    bridge_run(0, t.log,
               (const char *const[]){"--token", t.tok, "--unplug-at", "4", "--replug-after", "300",
                                     "--stats", NULL},
               (const char *const[]){"unplug", NULL});
    assert_true(log_has(t.log, "usb-bridge: unplugged the token (after 4 OUT frames)\n"
                               "usb-bridge: plugged the token back in\n"));
    /* GetInfo and DocBegin before the unplug, the round trip's four after:
     * the cut DocWrite never ran. */
    assert_true(log_has(t.log, "dispatched 6, "));
    assert_true(log_has(t.log, "unplugs 1\n"));
    tmp_free(&t);
}

static void sigusr1_unplugs_and_sigusr2_plugs_the_token_back_in(void **state)
{
    struct tmp t;
    char ready[160], gone[160];
    uint8_t pk[32];
    pid_t pid;
    (void)state;
    tmp_make(&t);
    token_make(t.tok, pk);
    snprintf(ready, sizeof ready, "%s/ready", t.root);
    snprintf(gone, sizeof gone, "%s/gone", t.root);
    pid = bridge_start(t.log, (const char *const[]){"--token", t.tok, NULL},
                       (const char *const[]){"signals", t.root, NULL});
    wait_for_file(ready);
    assert_int_equal(kill(pid, SIGUSR1), 0);
    wait_for_file(gone);
    assert_int_equal(kill(pid, SIGUSR2), 0);
    bridge_end(pid, 0, t.log);
    assert_true(log_has(t.log, "usb-bridge: unplugged the token (after "));
    assert_true(log_has(t.log, "usb-bridge: plugged the token back in\n"));
    tmp_free(&t);
}

static void sigterm_to_the_bridge_reaches_the_program(void **state)
{
    struct tmp t;
    pid_t pid;
    (void)state;
    tmp_make(&t);
    pid = bridge_start(t.log, (const char *const[]){"--token", t.tok, "--create", NULL},
                       (const char *const[]){"wait-term", t.file, NULL});
    wait_for_file(t.file);
    assert_int_equal(kill(pid, SIGTERM), 0);
    bridge_end(pid, 3, t.log);
    tmp_free(&t);
}

static void the_bridge_exits_with_the_program_s_status(void **state)
{
    struct tmp t;
    (void)state;
    tmp_make(&t);
    bridge_run(7, t.log, (const char *const[]){"--token", t.tok, "--create", NULL},
               (const char *const[]){"exit", "7", NULL});
    bridge_run(0, t.log, (const char *const[]){"--token", t.tok, NULL},
               (const char *const[]){"exit", "0", NULL});
    /* Killed by SIGTERM: 128 + 15, as a shell says. */
    bridge_run(128 + SIGTERM, t.log, (const char *const[]){"--token", t.tok, NULL},
               (const char *const[]){"kill-self", NULL});
    tmp_free(&t);
}

static void two_bridges_run_side_by_side_each_with_its_token(void **state)
{
    struct tmp a, b;
    uint8_t pk_a[32], pk_b[32], *p;
    pid_t pa, pb;
    size_t n;
    (void)state;
    tmp_make(&a);
    tmp_make(&b);
    token_make(a.tok, pk_a);
    token_make(b.tok, pk_b);
    pa = bridge_start(a.log, (const char *const[]){"--token", a.tok, NULL},
                      (const char *const[]){"info", a.file, NULL});
    pb = bridge_start(b.log, (const char *const[]){"--token", b.tok, NULL},
                      (const char *const[]){"info", b.file, NULL});
    bridge_end(pa, 0, a.log);
    bridge_end(pb, 0, b.log);
    p = fx_read_file(a.file, &n);
    assert_int_equal(n, 32);
    assert_memory_equal(p, pk_a, 32);
    free(p);
    p = fx_read_file(b.file, &n);
    assert_int_equal(n, 32);
    assert_memory_equal(p, pk_b, 32);
    free(p);
    assert_memory_not_equal(pk_a, pk_b, 32);
    tmp_free(&a);
    tmp_free(&b);
}

/* COMMAND is a shell that starts two programs: both see the device, and
 * the second cannot claim it while the first has it, as with the kernel. */
static void a_second_program_finds_the_token_busy_until_the_first_closes_it(void **state)
{
    struct tmp t;
    uint8_t pk[32];
    (void)state;
    tmp_make(&t);
    token_make(t.tok, pk);
    bridge_end(
        bridge_start_command(t.log, (const char *const[]){"--token", t.tok, NULL},
                             (const char *const[]){"sh", "-c",
                                                   "\"$0\" --child hold \"$1\" & h=$!; "
                                                   "\"$0\" --child busy \"$1\" || exit 1; wait $h",
                                                   self_exe, t.root, NULL}),
        0, t.log);
    tmp_free(&t);
}

static void a_token_held_by_another_bridge_is_refused(void **state)
{
    struct tmp t;
    char ready[160], log2[160];
    uint8_t pk[32];
    pid_t pid;
    size_t n;
    uint8_t *p;
    (void)state;
    tmp_make(&t);
    token_make(t.tok, pk);
    snprintf(ready, sizeof ready, "%s/ready", t.root);
    snprintf(log2, sizeof log2, "%s/second.log", t.root);
    pid = bridge_start(t.log, (const char *const[]){"--token", t.tok, NULL},
                       (const char *const[]){"wait-term", ready, NULL});
    wait_for_file(ready);
    bridge_run(125, log2, (const char *const[]){"--token", t.tok, NULL},
               (const char *const[]){"exit", "0", NULL});
    p = fx_read_file(log2, &n);
    assert_true(strncmp((const char *)p, "usb-bridge: cannot open the token: ", 35) == 0);
    assert_non_null(strstr((const char *)p, ": busy: "));
    assert_non_null(strchr((const char *)p, '\n'));
    assert_int_equal(strchr((const char *)p, '\n') - (const char *)p, (long)n - 1);
    free(p);
    assert_int_equal(kill(pid, SIGTERM), 0);
    bridge_end(pid, 3, t.log);
    tmp_free(&t);
}

static void a_bad_command_line_is_125_with_one_sentence(void **state)
{
    static const struct {
        const char *args[8];
        int status;
        const char *says;
    } cases[] = {
        {{"--", "true", NULL},
         125,
         "usb-bridge: --token DIR is required: the directory of the software token behind the "
         "emulated device.\n"},
        {{"--token", "@TOK", NULL},
         125,
         "usb-bridge: no command to run: give it after --, as in usb-bridge --token DIR -- "
         "COMMAND [ARGS...].\n"},
        {{"--token", "@TOK", "--", NULL},
         125,
         "usb-bridge: no command to run: give it after --, as in usb-bridge --token DIR -- "
         "COMMAND [ARGS...].\n"},
        {{"--token", "@TOK", "--vid", "xyz", "--", "true", NULL},
         125,
         "usb-bridge: --vid wants a vendor id of one to four hexadecimal digits (such as 1209), "
         "not \"xyz\".\n"},
        {{"--token", "@TOK", "--pid", "12345", "--", "true", NULL},
         125,
         "usb-bridge: --pid wants a product id of one to four hexadecimal digits (such as c07b), "
         "not \"12345\".\n"},
        {{"--token", "@TOK", "--unplug-at", "0", "--", "true", NULL},
         125,
         "usb-bridge: --unplug-at wants the number of an OUT DATA frame (1 or more), not "
         "\"0\".\n"},
        {{"--token", "@TOK", "--replug-after", "-5", "--", "true", NULL},
         125,
         "usb-bridge: --replug-after wants milliseconds from 0 to 3600000, not \"-5\".\n"},
        {{"--token", "@TOK", "--frobnicate", "--", "true", NULL},
         125,
         "usb-bridge: unknown option --frobnicate (usb-bridge --help lists the options).\n"},
        {{"--token", NULL},
         125,
         "usb-bridge: --token needs a value (usb-bridge --help lists the options).\n"},
        {{"--token", "@TOK", "-x", "--", "true", NULL},
         125,
         "usb-bridge: unknown option -x (usb-bridge --help lists the options).\n"},
        {{"--token", "@TOK", "--create", "--", "/nonexistent/program", NULL},
         127,
         "usb-bridge: cannot run /nonexistent/program: No such file or directory.\n"},
    };
    struct tmp t;
    char stray[160], want[512];
    size_t i, j, n;
    uint8_t *p;
    (void)state;
    tmp_make(&t);
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *args[8];
        for (j = 0; cases[i].args[j] != NULL; j++)
            args[j] = strcmp(cases[i].args[j], "@TOK") == 0 ? t.tok : cases[i].args[j];
        args[j] = NULL;
        bridge_run(cases[i].status, t.log, args, NULL);
        p = fx_read_file(t.log, &n);
        assert_string_equal((const char *)p, cases[i].says);
        free(p);
    }
    /* No token there, and no --create: the sentence says what would make one. */
    snprintf(stray, sizeof stray, "%s/absent", t.root);
    bridge_run(125, t.log, (const char *const[]){"--token", stray, "--", "true", NULL}, NULL);
    p = fx_read_file(t.log, &n);
    snprintf(want, sizeof want,
             "usb-bridge: cannot open the token: %s: No such file or directory (--create makes a "
             "blank one there).\n",
             stray);
    assert_string_equal((const char *)p, want);
    free(p);
    /* A directory that holds something else is no token, and --create
     * does not make one over it. */
    snprintf(stray, sizeof stray, "%s/other", t.root);
    assert_int_equal(mkdir(stray, 0700), 0);
    snprintf(t.file, sizeof t.file, "%s/other/notes.txt", t.root);
    write_file(t.file, "x", 1);
    bridge_run(125, t.log, (const char *const[]){"--token", stray, "--create", "--", "true", NULL},
               NULL);
    p = fx_read_file(t.log, &n);
    snprintf(want, sizeof want, "usb-bridge: cannot open the token: %s: ", stray);
    assert_true(strncmp((const char *)p, want, strlen(want)) == 0);
    assert_int_equal(strchr((const char *)p, '\n') - (const char *)p, (long)n - 1);
    free(p);
    tmp_free(&t);
}

int main(int argc, char **argv)
{
    ssize_t n;
    if (argc >= 3 && strcmp(argv[1], "--child") == 0) {
        child_argc = argc - 2;
        child_argv = argv + 2;
        return child_main();
    }
    n = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
    if (n <= 0)
        return 1;
    self_exe[n] = '\0';
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_program_provisions_a_blank_token_through_libusb_and_the_bridge),
        cmocka_unit_test(
            a_document_written_in_one_run_reads_back_in_the_next_and_from_the_directory),
        cmocka_unit_test(
            an_unplug_in_a_document_put_is_a_link_error_and_the_retry_after_the_replug_works),
        cmocka_unit_test(sigusr1_unplugs_and_sigusr2_plugs_the_token_back_in),
        cmocka_unit_test(sigterm_to_the_bridge_reaches_the_program),
        cmocka_unit_test(the_bridge_exits_with_the_program_s_status),
        cmocka_unit_test(two_bridges_run_side_by_side_each_with_its_token),
        cmocka_unit_test(a_second_program_finds_the_token_busy_until_the_first_closes_it),
        cmocka_unit_test(a_token_held_by_another_bridge_is_refused),
        cmocka_unit_test(a_bad_command_line_is_125_with_one_sentence),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
