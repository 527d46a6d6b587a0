/* An emulated USB device for tests of the libusb host code, at the kernel
 * interface: umockdev's testbed gives the device a sysfs entry (with the
 * descriptors file libusb reads) and a /dev/bus/usb node whose usbdevfs
 * ioctls (SUBMITURB, REAPURBNDELAY, CLAIMINTERFACE, ...) are answered
 * here, so libusb-1.0 runs unchanged. participant/USB-TESTING.md says how.
 *
 * The device: one configuration, one vendor-specific interface (0) with a
 * bulk OUT endpoint 0x01 and a bulk IN endpoint 0x81 of 64-byte packets
 * (full speed). Whatever the host writes to OUT goes to the device side's
 * callback; what the device side pushes is read on IN. With no callback
 * the device echoes OUT back on IN.
 *
 * The program must run with libumockdev-preload loaded: call
 * usb_mock_reexec() first thing in main(). That holds for a program that
 * only serves the device to another one (tests/usb_bridge.c) too: the
 * ioctl handler would work without the preload, but umockdev's uevents
 * (unplug, replug) would not. The other program runs under the preload
 * with UMOCKDEV_DIR = usb_mock_root(). */
#ifndef COHORT_TESTS_USB_MOCK_H
#define COHORT_TESTS_USB_MOCK_H

#include <stddef.h>
#include <stdint.h>

typedef struct usb_mock usb_mock;

/* The device side: the bytes of one OUT URB. Runs in umockdev's worker
 * thread; it may call usb_mock_in_push(). */
typedef void (*usb_mock_out_fn)(usb_mock *m, const uint8_t *data, size_t len, void *arg);

/* Re-executes the program under libumockdev-preload unless it already is
 * (what umockdev-wrapper does). Returns only when the preload is in. */
void usb_mock_reexec(int argc, char **argv);

/* A new testbed with the device plugged in on bus 1 as device 2. */
usb_mock *usb_mock_new(uint16_t vid, uint16_t pid, usb_mock_out_fn out, void *arg);
void usb_mock_free(usb_mock *m);

/* The device queues bytes for the host to read on the IN endpoint. */
void usb_mock_in_push(usb_mock *m, const uint8_t *data, size_t len);

/* Unplug: URBs in flight complete with -ESHUTDOWN (as the kernel's do),
 * later ioctls fail with ENODEV, and the device leaves sysfs with a
 * "remove" uevent. Call it (and usb_mock_replug) from a thread of the
 * program, never from the out callback: it detaches the ioctl handler
 * that the callback runs under. */
void usb_mock_unplug(usb_mock *m);

/* Plug it back in: the same sysfs entry and node, a fresh device side. */
void usb_mock_replug(usb_mock *m);

/* Another program (or a kernel driver) holds the interface: claiming it
 * fails with EBUSY, as the kernel's does. Without it, a claim fails so
 * only while another open file of the node holds the interface. */
void usb_mock_set_busy(usb_mock *m, int busy);

/* The emulated node, e.g. "/dev/bus/usb/001/002", and its path inside the
 * testbed (for chmod). */
const char *usb_mock_devnode(const usb_mock *m);
char *usb_mock_devnode_file(const usb_mock *m); /* g_free() it */
/* The unix socket behind the node that umockdev's preload connects to. */
char *usb_mock_ioctl_socket(const usb_mock *m); /* g_free() it */
/* The testbed's root directory: what another program run under the
 * preload needs in UMOCKDEV_DIR to see the device (tests/usb_bridge.c). */
char *usb_mock_root(const usb_mock *m); /* g_free() it */

/* How many ioctls of each kind the device saw (for assertions). */
unsigned usb_mock_count(usb_mock *m, unsigned long request);

#endif
