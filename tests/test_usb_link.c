/*
 * The token link on libusb-1.0 (participant/pt_usb.c), unchanged, against
 * an emulated USB device at the kernel interface (tests/usb_mock.c on
 * umockdev; participant/USB-TESTING.md) whose device side is the real one:
 * what libusb writes to bulk OUT goes to tk_usb_feed of a provisioned
 * token, and what tk_usb_poll gives is pushed to bulk IN.
 *
 * GetInfo and a document written and read back go through libusb, the
 * emulated device and the token core; a corrupted frame each way is
 * recovered; an unplug in the middle of a transfer becomes the link error
 * the agent waits on, and after the re-plug the link opens again. Opening
 * fails with the exact error when there is no device, when the interface is
 * busy (held elsewhere, or by another handle), and when the node may not be
 * opened.
 */
#include "usb_fixture.h"

#include <pthread.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <glib.h>
#include <libusb.h>

#include "participant/pt_usb.h"
#include "token/tk_usb.h"
#include "usb_mock.h"

#define REQ_MAX (96u * 1024u)
#define RESP_MAX (96u * 1024u)
#define PAYLOAD 256u
#define ACCESS_CHILD "--access-child" /* main() runs the access check as nobody */

/* The device side, run in umockdev's worker thread. */
struct dev {
    struct tk_usb *u;
    void *region;
    struct fx_token *t;
    unsigned out_data, in_data;
    unsigned corrupt_out, corrupt_in; /* the nth DATA frame each way, from 1 */
    int hold;                         /* take OUT bytes, answer nothing */
    int version2; /* a device of a later protocol: every HELLO gets ERROR VERSION (2) */
};

static void dev_start(struct dev *d)
{
    struct tk_usb_config cfg = {&d->t->tk, d->t->arena, d->t->arena_len,
                                REQ_MAX,   RESP_MAX,    PAYLOAD};
    size_t need = tk_usb_region_size(REQ_MAX, RESP_MAX);
    if (d->region == NULL)
        d->region = fx_alloc(need);
    assert_int_equal(tk_usb_init(&d->u, d->region, need, &cfg), TK_OK);
}

static void dev_out(usb_mock *m, const uint8_t *data, size_t len, void *arg)
{
    struct dev *d = arg;
    uint8_t frame[TK_USB_FRAME_MAX];
    size_t n;
    if (d->version2 && len >= TK_USB_HEADER_LEN && data[TK_USB_OFF_TYPE] == TK_USB_HELLO) {
        static const uint8_t only2[3] = {TK_USB_E_VERSION, 1, 2};
        uint16_t seq = (uint16_t)(data[TK_USB_OFF_SEQ] | data[TK_USB_OFF_SEQ + 1] << 8);
        n = pt_usbframe_encode(frame, sizeof frame, TK_USB_VERSION, TK_USB_ERROR, 0, seq, 0, 0,
                               only2, sizeof only2);
        assert_true(n > 0);
        usb_mock_in_push(m, frame, n);
        return;
    }
    if (len <= sizeof frame) {
        memcpy(frame, data, len);
        if (len > TK_USB_HEADER_LEN && frame[TK_USB_OFF_TYPE] == TK_USB_DATA &&
            ++d->out_data == d->corrupt_out)
            frame[TK_USB_HEADER_LEN] ^= 0x40;
        tk_usb_feed(d->u, frame, len);
    } else {
        tk_usb_feed(d->u, data, len);
    }
    if (d->hold)
        return;
    for (;;) {
        if (tk_usb_poll(d->u, frame, sizeof frame, &n) != TK_OK || n == 0)
            break;
        if (frame[TK_USB_OFF_TYPE] == TK_USB_DATA && ++d->in_data == d->corrupt_in)
            frame[TK_USB_HEADER_LEN + 2] ^= 0x04;
        usb_mock_in_push(m, frame, n);
    }
}

struct rig {
    struct fx_world w;
    struct fx_token t;
    struct dev d;
    usb_mock *m;
    struct pt_usb *usb;
    struct pt_link link;
};

static const struct pt_usb_config fast = {TK_USB_VID, TK_USB_PID, 200, 5000};

static struct rig *rig_new(void)
{
    struct rig *r = fx_alloc(sizeof *r);
    memset(r, 0, sizeof *r);
    fx_world_init(&r->w);
    fx_token_init(&r->t, TK_ARENA_DEFAULT);
    fx_provision(&r->t, &r->w, "token-usblink");
    r->d.t = &r->t;
    dev_start(&r->d);
    r->m = usb_mock_new(TK_USB_VID, TK_USB_PID, dev_out, &r->d);
    return r;
}

static void rig_open(struct rig *r)
{
    char err[256];
    assert_int_equal(pt_usb_open(&r->usb, &fast, err, sizeof err), PT_USB_OK);
    r->link = pt_usb_link(r->usb);
}

