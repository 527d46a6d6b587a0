/*
 * Sharing documents with another person's token, and enforcing what is
 * shared on the recipient's side.
 *
 * The grant. The owner shares documents by id, or the set a selector
 * (type pattern and optional metadata field; verbs ignored) defines, with
 * a token whose device certificate chains to an authority this token
 * trusts for tokens: the issuer of its own certificate (the manufacturer)
 * or one of its trusted authorities. The sender's token resolves the share
 * to document revisions and writes a ShareGrant: share id, sequence
 * number, its own certificate, the recipient's key, the policy (read-only,
 * expiry, reads per document), and for each document a SharedDoc, which
 * carries the same fields as the DocRecord it keeps for the revision, key
 * included (so the record's bytes are copied as they are). It signs
 * TK_SIG_SHARE || grant with its device key and seals the SignedGrant
 * (crypto_box_seal) to the X25519 key of the recipient's certificate,
 * straight into the response; the plaintext is wiped. The agent moves the
 * sealed grant and the ciphertext files: it sees document ids, sizes and
 * hashes (ShareOut.refs), never a key. A grant holds at most
 * TK_SHARE_DOCS_MAX documents and TK_SHARE_GRANT_MAX bytes; a share by id
 * that does not fit is refused (TK_ERR_TOO_LARGE), a selector takes the
 * documents that fit, in the order it met them in the log.
 *
 * Later grants. A sent share's record keeps what it asked for (ids or the
 * selector), the recipient's certificate and the digest of the last
 * grant's (id, revision) list. ShareSync finds the first sent share, in
 * log order, whose resolution now (new revisions, deleted documents, new
 * matches of its selector) has another digest, and issues its next grant
 * (seq + 1); ShareRevoke issues a last one with no document and revoked
 * set. The owner's agent delivers each; a sender never sends a document
 * it holds only from a received share (TK_ERR_DENIED: no re-share; a
 * selector only ever sees the token's own documents).
 *
 * The recipient. ShareAccept opens the seal (TK_ERR_DECRYPT), reads the
 * grant's framing and bounds (TK_ERR_MALFORMED, TK_ERR_TRUNCATED,
 * TK_ERR_TOO_LARGE; nothing of it is used yet), checks the signature by
 * the key of the certificate inside (TK_ERR_BAD_SIGNATURE), then that
 * certificate: issued by an authority trusted for tokens
 * (TK_ERR_UNTRUSTED), signed (TK_ERR_BAD_CERT), valid now
 * (TK_ERR_EXPIRED), a token's (TK_ERR_ROLE); that the grant names this
 * token (TK_ERR_DENIED); that it is newer than the last grant of that
 * share (TK_ERR_REPLAY: a replayed or older grant, or any grant after a
 * revocation, which is final); that the share id is not one of another
 * sender's or of this token's, and that no document id is this token's
 * own or held by another sender's share (TK_ERR_CONFLICT: a sender cannot
 * pass its document off as someone else's). Every bound is checked before
 * anything is stored. The grant is kept as one ShareRecord (incoming),
 * split into parts when its documents do not fit in one log record (see
 * the proto). The latest record of a share id is its state.
 *
 * Enforcement. DocOpen asks tk_share_find_doc for a document that is not
 * the owner's own. It looks at every received share that ever held the
 * id (at most TK_SHARE_HOLDERS), takes the ones whose latest grant holds
 * it (at that revision, when one is asked for), and picks the newest
 * revision among those whose policy still allows a read: not revoked
 * (TK_ERR_DENIED), not expired (TK_ERR_EXPIRED), reads of that document
 * under that share below max_reads (TK_ERR_DENIED). Accepting a grant
 * that revokes the share or drops one of its documents rewrites the log
 * without the share's earlier records, so that the keys it no longer
 * grants leave the flash (as a deleted document's do; a grant that only
 * brings new revisions leaves the old ones' keys, as the owner's own
 * token keeps its old revisions). A revoked record keeps the documents'
 * refs (which no answer shows), so that a read of one is refused rather
 * than unknown, and no other sender can claim them.
 * Each read appends a ShareRead and commits before the document opens.
 * DocBegin on a document received read-only is TK_ERR_DENIED.
 *
 * Read-write. A policy with read_write lets the recipient write new
 * revisions of the documents it received; the sender's token keeps the
 * last word on what its documents are.
 * - The recipient's DocBegin on a received document (tk_doc.c asks
 *   tk_share_write_begin) finds the read-write share in force that holds
 *   it (a read-only one: TK_ERR_DENIED; revoked: TK_ERR_DENIED; expired:
 *   TK_ERR_EXPIRED) and allows a revision only on that share's current
 *   revision (else TK_ERR_CONFLICT), with PUT for an app on what the
 *   document is and becomes, and the owner's metadata kept: type, author,
 *   subject, created and tags are the owner's, only modified (and the
 *   size) are the writer's (TK_ERR_DENIED), so that a recipient cannot
 *   move a document into or out of a selector's share, or rename what it
 *   is. DocSession names the share.
 * - The last DocWrite does not store a document of the recipient's (a
 *   received document is never one: it could then be shared on). It
 *   appends a ShareWrite (the share, the base revision and its content
 *   hash, the new revision's SharedDoc, key included) and answers, besides
 *   the DocRef, DocCipher.reply: a ShareOut whose sealed part is a
 *   ReturnGrant (share, sender's and writer's keys, base, the SharedDoc),
 *   signed by the recipient's device key over TK_SIG_SHARE_WRITE ||
 *   ReturnGrant (another prefix than a grant's, so neither passes for the
 *   other) and sealed to the X25519 key of the sender's certificate kept in
 *   the share's record. Its refs name the new file, for the agent to send.
 * - The recipient reads its own write: a holder's revisions are its
 *   latest grant's, then the chain of ShareWrites of that share each on
 *   the one before (same revision number and content hash), so a writer
 *   may write several revisions before the sender answers (at most
 *   TK_SHARE_WRITES_MAX of one document wait: TK_ERR_TOO_LARGE). The
 *   chain holds while the sender's grants leave the document where it was;
 *   a grant that moves it on (to the writer's own revision, or to one of
 *   the sender's that won the race), drops it, makes the share read-only
 *   or revokes it, ends the chain: ShareAccept then rewrites the log
 *   without the writes that no longer chain on it (their keys leave the
 *   flash) and the grant's revision is what the recipient reads.
 * - The sender's ShareAccept of a return grant (SignedGrant.write):
 *   addressed to this token (TK_ERR_DENIED), for a share this token made
 *   (TK_ERR_NOT_FOUND, TK_ERR_DENIED for a received one), from its
 *   recipient: the writer's key must be the one of the certificate the
 *   share's record keeps (TK_ERR_DENIED) and sign it (TK_ERR_BAD_SIGNATURE),
 *   that certificate still valid (TK_ERR_EXPIRED ...); a revision this
 *   token already has (the same content hash among the document's
 *   records) is TK_ERR_REPLAY; then the share must be in force (revoked:
 *   TK_ERR_DENIED, expired by this host's clock: TK_ERR_EXPIRED) and
 *   read-write (TK_ERR_DENIED), its last grant must hold the document (and
 *   a selector still match it: TK_ERR_DENIED), the document still exist
 *   (TK_ERR_NOT_FOUND) at the base, revision and content hash both (else
 *   TK_ERR_CONFLICT: a base of the same number but another content is a
 *   lost update refused), with the owner's metadata (TK_ERR_DENIED).
 *   Nothing is written before every check passed, and a refusal logs
 *   nothing. Then the revision is the owner's document's next, stored as
 *   DocBegin/DocWrite would (tk_doc_store: record, documents-table row,
 *   in one rewrite), with the audit line "share.write-back" naming the
 *   document and the writer (the recipient certificate's subject and key,
 *   in the entry's researcher fields) and who handed the package in. The
 *   answer is the share's ShareInfo whose refs name only that revision, so
 *   that the agent keeps the file. The next ShareSync carries the
 *   revision to every share of the document, the writer's included.
 * - ShareUpdate gives a share the owner made (not revoked) a new policy:
 *   the next grant carries it whether or not its documents changed
 *   ("share.update" on the audit log). It is how a share is made
 *   read-only, or its expiry moved.
 * What the recipient's agent learns: that it wrote, sizes and hashes;
 * the ReturnGrant, key included, is sealed to the sender.
 *
 * Time. c->now is the host's clock, which the token cannot check. Expiry
 * is judged at the latest of now, every time this host has given the
 * share module before (shares created, grants issued and accepted, reads
 * and writes back: all in the log) and the issue time of the share's own grant (the
 * sender's clock, signed; another sender's clock never counts). A host
 * that turns its clock back so gains nothing past the last time it gave;
 * one that never moves it forward can read until the expiry it never
 * reaches, which only a clock inside the token could prevent. A return
 * grant is judged by the sender's own clock when it arrives (the writer's
 * is in it, signed, but not trusted for that).
 *
 * Memory. Scans go through the log one record at a time (tk_log_scan);
 * tables are bounded (a resolution of TK_SHARE_DOCS_MAX entries, the
 * holders of one document, a page of shares). The largest working set is
 * ShareAccept's: the request's copy of the sealed grant and its opened
 * plaintext (each at most TK_SHARE_SEALED_MAX), one log record and one
 * document; the signature is checked in place (the prefix is written
 * into the bytes before the grant) rather than over a copy. A return
 * grant is small (a SharedDoc and some 200 bytes): its ShareAccept gives
 * back the share's record and the checks' scratch before the store's
 * rewrite, and the writer's last DocWrite builds it once the document
 * session's room is free, so both fit the least arena.
 */
#include "token/tk_int.h"

#define PREFIX_LEN (sizeof TK_SIG_SHARE - 1u)
#define WPREFIX_LEN (sizeof TK_SIG_SHARE_WRITE - 1u)
#define OPEN_ROOM WPREFIX_LEN /* before an opened seal: room for either prefix */
#define SIG_LEN crypto_sign_BYTES
/* sign_grant puts a field header (a tag byte and a 10-byte length at most) over a prefix */
_Static_assert(PREFIX_LEN >= 11 && WPREFIX_LEN >= 11, "a signing prefix holds a field header");
#define KEY_LEN crypto_secretstream_xchacha20poly1305_KEYBYTES
#define PART_ROOM 512u /* a stored ShareInfo and a record's framing, at most */
#define REF_ROOM 96u   /* a DocRef in a revoked share's info, at most */
#define SIZE_MAX_DOC (1ull << 48)
#define HEADER_LEN crypto_secretstream_xchacha20poly1305_HEADERBYTES
#define FRAME_OVERHEAD (TK_DOC_FRAME_LEN + crypto_secretstream_xchacha20poly1305_ABYTES)

static const Cohort__SharePolicy default_policy = COHORT__SHARE_POLICY__INIT;

/* ------------------------------------------------------------ utilities */

