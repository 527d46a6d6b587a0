/* An emulated USB device on umockdev's testbed: usb_mock.h says what it
 * is, participant/USB-TESTING.md how it works. */
#include "usb_mock.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <linux/usbdevice_fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <umockdev.h>

#define BUSNUM 1
#define DEVNUM 2

struct pending {
    UMockdevIoctlData *urb; /* the client's struct usbdevfs_urb */
    UMockdevIoctlData *buf; /* its buffer (NULL when empty) */
};

struct usb_mock {
    UMockdevTestbed *tb;
    UMockdevIoctlBase *handler;
    char *syspath;
    char devnode[32];
    uint16_t vid, pid;
    usb_mock_out_fn out;
    void *arg;

    GRecMutex mu;   /* the rest is shared with umockdev's worker thread */
    GQueue done;    /* struct pending *: reapable URBs */
    GQueue in_wait; /* struct pending *: IN URBs waiting for data */
    GByteArray *in_fifo;
    gboolean gone;
    gboolean busy;
    /* The connection (one per open file of the node) that claimed
     * interface 0, as the kernel keeps it per file: another one's claim
     * is EBUSY until it releases, closes or the device goes. Compared,
     * never dereferenced. */
    UMockdevIoctlClient *owner;
    GHashTable *counts; /* request -> count */
};

/* Device descriptor, then configuration 1: one interface, class 0xff,
 * bulk OUT 0x01 and bulk IN 0x81, 64-byte packets. This is the sysfs
 * "descriptors" file libusb reads instead of asking the device. */
static void descriptors(uint8_t d[50], uint16_t vid, uint16_t pid)
{
    static const uint8_t tmpl[50] = {
        /* device */
        18,
        0x01,
        0x00,
        0x02,
        0x00,
        0x00,
        0x00,
        64,
        0,
        0,
        0,
        0,
        0x00,
        0x01,
        1,
        2,
        3,
        1,
        /* configuration: wTotalLength 32, 1 interface, value 1, bus powered, 100 mA */
        9,
        0x02,
        32,
        0,
        1,
        1,
        0,
        0x80,
        50,
        /* interface 0, alt 0, 2 endpoints, vendor specific */
        9,
        0x04,
        0,
        0,
        2,
        0xff,
        0x00,
        0x00,
        0,
        /* bulk OUT 0x01, 64 bytes */
        7,
        0x05,
        0x01,
        0x02,
        64,
        0,
        0,
        /* bulk IN 0x81, 64 bytes */
        7,
        0x05,
        0x81,
        0x02,
        64,
        0,
        0,
    };
    memcpy(d, tmpl, sizeof tmpl);
    d[8] = (uint8_t)(vid & 0xff);
    d[9] = (uint8_t)(vid >> 8);
    d[10] = (uint8_t)(pid & 0xff);
    d[11] = (uint8_t)(pid >> 8);
}

void usb_mock_reexec(int argc, char **argv)
{
    (void)argc;
    const char *pre = getenv("LD_PRELOAD");
    if (pre != NULL && strstr(pre, "libumockdev-preload") != NULL)
        return;
    char *n =
        g_strdup_printf("libumockdev-preload.so.0%s%s", pre && *pre ? ":" : "", pre ? pre : "");
    setenv("LD_PRELOAD", n, 1);
    g_free(n);
#if defined(__SANITIZE_ADDRESS__)
    /* The preload comes before the ASan runtime in the library list. */
    const char *ao = getenv("ASAN_OPTIONS");
    char *a = g_strdup_printf("%s%sverify_asan_link_order=0", ao ? ao : "", ao && *ao ? ":" : "");
    setenv("ASAN_OPTIONS", a, 1);
    g_free(a);
#endif
    execv("/proc/self/exe", argv);
    perror("usb_mock: re-exec under libumockdev-preload");
    exit(1);
}

