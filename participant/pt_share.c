/*
 * Shares, the agent's side (pt_doc.h): the packages one agent hands
 * another, built from the token's ShareOut and the store's files, and
 * taken in by the recipient's agent.
 *
 * A package (proto's SharePackage) is the sender token's ShareOut (its
 * sealed grant, and the references of the files the grant names) and the
 * ciphertext files themselves, each with its BLAKE2b-256. Nothing in it is
 * plaintext: the grant (with the keys and the metadata) is sealed to the
 * recipient's token, the files are the token's ciphertext. The sender's
 * agent puts every file of the grant in every package, so a package is
 * whole by itself: a recipient that missed one catches up with the next.
 *
 * Taking a package in, nothing is trusted. The package is bounded
 * (PT_PACKAGE_MAX) before it is decoded; each file must hash to the hash
 * it comes with and the files must cover the references in the clear
 * (else PT_ERR_INPUT before the token sees anything). The files are
 * written to temporary names first; then the token judges the sealed
 * grant (signature, certificates, that it is the recipient, that the grant
 * is newer than any it has of that share: TK_ERR_REPLAY). If it refuses,
 * the temporary files are removed and nothing is stored. If it accepts,
 * the files that the token's own answer names (its ShareInfo, not the
 * package's clear references) get their names; the others are dropped.
 *
 * Read-write shares. What the recipient writes goes back in a return
 * package (pt_doc_put_reply, pt_doc.c): the same message, whose ShareOut
 * is the token's reply (a return grant sealed to the sender's token) and
 * whose one file is the new revision's. The sender's agent takes it with
 * pt_share_accept like any package; its token answers with the share's
 * ShareInfo naming that revision, which is now one of the owner's own
 * documents: its file is kept and indexed under the document. The
 * sender's agent says where its inbox is (reply_to, set on a package as
 * it is delivered); the recipient's keeps the latest for each share it
 * accepted (DIR/replies/<share id>, beside the files) and gives it with
 * each return package. It is not authenticated: whoever relays a package
 * can change it, and can only drop what is sent there, which is sealed.
 * pt_share_update gives a share a new policy (read-only, say) and makes
 * the package of the grant that carries it.
 *
 * What is left to the next version: files of a received share's earlier
 * grants, once a later grant or a revocation no longer names them, stay
 * in the store (ciphertext whose keys the token no longer holds).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "participant/pt_doc_int.h"
#include "participant/pt_int.h"

#define SHARE_PAGE_MAX 16u

static void request(Cohort__TokenRequest *req, Cohort__TokenRequest__BodyCase body)
{
    cohort__token_request__init(req);
    req->body_case = body;
}

/* ------------------------------------------------------- building one */

/* The whole file of ref, checked against its hash and size, into *out. */
static int read_file(struct pt_docstore *ds, const struct pt_doc_ref *ref, uint8_t **out,
                     struct pt_status *st)
{
    uint8_t hash[PT_DOC_HASH_LEN], *p;
    uint64_t size;
    size_t n = 0;
    bool missing;
    int fd, rc;

    *out = NULL;
    if ((rc = pt_ds_open(ds, ref->hash, &fd, &size, &missing)) != 0) {
        pt_status_say(st, "%s the ciphertext file of a shared document",
                      missing ? "the store lacks" : "cannot open");
        return rc;
    }
    if (size != ref->cipher_size || size > PT_PACKAGE_MAX) {
        close(fd);
        pt_status_say(st, "a shared document's file does not have the size its token says");
        return PT_ERR_IO;
    }
    if ((p = malloc(size ? size : 1)) == NULL) {
        close(fd);
        return PT_ERR_NOMEM;
    }
    while (n < size) {
        ssize_t k = read(fd, p + n, size - n);
        if (k <= 0)
            break;
        n += (size_t)k;
    }
    close(fd);
    crypto_generichash(hash, sizeof hash, p, n, NULL, 0);
    if (n != size || sodium_memcmp(hash, ref->hash, sizeof hash) != 0) {
        free(p);
        pt_status_say(st, "a shared document's file is damaged");
        return PT_ERR_IO;
    }
    *out = p;
    return 0;
}

