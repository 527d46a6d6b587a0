/* libusb-1.0, unchanged, against an emulated USB device at the kernel
 * interface (umockdev: sysfs and the usbdevfs ioctls of /dev/bus/usb):
 * enumeration by vendor and product id, open, claim, bulk OUT then IN
 * through a device that echoes, a timeout, an unplug in the middle of a
 * transfer and a re-plug, a busy interface, a node without permission.
 * The stand-in for the host side of the token link (participant/pt_usb.c);
 * participant/USB-TESTING.md says how it works. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <glib.h>
#include <libusb.h>
#include <linux/usbdevice_fs.h>
#include <pthread.h>

#include "usb_mock.h"

#define VID 0x1209
#define PID 0xc0c0
#define EP_OUT 0x01
#define EP_IN 0x81
#define ACCESS_CHILD "--access-child" /* main() runs the access check as nobody */

struct fx {
    usb_mock *m;
    libusb_context *ctx;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    f->m = usb_mock_new(VID, PID, NULL, NULL);
    if (libusb_init(&f->ctx) != 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    libusb_exit(f->ctx);
    usb_mock_free(f->m);
    free(f);
    return 0;
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* The host code's search: the first device with our ids. Returns a libusb
 * error code, LIBUSB_ERROR_NOT_FOUND when there is none. */
static int find_open(libusb_context *ctx, uint16_t vid, uint16_t pid, libusb_device_handle **h)
{
    libusb_device **list;
    ssize_t n = libusb_get_device_list(ctx, &list);
    if (n < 0)
        return (int)n;
    int r = LIBUSB_ERROR_NOT_FOUND;
    for (ssize_t i = 0; i < n; i++) {
        struct libusb_device_descriptor d;
        if (libusb_get_device_descriptor(list[i], &d) != 0)
            continue;
        if (d.idVendor == vid && d.idProduct == pid) {
            r = libusb_open(list[i], h);
            break;
        }
    }
    libusb_free_device_list(list, 1);
    return r;
}

static int count_ours(libusb_context *ctx)
{
    libusb_device **list;
    ssize_t n = libusb_get_device_list(ctx, &list);
    int c = 0;
    for (ssize_t i = 0; i < n; i++) {
        struct libusb_device_descriptor d;
        if (libusb_get_device_descriptor(list[i], &d) == 0 && d.idVendor == VID &&
            d.idProduct == PID)
            c++;
    }
    if (n >= 0)
        libusb_free_device_list(list, 1);
    return c;
}

static void test_descriptors(void **state)
{
    struct fx *f = *state;
    libusb_device **list;
    ssize_t n = libusb_get_device_list(f->ctx, &list);
    assert_true(n >= 1);
    libusb_device *dev = NULL;
    for (ssize_t i = 0; i < n; i++) {
        struct libusb_device_descriptor d;
        assert_int_equal(libusb_get_device_descriptor(list[i], &d), 0);
        if (d.idVendor == VID && d.idProduct == PID)
            dev = list[i];
    }
    assert_non_null(dev);
    assert_int_equal(libusb_get_bus_number(dev), 1);
    assert_int_equal(libusb_get_device_address(dev), 2);
    assert_int_equal(libusb_get_device_speed(dev), LIBUSB_SPEED_FULL);
    struct libusb_config_descriptor *c;
    assert_int_equal(libusb_get_active_config_descriptor(dev, &c), 0);
    assert_int_equal(c->bNumInterfaces, 1);
    const struct libusb_interface_descriptor *id = &c->interface[0].altsetting[0];
    assert_int_equal(id->bInterfaceClass, LIBUSB_CLASS_VENDOR_SPEC);
    assert_int_equal(id->bNumEndpoints, 2);
    assert_int_equal(id->endpoint[0].bEndpointAddress, EP_OUT);
    assert_int_equal(id->endpoint[1].bEndpointAddress, EP_IN);
    assert_int_equal(id->endpoint[1].bmAttributes & 3, LIBUSB_TRANSFER_TYPE_BULK);
    assert_int_equal(libusb_get_max_packet_size(dev, EP_IN), 64);
    libusb_free_config_descriptor(c);
    libusb_free_device_list(list, 1);
}

static void test_not_found(void **state)
{
    struct fx *f = *state;
    libusb_device_handle *h = NULL;
    assert_int_equal(find_open(f->ctx, VID, PID + 1, &h), LIBUSB_ERROR_NOT_FOUND);
}

static void test_echo(void **state)
{
    struct fx *f = *state;
    libusb_device_handle *h = NULL;
    assert_int_equal(find_open(f->ctx, VID, PID, &h), 0);
    assert_int_equal(libusb_claim_interface(h, 0), 0);

    unsigned char out[] = "hello, token";
    int done = 0;
    assert_int_equal(libusb_bulk_transfer(h, EP_OUT, out, (int)sizeof out, &done, 1000), 0);
    assert_int_equal(done, (int)sizeof out);
    unsigned char in[64] = {0};
    assert_int_equal(libusb_bulk_transfer(h, EP_IN, in, (int)sizeof in, &done, 1000), 0);
    assert_int_equal(done, (int)sizeof out);
    assert_memory_equal(in, out, sizeof out);

    /* More than a packet, both ways, in one transfer each. */
    unsigned char big[1000], back[1024];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (unsigned char)(i * 7 + 3);
    assert_int_equal(libusb_bulk_transfer(h, EP_OUT, big, (int)sizeof big, &done, 1000), 0);
    assert_int_equal(done, (int)sizeof big);
    assert_int_equal(libusb_bulk_transfer(h, EP_IN, back, (int)sizeof back, &done, 1000), 0);
    assert_int_equal(done, (int)sizeof big);
    assert_memory_equal(back, big, sizeof big);

    unsigned claims = usb_mock_count(f->m, USBDEVFS_CLAIMINTERFACE);
    unsigned submits = usb_mock_count(f->m, USBDEVFS_SUBMITURB);
    assert_int_equal(claims, 1);
    assert_true(submits >= 4);
    assert_int_equal(libusb_release_interface(h, 0), 0);
    libusb_close(h);
}

static void test_in_timeout(void **state)
{
    struct fx *f = *state;
    libusb_device_handle *h = NULL;
    assert_int_equal(find_open(f->ctx, VID, PID, &h), 0);
    assert_int_equal(libusb_claim_interface(h, 0), 0);
    unsigned char in[64];
    int done = -1;
    double t0 = now_ms();
    assert_int_equal(libusb_bulk_transfer(h, EP_IN, in, (int)sizeof in, &done, 150),
                     LIBUSB_ERROR_TIMEOUT);
    double dt = now_ms() - t0;
    assert_int_equal(done, 0);
    assert_true(dt >= 140 && dt < 2000);
    unsigned discards = usb_mock_count(f->m, USBDEVFS_DISCARDURB);
    assert_true(discards >= 1);
    /* The link is still good after the timeout. */
    unsigned char out[3] = {1, 2, 3};
    assert_int_equal(libusb_bulk_transfer(h, EP_OUT, out, 3, &done, 1000), 0);
    assert_int_equal(libusb_bulk_transfer(h, EP_IN, in, (int)sizeof in, &done, 1000), 0);
    assert_int_equal(done, 3);
    libusb_release_interface(h, 0);
    libusb_close(h);
}

static void sleep_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

static void *unplug_later(void *arg)
{
    sleep_ms(200);
    usb_mock_unplug(arg);
    return NULL;
}

static void test_unplug_mid_transfer(void **state)
{
    struct fx *f = *state;
    libusb_device_handle *h = NULL;
    assert_int_equal(find_open(f->ctx, VID, PID, &h), 0);
    assert_int_equal(libusb_claim_interface(h, 0), 0);

    /* An IN transfer waits for an answer; the device goes away under it. */
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, unplug_later, f->m), 0);
    unsigned char in[64];
    int done = -1;
    double t0 = now_ms();
    int r = libusb_bulk_transfer(h, EP_IN, in, (int)sizeof in, &done, 5000);
    double dt = now_ms() - t0;
    pthread_join(t, NULL);
    assert_int_equal(r, LIBUSB_ERROR_NO_DEVICE);
    assert_true(dt < 4000);
    /* And any later transfer says the same. */
    unsigned char out[3] = {1, 2, 3};
    assert_int_equal(libusb_bulk_transfer(h, EP_OUT, out, 3, &done, 1000), LIBUSB_ERROR_NO_DEVICE);
    libusb_close(h);