int usb_mock_run_self(const char *arg)
{
    int st;
    pid_t pid;

    fflush(NULL);
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        execl("/proc/self/exe", "usb_mock_child", arg, (char *)NULL);
        _exit(127);
    }
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void pending_free(struct pending *p)
{
    if (p->buf)
        g_object_unref(p->buf);
    g_object_unref(p->urb);
    g_free(p);
}

static struct usbdevfs_urb *urb_of(struct pending *p)
{
    return (struct usbdevfs_urb *)p->urb->data;
}

/* Hands queued IN bytes to waiting IN URBs. Lock held. */
static void feed_in(usb_mock *m)
{
    while (!g_queue_is_empty(&m->in_wait) && m->in_fifo->len > 0) {
        struct pending *p = g_queue_pop_head(&m->in_wait);
        struct usbdevfs_urb *u = urb_of(p);
        guint n = MIN(m->in_fifo->len, (guint)u->buffer_length);
        if (n > 0)
            umockdev_ioctl_data_update(p->buf, 0, m->in_fifo->data, (gint)n);
        g_byte_array_remove_range(m->in_fifo, 0, n);
        u->actual_length = (int)n;
        u->status = 0;
        g_queue_push_tail(&m->done, p);
    }
}

void usb_mock_in_push(usb_mock *m, const uint8_t *data, size_t len)
{
    g_rec_mutex_lock(&m->mu);
    g_byte_array_append(m->in_fifo, data, (guint)len);
    feed_in(m);
    g_rec_mutex_unlock(&m->mu);
}

static void echo(usb_mock *m, const uint8_t *data, size_t len, void *arg)
{
    (void)arg;
    usb_mock_in_push(m, data, len);
}

static UMockdevIoctlData *resolve(UMockdevIoctlData *d, gsize off, gsize len)
{
    GError *err = NULL;
    UMockdevIoctlData *r = umockdev_ioctl_data_resolve(d, off, len, &err);
    if (err != NULL) {
        fprintf(stderr, "usb_mock: resolve: %s\n", err->message);
        g_error_free(err);
    }
    return r;
}

static gboolean submit(usb_mock *m, UMockdevIoctlClient *client)
{
    UMockdevIoctlData *arg = umockdev_ioctl_client_get_arg(client);
    UMockdevIoctlData *d = resolve(arg, 0, sizeof(struct usbdevfs_urb));
    if (d == NULL) {
        umockdev_ioctl_client_complete(client, -1, EFAULT);
        return TRUE;
    }
    struct usbdevfs_urb *u = (struct usbdevfs_urb *)d->data;
    if (m->gone || u->type != USBDEVFS_URB_TYPE_BULK || (u->endpoint & 0x7f) != 1) {
        int e = m->gone ? ENODEV : EINVAL;
        g_object_unref(d);
        umockdev_ioctl_client_complete(client, -1, e);
        return TRUE;
    }
    struct pending *p = g_new0(struct pending, 1);
    p->urb = d;
    if (u->buffer_length > 0)
        p->buf = resolve(d, offsetof(struct usbdevfs_urb, buffer), (gsize)u->buffer_length);
    u->status = -EINPROGRESS;
    u->actual_length = 0;
    if (u->endpoint & 0x80) {
        g_queue_push_tail(&m->in_wait, p);
        feed_in(m);
        umockdev_ioctl_client_complete(client, 0, 0);
        return TRUE;
    }
    /* OUT: the device takes it all at once. */
    size_t len = (size_t)u->buffer_length;
    uint8_t *copy = g_memdup2(p->buf ? p->buf->data : NULL, len);
    u->actual_length = u->buffer_length;
    u->status = 0;
    g_queue_push_tail(&m->done, p);
    umockdev_ioctl_client_complete(client, 0, 0);
    m->out(m, copy, len, m->arg);
    g_free(copy);
    return TRUE;
}