/* The package of a ShareOut: its files from the store, and the message. */
int pt_share_package_build(struct pt_docstore *ds, Cohort__ShareOut *so, uint8_t share_id[16],
                           uint8_t **pkg, size_t *pkg_len, struct pt_status *st)
{
    Cohort__SharePackage sp = COHORT__SHARE_PACKAGE__INIT;
    Cohort__Blob blobs[PT_SHARE_DOCS_MAX], *ptrs[PT_SHARE_DOCS_MAX];
    struct pt_doc_ref refs[PT_SHARE_DOCS_MAX];
    uint64_t total = 0;
    size_t n = 0, len;
    uint8_t *buf = NULL;
    int rc = 0;

    *pkg = NULL;
    *pkg_len = 0;
    if (so->share_id.len != 16 || so->n_refs > PT_SHARE_DOCS_MAX || so->sealed.len == 0)
        return PT_ERR_LINK;
    for (size_t i = 0; i < so->n_refs; i++) {
        if (pt_ref_from_pb(&refs[i], so->refs[i]) != 0)
            return PT_ERR_LINK;
        total += refs[i].cipher_size;
    }
    if (total + so->sealed.len > PT_PACKAGE_MAX) {
        pt_status_say(st, "the package would be larger than %u bytes", PT_PACKAGE_MAX);
        return PT_ERR_TOO_LARGE;
    }
    for (n = 0; n < so->n_refs; n++) {
        cohort__blob__init(&blobs[n]);
        blobs[n].content_hash = (ProtobufCBinaryData){PT_DOC_HASH_LEN, refs[n].hash};
        if ((rc = read_file(ds, &refs[n], &blobs[n].data.data, st)) != 0)
            goto out;
        blobs[n].data.len = refs[n].cipher_size;
        ptrs[n] = &blobs[n];
    }
    sp.out = so;
    sp.n_blobs = n;
    sp.blobs = n > 0 ? ptrs : NULL;
    len = cohort__share_package__get_packed_size(&sp);
    if (len > PT_PACKAGE_MAX) {
        rc = PT_ERR_TOO_LARGE;
        goto out;
    }
    if ((buf = malloc(len ? len : 1)) == NULL) {
        rc = PT_ERR_NOMEM;
        goto out;
    }
    cohort__share_package__pack(&sp, buf);
    memcpy(share_id, so->share_id.data, 16);
    *pkg = buf;
    *pkg_len = len;
out:
    for (size_t i = 0; i < n; i++)
        free(blobs[i].data.data);
    return rc;
}

/* A token call answered by a ShareOut, made into a package. */
static int share_call(struct pt_link *link, struct pt_docstore *ds, int64_t now,
                      const struct pt_cred *who, Cohort__TokenRequest *req, bool may_be_empty,
                      uint8_t share_id[16], uint8_t **pkg, size_t *pkg_len, struct pt_status *st)
{
    Cohort__TokenResponse *r;
    int rc;

    *pkg = NULL;
    *pkg_len = 0;
    rc = pt_tk_call(link, now, who, req, PT_ANY_BODY, &r, st);
    if (rc != 0)
        return rc;
    if (r->body_case == COHORT__TOKEN_RESPONSE__BODY_SHARE_OUT)
        rc = pt_share_package_build(ds, r->share_out, share_id, pkg, pkg_len, st);
    else if (!(may_be_empty && r->body_case == COHORT__TOKEN_RESPONSE__BODY__NOT_SET))
        rc = PT_ERR_LINK;
    cohort__token_response__free_unpacked(r, NULL);
    return rc;
}

