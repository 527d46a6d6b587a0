/*
 * Private declarations of the agent's document side (pt_doc.h), shared by
 * pt_doc.c, pt_docstore.c, pt_cred.c, pt_share.c, pt_backup.c and the
 * tests: one token call with a credential, the codecs between our structs
 * and the wire, and the file store's steps.
 */
#ifndef COHORT_PT_DOC_INT_H
#define COHORT_PT_DOC_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sodium.h>

#include "participant/pt_doc.h"
#include "proto/cohort.pb-c.h"

#define PT_DOC_RESPONSE_MAX (64u << 20) /* the largest token response decoded */
#define PT_DOC_REQUEST_MAX (1u << 20)   /* the token's TK_REQUEST_MAX */
#define PT_ANY_BODY (-1)

/*
 * Send req (its `now` and `auth` are set here from now and who) and decode
 * the response into *out (the caller frees it). want: the body case the
 * answer must carry, or PT_ANY_BODY. A refusal is PT_ERR_TOKEN with st
 * holding its status and reason; a response of another shape is
 * PT_ERR_LINK. The packed request is wiped once sent (it may hold a
 * credential's secret, a recovery phrase or plaintext). st may be NULL.
 */
int pt_tk_call(struct pt_link *link, int64_t now, const struct pt_cred *who,
               Cohort__TokenRequest *req, int want, Cohort__TokenResponse **out,
               struct pt_status *st);
void pt_status_clear(struct pt_status *st);
void pt_status_say(struct pt_status *st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Copy a string into a fixed field of cap bytes, cut at a UTF-8 boundary. */
void pt_copy_text(char *dst, size_t cap, const char *src);
/* Fill buf from rd: the count, short only at the end; < 0 an error
 * (rd's, or PT_ERR_INPUT for a reader that overran its buffer). */
long pt_fill(pt_read_fn rd, void *ctx, uint8_t *buf, size_t cap);

/* ------------------------------------------------------------- codecs */

/* Our metadata as a DocMeta over m's storage (tags points into tags). */
int pt_meta_to_pb(Cohort__DocMeta *pb, char **tags, const struct pt_doc_meta *m);
/* A DocMeta from the token (NULL: empty); bounds checked (PT_ERR_LINK). */
int pt_meta_from_pb(struct pt_doc_meta *m, const Cohort__DocMeta *pb);
int pt_ref_from_pb(struct pt_doc_ref *r, const Cohort__DocRef *pb);
/* A rule as a PermRule over r's storage (values points into values). */
int pt_rule_to_pb(Cohort__PermRule *pb, char **values, const struct pt_rule *r);
int pt_rule_from_pb(struct pt_rule *r, const Cohort__PermRule *pb);

/* ---------------------------------------------------------- the store */

/* A file being written: a temporary name in the store's directory (keep
 * it on the stack or in static storage: the hash state is 64-aligned). */
struct pt_ds_tmp {
    int fd;
    char name[40];
    uint64_t bytes;
    crypto_generichash_state hash;
};

int pt_ds_tmp_begin(struct pt_docstore *ds, struct pt_ds_tmp *t);
int pt_ds_tmp_write(struct pt_ds_tmp *t, const uint8_t *p, size_t n);
/* The BLAKE2b-256 of what was written so far (the state is finished). */
void pt_ds_tmp_hash(struct pt_ds_tmp *t, uint8_t hash[PT_DOC_HASH_LEN]);
/* Sync it and give it its name (the hash, which the caller checked). */
int pt_ds_tmp_commit(struct pt_docstore *ds, struct pt_ds_tmp *t,
                     const uint8_t hash[PT_DOC_HASH_LEN]);
/* Close and remove it (after begin, whatever happened since; idempotent). */
void pt_ds_tmp_abort(struct pt_docstore *ds, struct pt_ds_tmp *t);

/* Open the file named by hash for reading: 0 with *fd, *size; PT_ERR_IO
 * (*missing set when there is no such file). */
int pt_ds_open(struct pt_docstore *ds, const uint8_t hash[PT_DOC_HASH_LEN], int *fd, uint64_t *size,
               bool *missing);
/* Whether it is there. */
bool pt_ds_has(struct pt_docstore *ds, const uint8_t hash[PT_DOC_HASH_LEN]);
/* Remove it (absent is fine), and its subdirectory if that is now empty. */
int pt_ds_remove(struct pt_docstore *ds, const uint8_t hash[PT_DOC_HASH_LEN]);

/*
 * The revisions' index: for each document, the hashes of the files the
 * agent stored for it (DIR/revs/<32 hex digits of the id>, one line
 * "<revision> <64 hex digits>" per revision), so that a delete removes
 * every revision's file without asking the token to open each one.
 * pt_ds_index_files calls fn for each hash listed (a bad line stops it:
 * PT_ERR_IO).
 */
int pt_ds_index_add(struct pt_docstore *ds, const uint8_t id[PT_DOC_ID_LEN], uint64_t revision,
                    const uint8_t hash[PT_DOC_HASH_LEN]);
int pt_ds_index_files(struct pt_docstore *ds, const uint8_t id[PT_DOC_ID_LEN],
                      int (*fn)(void *ctx, const uint8_t hash[PT_DOC_HASH_LEN]), void *ctx);
int pt_ds_index_remove(struct pt_docstore *ds, const uint8_t id[PT_DOC_ID_LEN]);

/* The store's directory, as given to pt_docstore_open. */
const char *pt_ds_dir(const struct pt_docstore *ds);

/* ------------------------------------------------------------- shares */

/* The package of a token's ShareOut: the files its refs name, read from
 * the store and checked, and the message (pt_share.c). */
int pt_share_package_build(struct pt_docstore *ds, Cohort__ShareOut *so, uint8_t share_id[16],
                           uint8_t **pkg, size_t *pkg_len, struct pt_status *st);
/* The reply_to a received share's last package gave ("" if none). */
void pt_share_reply_to_load(struct pt_docstore *ds, const uint8_t share_id[16],
                            char out[PT_REPLY_TO_MAX + 1]);

#endif
