/*
 * The owner's documents, the agent's side (pt_doc.h): the token call that
 * carries a credential, the codecs of metadata, references and rules, and
 * put/get/list/delete over the token's document sessions and the file
 * store (pt_docstore.c).
 *
 * Put. DocBegin opens a write session; the plaintext goes to the token in
 * DocWrites of at most the session's max_chunk bytes, each answered with
 * the ciphertext to append, which goes straight into a temporary file of
 * the store while the agent hashes it. The last DocWrite's answer carries
 * the rest of the file and the revision's reference: the token has
 * committed the revision then. The agent checks that the reference names
 * the bytes it holds (hash and size: a token link that disagrees is
 * PT_ERR_LINK and nothing is kept), syncs the file and renames it to its
 * hash. Anything that fails before that last answer removes the temporary
 * file and leaves the token unchanged (its session is closed by the next
 * request). What cannot be undone: a file that fails to sync or rename
 * after the token committed; that is PT_ERR_IO, with the revision named in
 * the reason, and the revision cannot be read until its file is restored.
 *
 * Writing back. DocBegin on a document received in a read-write share
 * names the share: the revision goes back to the document's owner. The
 * last DocWrite's answer then also carries the return grant (reply, which
 * must name the revision the agent just got the file of); once the file
 * is kept, the return package is made of the reply and that file, as a
 * share's package is (pt_share.c), for the caller to deliver. pt_doc_put,
 * which has nowhere to give it, stops at DocBegin's answer (the token's
 * session closes with the next request, nothing written).
 *
 * Get. DocOpen names the revision's file (by its hash) and the file is fed
 * to the token in pieces of max_chunk bytes, the last piece marked; the
 * token answers the plaintext of each chunk it authenticated, and `done`
 * only once the whole file and its hash were checked. Plaintext reaches
 * the caller's writer as it comes; the call's 0 is the only proof that it
 * was the whole document, which the caller must wait for.
 *
 * The plaintext that passes through the agent's buffers is wiped before
 * they are freed, and so is every packed request that carried a
 * credential's secret.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "participant/pt_doc_int.h"

/* --------------------------------------------------------- credentials */

int pt_cred_parse(struct pt_cred *out, const char *text, size_t len)
{
    struct pt_cred c;
    size_t bin_len = 0;
    const char *end = NULL;

    if (text == NULL || len != PT_CRED_TEXT_LEN)
        return PT_ERR_INPUT;
    for (size_t i = 0; i < len; i++)
        if (!((text[i] >= '0' && text[i] <= '9') || (text[i] >= 'a' && text[i] <= 'f') ||
              (text[i] >= 'A' && text[i] <= 'F')))
            return PT_ERR_INPUT;
    if (sodium_hex2bin(c.id, sizeof c.id, text, 2 * sizeof c.id, NULL, &bin_len, &end) != 0 ||
        bin_len != sizeof c.id ||
        sodium_hex2bin(c.secret, sizeof c.secret, text + 2 * sizeof c.id, 2 * sizeof c.secret, NULL,
                       &bin_len, &end) != 0 ||
        bin_len != sizeof c.secret) {
        sodium_memzero(&c, sizeof c);
        return PT_ERR_INPUT;
    }
    *out = c;
    sodium_memzero(&c, sizeof c);
    return 0;
}

void pt_cred_format(const struct pt_cred *c, char out[PT_CRED_TEXT_LEN + 1])
{
    sodium_bin2hex(out, 2 * sizeof c->id + 1, c->id, sizeof c->id);
    sodium_bin2hex(out + 2 * sizeof c->id, 2 * sizeof c->secret + 1, c->secret, sizeof c->secret);
}

/* ---------------------------------------------------------- token calls */

void pt_status_clear(struct pt_status *st)
{
    if (st != NULL) {
        st->token_status = 0;
        st->reason[0] = '\0';
    }
}