int pt_share_create(struct pt_link *link, struct pt_docstore *ds, int64_t now,
                    const struct pt_cred *who, const uint8_t *recipient_cert,
                    size_t recipient_cert_len, const uint8_t (*ids)[PT_DOC_ID_LEN], uint32_t n_ids,
                    const struct pt_rule *selector, const struct pt_share_policy *policy,
                    uint8_t share_id[16], uint8_t **pkg, size_t *pkg_len, struct pt_status *st)
{
    Cohort__TokenRequest req;
    Cohort__ShareCreate sc = COHORT__SHARE_CREATE__INIT;
    Cohort__SharePolicy pol = COHORT__SHARE_POLICY__INIT;
    Cohort__PermRule sel;
    Cohort__Certificate *cert;
    ProtobufCBinaryData docs[PT_SHARE_DOCS_MAX];
    char *values[PT_VALUES_MAX];
    int rc;

    pt_status_clear(st);
    *pkg = NULL;
    *pkg_len = 0;
    if (recipient_cert == NULL || recipient_cert_len == 0 || recipient_cert_len > PT_CERT_MAX ||
        n_ids > PT_SHARE_DOCS_MAX || (n_ids > 0 && ids == NULL) || policy == NULL)
        return PT_ERR_INPUT;
    if ((cert = cohort__certificate__unpack(NULL, recipient_cert_len, recipient_cert)) == NULL) {
        pt_status_say(st, "the recipient's certificate does not decode");
        return PT_ERR_INPUT;
    }
    for (uint32_t i = 0; i < n_ids; i++)
        docs[i] = (ProtobufCBinaryData){PT_DOC_ID_LEN, (uint8_t *)ids[i]};
    if (selector != NULL && (rc = pt_rule_to_pb(&sel, values, selector)) != 0) {
        cohort__certificate__free_unpacked(cert, NULL);
        return rc;
    }
    pol.read_write = policy->read_write;
    pol.expires = policy->expires;
    pol.max_reads = policy->max_reads;
    sc.recipient = cert;
    sc.n_docs = n_ids;
    sc.docs = n_ids > 0 ? docs : NULL;
    sc.selector = selector != NULL ? &sel : NULL;
    sc.policy = &pol;
    request(&req, COHORT__TOKEN_REQUEST__BODY_SHARE_CREATE);
    req.share_create = &sc;
    rc = share_call(link, ds, now, who, &req, false, share_id, pkg, pkg_len, st);
    cohort__certificate__free_unpacked(cert, NULL);
    return rc;
}

int pt_share_sync(struct pt_link *link, struct pt_docstore *ds, int64_t now,
                  const struct pt_cred *who, uint8_t share_id[16], uint8_t **pkg, size_t *pkg_len,
                  struct pt_status *st)
{
    Cohort__TokenRequest req;
    Cohort__ShareSync ss = COHORT__SHARE_SYNC__INIT;

    pt_status_clear(st);
    request(&req, COHORT__TOKEN_REQUEST__BODY_SHARE_SYNC);
    req.share_sync = &ss;
    return share_call(link, ds, now, who, &req, true, share_id, pkg, pkg_len, st);
}

/* A call about one share, answered by that share's package. */
static int share_of(struct pt_link *link, struct pt_docstore *ds, int64_t now,
                    const struct pt_cred *who, Cohort__TokenRequest *req,
                    const uint8_t share_id[16], uint8_t **pkg, size_t *pkg_len,
                    struct pt_status *st)
{
    uint8_t got[16];
    int rc = share_call(link, ds, now, who, req, false, got, pkg, pkg_len, st);
    if (rc == 0 && memcmp(got, share_id, 16) != 0) {
        free(*pkg);
        *pkg = NULL;
        *pkg_len = 0;
        rc = PT_ERR_LINK;
    }
    return rc;
}

int pt_share_revoke(struct pt_link *link, struct pt_docstore *ds, int64_t now,
                    const struct pt_cred *who, const uint8_t share_id[16], uint8_t **pkg,
                    size_t *pkg_len, struct pt_status *st)
{
    Cohort__TokenRequest req;
    Cohort__ShareRevoke sr = COHORT__SHARE_REVOKE__INIT;

    pt_status_clear(st);
    *pkg = NULL;
    *pkg_len = 0;
    if (share_id == NULL)
        return PT_ERR_INPUT;
    sr.share_id = (ProtobufCBinaryData){16, (uint8_t *)share_id};
    request(&req, COHORT__TOKEN_REQUEST__BODY_SHARE_REVOKE);
    req.share_revoke = &sr;
    return share_of(link, ds, now, who, &req, share_id, pkg, pkg_len, st);
}