static void rig_free(struct rig *r)
{
    pt_usb_close(r->usb);
    usb_mock_free(r->m);
    fx_token_free(&r->t);
    free(r->d.region);
    free(r);
}

static struct tk_usb_stats dev_stats(const struct rig *r)
{
    struct tk_usb_stats s;
    tk_usb_get_stats(r->d.u, &s);
    return s;
}

/* A transaction through the link, which must not fail; the response unpacked. */
static Cohort__TokenResponse *through_rig(void *ctx, const uint8_t *req, size_t len)
{
    struct rig *r = ctx;
    Cohort__TokenResponse *out = usb_through_link(&r->link, req, len);
    assert_int_equal(pt_usb_error(r->usb), PT_USB_OK);
    return out;
}

static void get_info_matches(struct rig *r)
{
    usb_get_info_matches(through_rig, r, &r->t);
}

static void document_round_trip(struct rig *r, size_t n)
{
    usb_document_round_trip(through_rig, r, n);
}

/* ------------------------------------------------------------ tests */

static void get_info_and_a_document_go_through_libusb_and_the_token(void **state)
{
    struct rig *r = rig_new();
    char err[256];
    (void)state;
    /* The default ids, from USB.md. */
    assert_int_equal(pt_usb_open(&r->usb, NULL, err, sizeof err), PT_USB_OK);
    r->link = pt_usb_link(r->usb);
    assert_true(pt_usb_connected(r->usb));
    get_info_matches(r);
    document_round_trip(r, 20000);
    assert_int_equal(dev_stats(r).dispatched, 5);
    assert_int_equal(dev_stats(r).naks, 0);
    assert_int_equal(pt_usb_stats(r->usb).requests, 5);
    assert_int_equal(pt_usb_stats(r->usb).resends, 0);
    rig_free(r);
}

static void a_corrupted_frame_each_way_is_recovered(void **state)
{
    struct rig *r = rig_new();
    (void)state;
    rig_open(r);
    r->d.corrupt_out = 3;
    r->d.corrupt_in = 4;
    document_round_trip(r, 20000);
    assert_int_equal(dev_stats(r).bad_crc, 1);
    assert_int_equal(dev_stats(r).naks, 1);
    assert_int_equal(dev_stats(r).resends, 1);
    assert_int_equal(dev_stats(r).dispatched, 4); /* each request ran once */
    assert_int_equal(pt_usb_stats(r->usb).naks_got, 1);
    assert_int_equal(pt_usb_stats(r->usb).naks_sent, 1);
    rig_free(r);
}

static void sleep_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

static void *unplug_later(void *arg)
{
    sleep_ms(100);
    usb_mock_unplug(arg);
    return NULL;
}

static void an_unplug_mid_transfer_is_a_link_error_until_the_replug(void **state)
{
    struct rig *r = rig_new();
    const uint8_t *resp;
    size_t resp_len, len;
    uint8_t *req = usb_info_request(&len);
    pthread_t t;
    (void)state;
    rig_open(r);
    get_info_matches(r);

    /* The token takes the request and the cable goes while the host waits. */
    r->d.hold = 1;
    assert_int_equal(pthread_create(&t, NULL, unplug_later, r->m), 0);
    assert_int_equal(r->link.transact(r->link.ctx, req, len, &resp, &resp_len), PT_ERR_LINK);
    pthread_join(t, NULL);
    assert_int_equal(pt_usb_error(r->usb), PT_USB_E_NO_DEVICE);
    assert_false(pt_usb_connected(r->usb));
    /* While it is away, every call says so, and waiting gives up. */
    assert_int_equal(r->link.transact(r->link.ctx, req, len, &resp, &resp_len), PT_ERR_LINK);
    assert_int_equal(pt_usb_error(r->usb), PT_USB_E_NO_DEVICE);
    assert_int_equal(pt_usb_wait(r->usb, 100), PT_USB_E_NO_DEVICE);

    /* Plugged back in: the firmware starts afresh; the token keeps its flash. */
    r->d.hold = 0;
    dev_start(&r->d);
    usb_mock_replug(r->m);
    assert_int_equal(pt_usb_wait(r->usb, 3000), PT_USB_OK);
    assert_true(pt_usb_connected(r->usb));
    get_info_matches(r);
    assert_int_equal(dev_stats(r).dispatched, 1);
    assert_int_equal(pt_usb_stats(r->usb).hellos, 2);
    free(req);
    rig_free(r);
}

static void a_replug_is_found_by_the_next_call_too(void **state)
{
    struct rig *r = rig_new();
    const uint8_t *resp;
    size_t resp_len, len;
    uint8_t *req = usb_info_request(&len);
    int i, rc = PT_ERR_LINK;
    (void)state;
    rig_open(r);
    usb_mock_unplug(r->m);
    assert_int_equal(r->link.transact(r->link.ctx, req, len, &resp, &resp_len), PT_ERR_LINK);
    assert_int_equal(pt_usb_error(r->usb), PT_USB_E_NO_DEVICE);
    dev_start(&r->d);
    usb_mock_replug(r->m);
    for (i = 0; i < 100 && rc != PT_OK; i++) {
        rc = r->link.transact(r->link.ctx, req, len, &resp, &resp_len);
        if (rc != PT_OK)
            sleep_ms(20);
    }
    assert_int_equal(rc, PT_OK);
    assert_int_equal(dev_stats(r).dispatched, 1);
    free(req);
    rig_free(r);
}