void pt_status_say(struct pt_status *st, const char *fmt, ...)
{
    va_list ap;
    if (st == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(st->reason, sizeof st->reason, fmt, ap);
    va_end(ap);
}

void pt_copy_text(char *dst, size_t cap, const char *src)
{
    size_t n = src != NULL ? strlen(src) : 0;

    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)src[n] & 0xc0) == 0x80)
            n--;
    }
    if (n > 0)
        memcpy(dst, src, n);
    dst[n] = '\0';
}

int pt_tk_call(struct pt_link *link, int64_t now, const struct pt_cred *who,
               Cohort__TokenRequest *req, int want, Cohort__TokenResponse **out,
               struct pt_status *st)
{
    Cohort__AppCredential ac = COHORT__APP_CREDENTIAL__INIT;
    Cohort__TokenResponse *r;
    const uint8_t *resp = NULL;
    size_t len, resp_len = 0;
    uint8_t *buf;
    int rc;

    *out = NULL;
    pt_status_clear(st);
    req->now = now;
    req->auth = NULL;
    if (who != NULL) {
        ac.id = (ProtobufCBinaryData){sizeof who->id, (uint8_t *)who->id};
        ac.secret = (ProtobufCBinaryData){sizeof who->secret, (uint8_t *)who->secret};
        req->auth = &ac;
    }
    len = cohort__token_request__get_packed_size(req);
    if (len > PT_DOC_REQUEST_MAX) {
        req->auth = NULL;
        return PT_ERR_TOO_LARGE;
    }
    if ((buf = malloc(len ? len : 1)) == NULL) {
        req->auth = NULL;
        return PT_ERR_NOMEM;
    }
    cohort__token_request__pack(req, buf);
    req->auth = NULL;
    rc = link->transact(link->ctx, buf, len, &resp, &resp_len);
    sodium_memzero(buf, len); /* a secret, a phrase or plaintext, as often as not */
    free(buf);
    if (rc != 0)
        return rc == PT_ERR_NOMEM ? rc : PT_ERR_LINK;
    if (resp_len > PT_DOC_RESPONSE_MAX)
        return PT_ERR_TOO_LARGE;
    if ((r = cohort__token_response__unpack(NULL, resp_len, resp)) == NULL)
        return PT_ERR_LINK;
    if (r->status != 0) {
        if (st != NULL) {
            st->token_status = r->status < 0 ? r->status : TK_ERR_MALFORMED;
            pt_copy_text(st->reason, sizeof st->reason, r->reason);
        }
        cohort__token_response__free_unpacked(r, NULL);
        return PT_ERR_TOKEN;
    }
    if (want != PT_ANY_BODY && (int)r->body_case != want) {
        cohort__token_response__free_unpacked(r, NULL);
        return PT_ERR_LINK;
    }
    *out = r;
    return 0;
}

static void request(Cohort__TokenRequest *req, Cohort__TokenRequest__BodyCase body)
{
    cohort__token_request__init(req);
    req->body_case = body;
}

/* -------------------------------------------------------------- codecs */

static bool fits(const char *s, size_t cap)
{
    return memchr(s, '\0', cap) != NULL;
}

int pt_meta_to_pb(Cohort__DocMeta *pb, char **tags, const struct pt_doc_meta *m)
{
    cohort__doc_meta__init(pb);
    if (!fits(m->type, sizeof m->type) || !fits(m->author, sizeof m->author) ||
        !fits(m->subject, sizeof m->subject) || m->n_tags > PT_DOC_TAGS_MAX)
        return PT_ERR_INPUT;
    for (uint32_t i = 0; i < m->n_tags; i++) {
        if (!fits(m->tags[i], sizeof m->tags[i]))
            return PT_ERR_INPUT;
        tags[i] = (char *)m->tags[i];
    }
    pb->type = (char *)m->type;
    pb->author = (char *)m->author;
    pb->subject = (char *)m->subject;
    pb->created = m->created;
    pb->modified = m->modified;
    pb->n_tags = m->n_tags;
    pb->tags = m->n_tags > 0 ? tags : NULL;
    pb->size = m->size;
    return 0;
}