    /* libusb's hotplug monitor saw the "remove" uevent. */
    int c = 1;
    for (int i = 0; i < 100 && (c = count_ours(f->ctx)) != 0; i++)
        sleep_ms(20);
    assert_int_equal(c, 0);
    assert_int_equal(find_open(f->ctx, VID, PID, &h), LIBUSB_ERROR_NOT_FOUND);

    /* Plugged in again: found, opened, and it answers. */
    usb_mock_replug(f->m);
    for (int i = 0; i < 100 && (c = count_ours(f->ctx)) != 1; i++)
        sleep_ms(20);
    assert_int_equal(c, 1);
    assert_int_equal(find_open(f->ctx, VID, PID, &h), 0);
    assert_int_equal(libusb_claim_interface(h, 0), 0);
    assert_int_equal(libusb_bulk_transfer(h, EP_OUT, out, 3, &done, 1000), 0);
    assert_int_equal(libusb_bulk_transfer(h, EP_IN, in, (int)sizeof in, &done, 1000), 0);
    assert_int_equal(done, 3);
    assert_memory_equal(in, out, 3);
    libusb_release_interface(h, 0);
    libusb_close(h);
}

static void test_busy(void **state)
{
    struct fx *f = *state;
    libusb_device_handle *h = NULL;
    assert_int_equal(find_open(f->ctx, VID, PID, &h), 0);
    usb_mock_set_busy(f->m, 1);
    assert_int_equal(libusb_claim_interface(h, 0), LIBUSB_ERROR_BUSY);
    usb_mock_set_busy(f->m, 0);
    assert_int_equal(libusb_claim_interface(h, 0), 0);
    libusb_release_interface(h, 0);
    libusb_close(h);
}

