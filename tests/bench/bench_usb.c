/*
 * bench_usb: the same token work over four token links, side by side in
 * one run, so that what each link adds to the token's own cost shows as a
 * ratio to the in-process link.
 *
 * The links, each to a provisioned token (ProvisionBegin and
 * ProvisionFinish through the link itself):
 * - "in process": pt_inproc, the token core called directly, in RAM (the
 *   baseline);
 * - "USB framing in memory": pt_usbhost (participant/pt_usbhost.h) with
 *   in-memory write and read callbacks in front of tk_usb (token/tk_usb.h)
 *   over a token core in RAM, as tests/test_usb_host.c does: what the
 *   framing itself costs (frames, CRC-32C, reassembly, the copies);
 * - "emulator": the real cohort-tokend process, started here with
 *   --create on a directory in a tmpfs, through pt_emu on its unix socket:
 *   the framing, a socket and a second process. Its token is a software
 *   token (participant/pt_soft.c) whose commits write and sync files; in a
 *   tmpfs that sync costs little, but it is not free as the others' RAM
 *   flash is;
 * - "libusb on umockdev": pt_usb (participant/pt_usb.c) and libusb-1.0,
 *   unchanged, against the emulated USB device of tests/usb_mock.c,
 *   bridged to a token core in RAM as tests/test_usb_link.c does.
 *
 * What the last column measures, honestly: umockdev's preload answers the
 * usbdevfs ioctls (SUBMITURB, REAPURB, ...) by passing them over a unix
 * socket to a worker thread of this process, which runs the device side
 * and the token. There is no bus, no controller and no 64-byte packets on
 * a wire: the figures are the host side's overhead (libusb, its event
 * handling, the ioctls) plus an emulation's, an upper bound on what the
 * host adds, not the speed of a token on a real USB bus (a full-speed bus
 * alone carries at most about 1 MB/s).
 *
 * The whole program runs under libumockdev-preload (usb_mock_reexec, as
 * the USB tests do): its wrappers of open, read, write and the socket
 * calls cost every link's file and socket calls a little (running the
 * first three links without it changed nothing beyond the noise).
 * cohort-tokend is started without the preload, as it runs outside the
 * bench. The emulator's figures are the noisiest: a round trip there is
 * two wake-ups of two processes, and where the scheduler puts them moves
 * its latency between invocations by a factor of 2 or more on a small
 * virtual machine.
 *
 * The work, on each link in each run: GetInfo round trips for RATE_S
 * seconds (a small request and a small response: the latency of one
 * request), and a 1 MiB document written then read back through the
 * agent's functions (participant/pt_doc.h: pt_doc_put, pt_doc_get: the
 * DocWrite and DocRead requests of the personal cloud, up to the token's
 * chunk size each) with its store in a tmpfs, the same for every link.
 * Every GetInfo run comes before the first document: the token answers
 * GetInfo by walking its log for the table names, so its cost grows with
 * what the token holds, and the runs must see the same token. The links
 * take turns within each run, so that a slow moment of the machine falls
 * on all of them. Each cell is the median of RUNS runs; the ratio is how
 * many times slower the link is than in process (time per request, or
 * per byte). Every document read back is compared with what was written.
 *
 *   bench_usb [RUNS]   (default 5)
 */
#include "tests/usb_fixture.h"

#define BENCH_NAME "bench_usb"
#include "tests/bench/bench.h"

#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libusb.h>

#include "participant/pt_doc.h"
#include "participant/pt_emu.h"
#include "participant/pt_softdev.h"
#include "participant/pt_usb.h"
#include "participant/pt_usbhost.h"
#include "tests/usb_mock.h"
#include "token/tk_usb.h"

#define TOKEND COHORT_BINARY_DIR "/tokend/cohort-tokend"
#define DOC_LEN (1u << 20)
#define RATE_S 0.2 /* seconds of GetInfo round trips per link and run */
#define RUNS_MAX 21
#define READY_MS 60000 /* the longest wait for cohort-tokend's ready line */
#define N_LINKS 4

extern char **environ;

/* ------------------------------------------------------------ a token device in RAM */

/* A token core in RAM behind the device side of the USB protocol, with the
 * limits cohort-tokend's device announces (participant/pt_softdev.h), so
 * that the three USB links frame the same way. */