static bool text_ok(const char *s, size_t max)
{
    return s != NULL && strlen(s) <= max;
}

int pt_meta_from_pb(struct pt_doc_meta *m, const Cohort__DocMeta *pb)
{
    memset(m, 0, sizeof *m);
    if (pb == NULL)
        return 0;
    if (!text_ok(pb->type, PT_DOC_TYPE_MAX) || !text_ok(pb->author, PT_DOC_TEXT_MAX) ||
        !text_ok(pb->subject, PT_DOC_TEXT_MAX) || pb->n_tags > PT_DOC_TAGS_MAX)
        return PT_ERR_LINK;
    for (size_t i = 0; i < pb->n_tags; i++) {
        if (!text_ok(pb->tags[i], PT_DOC_TAG_MAX))
            return PT_ERR_LINK;
        strcpy(m->tags[i], pb->tags[i]);
    }
    strcpy(m->type, pb->type);
    strcpy(m->author, pb->author);
    strcpy(m->subject, pb->subject);
    m->created = pb->created;
    m->modified = pb->modified;
    m->n_tags = (uint32_t)pb->n_tags;
    m->size = pb->size;
    return 0;
}

int pt_ref_from_pb(struct pt_doc_ref *r, const Cohort__DocRef *pb)
{
    memset(r, 0, sizeof *r);
    if (pb == NULL || pb->doc_id.len != PT_DOC_ID_LEN || pb->content_hash.len != PT_DOC_HASH_LEN ||
        pb->revision == 0)
        return PT_ERR_LINK;
    memcpy(r->id, pb->doc_id.data, PT_DOC_ID_LEN);
    memcpy(r->hash, pb->content_hash.data, PT_DOC_HASH_LEN);
    r->revision = pb->revision;
    r->size = pb->size;
    r->cipher_size = pb->cipher_size;
    return 0;
}

int pt_rule_to_pb(Cohort__PermRule *pb, char **values, const struct pt_rule *r)
{
    cohort__perm_rule__init(pb);
    if (!fits(r->type, sizeof r->type) || !fits(r->field, sizeof r->field) ||
        r->n_values > PT_VALUES_MAX)
        return PT_ERR_INPUT;
    for (uint32_t i = 0; i < r->n_values; i++) {
        if (!fits(r->values[i], sizeof r->values[i]))
            return PT_ERR_INPUT;
        values[i] = (char *)r->values[i];
    }
    pb->type = (char *)r->type;
    pb->verbs = r->verbs;
    pb->field = (char *)r->field;
    pb->n_values = r->n_values;
    pb->values = r->n_values > 0 ? values : NULL;
    return 0;
}

int pt_rule_from_pb(struct pt_rule *r, const Cohort__PermRule *pb)
{
    memset(r, 0, sizeof *r);
    if (pb == NULL)
        return 0;
    if (!text_ok(pb->type, PT_DOC_TYPE_MAX) || !text_ok(pb->field, sizeof r->field - 1) ||
        pb->n_values > PT_VALUES_MAX)
        return PT_ERR_LINK;
    for (size_t i = 0; i < pb->n_values; i++) {
        if (!text_ok(pb->values[i], PT_DOC_TEXT_MAX))
            return PT_ERR_LINK;
        strcpy(r->values[i], pb->values[i]);
    }
    strcpy(r->type, pb->type);
    strcpy(r->field, pb->field);
    r->verbs = pb->verbs;
    r->n_values = (uint32_t)pb->n_values;
    return 0;
}

/* ------------------------------------------------------------- putting */

long pt_fill(pt_read_fn rd, void *ctx, uint8_t *buf, size_t cap)
{
    size_t n = 0;
    while (n < cap) {
        long got = rd(ctx, buf + n, cap - n);
        if (got < 0)
            return got;
        if (got == 0)
            break;
        if ((size_t)got > cap - n)
            return PT_ERR_INPUT; /* a reader that overran its buffer */
        n += (size_t)got;
    }
    return (long)n;
}