int pt_share_update(struct pt_link *link, struct pt_docstore *ds, int64_t now,
                    const struct pt_cred *who, const uint8_t share_id[16],
                    const struct pt_share_policy *policy, uint8_t **pkg, size_t *pkg_len,
                    struct pt_status *st)
{
    Cohort__TokenRequest req;
    Cohort__ShareUpdate su = COHORT__SHARE_UPDATE__INIT;
    Cohort__SharePolicy pol = COHORT__SHARE_POLICY__INIT;

    pt_status_clear(st);
    *pkg = NULL;
    *pkg_len = 0;
    if (share_id == NULL || policy == NULL)
        return PT_ERR_INPUT;
    pol.read_write = policy->read_write;
    pol.expires = policy->expires;
    pol.max_reads = policy->max_reads;
    su.share_id = (ProtobufCBinaryData){16, (uint8_t *)share_id};
    su.policy = &pol;
    request(&req, COHORT__TOKEN_REQUEST__BODY_SHARE_UPDATE);
    req.share_update = &su;
    return share_of(link, ds, now, who, &req, share_id, pkg, pkg_len, st);
}

/* ------------------------------------------------------------ reply_to */

static bool url_ok(const char *url, size_t len)
{
    if (len > PT_REPLY_TO_MAX || !((len > 7 && memcmp(url, "http://", 7) == 0) ||
                                   (len > 8 && memcmp(url, "https://", 8) == 0)))
        return false;
    for (size_t i = 0; i < len; i++)
        if (url[i] <= 0x20 || url[i] >= 0x7f)
            return false;
    return true;
}

int pt_share_package_reply_to(const uint8_t *pkg, size_t pkg_len, const char *url, uint8_t **out,
                              size_t *out_len)
{
    Cohort__SharePackage *sp;
    size_t len;
    uint8_t *buf;

    *out = NULL;
    *out_len = 0;
    if (pkg == NULL || url == NULL || !url_ok(url, strlen(url)))
        return PT_ERR_INPUT;
    if (pkg_len > PT_PACKAGE_MAX)
        return PT_ERR_TOO_LARGE;
    if ((sp = cohort__share_package__unpack(NULL, pkg_len, pkg)) == NULL)
        return PT_ERR_INPUT;
    if (sp->reply_to != NULL && sp->reply_to != protobuf_c_empty_string)
        free(sp->reply_to);
    sp->reply_to = (char *)url;
    len = cohort__share_package__get_packed_size(sp);
    if (len > PT_PACKAGE_MAX || (buf = malloc(len ? len : 1)) == NULL) {
        sp->reply_to = NULL;
        cohort__share_package__free_unpacked(sp, NULL);
        return len > PT_PACKAGE_MAX ? PT_ERR_TOO_LARGE : PT_ERR_NOMEM;
    }
    cohort__share_package__pack(sp, buf);
    sp->reply_to = NULL;
    cohort__share_package__free_unpacked(sp, NULL);
    *out = buf;
    *out_len = len;
    return 0;
}

int pt_share_package_peek(const uint8_t *pkg, size_t pkg_len, uint8_t share_id[16],
                          char reply_to[PT_REPLY_TO_MAX + 1])
{
    Cohort__SharePackage *sp;
    size_t n;
    int rc = 0;

    reply_to[0] = '\0';
    if (pkg == NULL || pkg_len == 0)
        return PT_ERR_INPUT;
    if (pkg_len > PT_PACKAGE_MAX)
        return PT_ERR_TOO_LARGE;
    if ((sp = cohort__share_package__unpack(NULL, pkg_len, pkg)) == NULL)
        return PT_ERR_INPUT;
    n = sp->reply_to != NULL ? strlen(sp->reply_to) : 0;
    if (sp->out == NULL || sp->out->share_id.len != 16 || (n > 0 && !url_ok(sp->reply_to, n))) {
        rc = PT_ERR_INPUT;
    } else {
        memcpy(share_id, sp->out->share_id.data, 16);
        memcpy(reply_to, sp->reply_to != NULL ? sp->reply_to : "", n + 1);
    }
    cohort__share_package__free_unpacked(sp, NULL);
    return rc;
}

/* DIR/replies/<32 hex digits of the share id>: the URL, synced and
 * renamed into place. */