struct dev {
    struct fx_token t;
    void *region;
    struct tk_usb *u;
};

static void dev_init(struct dev *d)
{
    size_t need = tk_usb_region_size(PT_SOFTDEV_REQUEST_MAX, PT_SOFTDEV_RESPONSE_MAX);
    struct tk_usb_config cfg;
    fx_token_init(&d->t, TK_ARENA_DEFAULT);
    cfg = (struct tk_usb_config){&d->t.tk,
                                 d->t.arena,
                                 d->t.arena_len,
                                 PT_SOFTDEV_REQUEST_MAX,
                                 PT_SOFTDEV_RESPONSE_MAX,
                                 PT_SOFTDEV_PAYLOAD};
    d->region = fx_alloc(need);
    if (tk_usb_init(&d->u, d->region, need, &cfg) != TK_OK)
        bench_die("the device side does not start");
}

static void dev_free(struct dev *d)
{
    fx_token_free(&d->t);
    free(d->region);
}

/* (b) The host driver's transport, in memory: OUT bytes are fed to the
 * device, and a read takes as many IN frames as fit. */
static int mem_write(void *ctx, const uint8_t *p, size_t n, unsigned timeout_ms)
{
    struct dev *d = ctx;
    (void)timeout_ms;
    tk_usb_feed(d->u, p, n);
    return 0;
}

static int mem_read(void *ctx, uint8_t *p, size_t cap, size_t *got, unsigned timeout_ms)
{
    struct dev *d = ctx;
    size_t at = 0;
    (void)timeout_ms;
    while (cap - at >= TK_USB_FRAME_MAX) {
        size_t n = 0;
        if (tk_usb_poll(d->u, p + at, cap - at, &n) != TK_OK || n == 0)
            break;
        at += n;
    }
    *got = at;
    return at > 0 ? 0 : PT_USB_E_TIMEOUT;
}

static int host_transact(void *ctx, const uint8_t *req, size_t len, const uint8_t **resp,
                         size_t *resp_len)
{
    return pt_usbhost_transact(ctx, req, len, resp, resp_len) == PT_USB_OK ? PT_OK : PT_ERR_LINK;
}

/* (d) The emulated USB device's side, in umockdev's worker thread: one
 * OUT URB's bytes to the device, then every IN frame it has to bulk IN. */
static void usb_out(usb_mock *m, const uint8_t *data, size_t len, void *arg)
{
    struct dev *d = arg;
    uint8_t frame[TK_USB_FRAME_MAX];
    size_t n;
    tk_usb_feed(d->u, data, len);
    while (tk_usb_poll(d->u, frame, sizeof frame, &n) == TK_OK && n > 0)
        usb_mock_in_push(m, frame, n);
}

/* ------------------------------------------------------------ cohort-tokend */

/* Start cohort-tokend on dir (made blank) and sock, without the umockdev
 * preload, and wait for its ready line. */
static pid_t tokend_start(const char *dir, const char *sock)
{
    char *argv[] = {TOKEND,       "--dir",    (char *)dir, "--socket",
                    (char *)sock, "--create", "--quiet",   NULL};
    char **envp, line[512];
    size_t n_env = 0, i, k = 0, n = 0;
    int out[2];
    pid_t pid;
    struct pollfd p;

    while (environ[n_env] != NULL)
        n_env++;
    envp = fx_alloc((n_env + 1) * sizeof *envp);
    for (i = 0; i < n_env; i++)
        if (strncmp(environ[i], "LD_PRELOAD=", 11) != 0)
            envp[k++] = environ[i];
    envp[k] = NULL;
    if (pipe(out) != 0)
        bench_die("no pipe for cohort-tokend");
    fflush(NULL);
    pid = fork();
    if (pid < 0)
        bench_die("cannot fork cohort-tokend");
    if (pid == 0) {
        dup2(out[1], 1);
        close(out[0]);
        close(out[1]);
        execve(TOKEND, argv, envp);
        _exit(127);
    }
    free(envp);
    close(out[1]);
    p = (struct pollfd){out[0], POLLIN, 0};
    while (n + 1 < sizeof line && memchr(line, '\n', n) == NULL) {
        ssize_t got;
        if (poll(&p, 1, READY_MS) != 1)
            bench_die("cohort-tokend did not say it was ready");
        got = read(out[0], line + n, sizeof line - 1 - n);
        if (got <= 0)
            bench_die("cohort-tokend stopped before it was ready (is it built?)");
        n += (size_t)got;
    }
    close(out[0]);
    line[n] = '\0';
    if (strncmp(line, "cohort-tokend: serving", 22) != 0)
        bench_die("cohort-tokend said something else than that it was ready");
    return pid;
}