/* One DocWrite: its ciphertext into t; with last, the revision's ref in
 * *ref and, for a write back, the answer that holds the reply in *kept. */
static int put_piece(struct pt_link *link, int64_t now, const struct pt_cred *who,
                     const ProtobufCBinaryData *session, const uint8_t *data, size_t n, bool last,
                     bool back, struct pt_ds_tmp *t, struct pt_doc_ref *ref,
                     Cohort__TokenResponse **kept, struct pt_status *st)
{
    Cohort__TokenRequest req;
    Cohort__DocWrite w = COHORT__DOC_WRITE__INIT;
    Cohort__TokenResponse *r;
    const Cohort__DocCipher *dc;
    int rc;

    request(&req, COHORT__TOKEN_REQUEST__BODY_DOC_WRITE);
    w.session = *session;
    w.data = (ProtobufCBinaryData){n, (uint8_t *)data};
    w.last = last;
    req.doc_write = &w;
    rc = pt_tk_call(link, now, who, &req, COHORT__TOKEN_RESPONSE__BODY_DOC_CIPHER, &r, st);
    if (rc != 0)
        return rc;
    dc = r->doc_cipher;
    rc = pt_ds_tmp_write(t, dc->data.data, dc->data.len);
    if (rc == 0 && last)
        rc = pt_ref_from_pb(ref, dc->ref);
    else if (rc == 0 && dc->ref != NULL)
        rc = PT_ERR_LINK; /* a revision before the last write */
    if (rc == 0 && (dc->reply != NULL) != (last && back))
        rc = PT_ERR_LINK; /* a reply comes with the last write back, and only then */
    if (rc == 0 && dc->reply != NULL) {
        *kept = r;
        return 0;
    }
    cohort__token_response__free_unpacked(r, NULL);
    return rc;
}

/* The return package of a write back: the reply, which must name the
 * revision just stored, and its file. */
static int reply_make(struct pt_docstore *ds, Cohort__TokenResponse *r,
                      const struct pt_doc_ref *ref, const uint8_t share_id[16],
                      struct pt_reply *reply, struct pt_status *st)
{
    Cohort__ShareOut *so = r->doc_cipher->reply;
    struct pt_doc_ref got;
    uint8_t sid[16];
    int rc;

    if (so->n_refs != 1 || so->share_id.len != 16 || memcmp(so->share_id.data, share_id, 16) != 0 ||
        pt_ref_from_pb(&got, so->refs[0]) != 0 || memcmp(got.id, ref->id, PT_DOC_ID_LEN) != 0 ||
        got.revision != ref->revision || memcmp(got.hash, ref->hash, PT_DOC_HASH_LEN) != 0 ||
        got.cipher_size != ref->cipher_size) {
        pt_status_say(st, "the token stored revision %llu but its reply names another",
                      (unsigned long long)ref->revision);
        return PT_ERR_LINK;
    }
    if ((rc = pt_share_package_build(ds, so, sid, &reply->pkg, &reply->pkg_len, st)) != 0) {
        pt_status_say(st, "the token stored revision %llu but its return package could not be made",
                      (unsigned long long)ref->revision);
        return rc;
    }
    memcpy(reply->share_id, sid, 16);
    pt_share_reply_to_load(ds, sid, reply->reply_to);
    return 0;
}