static void reply_to_path(char *out, size_t cap, struct pt_docstore *ds, const uint8_t id[16],
                          const char *suffix)
{
    char hex[33];
    sodium_bin2hex(hex, sizeof hex, id, 16);
    snprintf(out, cap, "%s/replies/%s%s", pt_ds_dir(ds), hex, suffix);
}

static int reply_to_save(struct pt_docstore *ds, const uint8_t id[16], const char *url)
{
    char dir[PATH_MAX], tmp[PATH_MAX], path[PATH_MAX];
    size_t n = strlen(url);
    int fd, rc = 0;

    snprintf(dir, sizeof dir, "%s/replies", pt_ds_dir(ds));
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return PT_ERR_IO;
    reply_to_path(tmp, sizeof tmp, ds, id, ".tmp");
    reply_to_path(path, sizeof path, ds, id, "");
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return PT_ERR_IO;
    if (pt_write_all(fd, (const uint8_t *)url, n) != 0 || fsync(fd) != 0)
        rc = PT_ERR_IO;
    if (close(fd) != 0)
        rc = PT_ERR_IO;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = PT_ERR_IO;
    if (rc != 0)
        unlink(tmp);
    return rc;
}

void pt_share_reply_to_load(struct pt_docstore *ds, const uint8_t share_id[16],
                            char out[PT_REPLY_TO_MAX + 1])
{
    char path[PATH_MAX];
    ssize_t n = 0, k;
    int fd;

    out[0] = '\0';
    reply_to_path(path, sizeof path, ds, share_id, "");
    if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0)
        return;
    while (n < (ssize_t)PT_REPLY_TO_MAX && (k = read(fd, out + n, PT_REPLY_TO_MAX - (size_t)n)) > 0)
        n += k;
    close(fd);
    out[n] = '\0';
    if (!url_ok(out, (size_t)n))
        out[0] = '\0';
}

/* ------------------------------------------------------- taking one in */

struct staged {
    size_t n;
    uint8_t hash[PT_SHARE_DOCS_MAX][PT_DOC_HASH_LEN];
    struct pt_ds_tmp tmp[PT_SHARE_DOCS_MAX];
    bool open[PT_SHARE_DOCS_MAX];
};

static void staged_drop(struct pt_docstore *ds, struct staged *s)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->open[i])
            pt_ds_tmp_abort(ds, &s->tmp[i]);
    s->n = 0;
}

static const Cohort__Blob *find_blob(const Cohort__SharePackage *sp, const struct pt_doc_ref *ref)
{
    for (size_t i = 0; i < sp->n_blobs; i++)
        if (memcmp(sp->blobs[i]->content_hash.data, ref->hash, PT_DOC_HASH_LEN) == 0 &&
            sp->blobs[i]->data.len == ref->cipher_size)
            return sp->blobs[i];
    return NULL;
}

/* Check the package's shape and files; stage the files the store lacks. */
static int stage(struct pt_docstore *ds, const Cohort__SharePackage *sp, struct staged *s,
                 struct pt_status *st)
{
    const Cohort__ShareOut *so = sp->out;
    int rc;

    if (so == NULL || so->share_id.len != 16 || so->sealed.len == 0 ||
        so->n_refs > PT_SHARE_DOCS_MAX || sp->n_blobs > PT_SHARE_DOCS_MAX) {
        pt_status_say(st, "the package is not a share package");
        return PT_ERR_INPUT;
    }
    for (size_t i = 0; i < sp->n_blobs; i++) {
        uint8_t hash[PT_DOC_HASH_LEN];
        const Cohort__Blob *b = sp->blobs[i];
        if (b->content_hash.len != PT_DOC_HASH_LEN) {
            pt_status_say(st, "the package is not a share package");
            return PT_ERR_INPUT;
        }
        crypto_generichash(hash, sizeof hash, b->data.data, b->data.len, NULL, 0);
        if (sodium_memcmp(hash, b->content_hash.data, sizeof hash) != 0) {
            pt_status_say(st, "a file of the package does not match its hash");
            return PT_ERR_INPUT;
        }
    }
    for (size_t i = 0; i < so->n_refs; i++) {
        struct pt_doc_ref ref;
        const Cohort__Blob *b;
        bool dup = false;
        if (pt_ref_from_pb(&ref, so->refs[i]) != 0) {
            pt_status_say(st, "the package is not a share package");
            return PT_ERR_INPUT;
        }
        for (size_t k = 0; k < s->n; k++)
            dup |= memcmp(s->hash[k], ref.hash, PT_DOC_HASH_LEN) == 0;
        if (dup || pt_ds_has(ds, ref.hash))
            continue;
        if ((b = find_blob(sp, &ref)) == NULL) {
            pt_status_say(st, "the package lacks a file its share names");
            return PT_ERR_INPUT;
        }
        memcpy(s->hash[s->n], ref.hash, PT_DOC_HASH_LEN);
        if ((rc = pt_ds_tmp_begin(ds, &s->tmp[s->n])) != 0) {
            pt_status_say(st, "cannot create a file in the document store");
            return rc;
        }
        s->open[s->n] = true;
        s->n++;
        if ((rc = pt_ds_tmp_write(&s->tmp[s->n - 1], b->data.data, b->data.len)) != 0) {
            pt_status_say(st, "cannot write to the document store");
            return rc;
        }
    }
    return 0;
}