static void tokend_stop(pid_t pid)
{
    int st;
    if (kill(pid, SIGTERM) != 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) ||
        WEXITSTATUS(st) != 0)
        bench_die("cohort-tokend did not stop cleanly");
}

/* ------------------------------------------------------------ the links */

struct link {
    const char *name;
    struct pt_link link;
    struct pt_docstore *ds;
    struct dev dev;          /* a, b, d */
    struct pt_inproc inproc; /* a */
    struct pt_usbhost *host; /* b */
    pid_t tokend;            /* c */
    struct pt_emu *emu;      /* c */
    usb_mock *mock;          /* d */
    struct pt_usb *usb;      /* d */
    uint8_t sign_pk[32];     /* the token's, once provisioned */
    double info[RUNS_MAX];   /* GetInfo round trips per second */
    double put[RUNS_MAX];    /* MB/s */
    double get[RUNS_MAX];    /* MB/s */
};

static void link_open(struct link *l, int which, const char *root, const struct fx_world *w)
{
    static const char *names[N_LINKS] = {"inproc", "framing", "tokend", "libusb"};
    char dir[128], sock[PT_EMU_PATH_MAX + 1], err[256];
    memset(l, 0, sizeof *l);
    l->name = names[which];
    snprintf(dir, sizeof dir, "%s/%s-docs", root, l->name);
    if (pt_docstore_open(&l->ds, dir) != 0)
        bench_die("the document store does not open");
    switch (which) {
    case 0:
        fx_token_init(&l->dev.t, TK_ARENA_DEFAULT);
        pt_inproc_init(&l->inproc, &l->dev.t.tk, l->dev.t.arena, l->dev.t.arena_len);
        l->link = pt_inproc_link(&l->inproc);
        break;
    case 1: {
        struct pt_usbhost_io io = {&l->dev, mem_write, mem_read};
        dev_init(&l->dev);
        l->host = fx_alloc(sizeof *l->host);
        pt_usbhost_init(l->host, &io);
        if (pt_usbhost_hello(l->host) != PT_USB_OK)
            bench_die("the framing in memory says no HELLO");
        l->link = (struct pt_link){l->host, host_transact};
        break;
    }
    case 2: {
        struct pt_emu_config c = {sock, 0, 0};
        snprintf(dir, sizeof dir, "%s/tokend-token", root);
        snprintf(sock, sizeof sock, "%s/tokend.sock", root);
        l->tokend = tokend_start(dir, sock);
        if (pt_emu_open(&l->emu, &c, err, sizeof err) != PT_USB_OK)
            bench_die(err);
        l->link = pt_emu_link(l->emu);
        break;
    }
    default: {
        struct pt_usb_config c = {TK_USB_VID, TK_USB_PID, 0, 0};
        dev_init(&l->dev);
        l->mock = usb_mock_new(TK_USB_VID, TK_USB_PID, usb_out, &l->dev);
        if (pt_usb_open(&l->usb, &c, err, sizeof err) != PT_USB_OK)
            bench_die(err);
        l->link = pt_usb_link(l->usb);
        break;
    }
    }
    /* The maker's ceremony through the link itself. */
    usb_provision(usb_through_link, &l->link, w, "token-bench", l->sign_pk);
}

static void link_close(struct link *l)
{
    pt_docstore_close(l->ds);
    if (l->host != NULL) {
        pt_usbhost_free(l->host);
        free(l->host);
    }
    if (l->emu != NULL || l->tokend > 0) {
        pt_emu_close(l->emu);
        tokend_stop(l->tokend);
        return;
    }
    pt_usb_close(l->usb);
    if (l->mock != NULL)
        usb_mock_free(l->mock);
    if (l->inproc.tk != NULL)
        pt_inproc_free(&l->inproc);
    if (l->dev.region != NULL)
        dev_free(&l->dev);
    else
        fx_token_free(&l->dev.t);
}