/* A revision; reply NULL: pt_doc_put's, which refuses a write back. */
static int doc_put(struct pt_link *link, struct pt_docstore *ds, int64_t now,
                   const struct pt_cred *who, const uint8_t *id, uint64_t base_revision,
                   const struct pt_doc_meta *meta, pt_read_fn rd, void *rd_ctx,
                   struct pt_doc_ref *out, struct pt_reply *reply, struct pt_status *st)
{
    Cohort__TokenRequest req;
    Cohort__DocBegin b = COHORT__DOC_BEGIN__INIT;
    Cohort__DocMeta m;
    Cohort__TokenResponse *r = NULL, *kept = NULL;
    ProtobufCBinaryData session;
    struct pt_doc_meta stamped;
    struct pt_doc_ref ref;
    struct pt_ds_tmp t;
    uint8_t sid[32], hash[PT_DOC_HASH_LEN], share_id[16], *buf = NULL;
    char *tags[PT_DOC_TAGS_MAX];
    size_t max_chunk = 0;
    bool tmp_open = false, done = false, back = false;
    int rc;

    pt_status_clear(st);
    if (reply != NULL)
        memset(reply, 0, sizeof *reply);
    if (meta == NULL || rd == NULL)
        return PT_ERR_INPUT;
    stamped = *meta;
    if (stamped.created == 0)
        stamped.created = now;
    if (stamped.modified == 0)
        stamped.modified = now;
    stamped.size = 0; /* the token's */
    if ((rc = pt_meta_to_pb(&m, tags, &stamped)) != 0)
        return rc;
    request(&req, COHORT__TOKEN_REQUEST__BODY_DOC_BEGIN);
    if (id != NULL)
        b.doc_id = (ProtobufCBinaryData){PT_DOC_ID_LEN, (uint8_t *)id};
    b.base_revision = base_revision;
    b.meta = &m;
    req.doc_begin = &b;
    rc = pt_tk_call(link, now, who, &req, COHORT__TOKEN_RESPONSE__BODY_DOC_SESSION, &r, st);
    if (rc != 0)
        return rc;
    if (r->doc_session->session.len == 0 || r->doc_session->session.len > sizeof sid ||
        r->doc_session->max_chunk == 0 || r->doc_session->max_chunk > PT_DOC_REQUEST_MAX / 2) {
        cohort__token_response__free_unpacked(r, NULL);
        return PT_ERR_LINK;
    }
    if (r->doc_session->share_id.len != 0) {
        /* A document received in a read-write share: it goes back. */
        back = true;
        if (r->doc_session->share_id.len != 16 || id == NULL) {
            cohort__token_response__free_unpacked(r, NULL);
            return PT_ERR_LINK;
        }
        memcpy(share_id, r->doc_session->share_id.data, 16);
        if (reply == NULL) {
            cohort__token_response__free_unpacked(r, NULL);
            pt_status_say(st, "this document was received in a read-write share: its revisions "
                              "go back to its owner, in a return package to deliver");
            return PT_ERR_INPUT; /* the token's session closes with the next request */
        }
    }
    memcpy(sid, r->doc_session->session.data, r->doc_session->session.len);
    session = (ProtobufCBinaryData){r->doc_session->session.len, sid};
    max_chunk = r->doc_session->max_chunk;
    cohort__token_response__free_unpacked(r, NULL);

