/*
 * Backups, the agent's side (pt_doc.h): moving the token's backup file
 * out, and back into a new token.
 *
 * The backup is the token's: it draws the recovery phrase, encrypts every
 * live record of its log under a key derived from it, and checks it all
 * again on the way back (token/tk_backup.c). The agent only moves bytes:
 * BackupBegin answers the file's header (and the phrase when it drew a new
 * one), each BackupNext the next whole chunks, the last one marked. A
 * restore feeds the file twice from its first byte: once to verify it
 * (commit false: the token changes nothing, so a wrong phrase or a damaged
 * file is found before anything is stored) and once to store it, all at
 * once with the final chunk.
 *
 * The phrase is a secret: it passes through the agent once each way, and
 * the buffers that held it are wiped. The ciphertext files of the
 * documents are not in the backup: they are in the document store, which
 * the owner keeps (copies) alongside; the restored token reads them with
 * the keys the backup carried.
 */
#include <stdlib.h>
#include <string.h>

#include "participant/pt_doc_int.h"

#define RESTORE_FEED_MAX (64u << 10) /* bytes of one RestoreFeed */
#define BACKUP_CHUNKS_MAX (1u << 24) /* BackupNext calls before the link is deemed broken */

static void request(Cohort__TokenRequest *req, Cohort__TokenRequest__BodyCase body)
{
    cohort__token_request__init(req);
    req->body_case = body;
}

int pt_backup_export(struct pt_link *link, int64_t now, const struct pt_cred *who, bool new_phrase,
                     pt_write_fn wr, void *wr_ctx, char phrase[PT_PHRASE_MAX + 1],
                     struct pt_status *st)
{
    Cohort__TokenRequest req;
    Cohort__BackupBegin bb = COHORT__BACKUP_BEGIN__INIT;
    Cohort__BackupNext bn = COHORT__BACKUP_NEXT__INIT;
    Cohort__TokenResponse *r;
    const Cohort__BackupSession *bs;
    uint8_t sid[32];
    size_t sid_len;
    bool last = false;
    int rc;

    pt_status_clear(st);
    if (wr == NULL || phrase == NULL)
        return PT_ERR_INPUT;
    phrase[0] = '\0';
    bb.new_phrase = new_phrase;
    request(&req, COHORT__TOKEN_REQUEST__BODY_BACKUP_BEGIN);
    req.backup_begin = &bb;
    rc = pt_tk_call(link, now, who, &req, COHORT__TOKEN_RESPONSE__BODY_BACKUP_SESSION, &r, st);
    if (rc != 0)
        return rc;
    bs = r->backup_session;
    sid_len = bs->session.len;
    if (sid_len == 0 || sid_len > sizeof sid || bs->header.len == 0 ||
        (bs->phrase != NULL && strlen(bs->phrase) > PT_PHRASE_MAX)) {
        rc = PT_ERR_LINK;
    } else {
        memcpy(sid, bs->session.data, sid_len);
        pt_copy_text(phrase, PT_PHRASE_MAX + 1, bs->phrase);
        rc = wr(wr_ctx, bs->header.data, bs->header.len);
    }
    if (bs->phrase != NULL)
        sodium_memzero(bs->phrase, strlen(bs->phrase));
    cohort__token_response__free_unpacked(r, NULL);
    if (rc != 0) {
        sodium_memzero(phrase, PT_PHRASE_MAX + 1);
        return rc;
    }

    bn.session = (ProtobufCBinaryData){sid_len, sid};
    for (uint32_t calls = 0; !last; calls++) {
        if (calls == BACKUP_CHUNKS_MAX) {
            rc = PT_ERR_LINK;
            break;
        }
        request(&req, COHORT__TOKEN_REQUEST__BODY_BACKUP_NEXT);
        req.backup_next = &bn;
        rc = pt_tk_call(link, now, who, &req, COHORT__TOKEN_RESPONSE__BODY_BACKUP_CHUNK, &r, st);
        if (rc != 0)
            break;
        last = r->backup_chunk->last;
        if (r->backup_chunk->data.len == 0 && !last)
            rc = PT_ERR_LINK; /* a chunk that moves nothing would loop for ever */
        else if (r->backup_chunk->data.len > 0)
            rc = wr(wr_ctx, r->backup_chunk->data.data, r->backup_chunk->data.len);
        cohort__token_response__free_unpacked(r, NULL);
        if (rc != 0)
            break;
    }
    if (rc != 0)
        sodium_memzero(phrase, PT_PHRASE_MAX + 1); /* a backup that is not whole has no use */
    return rc;
}