/* A node the user may not open: as the kernel's would be with mode 0600
 * owned by root and no udev rule. Root opens anything, so the check runs in
 * a child that drops to nobody first when it is root. */
static void test_access_denied(void **state)
{
    struct fx *f = *state;
    assert_int_equal(usb_mock_deny_node(f->m, true), 0);
    int st = usb_mock_run_self(ACCESS_CHILD);
    assert_int_equal(usb_mock_deny_node(f->m, false), 0);
    assert_int_equal(st, 0);
}

/* The child of test_access_denied, in a process of its own: 0 when
 * libusb_open is refused as access denied. */
static int access_child(void)
{
    libusb_context *ctx;
    libusb_device_handle *h = NULL;
    int r;

    if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0))
        return 10;
    if ((r = libusb_init(&ctx)) != 0) {
        fprintf(stderr, "child: libusb_init: %s (UMOCKDEV_DIR %s)\n", libusb_error_name(r),
                getenv("UMOCKDEV_DIR") ? getenv("UMOCKDEV_DIR") : "unset");
        return 11;
    }
    r = find_open(ctx, VID, PID, &h);
    if (r != LIBUSB_ERROR_ACCESS) {
        fprintf(stderr, "child: libusb_open: %s\n", libusb_error_name(r));
        return 12;
    }
    libusb_exit(ctx);
    return 0;
}

int main(int argc, char **argv)
{
    usb_mock_reexec(argc, argv);
    if (argc == 2 && strcmp(argv[1], ACCESS_CHILD) == 0)
        _exit(access_child()); /* no exit handlers: as the forked child did */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_descriptors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_found, setup, teardown),
        cmocka_unit_test_setup_teardown(test_echo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_in_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unplug_mid_transfer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_busy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_access_denied, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