    if ((buf = malloc(max_chunk)) == NULL) {
        rc = PT_ERR_NOMEM;
        goto out;
    }
    if ((rc = pt_ds_tmp_begin(ds, &t)) != 0) {
        pt_status_say(st, "cannot create a file in the document store");
        goto out;
    }
    tmp_open = true;
    while (!done) {
        long n = pt_fill(rd, rd_ctx, buf, max_chunk);
        if (n < 0) {
            rc = (int)n;
            goto out;
        }
        done = (size_t)n < max_chunk;
        rc = put_piece(link, now, who, &session, buf, (size_t)n, done, back, &t, &ref, &kept, st);
        sodium_memzero(buf, (size_t)n);
        if (rc != 0) {
            if (rc == PT_ERR_IO)
                pt_status_say(st, "cannot write to the document store");
            goto out;
        }
    }
    /* The token has committed the revision: keep its file. */
    pt_ds_tmp_hash(&t, hash);
    if (sodium_memcmp(hash, ref.hash, sizeof hash) != 0 || t.bytes != ref.cipher_size ||
        (id != NULL && memcmp(ref.id, id, PT_DOC_ID_LEN) != 0)) {
        rc = PT_ERR_LINK;
        pt_status_say(st, "the token's reference does not name the ciphertext it gave");
        goto out;
    }
    if ((rc = pt_ds_tmp_commit(ds, &t, hash)) != 0 ||
        (rc = pt_ds_index_add(ds, ref.id, ref.revision, hash)) != 0) {
        pt_status_say(st, "the token stored revision %llu but its file could not be kept",
                      (unsigned long long)ref.revision);
        goto out;
    }
    if (kept != NULL && (rc = reply_make(ds, kept, &ref, share_id, reply, st)) != 0)
        goto out;
    if (out != NULL)
        *out = ref;
out:
    if (kept != NULL)
        cohort__token_response__free_unpacked(kept, NULL);
    if (tmp_open)
        pt_ds_tmp_abort(ds, &t);
    if (buf != NULL) {
        sodium_memzero(buf, max_chunk);
        free(buf);
    }
    return rc;
}

int pt_doc_put(struct pt_link *link, struct pt_docstore *ds, int64_t now, const struct pt_cred *who,
               const uint8_t *id, uint64_t base_revision, const struct pt_doc_meta *meta,
               pt_read_fn rd, void *rd_ctx, struct pt_doc_ref *out, struct pt_status *st)
{
    return doc_put(link, ds, now, who, id, base_revision, meta, rd, rd_ctx, out, NULL, st);
}

int pt_doc_put_reply(struct pt_link *link, struct pt_docstore *ds, int64_t now,
                     const struct pt_cred *who, const uint8_t *id, uint64_t base_revision,
                     const struct pt_doc_meta *meta, pt_read_fn rd, void *rd_ctx,
                     struct pt_doc_ref *out, struct pt_reply *reply, struct pt_status *st)
{
    if (reply == NULL)
        return PT_ERR_INPUT;
    return doc_put(link, ds, now, who, id, base_revision, meta, rd, rd_ctx, out, reply, st);
}

/* ------------------------------------------------------------- getting */

int pt_doc_get(struct pt_link *link, struct pt_docstore *ds, int64_t now, const struct pt_cred *who,
               const uint8_t id[PT_DOC_ID_LEN], uint64_t rev, pt_write_fn wr, void *wr_ctx,
               struct pt_doc_ref *ref, struct pt_doc_meta *meta, struct pt_status *st)
{
    Cohort__TokenRequest req;
    Cohort__DocOpen o = COHORT__DOC_OPEN__INIT;
    Cohort__DocRead dr = COHORT__DOC_READ__INIT;
    Cohort__TokenResponse *r = NULL;
    struct pt_doc_ref got_ref;
    struct pt_doc_meta got_meta;
    uint8_t sid[32], *buf = NULL;
    size_t sid_len, max_chunk;
    uint64_t size, fed = 0;
    bool missing, done = false;
    int fd = -1, rc;

    pt_status_clear(st);
    if (id == NULL)
        return PT_ERR_INPUT;
    request(&req, COHORT__TOKEN_REQUEST__BODY_DOC_OPEN);
    o.doc_id = (ProtobufCBinaryData){PT_DOC_ID_LEN, (uint8_t *)id};
    o.revision = rev;
    req.doc_open = &o;
    rc = pt_tk_call(link, now, who, &req, COHORT__TOKEN_RESPONSE__BODY_DOC_SESSION, &r, st);
    if (rc != 0)
        return rc;
    sid_len = r->doc_session->session.len;
    max_chunk = r->doc_session->max_chunk;
    if (sid_len == 0 || sid_len > sizeof sid || max_chunk == 0 ||
        max_chunk > PT_DOC_REQUEST_MAX / 2 || pt_ref_from_pb(&got_ref, r->doc_session->ref) != 0 ||
        pt_meta_from_pb(&got_meta, r->doc_session->meta) != 0 ||
        memcmp(got_ref.id, id, PT_DOC_ID_LEN) != 0 || (rev != 0 && got_ref.revision != rev)) {
        cohort__token_response__free_unpacked(r, NULL);
        return PT_ERR_LINK;
    }
    memcpy(sid, r->doc_session->session.data, sid_len);
    cohort__token_response__free_unpacked(r, NULL);
    r = NULL;
    if (ref != NULL)
        *ref = got_ref;
    if (meta != NULL)
        *meta = got_meta;
    if (wr == NULL)
        return 0; /* what the token says of it; the session closes on the next request */