static void no_device_with_those_ids_is_no_device(void **state)
{
    struct rig *r = rig_new();
    struct pt_usb_config c = fast;
    char err[256];
    (void)state;
    c.pid = TK_USB_PID + 1;
    assert_int_equal(pt_usb_open(&r->usb, &c, err, sizeof err), PT_USB_E_NO_DEVICE);
    assert_null(r->usb);
    assert_string_equal(err, "token 1209:c07c: no token found (not plugged in, or unplugged)");
    rig_free(r);
}

static void a_token_of_another_protocol_version_is_a_version_mismatch(void **state)
{
    struct rig *r = rig_new();
    char err[256];
    (void)state;
    r->d.version2 = 1;
    assert_int_equal(pt_usb_open(&r->usb, &fast, err, sizeof err), PT_USB_E_VERSION);
    assert_null(r->usb);
    assert_string_equal(err, "token 1209:c07b: protocol version mismatch between host and token "
                             "(host speaks 1, token 2)");
    /* The token was never asked anything. */
    assert_int_equal(dev_stats(r).dispatched, 0);
    r->d.version2 = 0;
    rig_open(r);
    usb_get_info_matches(through_rig, r, &r->t);
    rig_free(r);
}

static void a_busy_interface_is_busy(void **state)
{
    struct rig *r = rig_new();
    char err[256];
    (void)state;
    usb_mock_set_busy(r->m, 1);
    assert_int_equal(pt_usb_open(&r->usb, &fast, err, sizeof err), PT_USB_E_BUSY);
    assert_null(r->usb);
    usb_mock_set_busy(r->m, 0);
    rig_open(r);
    get_info_matches(r);
    rig_free(r);
}

/* Another handle (its own libusb context, its own file of the node) is
 * refused while the first has the interface, as the kernel refuses another
 * program; once the first closes, it opens. */
static void a_second_handle_is_busy_until_the_first_closes(void **state)
{
    struct rig *r = rig_new();
    struct pt_usb *second = NULL;
    char err[256];
    (void)state;
    rig_open(r);
    assert_int_equal(pt_usb_open(&second, &fast, err, sizeof err), PT_USB_E_BUSY);
    assert_null(second);
    get_info_matches(r);
    pt_usb_close(r->usb);
    r->usb = NULL;
    assert_int_equal(pt_usb_open(&second, &fast, err, sizeof err), PT_USB_OK);
    r->usb = second;
    r->link = pt_usb_link(r->usb);
    get_info_matches(r);
    rig_free(r);
}

/* As test_usb_probe does: the node mode 0600 owned by root, opened by
 * nobody in a child process. */
static void a_node_without_permission_is_access_denied(void **state)
{
    struct rig *r = rig_new();
    int st;
    (void)state;
    assert_int_equal(usb_mock_deny_node(r->m, true), 0);
    st = usb_mock_run_self(ACCESS_CHILD);
    assert_int_equal(usb_mock_deny_node(r->m, false), 0);
    assert_int_equal(st, 0);
    rig_free(r);
}

/* The child of the test above, in a process of its own: 0 when pt_usb_open
 * is refused as access denied. */
static int access_child(void)
{
    struct pt_usb *u = NULL;
    char err[256];
    int rc;

    if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0))
        return 10;
    rc = pt_usb_open(&u, &fast, err, sizeof err);
    if (rc != PT_USB_E_ACCESS) {
        fprintf(stderr, "child: %d %s\n", rc, err);
        return 12;
    }
    return 0;
}

int main(int argc, char **argv)
{
    usb_mock_reexec(argc, argv);
    if (argc == 2 && strcmp(argv[1], ACCESS_CHILD) == 0)
        _exit(access_child()); /* no exit handlers: as the forked child did */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(get_info_and_a_document_go_through_libusb_and_the_token),
        cmocka_unit_test(a_corrupted_frame_each_way_is_recovered),
        cmocka_unit_test(an_unplug_mid_transfer_is_a_link_error_until_the_replug),
        cmocka_unit_test(a_replug_is_found_by_the_next_call_too),
        cmocka_unit_test(no_device_with_those_ids_is_no_device),
        cmocka_unit_test(a_token_of_another_protocol_version_is_a_version_mismatch),
        cmocka_unit_test(a_busy_interface_is_busy),
        cmocka_unit_test(a_second_handle_is_busy_until_the_first_closes),
        cmocka_unit_test(a_node_without_permission_is_access_denied),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