static gboolean discard(usb_mock *m, UMockdevIoctlClient *client)
{
    UMockdevIoctlData *arg = umockdev_ioctl_client_get_arg(client);
    gulong addr = *(gulong *)arg->data; /* the client's urb pointer itself */
    for (GList *l = m->in_wait.head; l != NULL; l = l->next) {
        struct pending *p = l->data;
        if (p->urb->client_addr == addr) {
            g_queue_delete_link(&m->in_wait, l);
            urb_of(p)->status = -ENOENT;
            g_queue_push_tail(&m->done, p);
            umockdev_ioctl_client_complete(client, 0, 0);
            return TRUE;
        }
    }
    umockdev_ioctl_client_complete(client, -1, EINVAL);
    return TRUE;
}

static gboolean reap(usb_mock *m, UMockdevIoctlClient *client)
{
    struct pending *p = g_queue_pop_head(&m->done);
    if (p == NULL) {
        umockdev_ioctl_client_complete(client, -1, m->gone ? ENODEV : EAGAIN);
        return TRUE;
    }
    UMockdevIoctlData *slot = resolve(umockdev_ioctl_client_get_arg(client), 0, sizeof(void *));
    if (slot == NULL || !umockdev_ioctl_data_set_ptr(slot, 0, p->urb)) {
        umockdev_ioctl_client_complete(client, -1, EFAULT);
    } else {
        umockdev_ioctl_client_complete(client, 0, 0);
    }
    if (slot)
        g_object_unref(slot);
    pending_free(p);
    return TRUE;
}

static gboolean on_ioctl(UMockdevIoctlBase *h, UMockdevIoctlClient *client, gpointer user)
{
    (void)h;
    usb_mock *m = user;
    gulong req = umockdev_ioctl_client_get_request(client);
    gboolean r = TRUE;

    g_rec_mutex_lock(&m->mu);
    guint c = GPOINTER_TO_UINT(g_hash_table_lookup(m->counts, GSIZE_TO_POINTER(req)));
    g_hash_table_insert(m->counts, GSIZE_TO_POINTER(req), GUINT_TO_POINTER(c + 1));
    if (req == USBDEVFS_SUBMITURB) {
        r = submit(m, client);
    } else if (req == USBDEVFS_REAPURBNDELAY) {
        r = reap(m, client);
    } else if (req == USBDEVFS_DISCARDURB) {
        r = discard(m, client);
    } else if (m->gone) {
        umockdev_ioctl_client_complete(client, -1, ENODEV);
    } else if (req == USBDEVFS_GET_CAPABILITIES) {
        UMockdevIoctlData *d = resolve(umockdev_ioctl_client_get_arg(client), 0, sizeof(guint32));
        guint32 caps = USBDEVFS_CAP_BULK_CONTINUATION | USBDEVFS_CAP_NO_PACKET_SIZE_LIM |
                       USBDEVFS_CAP_REAP_AFTER_DISCONNECT;
        if (d != NULL) {
            umockdev_ioctl_data_update(d, 0, (guint8 *)&caps, sizeof caps);
            g_object_unref(d);
        }
        umockdev_ioctl_client_complete(client, d ? 0 : -1, d ? 0 : EFAULT);
    } else if (req == USBDEVFS_CLAIMINTERFACE || req == USBDEVFS_RELEASEINTERFACE) {
        UMockdevIoctlData *d =
            resolve(umockdev_ioctl_client_get_arg(client), 0, sizeof(unsigned int));
        unsigned int iface = d ? *(unsigned int *)d->data : 99;
        if (d)
            g_object_unref(d);
        int e = 0;
        if (iface != 0) {
            e = EINVAL;
        } else if (req == USBDEVFS_CLAIMINTERFACE) {
            if (m->busy || (m->owner != NULL && m->owner != client))
                e = EBUSY;
            else
                m->owner = client;
        } else if (m->owner == client) {
            m->owner = NULL;
        }
        umockdev_ioctl_client_complete(client, e ? -1 : 0, e);
    } else if (req == USBDEVFS_CLEAR_HALT || req == USBDEVFS_RESETEP || req == USBDEVFS_RESET ||
               req == USBDEVFS_SETINTERFACE || req == USBDEVFS_SETCONFIGURATION) {
        umockdev_ioctl_client_complete(client, 0, 0);
    } else {
        umockdev_ioctl_client_complete(client, -1, ENOTTY);
    }
    g_rec_mutex_unlock(&m->mu);
    return r;
}