int pt_share_accept(struct pt_link *link, struct pt_docstore *ds, int64_t now,
                    const struct pt_cred *who, const uint8_t *pkg, size_t pkg_len,
                    uint8_t share_id[16], struct pt_status *st)
{
    Cohort__TokenRequest req;
    Cohort__ShareAccept sa = COHORT__SHARE_ACCEPT__INIT;
    Cohort__SharePackage *sp;
    Cohort__TokenResponse *r = NULL;
    const Cohort__ShareInfo *info;
    struct staged staged, *s = &staged;
    bool lacking = false;
    int rc;

    pt_status_clear(st);
    if (pkg == NULL || pkg_len == 0)
        return PT_ERR_INPUT;
    if (pkg_len > PT_PACKAGE_MAX)
        return PT_ERR_TOO_LARGE;
    if ((sp = cohort__share_package__unpack(NULL, pkg_len, pkg)) == NULL) {
        pt_status_say(st, "the package does not decode");
        return PT_ERR_INPUT;
    }
    memset(s, 0, sizeof *s);
    if ((rc = stage(ds, sp, s, st)) != 0)
        goto out;

    sa.sealed = sp->out->sealed;
    request(&req, COHORT__TOKEN_REQUEST__BODY_SHARE_ACCEPT);
    req.share_accept = &sa;
    rc = pt_tk_call(link, now, who, &req, COHORT__TOKEN_RESPONSE__BODY_SHARE_INFO, &r, st);
    if (rc != 0)
        goto out; /* refused: the staged files go */
    info = r->share_info;
    if (info->share_id.len != 16 || info->n_refs > PT_SHARE_DOCS_MAX) {
        rc = PT_ERR_LINK;
        goto out;
    }
    /* The token's word on which files its grant names (a return grant's
     * ShareInfo, of a share this token made, names the revision written
     * back, now one of the owner's own: indexed as pt_doc_put would). */
    for (size_t i = 0; i < info->n_refs; i++) {
        struct pt_doc_ref ref;
        size_t k;
        if (pt_ref_from_pb(&ref, info->refs[i]) != 0) {
            rc = PT_ERR_LINK;
            goto out;
        }
        for (k = 0; k < s->n; k++)
            if (s->open[k] && memcmp(s->hash[k], ref.hash, PT_DOC_HASH_LEN) == 0)
                break;
        if (k < s->n) {
            uint8_t hash[PT_DOC_HASH_LEN];
            pt_ds_tmp_hash(&s->tmp[k], hash);
            if (s->tmp[k].bytes != ref.cipher_size ||
                (rc = pt_ds_tmp_commit(ds, &s->tmp[k], hash)) != 0) {
                pt_status_say(st, "the share is accepted, but its files could not be kept");
                rc = rc != 0 ? rc : PT_ERR_INPUT;
                goto out;
            }
            s->open[k] = false;
        } else if (!pt_ds_has(ds, ref.hash)) {
            lacking = true;
        }
        if (!info->incoming && !lacking &&
            (rc = pt_ds_index_add(ds, ref.id, ref.revision, ref.hash)) != 0) {
            pt_status_say(st, "the revision is taken, but its file could not be indexed");
            goto out;
        }
    }
    memcpy(share_id, info->share_id.data, 16);
    /* Where this share's return packages go, if the sender said. */
    if (info->incoming && sp->reply_to != NULL && sp->reply_to[0] != '\0' &&
        url_ok(sp->reply_to, strlen(sp->reply_to)) &&
        reply_to_save(ds, share_id, sp->reply_to) != 0) {
        pt_status_say(st, "the share is accepted, but where its writes go could not be kept");
        rc = PT_ERR_IO;
        goto out;
    }
    if (lacking) {
        pt_status_say(st, "the share is accepted, but the package lacks a file its grant names");
        rc = PT_ERR_INPUT;
    }
out:
    staged_drop(ds, s);
    if (r != NULL)
        cohort__token_response__free_unpacked(r, NULL);
    cohort__share_package__free_unpacked(sp, NULL);
    return rc;
}