    if ((rc = pt_ds_open(ds, got_ref.hash, &fd, &size, &missing)) != 0) {
        pt_status_say(st, "%s revision %llu's ciphertext file",
                      missing ? "the store lacks" : "cannot open",
                      (unsigned long long)got_ref.revision);
        return rc;
    }
    if ((buf = malloc(max_chunk)) == NULL) {
        rc = PT_ERR_NOMEM;
        goto out;
    }
    dr.session = (ProtobufCBinaryData){sid_len, sid};
    while (!done) {
        size_t n = 0;
        while (n < max_chunk) {
            ssize_t k = read(fd, buf + n, max_chunk - n);
            if (k < 0) {
                rc = PT_ERR_IO;
                pt_status_say(st, "cannot read revision %llu's ciphertext file",
                              (unsigned long long)got_ref.revision);
                goto out;
            }
            if (k == 0)
                break;
            n += (size_t)k;
        }
        fed += n;
        request(&req, COHORT__TOKEN_REQUEST__BODY_DOC_READ);
        dr.data = (ProtobufCBinaryData){n, buf};
        dr.last = n < max_chunk || fed >= size;
        req.doc_read = &dr;
        rc = pt_tk_call(link, now, who, &req, COHORT__TOKEN_RESPONSE__BODY_DOC_PLAIN, &r, st);
        if (rc != 0)
            goto out;
        done = r->doc_plain->done;
        if (!done && dr.last) {
            rc = PT_ERR_LINK; /* the token took the whole file without an end */
        } else if (r->doc_plain->data.len > 0) {
            rc = wr(wr_ctx, r->doc_plain->data.data, r->doc_plain->data.len);
        }
        sodium_memzero(r->doc_plain->data.data, r->doc_plain->data.len);
        cohort__token_response__free_unpacked(r, NULL);
        r = NULL;
        if (rc != 0)
            goto out;
    }
out:
    if (fd >= 0)
        close(fd);
    if (buf != NULL)
        free(buf);
    return rc;
}

/* ------------------------------------------------------------- listing */

int pt_doc_list(struct pt_link *link, int64_t now, const struct pt_cred *who,
                const struct pt_rule *filter, uint64_t after, uint32_t max,
                struct pt_doc_page *page, struct pt_status *st)
{
    Cohort__TokenRequest req;
    Cohort__DocList l = COHORT__DOC_LIST__INIT;
    Cohort__PermRule f;
    Cohort__TokenResponse *r;
    const Cohort__DocPage *p;
    char *values[PT_VALUES_MAX];
    int rc;

    pt_status_clear(st);
    if (page == NULL || max == 0 || max > PT_DOC_LIST_MAX)
        return PT_ERR_INPUT;
    if (filter != NULL) {
        if ((rc = pt_rule_to_pb(&f, values, filter)) != 0)
            return rc;
        l.filter = &f;
    }
    l.after = after;
    l.max = max;
    request(&req, COHORT__TOKEN_REQUEST__BODY_DOC_LIST);
    req.doc_list = &l;
    rc = pt_tk_call(link, now, who, &req, COHORT__TOKEN_RESPONSE__BODY_DOC_PAGE, &r, st);
    if (rc != 0)
        return rc;
    p = r->doc_page;
    if (p->n_refs != p->n_metas || p->n_refs > max || (p->more && p->next <= after)) {
        cohort__token_response__free_unpacked(r, NULL);
        return PT_ERR_LINK;
    }
    page->n = 0;
    for (size_t i = 0; i < p->n_refs; i++) {
        if (pt_ref_from_pb(&page->refs[i], p->refs[i]) != 0 ||
            pt_meta_from_pb(&page->metas[i], p->metas[i]) != 0) {
            cohort__token_response__free_unpacked(r, NULL);
            return PT_ERR_LINK;
        }
    }
    page->n = (uint32_t)p->n_refs;
    page->more = p->more;
    page->next = p->next;
    cohort__token_response__free_unpacked(r, NULL);
    return 0;
}