/* ------------------------------------------------------------ the work */

/* GetInfo round trips for RATE_S seconds: requests per second. The last
 * answer must be the provisioned token's. */
static double info_rate(struct link *l, const uint8_t *req, size_t len, size_t *resp_bytes)
{
    const uint8_t *resp = NULL;
    size_t resp_len = 0;
    unsigned long n = 0;
    double t0 = bench_now_s(), t;
    Cohort__TokenResponse *r;
    do {
        for (int i = 0; i < 16; i++, n++)
            if (l->link.transact(l->link.ctx, req, len, &resp, &resp_len) != PT_OK)
                bench_die("a GetInfo failed on the link");
        t = bench_now_s() - t0;
    } while (t < RATE_S);
    r = cohort__token_response__unpack(NULL, resp_len, resp);
    if (r == NULL || r->status != TK_OK || r->body_case != COHORT__TOKEN_RESPONSE__BODY_INFO ||
        !r->info->provisioned || r->info->sign_pk.len != 32 ||
        memcmp(r->info->sign_pk.data, l->sign_pk, 32) != 0)
        bench_die("GetInfo did not answer as the provisioned token");
    cohort__token_response__free_unpacked(r, NULL);
    *resp_bytes = resp_len;
    return (double)n / t;
}

/* A document written, then read back: the seconds of each. */
static void doc_round_trip(struct link *l, const uint8_t *data, size_t len, struct bench_sink *out,
                           double *put_s, double *get_s)
{
    struct pt_doc_meta m;
    struct pt_doc_ref ref;
    struct pt_status st;
    struct bench_reader r = {data, len, 0};
    double t0;
    memset(&m, 0, sizeof m);
    snprintf(m.type, sizeof m.type, "bench.document");
    snprintf(m.subject, sizeof m.subject, "a benchmark document");
    t0 = bench_now_s();
    if (pt_doc_put(&l->link, l->ds, FX_NOW, NULL, NULL, 0, &m, bench_mem_read, &r, &ref, &st) != 0)
        bench_die("a document was not written");
    *put_s = bench_now_s() - t0;
    out->len = 0;
    t0 = bench_now_s();
    if (pt_doc_get(&l->link, l->ds, FX_NOW, NULL, ref.id, 0, bench_mem_write, out, NULL, NULL,
                   &st) != 0)
        bench_die("a document was not read");
    *get_s = bench_now_s() - t0;
    if (out->len != len || memcmp(out->p, data, len) != 0)
        bench_die("a document came back different");
}

/* ------------------------------------------------------------ the report */

static void print_machine(void)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[256], model[128] = "an unknown CPU";
    const struct libusb_version *v = libusb_get_version();
    struct utsname u;
    if (f != NULL) {
        while (fgets(line, sizeof line, f) != NULL) {
            char *colon = strchr(line, ':');
            if (strncmp(line, "model name", 10) == 0 && colon != NULL) {
                snprintf(model, sizeof model, "%s", colon + 2);
                model[strcspn(model, "\n")] = '\0';
                break;
            }
        }
        fclose(f);
    }
    if (uname(&u) != 0)
        snprintf(u.release, sizeof u.release, "unknown");
    printf("Machine: %s, %ld CPUs online, Linux %s; libusb %u.%u.%u\n", model,
           sysconf(_SC_NPROCESSORS_ONLN), u.release, v->major, v->minor, v->micro);
}

/* A value, then its ratio as "(N.Nx)". */
static void cell(double value, double ratio, bool baseline)
{
    char v[32];
    if (value >= 1000)
        snprintf(v, sizeof v, "%.0f", value);
    else if (value >= 10)
        snprintf(v, sizeof v, "%.1f", value);
    else
        snprintf(v, sizeof v, "%.2f", value);
    if (baseline)
        printf(" %s |", v);
    else if (ratio >= 10)
        printf(" %s (%.0fx) |", v, ratio);
    else
        printf(" %s (%.1fx) |", v, ratio);
}