/* A connection closed (the file was closed, or its process ended): its
 * claim goes with it, as the kernel's does. */
static void on_vanished(UMockdevIoctlBase *h, UMockdevIoctlClient *client, gpointer user)
{
    usb_mock *m = user;
    (void)h;
    g_rec_mutex_lock(&m->mu);
    if (m->owner == client)
        m->owner = NULL;
    g_rec_mutex_unlock(&m->mu);
}

/* The device's sysfs entry and node, in umockdev-record's format: P: the
 * sysfs path, N: the node under /dev (an empty regular file for the usb
 * subsystem; without an N: line umockdev makes no node and libusb_open
 * fails with LIBUSB_ERROR_NO_DEVICE), E: udev properties, A: attributes,
 * H: a binary attribute in hex (the descriptors libusb reads). */
static void plug(usb_mock *m)
{
    uint8_t d[50];
    descriptors(d, m->vid, m->pid);
    GString *s = g_string_new(NULL);
    g_string_append_printf(s,
                           "P: /devices/usb1/1-1\n"
                           "N: bus/usb/%03d/%03d\n"
                           "E: SUBSYSTEM=usb\n"
                           "E: DEVNAME=%s\n"
                           "E: DEVTYPE=usb_device\n"
                           "E: BUSNUM=%03d\n"
                           "E: DEVNUM=%03d\n"
                           "E: PRODUCT=%x/%x/100\n"
                           "E: TYPE=0/0/0\n"
                           "E: MAJOR=189\n"
                           "E: MINOR=%d\n"
                           "A: idVendor=%04x\n"
                           "A: idProduct=%04x\n"
                           "A: busnum=%d\n"
                           "A: devnum=%d\n"
                           "A: dev=189:%d\n"
                           "A: speed=12\n"
                           "A: bConfigurationValue=1\n"
                           "A: bNumConfigurations=1\n"
                           "A: bDeviceClass=00\n"
                           "A: manufacturer=Cohort\n"
                           "A: product=Cohort token (emulated)\n"
                           "A: serial=0001\n"
                           "H: descriptors=",
                           BUSNUM, DEVNUM, m->devnode, BUSNUM, DEVNUM, m->vid, m->pid,
                           (BUSNUM - 1) * 128 + DEVNUM - 1, m->vid, m->pid, BUSNUM, DEVNUM,
                           (BUSNUM - 1) * 128 + DEVNUM - 1);
    for (size_t i = 0; i < sizeof d; i++)
        g_string_append_printf(s, "%02X", d[i]);
    g_string_append(s, "\n");
    GError *err = NULL;
    if (!umockdev_testbed_add_from_string(m->tb, s->str, &err)) {
        fprintf(stderr, "usb_mock: add_from_string: %s\n", err ? err->message : "?");
        abort();
    }
    g_string_free(s, TRUE);
    m->syspath = g_strdup("/sys/devices/usb1/1-1");
    if (!umockdev_testbed_attach_ioctl(m->tb, m->devnode, m->handler, &err)) {
        fprintf(stderr, "usb_mock: attach_ioctl: %s\n", err ? err->message : "?");
        abort();
    }
}

usb_mock *usb_mock_new(uint16_t vid, uint16_t pid, usb_mock_out_fn out, void *arg)
{
    usb_mock *m = g_new0(usb_mock, 1);
    m->vid = vid;
    m->pid = pid;
    m->out = out ? out : echo;
    m->arg = arg;
    snprintf(m->devnode, sizeof m->devnode, "/dev/bus/usb/%03d/%03d", BUSNUM, DEVNUM);
    g_rec_mutex_init(&m->mu);
    g_queue_init(&m->done);
    g_queue_init(&m->in_wait);
    m->in_fifo = g_byte_array_new();
    m->counts = g_hash_table_new(g_direct_hash, g_direct_equal);
    m->tb = umockdev_testbed_new();
    g_assert_nonnull(m->tb);
    m->handler = umockdev_ioctl_base_new();
    g_signal_connect(m->handler, "handle-ioctl", G_CALLBACK(on_ioctl), m);
    g_signal_connect(m->handler, "client-vanished", G_CALLBACK(on_vanished), m);
    plug(m);
    return m;
}

