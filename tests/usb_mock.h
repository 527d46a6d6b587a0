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

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct usb_mock usb_mock;

/* The device side: the bytes of one OUT URB. Runs in umockdev's worker
 * thread; it may call usb_mock_in_push(). */
typedef void (*usb_mock_out_fn)(usb_mock *m, const uint8_t *data, size_t len, void *arg);

/* Re-executes the program under libumockdev-preload unless it already is
 * (what umockdev-wrapper does). Returns only when the preload is in. */
void usb_mock_reexec(int argc, char **argv);

/* Runs this program again as `PROGRAM arg` in a child and waits for it:
 * its exit status, or -1 when it did not exit. The child is a fresh
 * process, not only a fork of this one: umockdev's and libusb's threads
 * may hold a lock at the fork that would stay held in a forked child, and
 * the child would hang on it. It runs under the preload, with the
 * testbeds of this process (main() answers arg before anything else). */
int usb_mock_run_self(const char *arg);

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

/* The emulated node, e.g. "/dev/bus/usb/001/002". */
const char *usb_mock_devnode(const usb_mock *m);
/*
 * With deny, the node as the kernel's would be with no udev rule: mode
 * 0600, owned by root. The rest of the testbed is opened to any user, so
 * that a process of nobody's reaches the node: the directories above it
 * searchable, the testbed's root writable (the preload binds its uevent
 * socket there) and the node's ioctl socket (the preload connects to it
 * even when the open fails, and exits when it cannot). Without deny, the
 * node is 0644 again. 0, or -1 with errno set.
 */
int usb_mock_deny_node(const usb_mock *m, bool deny);
/* The testbed's root directory: what another program run under the
 * preload needs in UMOCKDEV_DIR to see the device (tests/usb_bridge.c). */
char *usb_mock_root(const usb_mock *m); /* g_free() it */

/* How many ioctls of each kind the device saw (for assertions). */
unsigned usb_mock_count(usb_mock *m, unsigned long request);

#endif