/* One pass over the file: RestoreBegin, then the feeds. */
static int restore_pass(struct pt_link *link, int64_t now, const char *phrase, bool commit,
                        pt_read_fn rd, void *rd_ctx, uint8_t *cur, uint8_t *nxt,
                        uint64_t *documents, struct pt_status *st)
{
    Cohort__TokenRequest req;
    Cohort__RestoreBegin rb = COHORT__RESTORE_BEGIN__INIT;
    Cohort__RestoreFeed rf = COHORT__RESTORE_FEED__INIT;
    Cohort__TokenResponse *r;
    uint8_t sid[32];
    size_t sid_len;
    long n_cur, n_nxt;
    bool done = false;
    int rc;

    rb.phrase = (char *)phrase;
    rb.commit = commit;
    request(&req, COHORT__TOKEN_REQUEST__BODY_RESTORE_BEGIN);
    req.restore_begin = &rb;
    rc = pt_tk_call(link, now, NULL, &req, COHORT__TOKEN_RESPONSE__BODY_BACKUP_SESSION, &r, st);
    if (rc != 0)
        return rc;
    sid_len = r->backup_session->session.len;
    if (sid_len == 0 || sid_len > sizeof sid) {
        cohort__token_response__free_unpacked(r, NULL);
        return PT_ERR_LINK;
    }
    memcpy(sid, r->backup_session->session.data, sid_len);
    cohort__token_response__free_unpacked(r, NULL);

    rf.session = (ProtobufCBinaryData){sid_len, sid};
    if ((n_cur = pt_fill(rd, rd_ctx, cur, RESTORE_FEED_MAX)) < 0)
        return (int)n_cur;
    while (!done) {
        uint8_t *t;
        bool last;
        if ((n_nxt = pt_fill(rd, rd_ctx, nxt, RESTORE_FEED_MAX)) < 0)
            return (int)n_nxt;
        last = n_nxt == 0;
        rf.data = (ProtobufCBinaryData){(size_t)n_cur, cur};
        rf.last = last;
        request(&req, COHORT__TOKEN_REQUEST__BODY_RESTORE_FEED);
        req.restore_feed = &rf;
        rc = pt_tk_call(link, now, NULL, &req, COHORT__TOKEN_RESPONSE__BODY_RESTORE_DONE, &r, st);
        if (rc != 0)
            return rc;
        done = r->restore_done->done;
        if (done && documents != NULL)
            *documents = r->restore_done->documents;
        cohort__token_response__free_unpacked(r, NULL);
        if (last && !done)
            return PT_ERR_LINK; /* the token took the whole file without an end */
        if (done && !last)
            return PT_ERR_INPUT; /* bytes after the backup's end */
        t = cur;
        cur = nxt;
        nxt = t;
        n_cur = n_nxt;
    }
    return 0;
}

int pt_backup_restore(struct pt_link *link, int64_t now, const char *phrase, pt_open_fn open,
                      void *open_ctx, uint64_t *documents, struct pt_status *st)
{
    uint8_t *bufs;
    pt_read_fn rd;
    void *rd_ctx;
    int rc;

    pt_status_clear(st);
    if (phrase == NULL || open == NULL || strlen(phrase) > PT_PHRASE_MAX)
        return PT_ERR_INPUT;
    if ((bufs = malloc(2 * (size_t)RESTORE_FEED_MAX)) == NULL)
        return PT_ERR_NOMEM;
    for (int pass = 0; pass < 2; pass++) {
        if ((rc = open(open_ctx, &rd, &rd_ctx)) != 0)
            break;
        rc = restore_pass(link, now, phrase, pass == 1, rd, rd_ctx, bufs, bufs + RESTORE_FEED_MAX,
                          documents, st);
        if (rc != 0)
            break;
    }
    sodium_memzero(bufs, 2 * (size_t)RESTORE_FEED_MAX);
    free(bufs);
    return rc;
}