int main(int argc, char **argv)
{
    usb_mock_reexec(argc, argv);
    int runs = argc > 1 ? atoi(argv[1]) : 5, i, k;
    const char *shm = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : NULL;
    char root[64];
    uint8_t *doc = malloc(DOC_LEN), *info_req;
    size_t info_len, info_resp = 0;
    struct bench_sink out = {malloc(DOC_LEN), 0, DOC_LEN};
    struct link *links = calloc(N_LINKS, sizeof *links);
    struct fx_world w;
    double t_start = bench_now_s();

    if (runs < 1 || runs > RUNS_MAX)
        bench_die("RUNS must be 1 to 21");
    if (doc == NULL || out.p == NULL || links == NULL || tk_library_init() != TK_OK)
        bench_die("out of memory");
    fx_world_init(&w);
    randombytes_buf(doc, DOC_LEN);
    info_req = usb_info_request(&info_len);
    snprintf(root, sizeof root, "%s/bench_usb.XXXXXX", shm ? shm : "/tmp");
    if (mkdtemp(root) == NULL)
        bench_die("no temporary directory");

    for (k = 0; k < N_LINKS; k++)
        link_open(&links[k], k, root, &w);
    /* GetInfo first, while the tokens hold no document: it walks the
     * token's log for the table names, so it slows as documents arrive. */
    for (i = 0; i < runs; i++)
        for (k = 0; k < N_LINKS; k++)
            links[k].info[i] = info_rate(&links[k], info_req, info_len, &info_resp);
    for (k = 0; k < N_LINKS; k++) { /* a first document each, unmeasured */
        double put_s, get_s;
        doc_round_trip(&links[k], doc, 4096, &out, &put_s, &get_s);
    }
    for (i = 0; i < runs; i++) {
        for (k = 0; k < N_LINKS; k++) {
            struct link *l = &links[k];
            double put_s, get_s;
            doc_round_trip(l, doc, DOC_LEN, &out, &put_s, &get_s);
            l->put[i] = DOC_LEN / put_s / 1e6;
            l->get[i] = DOC_LEN / get_s / 1e6;
        }
    }
    for (k = N_LINKS - 1; k >= 0; k--)
        link_close(&links[k]);
    fx_rm_tree(root);

    print_machine();
    printf("\nToken links: the same work on each (medians of %d runs; GetInfo: a request "
           "of %zu bytes and an answer of %zu, on a provisioned token holding no document "
           "yet; the document in requests of the token's chunk size, its store in a tmpfs; "
           "x: how many times slower than in process)\n\n",
           runs, info_len, info_resp);
    printf("| work | in process (baseline) | USB framing in memory (x) | emulator: cohort-tokend "
           "on a unix socket (x) | libusb on umockdev (x) |\n");
    printf("|---|---:|---:|---:|---:|\n");
    {
        double info[N_LINKS], put[N_LINKS], get[N_LINKS];
        for (k = 0; k < N_LINKS; k++) {
            info[k] = bench_median(links[k].info, (size_t)runs);
            put[k] = bench_median(links[k].put, (size_t)runs);
            get[k] = bench_median(links[k].get, (size_t)runs);
        }
        printf("| GetInfo round trips per second |");
        for (k = 0; k < N_LINKS; k++)
            cell(info[k], info[0] / info[k], k == 0);
        printf("\n| GetInfo, us per request |");
        for (k = 0; k < N_LINKS; k++)
            cell(1e6 / info[k], info[0] / info[k], k == 0);
        printf("\n| 1 MiB document written, MB/s |");
        for (k = 0; k < N_LINKS; k++)
            cell(put[k], put[0] / put[k], k == 0);
        printf("\n| 1 MiB document read back, MB/s |");
        for (k = 0; k < N_LINKS; k++)
            cell(get[k], get[0] / get[k], k == 0);
        printf("\n");
    }
    printf("\nlibusb on umockdev: the usbdevfs ioctls are answered over a unix socket by a "
           "thread of this process (no bus): an upper bound on the host side's overhead, not "
           "a token's speed on USB. The emulator's token keeps its state in files (in a tmpfs "
           "here); the others' in RAM. Whole run: %.0f s.\n",
           bench_now_s() - t_start);
    free(info_req);
    free(doc);
    free(out.p);
    free(links);
    return 0;
}