static int64_t later(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

/* Scratch for a grant signed by sign_grant: the prefix, the body, the signature field. */
#define SIGNED_LEN(prefix_len, body_len) ((prefix_len) + (body_len) + 2u + SIG_LEN)

/*
 * Sign prefix || body with the device key, where the body was written at
 * buf + prefix_len, and frame the body in place as a SignedGrant
 * { field = body, signature = 2 }: its header over the end of the prefix
 * (the prefix is longer than any header), the signature after the body.
 * buf holds SIGNED_LEN(prefix_len, body_len) bytes. Returns the
 * SignedGrant, and its length in *len.
 */
static uint8_t *sign_grant(const struct tk_call *c, uint8_t *buf, const char *prefix,
                           size_t prefix_len, uint32_t field, size_t body_len, size_t *len)
{
    size_t hdr = tk_field_len(field, body_len) - body_len;
    uint8_t *sg = buf + prefix_len - hdr, *q = buf + prefix_len + body_len;
    struct tk_wbuf h = {sg, hdr, 0, false};

    memcpy(buf, prefix, prefix_len);
    crypto_sign_detached(q + 2, NULL, buf, prefix_len + body_len, c->tk->sign_sk);
    tk_w_open(&h, field, body_len);
    q[0] = (2u << 3) | 2u;
    q[1] = SIG_LEN;
    *len = hdr + body_len + 2 + SIG_LEN;
    return sg;
}

static void set_reason(struct tk_call *c, const char *why)
{
    tk_text_put(c->reason, 0, sizeof c->reason, why);
}

/* The bytes a document's ciphertext file has for `size` plaintext bytes. */
static uint64_t file_size(uint64_t size)
{
    uint64_t chunks = size == 0 ? 1 : (size + TK_DOC_CHUNK - 1) / TK_DOC_CHUNK;
    return HEADER_LEN + chunks * FRAME_OVERHEAD + size;
}

/* ------------------------------------------------- metadata and selectors */

/* Metadata another token sent is held to the bounds DocBegin puts on it
 * (tk_doc_meta_check); a selector is a rule without verbs, checked and
 * matched as a credential's rules are (tk_rule_check, tk_rule_matches). */

/* --------------------------------------------------------- certificates */

/* The issuer of this token's own certificate (scratch). */
static int own_issuer(struct tk_call *c, const uint8_t **pk)
{
    Cohort__Certificate *cert;
    Cohort__CertBody *b;
    int rc = TK_OK;
    cert = (Cohort__Certificate *)tk_unpack(c->arena, &cohort__certificate__descriptor, c->tk->cert,
                                            c->tk->cert_len, &rc);
    if (cert == NULL)
        return rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_TAMPERED;
    b = (Cohort__CertBody *)tk_unpack(c->arena, &cohort__cert_body__descriptor, cert->body.data,
                                      cert->body.len, &rc);
    if (b == NULL)
        return rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_TAMPERED;
    if (b->issuer_pk.len != TK_PK_LEN)
        return TK_ERR_TAMPERED;
    *pk = b->issuer_pk.data;
    return TK_OK;
}

/* The body of a certificate, decoded for its shape only (scratch). */
static int cert_shape(Cohort__CertBody **out, struct tk_arena *a, const Cohort__Certificate *cert)
{
    Cohort__CertBody *b;
    int rc = TK_OK;
    if (cert == NULL || cert->body.len == 0 || cert->body.len > TK_CERT_MAX ||
        cert->signature.len != SIG_LEN)
        return TK_ERR_BAD_CERT;
    b = (Cohort__CertBody *)tk_unpack(a, &cohort__cert_body__descriptor, cert->body.data,
                                      cert->body.len, &rc);
    if (b == NULL)
        return rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_BAD_CERT;
    if (b->sign_pk.len != TK_PK_LEN || b->issuer_pk.len != TK_PK_LEN)
        return TK_ERR_BAD_CERT;
    *out = b;
    return TK_OK;
}

/*
 * Another token's device certificate: issued by the issuer of this
 * token's own certificate or by a trusted authority (TK_ERR_UNTRUSTED),
 * signed by it (TK_ERR_BAD_CERT), valid now (TK_ERR_EXPIRED), a token's
 * with an X25519 key (TK_ERR_ROLE, TK_ERR_BAD_CERT).
 */
static int peer_cert_check(struct tk_call *c, const Cohort__Certificate *cert,
                           Cohort__CertBody **out)
{
    Cohort__CertBody *shape = NULL, *b = NULL;
    const uint8_t *issuer = NULL, *mine = NULL;
    size_t i;
    int rc;

    if ((rc = cert_shape(&shape, c->arena, cert)) != TK_OK)
        return rc;
    if ((rc = own_issuer(c, &mine)) != TK_OK)
        return rc;
    if (sodium_memcmp(shape->issuer_pk.data, mine, TK_PK_LEN) == 0)
        issuer = mine;
    for (i = 0; i < c->tk->n_authorities && issuer == NULL; i++)
        if (sodium_memcmp(shape->issuer_pk.data, c->tk->authorities[i], TK_PK_LEN) == 0)
            issuer = c->tk->authorities[i];
    if (issuer == NULL)
        return TK_ERR_UNTRUSTED;
    if ((rc = tk_cert_check(&b, c->arena, cert, issuer, c->now)) != TK_OK)
        return rc;
    if (b->role != COHORT__ROLE__ROLE_TOKEN)
        return TK_ERR_ROLE;
    if (b->box_pk.len != 32)
        return TK_ERR_BAD_CERT;
    *out = b;
    return TK_OK;
}

/* ------------------------------------------------ records, field by field */

/* What scans need of a ShareRecord, read without decoding it. */
struct head {
    const uint8_t *id;      /* TK_SHARE_ID_LEN bytes */
    const uint8_t *peer_pk; /* TK_PK_LEN bytes, or NULL */
    bool incoming, revoked, read_write;
    uint64_t seq;
    int64_t expires, created, issued;
    uint32_t max_reads, part;
};

static int policy_fields(struct head *h, const uint8_t *p, size_t len)
{
    struct tk_wfield f;
    size_t pos = 0;
    int more;
    while ((more = tk_wire_next(p, len, &pos, &f)) == 1) {
        if (f.wire_type != 0)
            continue;
        if (f.field == 1)
            h->read_write = f.varint != 0;
        else if (f.field == 2)
            h->expires = (int64_t)f.varint;
        else if (f.field == 3)
            h->max_reads = (uint32_t)f.varint;
    }
    return more;
}

static int info_fields(struct head *h, const uint8_t *p, size_t len)
{
    struct tk_wfield f;
    size_t pos = 0;
    int more;
    while ((more = tk_wire_next(p, len, &pos, &f)) == 1) {
        if (f.wire_type == 2) {
            if (f.field == 1 && f.len == TK_SHARE_ID_LEN)
                h->id = f.data;
            else if (f.field == 3 && f.len == TK_PK_LEN)
                h->peer_pk = f.data;
            else if (f.field == 5 && policy_fields(h, f.data, f.len) < 0)
                return TK_ERR_TAMPERED;
        } else if (f.wire_type == 0) {
            if (f.field == 2)
                h->incoming = f.varint != 0;
            else if (f.field == 6)
                h->seq = f.varint;
            else if (f.field == 10)
                h->revoked = f.varint != 0;
            else if (f.field == 11)
                h->created = (int64_t)f.varint;
            else if (f.field == 13)
                h->issued = (int64_t)f.varint;
        }
    }
    return more;
}

static int head_parse(struct head *h, const uint8_t *body, size_t len)
{
    struct tk_wfield f;
    size_t pos = 0;
    int more;
    memset(h, 0, sizeof *h);
    while ((more = tk_wire_next(body, len, &pos, &f)) == 1) {
        if (f.field == 1 && f.wire_type == 2) {
            if (info_fields(h, f.data, f.len) < 0)
                return TK_ERR_TAMPERED;
        } else if (f.field == 6 && f.wire_type == 0) {
            h->part = (uint32_t)f.varint;
        }
    }
    if (more < 0 || h->id == NULL || h->seq == 0 ||
        (h->incoming && h->part == 0 && h->peer_pk == NULL))
        return TK_ERR_TAMPERED;
    return TK_OK;
}

/* The next SharedDoc (field 2) of a ShareRecord's body: 1, 0 at the end. */
static int next_doc(const uint8_t *body, size_t len, size_t *pos, const uint8_t **doc,
                    size_t *doc_len)
{
    struct tk_wfield f;
    int more;
    while ((more = tk_wire_next(body, len, pos, &f)) == 1)
        if (f.field == 2 && f.wire_type == 2) {
            *doc = f.data;
            *doc_len = f.len;
            return 1;
        }
    return more < 0 ? TK_ERR_TAMPERED : 0;
}

/*
 * The documents a received share's record names: each SharedDoc (field 2)
 * and, in a revoked share's record, each DocRef of its info (what it held,
 * without the keys, which the revocation erased). doc is the SharedDoc,
 * or NULL for a ref.
 */
struct held {
    const uint8_t *id, *hash;
    uint64_t rev, size, cipher_size;
    const uint8_t *doc;
    size_t doc_len;
};

struct held_iter {
    const uint8_t *body, *info;
    size_t len, pos, info_len, info_pos;
};

static void held_start(struct held_iter *it, const uint8_t *body, size_t len)
{
    struct tk_wfield f;
    size_t pos = 0;
    memset(it, 0, sizeof *it);
    it->body = body;
    it->len = len;
    while (tk_wire_next(body, len, &pos, &f) == 1)
        if (f.field == 1 && f.wire_type == 2) {
            it->info = f.data;
            it->info_len = f.len;
        }
}

/* A DocRef's fields (ref) or a SharedDoc's (the same, after its key). */
static bool held_fields(struct held *h, const uint8_t *p, size_t len, bool ref)
{
    uint32_t off = ref ? 0 : 1; /* a SharedDoc's hash, size, sizes come one field later */
    struct tk_wfield f;
    size_t pos = 0;
    int more;
    memset(h, 0, sizeof *h);
    while ((more = tk_wire_next(p, len, &pos, &f)) == 1) {
        if (f.field == 1 && f.wire_type == 2 && f.len == TK_DOC_ID_LEN)
            h->id = f.data;
        else if (f.field == 2 && f.wire_type == 0)
            h->rev = f.varint;
        else if (f.field == 3 + off && f.wire_type == 2 && f.len == TK_DOC_HASH_LEN)
            h->hash = f.data;
        else if (f.field == 4 + off && f.wire_type == 0)
            h->size = f.varint;
        else if (f.field == 5 + off && f.wire_type == 0)
            h->cipher_size = f.varint;
    }
    return more == 0 && h->id != NULL && h->rev != 0 && h->hash != NULL;
}

/* 1 with the next document in *h, 0 at the end, or TK_ERR_TAMPERED. */
static int held_next(struct held_iter *it, struct held *h)
{
    struct tk_wfield f;
    int more;
    while (it->info != NULL &&
           (more = tk_wire_next(it->info, it->info_len, &it->info_pos, &f)) == 1)
        if (f.field == 7 && f.wire_type == 2)
            return held_fields(h, f.data, f.len, true) ? 1 : TK_ERR_TAMPERED;
    if (it->info != NULL && more < 0)
        return TK_ERR_TAMPERED;
    it->info = NULL;
    while ((more = tk_wire_next(it->body, it->len, &it->pos, &f)) == 1)
        if (f.field == 2 && f.wire_type == 2) {
            if (!held_fields(h, f.data, f.len, false))
                return TK_ERR_TAMPERED;
            h->doc = f.data;
            h->doc_len = f.len;
            return 1;
        }
    return more < 0 ? TK_ERR_TAMPERED : 0;
}

/* The fields of a ShareRead. */
static bool read_parse(const uint8_t *body, size_t len, const uint8_t **share_id,
                       const uint8_t **doc_id, int64_t *at)
{
    struct tk_wfield f;
    size_t pos = 0;
    int more;
    *share_id = *doc_id = NULL;
    *at = 0;
    while ((more = tk_wire_next(body, len, &pos, &f)) == 1) {
        if (f.field == 1 && f.wire_type == 2 && f.len == TK_SHARE_ID_LEN)
            *share_id = f.data;
        else if (f.field == 2 && f.wire_type == 2 && f.len == TK_DOC_ID_LEN)
            *doc_id = f.data;
        else if (f.field == 3 && f.wire_type == 0)
            *at = (int64_t)f.varint;
    }
    return more == 0 && *share_id != NULL && *doc_id != NULL;
}

/* A SharedDoc, decoded into scratch and checked (TK_ERR_MALFORMED,
 * TK_ERR_TOO_LARGE). The caller wipes its key. */
static int shared_doc_decode(Cohort__SharedDoc **out, struct tk_arena *a, const uint8_t *p,
                             size_t len)
{
    Cohort__SharedDoc *d;
    int rc = TK_OK;
    if (len > TK_DOC_RECORD_MAX)
        return TK_ERR_TOO_LARGE;
    d = (Cohort__SharedDoc *)tk_unpack(a, &cohort__shared_doc__descriptor, p, len, &rc);
    if (d == NULL)
        return rc;
    *out = d;
    if (d->doc_id.len != TK_DOC_ID_LEN || d->revision == 0 || d->key.len != KEY_LEN ||
        d->content_hash.len != TK_DOC_HASH_LEN)
        return TK_ERR_MALFORMED;
    if ((rc = tk_doc_meta_check(d->meta)) != TK_OK)
        return rc;
    if (d->size > SIZE_MAX_DOC)
        return TK_ERR_TOO_LARGE;
    if (d->cipher_size != file_size(d->size) || d->meta->size != d->size)
        return TK_ERR_MALFORMED;
    return TK_OK;
}

static void shared_doc_wipe(Cohort__SharedDoc *d)
{
    if (d != NULL && d->key.data != NULL)
        sodium_memzero(d->key.data, d->key.len);
}

/* ------------------------------------------------ the recipient's holders */

/* A ShareWrite's fields: its share, its base and its SharedDoc. */
struct wrote {
    const uint8_t *share_id, *base_hash, *doc;
    size_t doc_len;
    uint64_t base_rev;
    int64_t at;
    struct held d; /* the SharedDoc's id, revision, hash and sizes */
};

static int wrote_parse(struct wrote *w, const uint8_t *body, size_t len)
{
    struct tk_wfield f;
    size_t pos = 0;
    int more;
    memset(w, 0, sizeof *w);
    while ((more = tk_wire_next(body, len, &pos, &f)) == 1) {
        if (f.field == 1 && f.wire_type == 2 && f.len == TK_SHARE_ID_LEN) {
            w->share_id = f.data;
        } else if (f.field == 2 && f.wire_type == 0) {
            w->base_rev = f.varint;
        } else if (f.field == 3 && f.wire_type == 2 && f.len == TK_DOC_HASH_LEN) {
            w->base_hash = f.data;
        } else if (f.field == 4 && f.wire_type == 2) {
            w->doc = f.data;
            w->doc_len = f.len;
        } else if (f.field == 5 && f.wire_type == 0) {
            w->at = (int64_t)f.varint;
        }
    }
    if (more < 0 || w->share_id == NULL || w->base_hash == NULL || w->doc == NULL ||
        !held_fields(&w->d, w->doc, w->doc_len, false) || w->d.rev != w->base_rev + 1)
        return TK_ERR_TAMPERED;
    return TK_OK;
}

/* A revision of the document that a received share's recipient wrote. */
struct wnote {
    uint8_t share_id[TK_SHARE_ID_LEN];
    uint64_t base_rev, rev, index;
    uint8_t base_hash[TK_DOC_HASH_LEN], hash[TK_DOC_HASH_LEN];
};

/* A received share that held a document, in its latest state. */
struct holder {
    uint8_t share_id[TK_SHARE_ID_LEN];
    uint64_t seq;
    bool revoked, read_write;
    bool held; /* its latest grant (or the last before its revocation) has the document */
    uint64_t grant_rev, grant_index; /* the revision that grant has, and its log record */
    uint8_t grant_hash[TK_DOC_HASH_LEN];
    /* Resolved after the scan (holder_resolve): the revision asked for. */
    bool found;
    bool wrote;     /* a ShareWrite of this token's has it, not a grant */
    uint64_t rev;   /* the revision */
    uint64_t index; /* the log record that has it */
    uint8_t hash[TK_DOC_HASH_LEN];
    int64_t expires, floor;
    uint32_t max_reads, reads;
};

struct finder {
    const uint8_t *doc_id;
    uint64_t want; /* a revision, or 0 for the current one */
    int pass;
    int64_t floor; /* the latest time this host gave the share module */
    uint32_t n, n_w;
    bool overflow;
    struct holder h[TK_SHARE_HOLDERS];
    struct wnote w[TK_SHARE_WRITES_MAX]; /* every ShareWrite of the document */
    struct holder cur;                   /* the state of the last part 0 read */
    bool cur_open;
    /* Pass 2: the chosen holder's record. */
    const struct holder *chosen;
    struct tk_shared_doc *out;
    bool fetched;
};

static struct holder *holder_of(struct finder *f, const uint8_t *share_id)
{
    uint32_t i;
    for (i = 0; i < f->n; i++)
        if (memcmp(f->h[i].share_id, share_id, TK_SHARE_ID_LEN) == 0)
            return &f->h[i];
    return NULL;
}

static void holder_state(struct holder *e, const struct head *h)
{
    e->seq = h->seq;
    e->revoked = h->revoked;
    e->read_write = h->read_write;
    e->expires = h->expires;
    e->max_reads = h->max_reads;
    e->floor = later(e->floor, h->issued);
}

/* A SharedDoc, decoded and copied out as the chosen holder's revision. */
static int fetch_one(struct finder *f, struct tk_arena *a, const uint8_t *doc, size_t doc_len)
{
    struct tk_shared_doc *o = f->out;
    Cohort__SharedDoc *d = NULL;
    int rc = shared_doc_decode(&d, a, doc, doc_len);
    if (rc == TK_OK) {
        memcpy(o->doc_id, d->doc_id.data, TK_DOC_ID_LEN);
        o->revision = d->revision;
        memcpy(o->key, d->key.data, KEY_LEN);
        memcpy(o->content_hash, d->content_hash.data, TK_DOC_HASH_LEN);
        o->size = d->size;
        o->cipher_size = d->cipher_size;
        o->meta_len = cohort__doc_meta__pack(d->meta, o->meta);
        o->read_write = f->chosen->read_write;
        f->fetched = true;
    }
    shared_doc_wipe(d);
    if (rc != TK_OK)
        return rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_TAMPERED;
    return TK_SCAN_STOP;
}

static int fetch_doc(struct finder *f, struct tk_arena *a, const uint8_t *body, size_t len)
{
    const uint8_t *doc, *id;
    size_t doc_len, pos = 0;
    uint64_t rev;
    int more;
    while ((more = next_doc(body, len, &pos, &doc, &doc_len)) == 1) {
        if (tk_doc_ident(doc, doc_len, &id, &rev) != TK_OK)
            return TK_ERR_TAMPERED;
        if (memcmp(id, f->doc_id, TK_DOC_ID_LEN) == 0 && rev == f->chosen->rev)
            return fetch_one(f, a, doc, doc_len);
    }
    return more;
}

static int find_fn(void *ctx, struct tk_arena *a, const uint8_t *plain, size_t len, uint64_t index)
{
    struct finder *f = ctx;
    const uint8_t *body, *id, *sid;
    size_t body_len;
    struct held_iter it;
    struct held d;
    struct holder *e;
    struct wrote wr;
    struct head h;
    uint32_t kind;
    int64_t at;
    int rc, more;

    if ((rc = tk_record_body(plain, len, &kind, &body, &body_len)) != TK_OK)
        return rc;
    if (f->pass == 2) {
        if (index != f->chosen->index)
            return TK_OK;
        if (kind == TK_REC_SHARE && !f->chosen->wrote)
            return fetch_doc(f, a, body, body_len);
        if (kind == TK_REC_SHARE_WRITE && f->chosen->wrote) {
            if ((rc = wrote_parse(&wr, body, body_len)) != TK_OK)
                return rc;
            return fetch_one(f, a, wr.doc, wr.doc_len);
        }
        return TK_ERR_TAMPERED;
    }
    if (kind == TK_REC_SHARE_READ) {
        if (!read_parse(body, body_len, &sid, &id, &at))
            return TK_ERR_TAMPERED;
        f->floor = later(f->floor, at);
        if ((e = holder_of(f, sid)) != NULL && memcmp(id, f->doc_id, TK_DOC_ID_LEN) == 0)
            e->reads++;
        return TK_OK;
    }
    if (kind == TK_REC_SHARE_WRITE) {
        struct wnote *w;
        if ((rc = wrote_parse(&wr, body, body_len)) != TK_OK)
            return rc;
        f->floor = later(f->floor, wr.at);
        if (memcmp(wr.d.id, f->doc_id, TK_DOC_ID_LEN) != 0)
            return TK_OK;
        if (f->n_w == TK_SHARE_WRITES_MAX) {
            f->overflow = true;
            return TK_OK;
        }
        w = &f->w[f->n_w++];
        memcpy(w->share_id, wr.share_id, TK_SHARE_ID_LEN);
        w->base_rev = wr.base_rev;
        memcpy(w->base_hash, wr.base_hash, TK_DOC_HASH_LEN);
        w->rev = wr.d.rev;
        memcpy(w->hash, wr.d.hash, TK_DOC_HASH_LEN);
        w->index = index;
        return TK_OK;
    }
    if (kind != TK_REC_SHARE)
        return TK_OK;
    if ((rc = head_parse(&h, body, body_len)) != TK_OK)
        return rc;
    f->floor = later(f->floor, h.created);
    if (!h.incoming) {
        f->floor = later(f->floor, h.issued); /* a sent grant's: this host's clock */
        return TK_OK;
    }
    if (h.part == 0) {
        memset(&f->cur, 0, sizeof f->cur);
        memcpy(f->cur.share_id, h.id, TK_SHARE_ID_LEN);
        holder_state(&f->cur, &h);
        f->cur_open = true;
        if ((e = holder_of(f, h.id)) != NULL) {
            holder_state(e, &h);
            if (!h.revoked)
                e->held = false; /* until a part of this grant has it */
        }
    } else if (!f->cur_open || memcmp(h.id, f->cur.share_id, TK_SHARE_ID_LEN) != 0 ||
               h.seq != f->cur.seq) {
        return TK_ERR_TAMPERED; /* a part without its part 0 */
    }
    held_start(&it, body, body_len);
    while ((more = held_next(&it, &d)) == 1) {
        if (memcmp(d.id, f->doc_id, TK_DOC_ID_LEN) != 0)
            continue;
        /* Its entry counts its reads from now on, whatever the revision. */
        if ((e = holder_of(f, h.id)) == NULL) {
            if (f->n == TK_SHARE_HOLDERS) {
                f->overflow = true;
                continue;
            }
            e = &f->h[f->n++];
            *e = f->cur;
        }
        e->held = true;
        e->grant_rev = d.rev;
        memcpy(e->grant_hash, d.hash, TK_DOC_HASH_LEN);
        e->grant_index = index;
    }
    return more;
}

/*
 * A holder's revisions of the document: its latest grant's and, in a
 * read-write share, the revisions this token wrote on it, each on the one
 * before (same revision and content hash). Found: the one asked for, or
 * the last. A write whose base is no longer in the chain (the sender's
 * grant moved the document on) is not in force.
 */
static void holder_resolve(const struct finder *f, struct holder *e)
{
    const uint8_t *hash = e->grant_hash;
    uint64_t rev = e->grant_rev, index = e->grant_index;
    bool wrote = false, next = true;
    uint32_t i;

    e->found = false;
    if (!e->held)
        return;
    while (f->want != rev && next && e->read_write) {
        next = false;
        for (i = 0; i < f->n_w && !next; i++) {
            const struct wnote *w = &f->w[i];
            if (memcmp(w->share_id, e->share_id, TK_SHARE_ID_LEN) == 0 && w->base_rev == rev &&
                memcmp(w->base_hash, hash, TK_DOC_HASH_LEN) == 0) {
                rev = w->rev; /* base_rev + 1: the chain ends */
                hash = w->hash;
                index = w->index;
                wrote = next = true;
            }
        }
    }
    if (f->want != 0 && f->want != rev)
        return;
    e->found = true;
    e->wrote = wrote;
    e->rev = rev;
    e->index = index;
    memcpy(e->hash, hash, TK_DOC_HASH_LEN);
}

/* Whether a holder's policy allows one more read at `now` (the host's
 * clock, already raised to the token's floor). */
static int holder_verdict(const struct holder *e, int64_t now)
{
    if (e->revoked)
        return TK_ERR_DENIED;
    if (e->expires != 0 && later(now, e->floor) >= e->expires)
        return TK_ERR_EXPIRED;
    if (e->max_reads != 0 && e->reads >= e->max_reads)
        return TK_ERR_DENIED;
    return TK_OK;
}

static int holders_scan(struct tk_call *c, struct finder *f, const uint8_t *doc_id, uint64_t rev)
{
    uint32_t i;
    int rc;
    memset(f, 0, sizeof *f);
    f->doc_id = doc_id;
    f->want = rev;
    f->pass = 1;
    if ((rc = tk_log_scan(c->tk, c->arena, false, find_fn, f)) != TK_OK)
        return rc;
    if (f->overflow)
        return TK_ERR_TOO_LARGE;
    for (i = 0; i < f->n; i++)
        holder_resolve(f, &f->h[i]);
    return TK_OK;
}

/* Pass 2: the chosen holder's revision into *out. */
static int holder_fetch(struct tk_call *c, struct finder *f, const struct holder *e,
                        struct tk_shared_doc *out)
{
    int rc;
    f->pass = 2;
    f->chosen = e;
    f->out = out;
    f->fetched = false;
    if ((rc = tk_log_scan(c->tk, c->arena, false, find_fn, f)) != TK_OK)
        return rc;
    return f->fetched ? TK_OK : TK_ERR_TAMPERED;
}

int tk_share_find_doc(struct tk_call *c, const uint8_t *doc_id, uint64_t rev, bool count_read,
                      struct tk_shared_doc *out)
{
    const struct holder *best = NULL, *refused = NULL;
    struct finder *f;
    int64_t now;
    uint32_t i;
    int rc;

    if ((f = tk_arena_scratch(c->arena, sizeof *f)) == NULL)
        return TK_ERR_NO_MEMORY;
    if ((rc = holders_scan(c, f, doc_id, rev)) != TK_OK)
        return rc;
    now = later(c->now, f->floor);
    for (i = 0; i < f->n; i++) {
        const struct holder *e = &f->h[i];
        if (!e->found)
            continue;
        if (holder_verdict(e, now) == TK_OK) {
            if (best == NULL || e->rev > best->rev)
                best = e;
        } else if (refused == NULL || e->rev > refused->rev) {
            refused = e;
        }
    }
    if (best == NULL) {
        if (refused == NULL)
            return TK_ERR_NOT_FOUND;
        set_reason(c, refused->revoked ? "the share was revoked"
                                       : "the share's policy allows no more reads");
        return holder_verdict(refused, now);
    }
    if ((rc = holder_fetch(c, f, best, out)) != TK_OK)
        return rc;
    if (count_read) {
        Cohort__StoreRecord sr = COHORT__STORE_RECORD__INIT;
        Cohort__ShareRead r = COHORT__SHARE_READ__INIT;
        r.share_id = (ProtobufCBinaryData){TK_SHARE_ID_LEN, (uint8_t *)best->share_id};
        r.doc_id = (ProtobufCBinaryData){TK_DOC_ID_LEN, (uint8_t *)doc_id};
        r.at = later(now, best->floor);
        sr.body_case = COHORT__STORE_RECORD__BODY_SHARE_READ;
        sr.share_read = &r;
        if ((rc = tk_log_append(c->tk, c->arena, &sr)) != TK_OK ||
            (rc = tk_log_commit(c->tk, c->arena)) != TK_OK)
            return rc;
    }
    return TK_OK;
}

/* ------------------------------------------------ the recipient's writes */

/* Whether a read-write holder's share still allows a write at `now`
 * (raised to the token's floor): not revoked, not expired. Reads used up
 * do not stop writes. */
static int write_verdict(struct tk_call *c, const struct holder *e, int64_t now)
{
    if (e->revoked) {
        set_reason(c, "the share was revoked");
        return TK_ERR_DENIED;
    }
    if (e->expires != 0 && later(now, e->floor) >= e->expires) {
        set_reason(c, "the share has expired");
        return TK_ERR_EXPIRED;
    }
    return TK_OK;
}

int tk_share_write_begin(struct tk_call *c, const uint8_t *doc_id, struct tk_share_write *w)
{
    const struct holder *best = NULL, *refused = NULL;
    struct tk_shared_doc *d;
    struct finder *f;
    bool held = false;
    int64_t now;
    uint32_t i;
    int rc;

    if ((f = tk_arena_scratch(c->arena, sizeof *f)) == NULL ||
        (d = tk_arena_scratch(c->arena, sizeof *d)) == NULL)
        return TK_ERR_NO_MEMORY;
    if ((rc = holders_scan(c, f, doc_id, 0)) != TK_OK)
        return rc;
    now = later(c->now, f->floor);
    for (i = 0; i < f->n; i++) {
        const struct holder *e = &f->h[i];
        if (!e->found)
            continue;
        held = true;
        if (!e->read_write)
            continue;
        if (e->revoked || (e->expires != 0 && later(now, e->floor) >= e->expires)) {
            if (refused == NULL || e->rev > refused->rev)
                refused = e;
        } else if (best == NULL || e->rev > best->rev) {
            best = e;
        }
    }
    if (!held)
        return TK_ERR_NOT_FOUND;
    if (best == NULL) {
        if (refused != NULL)
            return write_verdict(c, refused, now);
        set_reason(c, "a received document is read-only");
        return TK_ERR_DENIED;
    }
    if (f->n_w >= TK_SHARE_WRITES_MAX) {
        set_reason(c, "too many revisions of this document wait for its owner's grant");
        return TK_ERR_TOO_LARGE;
    }
    if ((rc = holder_fetch(c, f, best, d)) == TK_OK) {
        memcpy(w->share_id, best->share_id, TK_SHARE_ID_LEN);
        w->revision = d->revision;
        memcpy(w->hash, d->content_hash, TK_DOC_HASH_LEN);
        w->meta_len = d->meta_len;
        memcpy(w->meta, d->meta, d->meta_len);
    }
    sodium_memzero(d, sizeof *d);
    return rc;
}

static bool same_text(const char *a, const char *b)
{
    return strcmp(a != NULL ? a : "", b != NULL ? b : "") == 0;
}

bool tk_share_meta_kept(const Cohort__DocMeta *was, const Cohort__DocMeta *now)
{
    size_t i;
    if (!same_text(was->type, now->type) || !same_text(was->author, now->author) ||
        !same_text(was->subject, now->subject) || was->created != now->created ||
        was->n_tags != now->n_tags)
        return false;
    for (i = 0; i < was->n_tags; i++)
        if (!same_text(was->tags[i], now->tags[i]))
            return false;
    return true;
}

/* The latest part 0 of a share's records: its head (its pointers
 * cleared) and the other token's certificate. */
struct peer {
    const uint8_t *id;
    bool found;
    struct head h;
    uint8_t cert[TK_CERT_MAX];
    size_t cert_len;
};

static int peer_fn(void *ctx, struct tk_arena *a, const uint8_t *plain, size_t len, uint64_t index)
{
    struct peer *p = ctx;
    const uint8_t *body;
    size_t body_len, pos = 0;
    struct tk_wfield f;
    struct head h;
    int rc, more;
    (void)a;
    (void)index;
    if ((rc = tk_record_kind(plain, len, TK_REC_SHARE, &body, &body_len)) != 1)
        return rc;
    if ((rc = head_parse(&h, body, body_len)) != TK_OK)
        return rc;
    if (h.part != 0 || memcmp(h.id, p->id, TK_SHARE_ID_LEN) != 0)
        return TK_OK;
    p->h = h;
    p->h.id = p->h.peer_pk = NULL; /* they point into this record */
    p->found = true;
    p->cert_len = 0;
    while ((more = tk_wire_next(body, body_len, &pos, &f)) == 1)
        if (f.field == 3 && f.wire_type == 2) {
            if (f.len > TK_CERT_MAX)
                return TK_ERR_TAMPERED;
            memcpy(p->cert, f.data, f.len);
            p->cert_len = f.len;
        }
    return more;
}

/*
 * The last DocWrite of a revision written back through a read-write
 * share. DocBegin found the share in force and the base current; no other
 * request ran since (it would have closed the session), but the clock
 * moved: the expiry is checked again. The return grant is written and
 * signed in scratch (after room for the signing prefix, as issue() does),
 * sealed to the sender straight into DocCipher.reply, and wiped; then the
 * ShareWrite (the key, so that this token reads its own write) and the
 * audit line are stored and committed.
 */
int tk_share_write_back(struct tk_call *c, const struct tk_doc_rev *r, const uint8_t *share_id,
                        const uint8_t *base_hash, const uint8_t *cred_id, const char *app)
{
    Cohort__StoreRecord sr = COHORT__STORE_RECORD__INIT;
    Cohort__ShareWrite sw = COHORT__SHARE_WRITE__INIT;
    Cohort__SharedDoc sd = COHORT__SHARED_DOC__INIT;
    Cohort__Certificate *cert;
    Cohort__CertBody *sb = NULL;
    Cohort__DocMeta *meta;
    struct peer *p;
    struct tk_wbuf w;
    uint8_t *buf, *sg, *q;
    size_t doc_len, rg_len, buf_len, sg_len, sealed_len, out_len;
    int rc = TK_OK;

    if ((p = tk_arena_scratch(c->arena, sizeof *p)) == NULL)
        return TK_ERR_NO_MEMORY;
    memset(p, 0, sizeof *p);
    p->id = share_id;
    if ((rc = tk_log_scan(c->tk, c->arena, false, peer_fn, p)) != TK_OK)
        return rc;
    if (!p->found || !p->h.incoming || p->cert_len == 0)
        return TK_ERR_TAMPERED;
    if (p->h.revoked || !p->h.read_write) {
        set_reason(c, "the share no longer allows writing");
        return TK_ERR_DENIED;
    }
    if (p->h.expires != 0 && later(c->now, p->h.issued) >= p->h.expires) {
        set_reason(c, "the share has expired");
        return TK_ERR_EXPIRED;
    }
    cert = (Cohort__Certificate *)tk_unpack(c->arena, &cohort__certificate__descriptor, p->cert,
                                            p->cert_len, &rc);
    if (cert == NULL)
        return rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_TAMPERED;
    if ((rc = cert_shape(&sb, c->arena, cert)) != TK_OK)
        return rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_TAMPERED;
    if (sb->box_pk.len != 32)
        return TK_ERR_TAMPERED;
    meta = (Cohort__DocMeta *)tk_unpack(c->arena, &cohort__doc_meta__descriptor, r->meta,
                                        r->meta_len, &rc);
    if (meta == NULL)
        return rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_TAMPERED;

    /* The new revision, as the sender's grants carry one. */
    sd.doc_id = (ProtobufCBinaryData){TK_DOC_ID_LEN, (uint8_t *)r->doc_id};
    sd.revision = r->revision;
    sd.key = (ProtobufCBinaryData){KEY_LEN, (uint8_t *)r->key};
    sd.content_hash = (ProtobufCBinaryData){TK_DOC_HASH_LEN, (uint8_t *)r->hash};
    sd.size = r->size;
    sd.cipher_size = r->cipher_size;
    sd.meta = meta;
    doc_len = cohort__shared_doc__get_packed_size(&sd);

    /* ReturnGrant { share_id, sender_pk, writer_pk, base_revision,
     * base_hash, doc, written }, after room for the prefix. */
    rg_len = tk_field_len(1, TK_SHARE_ID_LEN) + 2 * tk_field_len(2, TK_PK_LEN) + 1 +
             tk_varint_len(r->revision - 1) + tk_field_len(5, TK_DOC_HASH_LEN) +
             tk_field_len(6, doc_len) + 1 + tk_varint_len((uint64_t)c->now);
    buf_len = SIGNED_LEN(WPREFIX_LEN, rg_len);
    if ((buf = tk_arena_scratch(c->arena, buf_len)) == NULL)
        return TK_ERR_NO_MEMORY;
    w = (struct tk_wbuf){buf + WPREFIX_LEN, rg_len, 0, false};
    tk_w_bytes(&w, 1, share_id, TK_SHARE_ID_LEN);
    tk_w_bytes(&w, 2, sb->sign_pk.data, TK_PK_LEN);
    tk_w_bytes(&w, 3, c->tk->sign_pk, TK_PK_LEN);
    tk_w_uint(&w, 4, r->revision - 1);
    tk_w_bytes(&w, 5, base_hash, TK_DOC_HASH_LEN);
    tk_w_open(&w, 6, doc_len);
    if ((q = tk_w_reserve(&w, doc_len)) != NULL)
        cohort__shared_doc__pack(&sd, q);
    tk_w_uint(&w, 7, (uint64_t)c->now);
    if (w.overflow || w.len != rg_len)
        abort(); /* the length was computed from the same fields */

    /* Signed over the prefix and the return grant, framed as a
     * SignedGrant { write = 3, signature = 2 }, sealed into the answer. */
    sg = sign_grant(c, buf, TK_SIG_SHARE_WRITE, WPREFIX_LEN, 3, rg_len, &sg_len);
    sealed_len = sg_len + crypto_box_SEALBYTES;

    /* DocCipher.reply: ShareOut { share_id, seq, recipient (the sender,
     * whom it goes to), sealed, refs (the new revision) }. */
    out_len = tk_field_len(1, TK_SHARE_ID_LEN) + 1 + tk_varint_len(p->h.seq) +
              tk_field_len(3, p->cert_len) + tk_field_len(4, sealed_len) +
              tk_field_len(5, tk_doc_ref_len(r->revision, r->size, r->cipher_size));
    tk_w_open(c->out, 3, out_len);
    tk_w_bytes(c->out, 1, share_id, TK_SHARE_ID_LEN);
    tk_w_uint(c->out, 2, p->h.seq);
    tk_w_bytes(c->out, 3, p->cert, p->cert_len);
    tk_w_open(c->out, 4, sealed_len);
    if ((q = tk_w_reserve(c->out, sealed_len)) != NULL &&
        crypto_box_seal(q, sg, sg_len, sb->box_pk.data) != 0)
        rc = TK_ERR_RANDOM;
    tk_doc_ref_write(c->out, 5, r->doc_id, r->revision, r->hash, r->size, r->cipher_size);
    sodium_memzero(buf, buf_len);
    if (rc != TK_OK)
        return rc;
    if (c->out->overflow)
        return TK_ERR_RESPONSE_SPACE;

    /* This token's own copy, then the audit line, in one commit. */
    sw.share_id = (ProtobufCBinaryData){TK_SHARE_ID_LEN, (uint8_t *)share_id};
    sw.base_revision = r->revision - 1;
    sw.base_hash = (ProtobufCBinaryData){TK_DOC_HASH_LEN, (uint8_t *)base_hash};
    sw.doc = &sd;
    sw.at = c->now;
    sr.body_case = COHORT__STORE_RECORD__BODY_SHARE_WRITE;
    sr.share_write = &sw;
    if ((rc = tk_log_append(c->tk, c->arena, &sr)) != TK_OK ||
        (rc = tk_audit_event_by(c, "share.write", r->doc_id, TK_DOC_ID_LEN, cred_id, app, true)) !=
            TK_OK)
        return rc;
    return tk_log_commit(c->tk, c->arena);
}

/* ------------------------------------------------- the sender's resolution */

/* One document of a share, as it stands in the log now. */
struct entry {
    uint8_t id[TK_DOC_ID_LEN];
    uint64_t rev;   /* its latest revision; 0: not one of this token's documents */
    uint64_t index; /* the log record of that revision */
    uint32_t len;   /* that DocRecord's bytes: the SharedDoc's */
    bool received;  /* not this token's, but held from a received share */
    bool in;        /* in the grant */
    uint8_t hash[TK_DOC_HASH_LEN];
    uint64_t size, cipher_size;
};

struct resolver {
    const Cohort__PermRule *selector; /* NULL: by id, the entries given */
    uint32_t n;
    struct entry e[TK_SHARE_DOCS_MAX];
    int pass;
    struct tk_wbuf *grant; /* pass 2: where the SharedDocs go */
    uint32_t written;
};

static struct entry *entry_of(struct resolver *r, const uint8_t *id)
{
    uint32_t i;
    for (i = 0; i < r->n; i++)
        if (memcmp(r->e[i].id, id, TK_DOC_ID_LEN) == 0)
            return &r->e[i];
    return NULL;
}

/* Whether a DocRecord's current metadata matches the selector. */
static int record_matches(const Cohort__PermRule *sel, struct tk_arena *a, const uint8_t *body,
                          size_t len, bool *match)
{
    struct tk_wfield f;
    size_t pos = 0;
    int more, rc = TK_OK;
    *match = false;
    while ((more = tk_wire_next(body, len, &pos, &f)) == 1)
        if (f.field == 7 && f.wire_type == 2) {
            Cohort__DocMeta *m =
                (Cohort__DocMeta *)tk_unpack(a, &cohort__doc_meta__descriptor, f.data, f.len, &rc);
            if (m == NULL)
                return rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_TAMPERED;
            *match = tk_rule_matches(sel, m);
            return TK_OK;
        }
    return TK_ERR_TAMPERED;
}

/* Hash and sizes of a DocRecord, for the grant's refs. */
static int record_ref(struct entry *e, const uint8_t *body, size_t len)
{
    struct tk_wfield f;
    size_t pos = 0;
    bool hash = false;
    int more;
    while ((more = tk_wire_next(body, len, &pos, &f)) == 1) {
        if (f.field == 4 && f.wire_type == 2 && f.len == TK_DOC_HASH_LEN) {
            memcpy(e->hash, f.data, TK_DOC_HASH_LEN);
            hash = true;
        } else if (f.field == 5 && f.wire_type == 0) {
            e->size = f.varint;
        } else if (f.field == 6 && f.wire_type == 0) {
            e->cipher_size = f.varint;
        }
    }
    return more == 0 && hash ? TK_OK : TK_ERR_TAMPERED;
}

static int resolve_fn(void *ctx, struct tk_arena *a, const uint8_t *plain, size_t len,
                      uint64_t index)
{
    struct resolver *r = ctx;
    const uint8_t *body, *id;
    size_t body_len;
    struct held_iter it;
    struct held d;
    struct entry *e;
    struct head h;
    uint32_t kind, i;
    uint64_t rev;
    bool match;
    int rc, more;

    if ((rc = tk_record_body(plain, len, &kind, &body, &body_len)) != TK_OK)
        return rc;
    if (r->pass == 2) {
        if (kind != TK_REC_DOC)
            return TK_OK;
        for (i = 0; i < r->n; i++)
            if (r->e[i].in && r->e[i].index == index) {
                if (body_len != r->e[i].len)
                    return TK_ERR_TAMPERED;
                if ((rc = record_ref(&r->e[i], body, body_len)) != TK_OK)
                    return rc;
                tk_w_bytes(r->grant, 6, body, body_len);
                r->written++;
            }
        return TK_OK;
    }
    if (kind == TK_REC_SHARE && r->selector == NULL) {
        /* Ids held from a received share: no re-share. */
        if ((rc = head_parse(&h, body, body_len)) != TK_OK)
            return rc;
        if (!h.incoming)
            return TK_OK;
        held_start(&it, body, body_len);
        while ((more = held_next(&it, &d)) == 1)
            if ((e = entry_of(r, d.id)) != NULL)
                e->received = true;
        return more;
    }
    if (kind != TK_REC_DOC)
        return TK_OK;
    if (tk_doc_ident(body, body_len, &id, &rev) != TK_OK)
        return TK_ERR_TAMPERED;
    e = entry_of(r, id);
    if (r->selector != NULL) {
        if ((rc = record_matches(r->selector, a, body, body_len, &match)) != TK_OK)
            return rc;
        if (!match) {
            if (e != NULL) { /* its latest revision no longer matches */
                i = (uint32_t)(e - r->e);
                memmove(&r->e[i], &r->e[i + 1], (r->n - i - 1) * sizeof r->e[0]);
                r->n--;
            }
            return TK_OK;
        }
        if (e == NULL) {
            if (r->n == TK_SHARE_DOCS_MAX)
                return TK_OK; /* a selector takes the first that fit */
            e = &r->e[r->n++];
            memset(e, 0, sizeof *e);
            memcpy(e->id, id, TK_DOC_ID_LEN);
        }
    } else if (e == NULL) {
        return TK_OK;
    }
    e->rev = rev;
    e->index = index;
    e->len = (uint32_t)body_len;
    return TK_OK;
}

/* What a grant holds besides its documents. */
struct issue {
    const uint8_t *share_id;
    uint64_t seq;
    int64_t created;
    const Cohort__SharePolicy *policy;
    const Cohort__PermRule *selector;
    size_t n_ids;
    const ProtobufCBinaryData *ids;
    const Cohort__Certificate *recipient;
    const Cohort__CertBody *recipient_body;
    bool revoked;
};

static size_t grant_fixed_len(const struct issue *is, int64_t now)
{
    return tk_field_len(1, TK_SHARE_ID_LEN) + 1 + tk_varint_len(is->seq) +
           tk_field_len(4, TK_PK_LEN) +
           tk_field_len(5, cohort__share_policy__get_packed_size(is->policy)) +
           (is->revoked ? 2u : 0u) + 1 + tk_varint_len((uint64_t)now);
}

/*
 * Resolve a share now: pass 1 over the log, then the documents that fit,
 * in the entries' order, and the digest of their (id, revision) list.
 * Entries that are not this token's documents stay out.
 */
static int resolve(struct tk_call *c, struct resolver *r, const struct issue *is,
                   uint8_t digest[32])
{
    crypto_generichash_state st;
    size_t total = grant_fixed_len(is, c->now) + tk_field_len(3, c->tk->cert_len);
    uint8_t part[TK_DOC_ID_LEN + 8];
    uint32_t i;
    int rc;

    r->pass = 1;
    if ((rc = tk_log_scan(c->tk, c->arena, false, resolve_fn, r)) != TK_OK)
        return rc;
    crypto_generichash_init(&st, NULL, 0, 32);
    for (i = 0; i < r->n; i++) {
        struct entry *e = &r->e[i];
        size_t add = tk_field_len(6, e->len);
        e->in = e->rev != 0 && total + add <= TK_SHARE_GRANT_MAX;
        if (!e->in)
            continue;
        total += add;
        memcpy(part, e->id, TK_DOC_ID_LEN);
        tk_put_le64(part + TK_DOC_ID_LEN, e->rev);
        crypto_generichash_update(&st, part, sizeof part);
    }
    crypto_generichash_final(&st, digest, 32);
    return TK_OK;
}

/* The sent share's record after a grant: what it asked for, what the
 * grant holds (refs) and its digest. */
static int store_sent(struct tk_call *c, const struct issue *is, const struct resolver *r,
                      const uint8_t digest[32], uint64_t seq)
{
    Cohort__StoreRecord sr = COHORT__STORE_RECORD__INIT;
    Cohort__ShareRecord rec = COHORT__SHARE_RECORD__INIT;
    Cohort__ShareInfo info = COHORT__SHARE_INFO__INIT;
    Cohort__DocRef *refs, **refp;
    uint32_t i, n = 0;

    for (i = 0; i < r->n; i++)
        n += r->e[i].in;
    refs = tk_arena_scratch(c->arena, (n + 1) * sizeof *refs);
    refp = tk_arena_scratch(c->arena, (n + 1) * sizeof *refp);
    if (refs == NULL || refp == NULL)
        return TK_ERR_NO_MEMORY;
    n = 0;
    for (i = 0; i < r->n; i++) {
        const struct entry *e = &r->e[i];
        if (!e->in)
            continue;
        cohort__doc_ref__init(&refs[n]);
        refs[n].doc_id = (ProtobufCBinaryData){TK_DOC_ID_LEN, (uint8_t *)e->id};
        refs[n].revision = e->rev;
        refs[n].content_hash = (ProtobufCBinaryData){TK_DOC_HASH_LEN, (uint8_t *)e->hash};
        refs[n].size = e->size;
        refs[n].cipher_size = e->cipher_size;
        refp[n] = &refs[n];
        n++;
    }
    info.share_id = (ProtobufCBinaryData){TK_SHARE_ID_LEN, (uint8_t *)is->share_id};
    info.incoming = false;
    info.peer_pk = is->recipient_body->sign_pk;
    info.peer = is->recipient_body->subject;
    info.policy = (Cohort__SharePolicy *)is->policy;
    info.seq = seq;
    info.n_refs = n;
    info.refs = refp;
    info.revoked = is->revoked;
    info.created = is->created;
    info.selector = (Cohort__PermRule *)is->selector;
    info.issued = c->now;
    rec.info = &info;
    rec.peer_cert = (Cohort__Certificate *)is->recipient;
    rec.grant_digest = (ProtobufCBinaryData){32, (uint8_t *)digest};
    rec.n_doc_ids = is->n_ids;
    rec.doc_ids = (ProtobufCBinaryData *)is->ids;
    sr.body_case = COHORT__STORE_RECORD__BODY_SHARE;
    sr.share = &rec;
    return tk_log_append(c->tk, c->arena, &sr);
}

/*
 * Issue a share's next grant (is->seq): write it, with the documents the
 * resolution put in (a second scan copies their records), sign it, seal
 * it to the recipient straight into the ShareOut answer, wipe it; then
 * store the share's new record and commit.
 */
static int issue(struct tk_call *c, const struct issue *is, struct resolver *r,
                 const uint8_t digest[32])
{
    size_t grant_len = grant_fixed_len(is, c->now) + tk_field_len(3, c->tk->cert_len);
    size_t buf_len, sg_len, sealed_len, out_len, cert_len, mark;
    uint8_t *buf, *sg, *p;
    struct tk_wbuf w;
    uint32_t i, n_in = 0;
    int rc = TK_OK;

    for (i = 0; i < r->n; i++)
        if (r->e[i].in) {
            grant_len += tk_field_len(6, r->e[i].len);
            n_in++;
        }
    buf_len = SIGNED_LEN(PREFIX_LEN, grant_len);
    mark = tk_arena_mark(c->arena);
    if ((buf = tk_arena_scratch(c->arena, buf_len)) == NULL)
        return TK_ERR_NO_MEMORY;

    /* The grant, after room for the prefix. */
    w = (struct tk_wbuf){buf + PREFIX_LEN, grant_len, 0, false};
    tk_w_bytes(&w, 1, is->share_id, TK_SHARE_ID_LEN);
    tk_w_uint(&w, 2, is->seq);
    tk_w_bytes(&w, 3, c->tk->cert, c->tk->cert_len);
    tk_w_bytes(&w, 4, is->recipient_body->sign_pk.data, TK_PK_LEN);
    tk_w_message(&w, 5, &is->policy->base);
    if (n_in > 0) {
        r->pass = 2;
        r->grant = &w;
        r->written = 0;
        rc = tk_log_scan(c->tk, c->arena, false, resolve_fn, r);
        if (rc == TK_OK && r->written != n_in)
            rc = TK_ERR_TAMPERED;
    }
    if (is->revoked)
        tk_w_uint(&w, 7, 1);
    tk_w_uint(&w, 8, (uint64_t)c->now);
    if (rc == TK_OK && (w.overflow || w.len != grant_len))
        abort(); /* the length was computed from the same fields */

    /* Signed over the prefix and the grant, then framed as a SignedGrant. */
    if (rc == TK_OK) {
        sg = sign_grant(c, buf, TK_SIG_SHARE, PREFIX_LEN, 1, grant_len, &sg_len);
        sealed_len = sg_len + crypto_box_SEALBYTES;

        /* ShareOut { share_id, seq, recipient, sealed, refs, revoked } */
        cert_len = cohort__certificate__get_packed_size(is->recipient);
        out_len = tk_field_len(1, TK_SHARE_ID_LEN) + 1 + tk_varint_len(is->seq) +
                  tk_field_len(3, cert_len) + tk_field_len(4, sealed_len) + (is->revoked ? 2u : 0u);
        for (i = 0; i < r->n; i++)
            if (r->e[i].in)
                out_len +=
                    tk_field_len(5, tk_doc_ref_len(r->e[i].rev, r->e[i].size, r->e[i].cipher_size));
        tk_w_open(c->out, 24, out_len);
        tk_w_bytes(c->out, 1, is->share_id, TK_SHARE_ID_LEN);
        tk_w_uint(c->out, 2, is->seq);
        tk_w_message(c->out, 3, &is->recipient->base);
        tk_w_open(c->out, 4, sealed_len);
        if ((p = tk_w_reserve(c->out, sealed_len)) != NULL &&
            crypto_box_seal(p, sg, sg_len, is->recipient_body->box_pk.data) != 0)
            rc = TK_ERR_RANDOM;
        for (i = 0; i < r->n; i++)
            if (r->e[i].in)
                tk_doc_ref_write(c->out, 5, r->e[i].id, r->e[i].rev, r->e[i].hash, r->e[i].size,
                                 r->e[i].cipher_size);
        if (is->revoked)
            tk_w_uint(c->out, 6, 1);
    }
    sodium_memzero(buf, buf_len);
    tk_arena_release(c->arena, mark);
    if (rc != TK_OK)
        return rc;
    if (c->out->overflow)
        return TK_ERR_RESPONSE_SPACE;
    if ((rc = store_sent(c, is, r, digest, is->seq)) != TK_OK)
        return rc;
    return tk_log_commit(c->tk, c->arena);
}

/* ------------------------------------------------------------- creating */

static int policy_check(struct tk_call *c, const Cohort__SharePolicy *p)
{
    if (p->reshare) {
        set_reason(c, "a received document can never be shared on");
        return TK_ERR_UNSUPPORTED;
    }
    if (p->expires < 0)
        return TK_ERR_MALFORMED;
    if (p->expires != 0 && p->expires <= c->now)
        return TK_ERR_EXPIRED;
    return TK_OK;
}

static int share_create(struct tk_call *c, const Cohort__ShareCreate *req)
{
    const Cohort__SharePolicy *policy = req->policy ? req->policy : &default_policy;
    Cohort__CertBody *rb = NULL;
    struct resolver *r;
    struct issue is;
    uint8_t share_id[TK_SHARE_ID_LEN], digest[32];
    size_t i, j;
    int rc;

    if ((rc = tk_cred_owner(c)) != TK_OK)
        return rc;
    if (!tk_has_flag(c->tk, TK_FLAG_PROVISIONED))
        return TK_ERR_NOT_PROVISIONED;
    if ((req->n_docs == 0) == (req->selector == NULL))
        return TK_ERR_MALFORMED; /* ids or a selector, one of them */
    if (req->n_docs > TK_SHARE_DOCS_MAX)
        return TK_ERR_TOO_LARGE;
    for (i = 0; i < req->n_docs; i++) {
        if (req->docs[i].len != TK_DOC_ID_LEN)
            return TK_ERR_MALFORMED;
        for (j = 0; j < i; j++)
            if (memcmp(req->docs[i].data, req->docs[j].data, TK_DOC_ID_LEN) == 0)
                return TK_ERR_MALFORMED;
    }
    if (req->selector != NULL && (rc = tk_rule_check(req->selector, false)) != TK_OK)
        return rc;
    if ((rc = policy_check(c, policy)) != TK_OK)
        return rc;
    if ((rc = peer_cert_check(c, req->recipient, &rb)) != TK_OK)
        return rc;
    if (sodium_memcmp(rb->sign_pk.data, c->tk->sign_pk, TK_PK_LEN) == 0) {
        set_reason(c, "a token does not share with itself");
        return TK_ERR_DENIED;
    }

    if ((r = tk_arena_scratch(c->arena, sizeof *r)) == NULL)
        return TK_ERR_NO_MEMORY;
    memset(r, 0, sizeof *r);
    r->selector = req->selector;
    for (i = 0; i < req->n_docs; i++)
        memcpy(r->e[r->n++].id, req->docs[i].data, TK_DOC_ID_LEN);
    randombytes_buf(share_id, sizeof share_id);
    is = (struct issue){share_id,    1,         c->now,         policy, req->selector,
                        req->n_docs, req->docs, req->recipient, rb,     false};
    if ((rc = resolve(c, r, &is, digest)) != TK_OK)
        return rc;
    for (i = 0; i < r->n; i++) {
        if (r->e[i].rev == 0 && r->e[i].received) {
            set_reason(c, "a received document cannot be shared on");
            return TK_ERR_DENIED;
        }
        if (r->e[i].rev == 0)
            return TK_ERR_NOT_FOUND;
        if (!r->e[i].in)
            return TK_ERR_TOO_LARGE;
    }
    return issue(c, &is, r, digest);
}

/* ----------------------------------------------------- sync and revoke */

/* A sent share's latest record, decoded into scratch. */
struct sent {
    Cohort__ShareRecord *rec;
    Cohort__CertBody *recipient;
};

struct loader {
    uint64_t index;
    uint8_t *buf;
    size_t len;
    bool found;
};

/* The record at l->index: its length (buf NULL), then its bytes. */
static int load_fn(void *ctx, struct tk_arena *a, const uint8_t *plain, size_t len, uint64_t index)
{
    struct loader *l = ctx;
    const uint8_t *body;
    size_t body_len;
    uint32_t kind;
    int rc;
    (void)a;
    if (index != l->index)
        return TK_OK;
    if ((rc = tk_record_body(plain, len, &kind, &body, &body_len)) != TK_OK)
        return rc;
    if (kind != TK_REC_SHARE || (l->buf != NULL && body_len != l->len))
        return TK_ERR_TAMPERED;
    if (l->buf != NULL)
        memcpy(l->buf, body, body_len);
    l->len = body_len;
    l->found = true;
    return TK_SCAN_STOP;
}

/* Two scans, so that the copy takes only the record's own size. */
static int sent_load(struct tk_call *c, struct sent *s, uint64_t index)
{
    struct loader l = {index, NULL, 0, false};
    Cohort__ShareInfo *in;
    int rc = TK_OK;

    if ((rc = tk_log_scan(c->tk, c->arena, false, load_fn, &l)) != TK_OK)
        return rc;
    if (!l.found)
        return TK_ERR_TAMPERED;
    if ((l.buf = tk_arena_scratch(c->arena, l.len)) == NULL)
        return TK_ERR_NO_MEMORY;
    l.found = false;
    if ((rc = tk_log_scan(c->tk, c->arena, false, load_fn, &l)) != TK_OK)
        return rc;
    if (!l.found)
        return TK_ERR_TAMPERED;
    s->rec = (Cohort__ShareRecord *)tk_unpack(c->arena, &cohort__share_record__descriptor, l.buf,
                                              l.len, &rc);
    if (s->rec == NULL)
        return rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_TAMPERED;
    in = s->rec->info;
    if (in == NULL || in->incoming || in->share_id.len != TK_SHARE_ID_LEN || in->seq == 0 ||
        s->rec->grant_digest.len != 32 || s->rec->n_doc_ids > TK_SHARE_DOCS_MAX ||
        (s->rec->n_doc_ids == 0) == (in->selector == NULL) ||
        cert_shape(&s->recipient, c->arena, s->rec->peer_cert) != TK_OK ||
        s->recipient->box_pk.len != 32)
        return TK_ERR_TAMPERED;
    return TK_OK;
}

/* A sent share's next grant: by id, the ids it asked for; by selector, its
 * current matches. Sets *same when they have not changed (and issues
 * nothing then, unless revoking or given a new policy). */
static int regrant(struct tk_call *c, const struct sent *s, bool revoke,
                   const Cohort__SharePolicy *new_policy, bool *same)
{
    Cohort__ShareInfo *in = s->rec->info;
    const Cohort__SharePolicy *policy = new_policy   ? new_policy
                                        : in->policy ? in->policy
                                                     : &default_policy;
    struct resolver *r;
    struct issue is;
    uint8_t digest[32];
    size_t i;
    int rc;

    if ((r = tk_arena_scratch(c->arena, sizeof *r)) == NULL)
        return TK_ERR_NO_MEMORY;
    memset(r, 0, sizeof *r);
    r->selector = in->selector;
    for (i = 0; i < s->rec->n_doc_ids; i++) {
        if (s->rec->doc_ids[i].len != TK_DOC_ID_LEN)
            return TK_ERR_TAMPERED;
        memcpy(r->e[r->n++].id, s->rec->doc_ids[i].data, TK_DOC_ID_LEN);
    }
    is = (struct issue){
        in->share_id.data, in->seq + 1,     in->created,       policy,       in->selector,
        s->rec->n_doc_ids, s->rec->doc_ids, s->rec->peer_cert, s->recipient, revoke};
    if (revoke) {
        r->n = 0; /* a revoking grant holds nothing */
        crypto_generichash(digest, sizeof digest, NULL, 0, NULL, 0);
    } else {
        if ((rc = resolve(c, r, &is, digest)) != TK_OK)
            return rc;
        *same = memcmp(digest, s->rec->grant_digest.data, sizeof digest) == 0;
        if (*same && new_policy == NULL)
            return TK_OK;
    }
    return issue(c, &is, r, digest);
}

/* The latest record of a share id: its index, and what it says. */
struct latest {
    const uint8_t *id;
    bool found, incoming, revoked;
    uint64_t index;
};

static int latest_fn(void *ctx, struct tk_arena *a, const uint8_t *plain, size_t len,
                     uint64_t index)
{
    struct latest *l = ctx;
    const uint8_t *body;
    size_t body_len;
    struct head h;
    int rc;
    (void)a;
    if ((rc = tk_record_kind(plain, len, TK_REC_SHARE, &body, &body_len)) != 1)
        return rc;
    if ((rc = head_parse(&h, body, body_len)) != TK_OK)
        return rc;
    if (h.part != 0 || memcmp(h.id, l->id, TK_SHARE_ID_LEN) != 0)
        return TK_OK;
    l->found = true;
    l->incoming = h.incoming;
    l->revoked = h.revoked;
    l->index = index;
    return TK_OK;
}

/* The latest record of a share this token made: TK_ERR_NOT_FOUND for an
 * unknown id, TK_ERR_DENIED (saying not_mine) for a received share. */
static int sent_latest(struct tk_call *c, struct latest *l, const uint8_t *id, const char *not_mine)
{
    int rc;
    *l = (struct latest){id, false, false, false, 0};
    if ((rc = tk_log_scan(c->tk, c->arena, false, latest_fn, l)) != TK_OK)
        return rc;
    if (!l->found)
        return TK_ERR_NOT_FOUND;
    if (l->incoming) {
        set_reason(c, not_mine);
        return TK_ERR_DENIED;
    }
    return TK_OK;
}

static int share_revoke(struct tk_call *c, const Cohort__ShareRevoke *req)
{
    struct latest l = {NULL, false, false, false, 0};
    struct sent s;
    bool same = false;
    int rc;

    if ((rc = tk_cred_owner(c)) != TK_OK)
        return rc;
    if (!tk_has_flag(c->tk, TK_FLAG_PROVISIONED))
        return TK_ERR_NOT_PROVISIONED;
    if (req->share_id.len != TK_SHARE_ID_LEN)
        return TK_ERR_MALFORMED;
    if ((rc = sent_latest(c, &l, req->share_id.data, "only the sender revokes a share")) != TK_OK)
        return rc;
    if ((rc = sent_load(c, &s, l.index)) != TK_OK)
        return rc;
    return regrant(c, &s, true, NULL, &same);
}

/* A new policy for a share this token made: its next grant carries it. A
 * revocation is final. */
static int share_update(struct tk_call *c, const Cohort__ShareUpdate *req)
{
    struct latest l = {NULL, false, false, false, 0};
    struct sent s;
    bool same = false;
    int rc;

    if ((rc = tk_cred_owner(c)) != TK_OK)
        return rc;
    if (!tk_has_flag(c->tk, TK_FLAG_PROVISIONED))
        return TK_ERR_NOT_PROVISIONED;
    if (req->share_id.len != TK_SHARE_ID_LEN || req->policy == NULL)
        return TK_ERR_MALFORMED;
    if ((rc = policy_check(c, req->policy)) != TK_OK)
        return rc;
    if ((rc = sent_latest(c, &l, req->share_id.data, "only the sender changes a share")) != TK_OK)
        return rc;
    if (l.revoked) {
        set_reason(c, "the share was revoked");
        return TK_ERR_DENIED;
    }
    if ((rc = sent_load(c, &s, l.index)) != TK_OK)
        return rc;
    return regrant(c, &s, false, req->policy, &same);
}

/* A batch of sent shares: the first TK_SHARE_BATCH share ids met at or
 * after the cursor, each with its latest record. */
struct batch {
    uint64_t cursor;
    int64_t now;
    uint32_t n;
    struct {
        uint8_t id[TK_SHARE_ID_LEN];
        uint64_t index;
        bool over; /* revoked or expired: never out of date */
    } s[TK_SHARE_BATCH];
    uint64_t next; /* where the next batch starts; UINT64_MAX: none */
};

static int batch_fn(void *ctx, struct tk_arena *a, const uint8_t *plain, size_t len, uint64_t index)
{
    struct batch *b = ctx;
    const uint8_t *body;
    size_t body_len;
    struct head h;
    uint32_t i;
    int rc;
    (void)a;
    if (index < b->cursor)
        return TK_OK;
    if ((rc = tk_record_kind(plain, len, TK_REC_SHARE, &body, &body_len)) != 1)
        return rc;
    if ((rc = head_parse(&h, body, body_len)) != TK_OK)
        return rc;
    if (h.incoming || h.part != 0)
        return TK_OK;
    for (i = 0; i < b->n; i++)
        if (memcmp(b->s[i].id, h.id, TK_SHARE_ID_LEN) == 0)
            break;
    if (i == b->n) {
        if (b->n == TK_SHARE_BATCH) {
            if (b->next == UINT64_MAX)
                b->next = index;
            return TK_OK;
        }
        memcpy(b->s[b->n++].id, h.id, TK_SHARE_ID_LEN);
    }
    b->s[i].index = index;
    b->s[i].over = h.revoked || (h.expires != 0 && h.expires <= b->now);
    return TK_OK;
}

int tk_do_share_sync(struct tk_call *c, const Cohort__ShareSync *req)
{
    struct batch *b;
    uint32_t i;
    int rc;

    (void)req;
    if ((rc = tk_cred_owner(c)) != TK_OK)
        return rc;
    if (!tk_has_flag(c->tk, TK_FLAG_PROVISIONED))
        return TK_ERR_NOT_PROVISIONED;
    if ((b = tk_arena_scratch(c->arena, sizeof *b)) == NULL)
        return TK_ERR_NO_MEMORY;
    memset(b, 0, sizeof *b);
    b->now = c->now;
    for (;;) {
        b->n = 0;
        b->next = UINT64_MAX;
        if ((rc = tk_log_scan(c->tk, c->arena, false, batch_fn, b)) != TK_OK)
            return rc;
        for (i = 0; i < b->n; i++) {
            size_t mark = tk_arena_mark(c->arena);
            struct sent s;
            bool same = false;
            if (b->s[i].over)
                continue;
            if ((rc = sent_load(c, &s, b->s[i].index)) != TK_OK ||
                (rc = regrant(c, &s, false, NULL, &same)) != TK_OK)
                return rc;
            if (!same)
                return TK_OK;
            tk_arena_release(c->arena, mark);
        }
        if (b->next == UINT64_MAX)
            return TK_OK; /* nothing out of date: no ShareOut */
        b->cursor = b->next;
    }
}

/* ------------------------------------------------------------- accepting */

/* A grant, read field by field (pointers into the opened seal). */
struct grant {
    const uint8_t *share_id, *recipient_pk;
    uint64_t seq;
    Cohort__Certificate *sender;
    const Cohort__SharePolicy *policy;
    uint32_t n_docs;
    const uint8_t *doc[TK_SHARE_DOCS_MAX];
    size_t doc_len[TK_SHARE_DOCS_MAX];
    const uint8_t *doc_id[TK_SHARE_DOCS_MAX];
    bool revoked;
    int64_t issued;
};

static int grant_parse(struct grant *g, struct tk_arena *a, const uint8_t *p, size_t len)
{
    struct tk_wfield f;
    size_t pos = 0;
    uint32_t seen = 0;
    uint64_t rev;
    int more, rc = TK_OK;

    memset(g, 0, sizeof *g);
    g->policy = &default_policy;
    while ((more = tk_wire_next(p, len, &pos, &f)) == 1) {
        uint32_t bit = f.field < 32 ? 1u << f.field : 0;
        bool bytes = f.wire_type == 2;
        if (f.field >= 1 && f.field <= 8 && f.field != 6) {
            if (seen & bit)
                return TK_ERR_MALFORMED; /* a field given twice */
            seen |= bit;
            if (bytes != (f.field == 1 || f.field == 3 || f.field == 4 || f.field == 5) ||
                (!bytes && f.wire_type != 0))
                return TK_ERR_MALFORMED;
        }
        switch (f.field) {
        case 1:
            if (f.len != TK_SHARE_ID_LEN)
                return TK_ERR_MALFORMED;
            g->share_id = f.data;
            break;
        case 2:
            g->seq = f.varint;
            break;
        case 3:
            g->sender = (Cohort__Certificate *)tk_unpack(a, &cohort__certificate__descriptor,
                                                         f.data, f.len, &rc);
            if (g->sender == NULL)
                return rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_BAD_CERT;
            break;
        case 4:
            if (f.len != TK_PK_LEN)
                return TK_ERR_MALFORMED;
            g->recipient_pk = f.data;
            break;
        case 5:
            g->policy = (Cohort__SharePolicy *)tk_unpack(a, &cohort__share_policy__descriptor,
                                                         f.data, f.len, &rc);
            if (g->policy == NULL)
                return rc;
            break;
        case 6:
            if (f.wire_type != 2)
                return TK_ERR_MALFORMED;
            if (g->n_docs == TK_SHARE_DOCS_MAX)
                return TK_ERR_TOO_LARGE;
            if (tk_doc_ident(f.data, f.len, &g->doc_id[g->n_docs], &rev) != TK_OK)
                return TK_ERR_MALFORMED;
            g->doc[g->n_docs] = f.data;
            g->doc_len[g->n_docs] = f.len;
            g->n_docs++;
            break;
        case 7:
            g->revoked = f.varint != 0;
            break;
        case 8:
            g->issued = (int64_t)f.varint;
            break;
        default:
            break;
        }
    }
    if (more < 0)
        return more;
    if (g->share_id == NULL || g->seq == 0 || g->sender == NULL || g->recipient_pk == NULL)
        return TK_ERR_MALFORMED;
    return TK_OK;
}

/* What the log says of a grant about to be accepted. */
struct acceptor {
    const struct grant *g;
    const uint8_t *sender_pk;
    bool known, outgoing, other_sender, revoked;
    uint64_t seq;
    /* What the share holds now (a revocation keeps it, without keys). */
    uint32_t n_held;
    struct {
        uint8_t id[TK_DOC_ID_LEN], hash[TK_DOC_HASH_LEN];
        uint64_t rev, size, cipher_size;
    } held[TK_SHARE_DOCS_MAX];
    bool own_doc;
    uint32_t reads[TK_SHARE_DOCS_MAX];
    /* Other senders' shares whose latest grant holds one of the ids. */
    struct {
        uint8_t id[TK_SHARE_ID_LEN];
        uint32_t mask;
    } clash[TK_SHARE_HOLDERS];
    uint32_t n_clash;
    bool overflow;
    uint8_t cur[TK_SHARE_ID_LEN];
    uint64_t cur_seq;
    bool cur_other, cur_open;
    /* This token's writes through the share: whether one no longer
     * chains on the new grant (it is then erased). */
    struct chain *chain;
    bool drop_write;
};

static int grant_doc_index(const struct grant *g, const uint8_t *id)
{
    uint32_t i;
    for (i = 0; i < g->n_docs; i++)
        if (memcmp(g->doc_id[i], id, TK_DOC_ID_LEN) == 0)
            return (int)i;
    return -1;
}

/*
 * The revisions this token wrote through a read-write share, when a new
 * grant of it comes: for each of the grant's documents, the revision a
 * write must be on to stay in force (the grant's, then each write kept in
 * turn, in log order, which is the order they were written in). A write
 * on anything else (the sender took it, or refused it, or the document
 * left the share, or the share is revoked or read-only now) is dropped.
 */
struct chain {
    uint64_t rev[TK_SHARE_DOCS_MAX];
    uint8_t hash[TK_SHARE_DOCS_MAX][TK_DOC_HASH_LEN];
};

static void chain_start(struct chain *ch, const struct grant *g)
{
    struct held d;
    uint32_t i;
    for (i = 0; i < g->n_docs; i++) {
        ch->rev[i] = 0;
        if (held_fields(&d, g->doc[i], g->doc_len[i], false)) { /* checked by the decode */
            ch->rev[i] = d.rev;
            memcpy(ch->hash[i], d.hash, TK_DOC_HASH_LEN);
        }
    }
}

static bool chain_keeps(struct chain *ch, const struct grant *g, const struct wrote *w)
{
    int k;
    if (g->revoked || !g->policy->read_write || (k = grant_doc_index(g, w->d.id)) < 0 ||
        w->base_rev != ch->rev[k] || memcmp(w->base_hash, ch->hash[k], TK_DOC_HASH_LEN) != 0)
        return false;
    ch->rev[k] = w->d.rev;
    memcpy(ch->hash[k], w->d.hash, TK_DOC_HASH_LEN);
    return true;
}

static int accept_fn(void *ctx, struct tk_arena *a, const uint8_t *plain, size_t len,
                     uint64_t index)
{
    struct acceptor *x = ctx;
    const uint8_t *body, *id, *sid;
    size_t body_len;
    struct held_iter it;
    struct held d;
    struct head h;
    uint32_t kind, i;
    uint64_t rev;
    int64_t at;
    int rc, more, k;
    (void)a;
    (void)index;

    if ((rc = tk_record_body(plain, len, &kind, &body, &body_len)) != TK_OK)
        return rc;
    if (kind == TK_REC_DOC) {
        if (tk_doc_ident(body, body_len, &id, &rev) != TK_OK)
            return TK_ERR_TAMPERED;
        if (grant_doc_index(x->g, id) >= 0)
            x->own_doc = true;
        return TK_OK;
    }
    if (kind == TK_REC_SHARE_READ) {
        if (!read_parse(body, body_len, &sid, &id, &at))
            return TK_ERR_TAMPERED;
        if (memcmp(sid, x->g->share_id, TK_SHARE_ID_LEN) == 0 &&
            (k = grant_doc_index(x->g, id)) >= 0)
            x->reads[k]++;
        return TK_OK;
    }
    if (kind == TK_REC_SHARE_WRITE) {
        struct wrote w;
        if ((rc = wrote_parse(&w, body, body_len)) != TK_OK)
            return rc;
        if (memcmp(w.share_id, x->g->share_id, TK_SHARE_ID_LEN) == 0 &&
            !chain_keeps(x->chain, x->g, &w))
            x->drop_write = true;
        return TK_OK;
    }
    if (kind != TK_REC_SHARE)
        return TK_OK;
    if ((rc = head_parse(&h, body, body_len)) != TK_OK)
        return rc;
    if (memcmp(h.id, x->g->share_id, TK_SHARE_ID_LEN) == 0) {
        if (h.part == 0) {
            x->known = true;
            x->outgoing = x->outgoing || !h.incoming;
            x->other_sender =
                x->other_sender ||
                (h.incoming && sodium_memcmp(h.peer_pk, x->sender_pk, TK_PK_LEN) != 0);
            x->seq = h.seq;
            x->revoked = h.revoked;
            x->n_held = 0;
        }
        if (!h.incoming || h.seq != x->seq)
            return TK_OK;
        held_start(&it, body, body_len);
        while ((more = held_next(&it, &d)) == 1) {
            if (x->n_held == TK_SHARE_DOCS_MAX)
                return TK_ERR_TAMPERED;
            memcpy(x->held[x->n_held].id, d.id, TK_DOC_ID_LEN);
            memcpy(x->held[x->n_held].hash, d.hash, TK_DOC_HASH_LEN);
            x->held[x->n_held].rev = d.rev;
            x->held[x->n_held].size = d.size;
            x->held[x->n_held].cipher_size = d.cipher_size;
            x->n_held++;
        }
        return more;
    }
    if (!h.incoming)
        return TK_OK;
    if (h.part == 0) {
        memcpy(x->cur, h.id, TK_SHARE_ID_LEN);
        x->cur_seq = h.seq;
        x->cur_other = sodium_memcmp(h.peer_pk, x->sender_pk, TK_PK_LEN) != 0;
        x->cur_open = true;
        for (i = 0; i < x->n_clash; i++)
            if (memcmp(x->clash[i].id, h.id, TK_SHARE_ID_LEN) == 0 && !h.revoked)
                x->clash[i].mask = 0; /* until a part of this grant has one */
    } else if (!x->cur_open || memcmp(h.id, x->cur, TK_SHARE_ID_LEN) != 0 || h.seq != x->cur_seq) {
        return TK_ERR_TAMPERED;
    }
    if (!x->cur_other)
        return TK_OK; /* the same sender may share a document twice */
    held_start(&it, body, body_len);
    while ((more = held_next(&it, &d)) == 1) {
        if ((k = grant_doc_index(x->g, d.id)) < 0)
            continue;
        for (i = 0; i < x->n_clash; i++)
            if (memcmp(x->clash[i].id, h.id, TK_SHARE_ID_LEN) == 0)
                break;
        if (i == x->n_clash) {
            if (x->n_clash == TK_SHARE_HOLDERS) {
                x->overflow = true;
                continue;
            }
            memcpy(x->clash[x->n_clash++].id, h.id, TK_SHARE_ID_LEN);
            x->clash[i].mask = 0;
        }
        x->clash[i].mask |= 1u << k;
    }
    return more;
}

/* The grant's documents as a ShareRecord part: from doc *next on, as many
 * as fit in one log record. Appended, not committed. */
static int store_part(struct tk_call *c, uint8_t *buf, size_t cap, const struct grant *g,
                      const Cohort__ShareInfo *info, uint32_t part, uint32_t *next)
{
    struct tk_wbuf w = {buf + TK_REC_HDR, cap, 0, false};
    size_t start = tk_w_begin(&w), mark;
    uint32_t first = *next;
    int rc = TK_OK;

    if (part == 0) {
        tk_w_message(&w, 1, &info->base);
        tk_w_message(&w, 3, &g->sender->base);
    } else {
        Cohort__ShareInfo cont = COHORT__SHARE_INFO__INIT;
        cont.share_id = info->share_id;
        cont.incoming = true;
        cont.seq = info->seq;
        tk_w_message(&w, 1, &cont.base);
        tk_w_uint(&w, 6, part);
    }
    while (*next < g->n_docs && rc == TK_OK) {
        Cohort__SharedDoc *d = NULL;
        size_t n;
        uint8_t *p;
        mark = tk_arena_mark(c->arena);
        rc = shared_doc_decode(&d, c->arena, g->doc[*next], g->doc_len[*next]);
        if (rc == TK_OK) {
            n = cohort__shared_doc__get_packed_size(d);
            if (w.len + tk_field_len(2, n) > cap) {
                shared_doc_wipe(d);
                tk_arena_release(c->arena, mark);
                break; /* the next part takes it */
            }
            tk_w_open(&w, 2, n);
            if ((p = tk_w_reserve(&w, n)) != NULL)
                cohort__shared_doc__pack(d, p);
            (*next)++;
        }
        shared_doc_wipe(d);
        tk_arena_release(c->arena, mark);
    }
    if (rc != TK_OK)
        return rc;
    tk_w_end(&w, TK_REC_SHARE, start);
    if (w.overflow || (*next == first && part > 0))
        return TK_ERR_TOO_LARGE; /* (a part always has room for one document) */
    rc = tk_log_append_sealed(c->tk, buf, w.len);
    sodium_memzero(buf, TK_REC_HDR + cap + TK_TAG_LEN);
    return rc;
}

/*
 * A grant that revokes a share, or drops one of its documents, erases
 * what the share held: the log is rewritten without any earlier record of
 * the share (their keys go with them, as a deleted document's do), and
 * the new grant's records are written at its end (a revocation's keeps
 * the documents' refs only).
 */
struct eraser {
    struct tk_call *c;
    const struct grant *g;
    const Cohort__ShareInfo *info;
    uint8_t *buf;
    size_t cap;
    struct chain *chain; /* started again: the same verdicts as accept_fn's */
};

static int erase_keep(void *ctx, struct tk_arena *a, const uint8_t *plain, size_t len, bool *keep)
{
    struct eraser *e = ctx;
    const uint8_t *body;
    size_t body_len;
    struct head h;
    uint32_t kind, next = 0;
    int rc = TK_OK;
    (void)a;
    *keep = false;
    if (plain == NULL) {
        uint32_t part = 0;
        do {
            rc = store_part(e->c, e->buf, e->cap, e->g, e->info, part++, &next);
        } while (rc == TK_OK && next < e->g->n_docs);
        return rc;
    }
    if ((rc = tk_record_body(plain, len, &kind, &body, &body_len)) != TK_OK)
        return rc;
    if (kind == TK_REC_SHARE) {
        if ((rc = head_parse(&h, body, body_len)) != TK_OK)
            return rc;
        if (memcmp(h.id, e->g->share_id, TK_SHARE_ID_LEN) == 0)
            return TK_OK;
    }
    if (kind == TK_REC_SHARE_WRITE) {
        struct wrote w;
        if ((rc = wrote_parse(&w, body, body_len)) != TK_OK)
            return rc;
        if (memcmp(w.share_id, e->g->share_id, TK_SHARE_ID_LEN) == 0 &&
            !chain_keeps(e->chain, e->g, &w))
            return TK_OK;
    }
    *keep = true;
    return TK_OK;
}

/* One document of a ShareInfo: its ref, its metadata and its reads. */
static int info_doc(struct tk_wbuf *w, struct tk_arena *a, const uint8_t *doc, size_t len,
                    uint32_t reads)
{
    size_t mark = tk_arena_mark(a);
    Cohort__SharedDoc *d = NULL;
    int rc = shared_doc_decode(&d, a, doc, len);
    if (rc == TK_OK) {
        tk_doc_ref_write(w, 7, d->doc_id.data, d->revision, d->content_hash.data, d->size,
                         d->cipher_size);
        tk_w_message(w, 8, &d->meta->base);
        tk_w_uint(w, 9, reads);
    }
    shared_doc_wipe(d);
    tk_arena_release(a, mark);
    return rc;
}

/* A ShareInfo's fields, written bare: its documents' follow. */
static void info_head_write(struct tk_wbuf *w, const Cohort__ShareInfo *in)
{
    size_t n = cohort__share_info__get_packed_size(in);
    uint8_t *p = tk_w_reserve(w, n);
    if (p != NULL)
        cohort__share_info__pack(in, p);
}

/* ------------------------------------------------------- write-backs */

/* A return grant, read field by field (pointers into the opened seal). */
struct ret {
    const uint8_t *share_id, *sender_pk, *writer_pk, *base_hash, *doc;
    size_t doc_len;
    uint64_t base_rev;
};

static int ret_parse(struct ret *r, const uint8_t *p, size_t len)
{
    static const uint32_t lens[8] = {0, TK_SHARE_ID_LEN, TK_PK_LEN, TK_PK_LEN,
                                     0, TK_DOC_HASH_LEN, 0,         0};
    struct tk_wfield f;
    size_t pos = 0;
    uint32_t seen = 0;
    int more;

    memset(r, 0, sizeof *r);
    while ((more = tk_wire_next(p, len, &pos, &f)) == 1) {
        bool bytes = f.field != 4 && f.field != 7;
        if (f.field < 1 || f.field > 7)
            continue;
        if ((seen & (1u << f.field)) || f.wire_type != (bytes ? 2 : 0) ||
            (bytes && lens[f.field] != 0 && f.len != lens[f.field]))
            return TK_ERR_MALFORMED;
        seen |= 1u << f.field;
        if (f.field == 1)
            r->share_id = f.data;
        else if (f.field == 2)
            r->sender_pk = f.data;
        else if (f.field == 3)
            r->writer_pk = f.data;
        else if (f.field == 4)
            r->base_rev = f.varint;
        else if (f.field == 5)
            r->base_hash = f.data;
        else if (f.field == 6) {
            r->doc = f.data;
            r->doc_len = f.len;
        }
    }
    if (more < 0)
        return more;
    if (r->share_id == NULL || r->sender_pk == NULL || r->writer_pk == NULL ||
        r->base_hash == NULL || r->doc == NULL || r->base_rev == 0 || r->base_rev >= SIZE_MAX_DOC)
        return TK_ERR_MALFORMED;
    return TK_OK;
}

/* The owner's document a return grant names: its latest record, and
 * whether the revision it brings is already here (a replay). */
struct own {
    const uint8_t *doc_id, *hash;
    uint64_t latest;
    uint8_t latest_hash[TK_DOC_HASH_LEN];
    bool replay;
    uint8_t *rec; /* TK_DOC_RECORD_MAX bytes */
    size_t rec_len;
};

static int own_fn(void *ctx, struct tk_arena *a, const uint8_t *plain, size_t len, uint64_t index)
{
    struct own *o = ctx;
    const uint8_t *body, *id;
    size_t body_len;
    struct entry e;
    uint64_t rev;
    int rc;
    (void)a;
    (void)index;
    if ((rc = tk_record_kind(plain, len, TK_REC_DOC, &body, &body_len)) != 1)
        return rc;
    if (tk_doc_ident(body, body_len, &id, &rev) != TK_OK)
        return TK_ERR_TAMPERED;
    if (memcmp(id, o->doc_id, TK_DOC_ID_LEN) != 0)
        return TK_OK;
    if (body_len > TK_DOC_RECORD_MAX || (rc = record_ref(&e, body, body_len)) != TK_OK)
        return TK_ERR_TAMPERED;
    if (sodium_memcmp(e.hash, o->hash, TK_DOC_HASH_LEN) == 0)
        o->replay = true;
    o->latest = rev;
    memcpy(o->latest_hash, e.hash, TK_DOC_HASH_LEN);
    memcpy(o->rec, body, body_len);
    o->rec_len = body_len;
    return TK_OK;
}

/* What the store needs once the checks' scratch is given back. */
struct back {
    struct tk_doc_rev r;
    Cohort__AuditEntry audit;
    uint8_t cred_id[TK_CRED_ID_LEN], peer_pk[TK_PK_LEN];
    char app[TK_CRED_NAME_MAX + 1], peer[TK_DOC_TEXT_MAX + 1];
};

/*
 * ShareAccept of a return grant (wp: the ReturnGrant inside the opened
 * seal, with room before it for the signing prefix). It must name this
 * token as the sender and a share this token made, be signed by the key
 * of the recipient's certificate that the share's record holds (and that
 * certificate still be valid), bring a revision this token does not have
 * yet (else TK_ERR_REPLAY), through a share still in force and read-write
 * that holds the document, which is still at the base revision (else
 * TK_ERR_CONFLICT), with the owner's metadata. Then it is stored as the
 * owner's own next revision (tk_doc_store: record, documents-table row,
 * audit line "share.write-back" naming the writer), and the answer is the
 * share's ShareInfo with the new revision's ref for the agent to keep its
 * file. The checks' scratch is given back before the store's rewrite.
 */
static int accept_return(struct tk_call *c, uint8_t *wp, size_t wl, const uint8_t sig[SIG_LEN])
{
    struct latest l = {NULL, false, false, false, 0};
    Cohort__ShareInfo info = COHORT__SHARE_INFO__INIT;
    Cohort__DocRef ref = COHORT__DOC_REF__INIT, *refp = &ref;
    const Cohort__SharePolicy *policy;
    Cohort__SharedDoc *d = NULL;
    Cohort__DocRecord *cur = NULL;
    Cohort__CertBody *rb = NULL;
    const struct tk_cred *cr;
    Cohort__ShareInfo *in;
    struct back *b;
    struct own *o;
    struct sent s;
    struct ret rg;
    size_t mark, i;
    bool held = false;
    int rc;

    if (wl > TK_SHARE_GRANT_MAX)
        return TK_ERR_TOO_LARGE;
    if ((b = tk_arena_scratch(c->arena, sizeof *b)) == NULL)
        return TK_ERR_NO_MEMORY;
    memset(b, 0, sizeof *b);
    mark = tk_arena_mark(c->arena);
    if ((rc = tk_cred_load(c, &cr)) != TK_OK)
        return rc;
    if (cr != NULL) {
        memcpy(b->cred_id, cr->id, TK_CRED_ID_LEN);
        tk_text_put(b->app, 0, sizeof b->app, cr->info->name);
    }
    if ((rc = ret_parse(&rg, wp, wl)) != TK_OK)
        return rc;
    if ((rc = shared_doc_decode(&d, c->arena, rg.doc, rg.doc_len)) != TK_OK)
        goto out;
    rc = TK_ERR_MALFORMED;
    if (d->revision != rg.base_rev + 1)
        goto out;
    rc = TK_ERR_DENIED;
    if (sodium_memcmp(rg.sender_pk, c->tk->sign_pk, TK_PK_LEN) != 0) {
        set_reason(c, "the return grant is not for this token");
        goto out;
    }

    /* The share, as this token made it. */
    if ((rc = sent_latest(c, &l, rg.share_id, "the share is not one this token made")) != TK_OK)
        goto out;
    if ((rc = sent_load(c, &s, l.index)) != TK_OK)
        goto out;
    in = s.rec->info;
    if (sodium_memcmp(rg.writer_pk, s.recipient->sign_pk.data, TK_PK_LEN) != 0) {
        set_reason(c, "the return grant is not from the share's recipient");
        rc = TK_ERR_DENIED;
        goto out;
    }
    memcpy(wp - WPREFIX_LEN, TK_SIG_SHARE_WRITE, WPREFIX_LEN);
    if (crypto_sign_verify_detached(sig, wp - WPREFIX_LEN, wl + WPREFIX_LEN,
                                    s.recipient->sign_pk.data) != 0) {
        rc = TK_ERR_BAD_SIGNATURE;
        goto out;
    }
    if ((rc = peer_cert_check(c, s.rec->peer_cert, &rb)) != TK_OK)
        goto out;

    /* The document, as this token has it. */
    if ((o = tk_arena_scratch(c->arena, sizeof *o)) == NULL ||
        (o->rec = tk_arena_scratch(c->arena, TK_DOC_RECORD_MAX)) == NULL) {
        rc = TK_ERR_NO_MEMORY;
        goto out;
    }
    o->doc_id = d->doc_id.data;
    o->hash = d->content_hash.data;
    o->latest = 0;
    o->replay = false;
    o->rec_len = 0;
    if ((rc = tk_log_scan(c->tk, c->arena, false, own_fn, o)) != TK_OK)
        goto out;
    if (o->replay) {
        set_reason(c, "this revision is already here");
        rc = TK_ERR_REPLAY;
        goto out;
    }

    /* The share's policy and what it holds. */
    policy = in->policy ? in->policy : &default_policy;
    rc = TK_ERR_DENIED;
    if (in->revoked) {
        set_reason(c, "the share was revoked");
        goto out;
    }
    if (policy->expires != 0 && c->now >= policy->expires) {
        set_reason(c, "the share has expired");
        rc = TK_ERR_EXPIRED;
        goto out;
    }
    if (!policy->read_write) {
        set_reason(c, "the share is read-only");
        goto out;
    }
    for (i = 0; i < in->n_refs; i++)
        held |= in->refs[i]->doc_id.len == TK_DOC_ID_LEN &&
                memcmp(in->refs[i]->doc_id.data, d->doc_id.data, TK_DOC_ID_LEN) == 0;
    if (!held) {
        set_reason(c, "the share does not hold this document");
        goto out;
    }
    if (o->latest == 0) {
        set_reason(c, "the document was deleted");
        rc = TK_ERR_NOT_FOUND;
        goto out;
    }
    cur = (Cohort__DocRecord *)tk_unpack(c->arena, &cohort__doc_record__descriptor, o->rec,
                                         o->rec_len, &rc);
    sodium_memzero(o->rec, TK_DOC_RECORD_MAX);
    if (cur == NULL || cur->meta == NULL) {
        rc = rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_TAMPERED;
        goto out;
    }
    if (cur->key.data != NULL)
        sodium_memzero(cur->key.data, cur->key.len);
    rc = TK_ERR_DENIED;
    if (in->selector != NULL && !tk_rule_matches(in->selector, cur->meta)) {
        set_reason(c, "the document no longer matches the share's selector");
        goto out;
    }
    if (o->latest != rg.base_rev ||
        sodium_memcmp(o->latest_hash, rg.base_hash, TK_DOC_HASH_LEN) != 0) {
        set_reason(c, "the document changed since the revision it was written on");
        rc = TK_ERR_CONFLICT;
        goto out;
    }
    if (!tk_share_meta_kept(cur->meta, d->meta)) {
        set_reason(c, "a shared document keeps its owner's metadata (but modified)");
        goto out;
    }

    /* ShareInfo { share_id, incoming, peer_pk, peer, policy, seq, refs } */
    ref.doc_id = d->doc_id;
    ref.revision = d->revision;
    ref.content_hash = d->content_hash;
    ref.size = d->size;
    ref.cipher_size = d->cipher_size;
    info.share_id = in->share_id;
    info.incoming = false;
    info.peer_pk = s.recipient->sign_pk;
    info.peer = s.recipient->subject;
    info.policy = (Cohort__SharePolicy *)policy;
    info.seq = in->seq;
    info.n_refs = 1;
    info.refs = &refp;
    tk_w_message(c->out, 25, &info.base);
    if (c->out->overflow) {
        rc = TK_ERR_RESPONSE_SPACE;
        goto out;
    }

    /* The revision, and who wrote it, for the store. */
    memcpy(b->r.doc_id, d->doc_id.data, TK_DOC_ID_LEN);
    b->r.revision = d->revision;
    memcpy(b->r.key, d->key.data, KEY_LEN);
    memcpy(b->r.hash, d->content_hash.data, TK_DOC_HASH_LEN);
    b->r.size = d->size;
    b->r.cipher_size = d->cipher_size;
    b->r.meta_len = cohort__doc_meta__pack(d->meta, b->r.meta); /* bounded by the decode */
    memcpy(b->peer_pk, s.recipient->sign_pk.data, TK_PK_LEN);
    tk_text_put(b->peer, 0, sizeof b->peer, s.recipient->subject);
    rc = TK_OK;
out:
    shared_doc_wipe(d);
    tk_arena_release(c->arena, mark);
    if (rc != TK_OK) {
        sodium_memzero(b, sizeof *b);
        return rc;
    }
    cohort__audit_entry__init(&b->audit);
    b->audit.event = "share.write-back";
    b->audit.accepted = true;
    b->audit.doc_id = (ProtobufCBinaryData){TK_DOC_ID_LEN, b->r.doc_id};
    b->audit.researcher = b->peer; /* the writer: the share's recipient */
    b->audit.researcher_pk = (ProtobufCBinaryData){TK_PK_LEN, b->peer_pk};
    if (cr != NULL) {
        b->audit.cred_id = (ProtobufCBinaryData){TK_CRED_ID_LEN, b->cred_id};
        b->audit.app = b->app;
    }
    rc = tk_doc_store(c, &b->r, &b->audit);
    sodium_memzero(b, sizeof *b);
    return rc;
}

static int share_accept(struct tk_call *c, const Cohort__ShareAccept *req, bool *back)
{
    struct tk_token *tk = c->tk;
    Cohort__ShareInfo info = COHORT__SHARE_INFO__INIT;
    Cohort__CertBody *sb = NULL;
    struct acceptor *x;
    struct chain *ch;
    struct grant *g = NULL;
    struct tk_wfield f;
    const uint8_t *gp = NULL, *wp = NULL;
    uint8_t *plain, *buf, sig[SIG_LEN];
    size_t plain_len, gl = 0, wl = 0, pos = 0, start, cap;
    uint32_t i, j, part, next;
    bool have_sig = false, erase = false;
    int rc, more;

    if (!tk_has_flag(tk, TK_FLAG_PROVISIONED))
        return TK_ERR_NOT_PROVISIONED;
    if (req->sealed.len > TK_SHARE_SEALED_MAX)
        return TK_ERR_TOO_LARGE;
    if (req->sealed.len <= crypto_box_SEALBYTES)
        return TK_ERR_DECRYPT;
    plain_len = req->sealed.len - crypto_box_SEALBYTES;
    if ((plain = tk_arena_scratch(c->arena, OPEN_ROOM + plain_len)) == NULL)
        return TK_ERR_NO_MEMORY;
    if (crypto_box_seal_open(plain + OPEN_ROOM, req->sealed.data, req->sealed.len, tk->box_pk,
                             tk->box_sk) != 0) {
        rc = TK_ERR_DECRYPT;
        goto out;
    }

    /* SignedGrant { grant or write, signature }, each once. */
    while ((more = tk_wire_next(plain + OPEN_ROOM, plain_len, &pos, &f)) == 1) {
        if (f.field == 1 && f.wire_type == 2 && gp == NULL && wp == NULL) {
            gp = f.data;
            gl = f.len;
        } else if (f.field == 3 && f.wire_type == 2 && gp == NULL && wp == NULL) {
            wp = f.data;
            wl = f.len;
        } else if (f.field == 2 && f.wire_type == 2 && f.len == SIG_LEN && !have_sig) {
            memcpy(sig, f.data, SIG_LEN);
            have_sig = true;
        } else if (f.field >= 1 && f.field <= 3) {
            more = TK_ERR_MALFORMED;
            break;
        }
    }
    rc = more < 0 ? more : (gp == NULL && wp == NULL) || !have_sig ? TK_ERR_MALFORMED : TK_OK;
    if (rc == TK_OK && wp != NULL) {
        *back = true; /* a return grant: the revision a recipient wrote */
        rc = accept_return(c, (uint8_t *)wp, wl, sig);
        goto out;
    }
    if (rc == TK_OK && gl > TK_SHARE_GRANT_MAX)
        rc = TK_ERR_TOO_LARGE;
    if (rc == TK_OK && (g = tk_arena_scratch(c->arena, sizeof *g)) == NULL)
        rc = TK_ERR_NO_MEMORY;
    if (rc == TK_OK)
        rc = grant_parse(g, c->arena, gp, gl);
    if (rc == TK_OK)
        rc = cert_shape(&sb, c->arena, g->sender);
    if (rc != TK_OK)
        goto out;

    /* The signature, over the prefix written just before the grant. */
    memcpy((uint8_t *)gp - PREFIX_LEN, TK_SIG_SHARE, PREFIX_LEN);
    if (crypto_sign_verify_detached(sig, gp - PREFIX_LEN, gl + PREFIX_LEN, sb->sign_pk.data) != 0) {
        rc = TK_ERR_BAD_SIGNATURE;
        goto out;
    }
    if ((rc = peer_cert_check(c, g->sender, &sb)) != TK_OK)
        goto out;
    if (sodium_memcmp(g->recipient_pk, tk->sign_pk, TK_PK_LEN) != 0 ||
        sodium_memcmp(sb->sign_pk.data, tk->sign_pk, TK_PK_LEN) == 0) {
        set_reason(c, "the grant is not for this token");
        rc = TK_ERR_DENIED;
        goto out;
    }
    if (g->policy->reshare) {
        set_reason(c, "re-sharing is not supported");
        rc = TK_ERR_UNSUPPORTED;
        goto out;
    }
    if (g->policy->expires < 0 || (g->revoked && g->n_docs > 0)) {
        rc = TK_ERR_MALFORMED;
        goto out;
    }
    for (i = 0; i < g->n_docs && rc == TK_OK; i++) {
        size_t mark = tk_arena_mark(c->arena);
        Cohort__SharedDoc *d = NULL;
        for (j = 0; j < i; j++)
            if (memcmp(g->doc_id[i], g->doc_id[j], TK_DOC_ID_LEN) == 0)
                rc = TK_ERR_MALFORMED;
        if (rc == TK_OK)
            rc = shared_doc_decode(&d, c->arena, g->doc[i], g->doc_len[i]);
        shared_doc_wipe(d);
        tk_arena_release(c->arena, mark);
    }
    if (rc != TK_OK)
        goto out;

    /* What the log already holds. */
    x = tk_arena_scratch(c->arena, sizeof *x);
    ch = tk_arena_scratch(c->arena, sizeof *ch);
    if (x == NULL || ch == NULL) {
        rc = TK_ERR_NO_MEMORY;
        goto out;
    }
    memset(x, 0, sizeof *x);
    x->chain = ch;
    chain_start(ch, g);
    x->g = g;
    x->sender_pk = sb->sign_pk.data;
    if ((rc = tk_log_scan(tk, c->arena, false, accept_fn, x)) != TK_OK)
        goto out;
    rc = TK_ERR_CONFLICT;
    if (x->outgoing || (x->known && x->other_sender))
        set_reason(c, "another share has that id");
    else if (x->own_doc)
        set_reason(c, "the grant names one of this token's own documents");
    else if (x->overflow)
        set_reason(c, "too many shares hold these documents");
    else
        rc = TK_OK;
    for (i = 0; i < x->n_clash && rc == TK_OK; i++)
        if (x->clash[i].mask != 0) {
            set_reason(c, "another sender's share holds one of these documents");
            rc = TK_ERR_CONFLICT;
        }
    if (rc == TK_OK && x->known && (g->seq <= x->seq || (x->revoked && !g->revoked))) {
        set_reason(c, x->revoked ? "the share was revoked" : "an older or replayed grant");
        rc = TK_ERR_REPLAY;
    }
    if (rc != TK_OK)
        goto out;

    /* The answer, then the records, then the commit. */
    info.share_id = (ProtobufCBinaryData){TK_SHARE_ID_LEN, (uint8_t *)g->share_id};
    info.incoming = true;
    info.peer_pk = sb->sign_pk;
    info.peer = sb->subject;
    info.policy = (Cohort__SharePolicy *)g->policy;
    info.seq = g->seq;
    info.revoked = g->revoked;
    info.created = c->now;
    info.issued = g->issued;
    start = tk_w_begin_wide(c->out);
    info_head_write(c->out, &info);
    for (i = 0; i < g->n_docs && rc == TK_OK; i++)
        rc = info_doc(c->out, c->arena, g->doc[i], g->doc_len[i], x->reads[i]);
    tk_w_end_wide(c->out, 25, start);
    if (rc == TK_OK && c->out->overflow)
        rc = TK_ERR_RESPONSE_SPACE;
    if (rc != TK_OK)
        goto out;
    /* A revoked share's record keeps what it held, without keys: the
     * refs, which the answers do not show (they name what is granted). */
    if (g->revoked && x->n_held > 0) {
        Cohort__DocRef *refs = tk_arena_scratch(c->arena, x->n_held * sizeof *refs);
        Cohort__DocRef **refp = tk_arena_scratch(c->arena, x->n_held * sizeof *refp);
        if (refs == NULL || refp == NULL) {
            rc = TK_ERR_NO_MEMORY;
            goto out;
        }
        for (i = 0; i < x->n_held; i++) {
            cohort__doc_ref__init(&refs[i]);
            refs[i].doc_id = (ProtobufCBinaryData){TK_DOC_ID_LEN, x->held[i].id};
            refs[i].revision = x->held[i].rev;
            refs[i].content_hash = (ProtobufCBinaryData){TK_DOC_HASH_LEN, x->held[i].hash};
            refs[i].size = x->held[i].size;
            refs[i].cipher_size = x->held[i].cipher_size;
            refp[i] = &refs[i];
        }
        info.n_refs = x->n_held;
        info.refs = refp;
    }
    /* A part holds the info, the certificate and documents, each at most
     * about as long as it was in the grant: the grant's length and room
     * for the info bound it, and a record's limit. */
    cap = gl + PART_ROOM + x->n_held * REF_ROOM;
    if (cap > TK_RECORD_MAX)
        cap = TK_RECORD_MAX;
    if ((buf = tk_arena_scratch(c->arena, TK_REC_HDR + cap + TK_TAG_LEN)) == NULL) {
        rc = TK_ERR_NO_MEMORY;
        goto out;
    }
    for (i = 0; i < x->n_held && !erase; i++)
        erase = grant_doc_index(g, x->held[i].id) < 0;
    if (x->known && (g->revoked || erase || x->drop_write)) {
        struct eraser e = {c, g, &info, buf, cap, x->chain};
        chain_start(x->chain, g);
        rc = tk_log_rewrite(tk, c->arena, erase_keep, &e);
        goto out;
    }
    next = 0;
    part = 0;
    do {
        rc = store_part(c, buf, cap, g, &info, part++, &next);
    } while (rc == TK_OK && next < g->n_docs);
    if (rc == TK_OK)
        rc = tk_log_commit(tk, c->arena);
out:
    sodium_memzero(plain, OPEN_ROOM + plain_len);
    sodium_memzero(sig, sizeof sig);
    return rc;
}

/* ---------------------------------------------------------------- listing */

struct listed {
    uint8_t id[TK_SHARE_ID_LEN];
    uint64_t index; /* its latest record's index + 1: the cursor after it */
    uint64_t seq;
    bool stale, incoming;
    uint32_t n_docs;
    uint8_t doc[TK_SHARE_DOCS_MAX][TK_DOC_ID_LEN];
    uint32_t reads[TK_SHARE_DOCS_MAX];
};

struct lister {
    uint64_t after;
    uint32_t max, n;
    int pass;
    struct listed *l; /* max + 1 */
    struct tk_wbuf *out;
    /* The record group being read (pass 2) or written (pass 4). */
    struct listed *cur;
    size_t cur_start;
};

/* The listed record of a share that no later record replaces. */
static struct listed *listed_of(struct lister *s, const uint8_t *id)
{
    uint32_t i;
    for (i = 0; i < s->n; i++)
        if (!s->l[i].stale && memcmp(s->l[i].id, id, TK_SHARE_ID_LEN) == 0)
            return &s->l[i];
    return NULL;
}

/* The listed record at a log index. */
static struct listed *listed_at(struct lister *s, uint64_t index)
{
    uint32_t i;
    for (i = 0; i < s->n; i++)
        if (s->l[i].index == index + 1)
            return &s->l[i];
    return NULL;
}

static void list_close(struct lister *s)
{
    if (s->pass == 4 && s->cur != NULL)
        tk_w_end(s->out, 1, s->cur_start);
    s->cur = NULL;
}

/* The docs of a listed share's record: their ids (pass 2), or their
 * entries in its ShareInfo (pass 4). */
static int list_docs(struct lister *s, struct tk_arena *a, const uint8_t *body, size_t len)
{
    struct listed *e = s->cur;
    const uint8_t *doc, *id;
    size_t doc_len, pos = 0;
    uint64_t rev;
    uint32_t k;
    int more, rc;
    while ((more = next_doc(body, len, &pos, &doc, &doc_len)) == 1) {
        if (tk_doc_ident(doc, doc_len, &id, &rev) != TK_OK)
            return TK_ERR_TAMPERED;
        if (s->pass == 2) {
            if (e->n_docs == TK_SHARE_DOCS_MAX)
                return TK_ERR_TAMPERED;
            memcpy(e->doc[e->n_docs++], id, TK_DOC_ID_LEN);
            continue;
        }
        for (k = 0; k < e->n_docs; k++)
            if (memcmp(e->doc[k], id, TK_DOC_ID_LEN) == 0)
                break;
        rc = info_doc(s->out, a, doc, doc_len, k < e->n_docs ? e->reads[k] : 0);
        if (rc != TK_OK)
            return rc == TK_ERR_NO_MEMORY ? rc : TK_ERR_TAMPERED;
    }
    return more;
}

static int list_fn(void *ctx, struct tk_arena *a, const uint8_t *plain, size_t len, uint64_t index)
{
    struct lister *s = ctx;
    const uint8_t *body, *sid, *id;
    size_t body_len;
    struct listed *e;
    struct tk_wfield f;
    struct head h;
    uint32_t kind, k;
    int64_t at;
    int rc;

    if ((rc = tk_record_body(plain, len, &kind, &body, &body_len)) != TK_OK)
        return rc;
    if (kind == TK_REC_SHARE_READ && s->pass == 3) {
        if (!read_parse(body, body_len, &sid, &id, &at))
            return TK_ERR_TAMPERED;
        if ((e = listed_of(s, sid)) != NULL)
            for (k = 0; k < e->n_docs; k++)
                if (memcmp(e->doc[k], id, TK_DOC_ID_LEN) == 0)
                    e->reads[k]++;
        return TK_OK;
    }
    if (kind != TK_REC_SHARE || s->pass == 3)
        return TK_OK;
    if ((rc = head_parse(&h, body, body_len)) != TK_OK)
        return rc;
    if (h.part > 0) {
        if (s->cur != NULL && memcmp(h.id, s->cur->id, TK_SHARE_ID_LEN) == 0 &&
            h.seq == s->cur->seq)
            return list_docs(s, a, body, body_len);
        return TK_OK;
    }
    if (s->pass == 1) {
        if (index + 1 > s->after && s->n < s->max + 1) {
            e = &s->l[s->n++];
            memset(e, 0, sizeof *e);
            memcpy(e->id, h.id, TK_SHARE_ID_LEN);
            e->index = index + 1;
            e->seq = h.seq;
            e->incoming = h.incoming;
        }
        return TK_OK;
    }
    list_close(s);
    if (s->pass == 2) {
        for (k = 0; k < s->n; k++)
            if (s->l[k].index < index + 1 && memcmp(s->l[k].id, h.id, TK_SHARE_ID_LEN) == 0)
                s->l[k].stale = true; /* a later record replaces it */
        if ((e = listed_at(s, index)) != NULL && h.incoming) {
            s->cur = e;
            return list_docs(s, a, body, body_len);
        }
        return TK_OK;
    }
    e = listed_at(s, index);
    if (e == NULL || e->stale || (uint32_t)(e - s->l) >= s->max)
        return TK_OK;
    /* Pass 4: the stored info's fields (but a revoked received share's
     * refs, which name what it held, not what it grants), then each
     * document's. */
    s->cur = e;
    s->cur_start = tk_w_begin(s->out);
    {
        const uint8_t *info = NULL;
        size_t info_len = 0, pos = 0, start;
        int more;
        while ((more = tk_wire_next(body, body_len, &pos, &f)) == 1)
            if (f.field == 1 && f.wire_type == 2) {
                info = f.data;
                info_len = f.len;
            }
        if (more < 0 || info == NULL)
            return TK_ERR_TAMPERED;
        for (pos = 0, start = 0; (more = tk_wire_next(info, info_len, &pos, &f)) == 1;) {
            if (!(h.incoming && f.field == 7)) {
                uint8_t *p = tk_w_reserve(s->out, pos - start);
                if (p != NULL)
                    memcpy(p, info + start, pos - start);
            }
            start = pos;
        }
        if (more < 0)
            return TK_ERR_TAMPERED;
    }
    return h.incoming ? list_docs(s, a, body, body_len) : TK_OK;
}

/*
 * A page of shares, sent and received, each in its latest state. The
 * cursor is a position in the log (a share's latest record's index + 1);
 * a page holds the shares among the first max share records after the
 * cursor that are still their share's latest, so it may be short while
 * more remain. Four scans: pick, drop the superseded (and note the
 * documents of received ones), count reads, write.
 */
int tk_do_share_list(struct tk_call *c, const Cohort__ShareList *req)
{
    struct lister s;
    size_t start;
    uint64_t next;
    bool more;
    int rc;

    if ((rc = tk_cred_owner(c)) != TK_OK)
        return rc;
    if (!tk_has_flag(c->tk, TK_FLAG_KEYS))
        return TK_ERR_NOT_PROVISIONED;
    if (req->max < 1 || req->max > TK_SHARE_LIST_MAX)
        return TK_ERR_TOO_LARGE;
    memset(&s, 0, sizeof s);
    s.after = req->after;
    s.max = req->max;
    if ((s.l = tk_arena_scratch(c->arena, (s.max + 1) * sizeof *s.l)) == NULL)
        return TK_ERR_NO_MEMORY;
    for (s.pass = 1; s.pass <= 3; s.pass++) {
        if ((rc = tk_log_scan(c->tk, c->arena, false, list_fn, &s)) != TK_OK)
            return rc;
        list_close(&s);
    }
    more = s.n > s.max;
    next = s.n == 0 ? s.after : s.l[(more ? s.max : s.n) - 1].index;
    /* SharePage { shares, more, next } */
    start = tk_w_begin_wide(c->out);
    s.out = c->out;
    s.pass = 4;
    if (s.n > 0 && (rc = tk_log_scan(c->tk, c->arena, false, list_fn, &s)) != TK_OK)
        return rc;
    list_close(&s);
    tk_w_uint(c->out, 2, more);
    tk_w_uint(c->out, 3, next);
    tk_w_end_wide(c->out, 26, start);
    return c->out->overflow ? TK_ERR_RESPONSE_SPACE : TK_OK;
}

/* ------------------------------------------------------------ the audit */

/*
 * Sharing is on the audit log: "share.create", "share.revoke" (by the
 * sender's owner) and "share.accept" (at the recipient), with the share's
 * id, read from the answer just written (ShareOut and ShareInfo both start
 * with it), and who asked. Reads of a shared document are "doc.read" lines
 * like any other (tk_doc.c). The line is appended after the request's own
 * work and committed here (ShareAccept has committed its work already, and
 * the dispatcher commits only a call that has not).
 */
static int audited(struct tk_call *c, const char *event, size_t out_start, int rc)
{
    const struct tk_cred *cr = NULL;
    const uint8_t *id = NULL;
    struct tk_wfield f, g;
    size_t pos = out_start, inner = 0;
    if (rc != TK_OK)
        return rc;
    if (tk_wire_next(c->out->p, c->out->len, &pos, &f) == 1 && f.wire_type == 2 &&
        tk_wire_next(f.data, f.len, &inner, &g) == 1 && g.field == 1 && g.wire_type == 2 &&
        g.len == TK_SHARE_ID_LEN)
        id = g.data;
    if ((rc = tk_cred_load(c, &cr)) != TK_OK)
        return rc;
    if ((rc = tk_audit_event(c, event, id, id != NULL ? TK_SHARE_ID_LEN : 0, cr, true)) != TK_OK)
        return rc;
    return tk_log_commit(c->tk, c->arena);
}

int tk_do_share_create(struct tk_call *c, const Cohort__ShareCreate *req)
{
    size_t start = c->out->len;
    return audited(c, "share.create", start, share_create(c, req));
}

int tk_do_share_revoke(struct tk_call *c, const Cohort__ShareRevoke *req)
{
    size_t start = c->out->len;
    return audited(c, "share.revoke", start, share_revoke(c, req));
}

int tk_do_share_accept(struct tk_call *c, const Cohort__ShareAccept *req)
{
    size_t start = c->out->len;
    bool back = false;
    int rc = share_accept(c, req, &back);
    return back ? rc : audited(c, "share.accept", start, rc); /* a write-back logged its own */
}

int tk_do_share_update(struct tk_call *c, const Cohort__ShareUpdate *req)
{
    size_t start = c->out->len;
    return audited(c, "share.update", start, share_update(c, req));
}