/* ------------------------------------------------------------ deleting */

static int remove_one(void *ctx, const uint8_t hash[PT_DOC_HASH_LEN])
{
    return pt_ds_remove(ctx, hash);
}

int pt_doc_delete(struct pt_link *link, struct pt_docstore *ds, int64_t now,
                  const struct pt_cred *who, const uint8_t id[PT_DOC_ID_LEN],
                  uint64_t base_revision, struct pt_status *st)
{
    Cohort__TokenRequest req;
    Cohort__DocDelete d = COHORT__DOC_DELETE__INIT;
    Cohort__TokenResponse *r;
    struct pt_doc_ref ref;
    int rc;

    pt_status_clear(st);
    if (id == NULL)
        return PT_ERR_INPUT;
    request(&req, COHORT__TOKEN_REQUEST__BODY_DOC_DELETE);
    d.doc_id = (ProtobufCBinaryData){PT_DOC_ID_LEN, (uint8_t *)id};
    d.base_revision = base_revision;
    req.doc_delete = &d;
    rc = pt_tk_call(link, now, who, &req, COHORT__TOKEN_RESPONSE__BODY_DOC_REF, &r, st);
    if (rc != 0)
        return rc;
    rc = pt_ref_from_pb(&ref, r->doc_ref);
    cohort__token_response__free_unpacked(r, NULL);
    if (rc != 0)
        return rc;
    /* The token has forgotten every key: the files are noise now. */
    if ((rc = pt_ds_index_files(ds, id, remove_one, ds)) != 0 ||
        (rc = pt_ds_remove(ds, ref.hash)) != 0 || (rc = pt_ds_index_remove(ds, id)) != 0) {
        pt_status_say(st, "the document is deleted, but some of its files remain in the store");
        return rc;
    }
    return 0;
}

/* ------------------------------------------------------------ identity */

int pt_identity(struct pt_link *link, int64_t now, uint8_t sign_pk[32], uint8_t cert[PT_CERT_MAX],
                size_t *cert_len, struct pt_status *st)
{
    Cohort__TokenRequest req;
    Cohort__GetInfo gi = COHORT__GET_INFO__INIT;
    Cohort__TokenResponse *r;
    const Cohort__TokenInfo *ti;
    int rc;

    request(&req, COHORT__TOKEN_REQUEST__BODY_INFO);
    req.info = &gi;
    rc = pt_tk_call(link, now, NULL, &req, COHORT__TOKEN_RESPONSE__BODY_INFO, &r, st);
    if (rc != 0)
        return rc;
    ti = r->info;
    *cert_len = 0;
    rc = 0;
    if (ti->sign_pk.len != 32) {
        pt_status_say(st, "the token has no identity keys yet");
        rc = PT_ERR_INPUT;
    } else {
        memcpy(sign_pk, ti->sign_pk.data, 32);
        if (ti->device_cert != NULL) {
            size_t n = cohort__certificate__get_packed_size(ti->device_cert);
            if (n > PT_CERT_MAX)
                rc = PT_ERR_LINK;
            else
                *cert_len = cohort__certificate__pack(ti->device_cert, cert);
        }
    }
    cohort__token_response__free_unpacked(r, NULL);
    return rc;
}