/* ------------------------------------------------------------- listing */

static int info_from_pb(struct pt_share_info *out, const Cohort__ShareInfo *pb)
{
    memset(out, 0, sizeof *out);
    if (pb == NULL || pb->share_id.len != 16 || (pb->peer_pk.len != 0 && pb->peer_pk.len != 32) ||
        pb->n_refs > PT_SHARE_DOCS_MAX || (pb->n_metas != 0 && pb->n_metas != pb->n_refs) ||
        (pb->n_reads != 0 && pb->n_reads != pb->n_refs))
        return PT_ERR_LINK;
    memcpy(out->share_id, pb->share_id.data, 16);
    out->incoming = pb->incoming;
    out->revoked = pb->revoked;
    if (pb->peer_pk.len == 32)
        memcpy(out->peer_pk, pb->peer_pk.data, 32);
    pt_copy_text(out->peer, sizeof out->peer, pb->peer);
    if (pb->policy != NULL) {
        out->policy.read_write = pb->policy->read_write;
        out->policy.expires = pb->policy->expires;
        out->policy.max_reads = pb->policy->max_reads;
    }
    out->seq = pb->seq;
    out->created = pb->created;
    if (pb->selector != NULL) {
        out->has_selector = true;
        if (pt_rule_from_pb(&out->selector, pb->selector) != 0)
            return PT_ERR_LINK;
    }
    for (size_t i = 0; i < pb->n_refs; i++) {
        if (pt_ref_from_pb(&out->refs[i], pb->refs[i]) != 0 ||
            (pb->n_metas > 0 && pt_meta_from_pb(&out->metas[i], pb->metas[i]) != 0))
            return PT_ERR_LINK;
        out->reads[i] = pb->n_reads > 0 ? pb->reads[i] : 0;
    }
    out->n_docs = (uint32_t)pb->n_refs;
    return 0;
}

int pt_share_list(struct pt_link *link, int64_t now, const struct pt_cred *who, uint64_t after,
                  uint32_t max, struct pt_share_info *out, uint32_t *n, bool *more, uint64_t *next,
                  struct pt_status *st)
{
    Cohort__TokenRequest req;
    Cohort__ShareList sl = COHORT__SHARE_LIST__INIT;
    Cohort__TokenResponse *r;
    const Cohort__SharePage *p;
    int rc = 0;

    pt_status_clear(st);
    *n = 0;
    if (out == NULL || max == 0 || max > SHARE_PAGE_MAX)
        return PT_ERR_INPUT;
    sl.after = after;
    sl.max = max;
    request(&req, COHORT__TOKEN_REQUEST__BODY_SHARE_LIST);
    req.share_list = &sl;
    rc = pt_tk_call(link, now, who, &req, COHORT__TOKEN_RESPONSE__BODY_SHARE_PAGE, &r, st);
    if (rc != 0)
        return rc;
    p = r->share_page;
    if (p->n_shares > max || (p->more && p->next <= after))
        rc = PT_ERR_LINK;
    for (size_t i = 0; rc == 0 && i < p->n_shares; i++)
        rc = info_from_pb(&out[i], p->shares[i]);
    if (rc == 0) {
        *n = (uint32_t)p->n_shares;
        *more = p->more;
        *next = p->next;
    }
    cohort__token_response__free_unpacked(r, NULL);
    return rc;
}