static void drop_queues(usb_mock *m)
{
    struct pending *p;
    while ((p = g_queue_pop_head(&m->done)) != NULL)
        pending_free(p);
    while ((p = g_queue_pop_head(&m->in_wait)) != NULL)
        pending_free(p);
    g_byte_array_set_size(m->in_fifo, 0);
}

void usb_mock_unplug(usb_mock *m)
{
    g_rec_mutex_lock(&m->mu);
    m->gone = TRUE;
    m->owner = NULL;
    struct pending *p;
    while ((p = g_queue_pop_head(&m->in_wait)) != NULL) {
        urb_of(p)->status = -ESHUTDOWN;
        urb_of(p)->actual_length = 0;
        g_queue_push_tail(&m->done, p);
    }
    g_rec_mutex_unlock(&m->mu);
    umockdev_testbed_uevent(m->tb, m->syspath, "remove");
    umockdev_testbed_detach_ioctl(m->tb, m->devnode, NULL);
    umockdev_testbed_remove_device(m->tb, m->syspath);
    g_free(m->syspath);
    m->syspath = NULL;
}

void usb_mock_replug(usb_mock *m)
{
    g_rec_mutex_lock(&m->mu);
    drop_queues(m);
    m->gone = FALSE;
    g_rec_mutex_unlock(&m->mu);
    plug(m);
}

void usb_mock_set_busy(usb_mock *m, int busy)
{
    g_rec_mutex_lock(&m->mu);
    m->busy = busy != 0;
    g_rec_mutex_unlock(&m->mu);
}

const char *usb_mock_devnode(const usb_mock *m)
{
    return m->devnode;
}

int usb_mock_deny_node(const usb_mock *m, bool deny)
{
    char *root = umockdev_testbed_get_root_dir(m->tb);
    char *file = g_strconcat(root, m->devnode, NULL);
    char *sock = g_strconcat(root, "/ioctl", m->devnode, NULL);
    char *dir = g_path_get_dirname(file);
    int rc = 0;

    if (!deny) {
        rc = chmod(file, 0644);
        goto out;
    }
    while (rc == 0 && strcmp(dir, root) != 0 && strlen(dir) > strlen(root)) {
        char *up = g_path_get_dirname(dir);
        rc = chmod(dir, 0755);
        g_free(dir);
        dir = up;
    }
    if (rc == 0)
        rc = chmod(root, 01777);
    if (rc == 0)
        rc = chmod(sock, 0777);
    if (rc == 0)
        rc = chmod(file, 0600);
out:
    g_free(dir);
    g_free(sock);
    g_free(file);
    g_free(root);
    return rc;
}

char *usb_mock_root(const usb_mock *m)
{
    return umockdev_testbed_get_root_dir(m->tb);
}

unsigned usb_mock_count(usb_mock *m, unsigned long request)
{
    g_rec_mutex_lock(&m->mu);
    guint c = GPOINTER_TO_UINT(g_hash_table_lookup(m->counts, GSIZE_TO_POINTER(request)));
    g_rec_mutex_unlock(&m->mu);
    return c;
}

void usb_mock_free(usb_mock *m)
{
    if (m == NULL)
        return;
    if (m->syspath)
        umockdev_testbed_detach_ioctl(m->tb, m->devnode, NULL);
    g_object_unref(m->tb);
    g_rec_mutex_lock(&m->mu);
    drop_queues(m);
    g_rec_mutex_unlock(&m->mu);
    g_object_unref(m->handler);
    g_byte_array_unref(m->in_fifo);
    g_hash_table_destroy(m->counts);
    g_rec_mutex_clear(&m->mu);
    g_free(m->syspath);
    g_free(m);
}
