/*
 * The owner's personal cloud, the agent's side: documents, app
 * credentials, shares and backups, through a token link.
 *
 * The agent is not trusted. It keeps each document revision as a
 * ciphertext file that only the token can read, named by the BLAKE2b-256
 * of its bytes (content-addressed) in a store directory; it moves
 * plaintext between an app and the token, and never holds a key. Every
 * decision (who may read what, which revision is current, whether a share
 * still allows a read) is the token's.
 *
 * Who asks: every call takes a `const struct pt_cred *who`. NULL is the
 * owner at the token link (the CLI); an app's or the owner's credential
 * (the HTTP API) is passed to the token, which authenticates it and
 * evaluates its rules.
 *
 * Errors are 0 or a negative PT_ERR_*. PT_ERR_TOKEN: the token refused,
 * and struct pt_status holds its TK_ERR_* and reason (the HTTP API maps
 * them to status codes: TK_ERR_AUTH 401, TK_ERR_DENIED 403,
 * TK_ERR_NOT_FOUND 404, TK_ERR_CONFLICT 409, ...). Other errors may leave
 * a sentence in the status's reason too (a file missing from the store).
 * No error message ever holds plaintext, a key or a credential's secret.
 *
 * Calls on one link must be serialised a whole call at a time, not only
 * token request by token request: a document, share or backup call spans
 * several requests of one token session, which any other request closes.
 */
#ifndef COHORT_PT_DOC_H
#define COHORT_PT_DOC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "participant/participant.h"

/* ------------------------------------------------------------- limits */

/* The token's own (token/tk_int.h). */
#define PT_DOC_ID_LEN 16u
#define PT_DOC_HASH_LEN 32u
#define PT_DOC_TYPE_MAX 64u  /* [a-z0-9._-], and '*' in a pattern */
#define PT_DOC_TEXT_MAX 128u /* author, subject, a selector's value */
#define PT_DOC_TAGS_MAX 16u
#define PT_DOC_TAG_MAX 32u
#define PT_DOC_LIST_MAX 64u /* documents per page */
#define PT_RULES_MAX 16u    /* rules of a credential */
#define PT_VALUES_MAX 16u   /* values of a selector */
#define PT_CRED_NAME_MAX 64u
#define PT_SHARE_DOCS_MAX 32u      /* documents of one share */
#define PT_PACKAGE_MAX (64u << 20) /* a share package (grant and ciphertext files) */

/* Verbs, as the token's Verb bits. */
#define PT_VERB_GET 1u
#define PT_VERB_POST 2u
#define PT_VERB_PUT 4u
#define PT_VERB_DELETE 8u
#define PT_VERB_ALL 15u

/* A credential: 16-byte id and 32-byte secret. As text, 96 lowercase hex
 * digits (id then secret): what an app puts after "Bearer ". */
#define PT_CRED_TEXT_LEN 96u
struct pt_cred {
    uint8_t id[16];
    uint8_t secret[32];
};
int pt_cred_parse(struct pt_cred *out, const char *text, size_t len); /* PT_ERR_INPUT if not */
void pt_cred_format(const struct pt_cred *c, char out[PT_CRED_TEXT_LEN + 1]);

/* What the token answered when it refused. */
struct pt_status {
    int token_status; /* TK_ERR_*, or 0 */
    char reason[256];
};

/* ----------------------------------------------------------- metadata */

struct pt_doc_meta {
    char type[PT_DOC_TYPE_MAX + 1];
    char author[PT_DOC_TEXT_MAX + 1];
    char subject[PT_DOC_TEXT_MAX + 1];
    int64_t created, modified; /* Unix seconds; set by the agent when 0 */
    uint32_t n_tags;
    char tags[PT_DOC_TAGS_MAX][PT_DOC_TAG_MAX + 1];
    uint64_t size; /* plaintext bytes: the token's */
};

struct pt_doc_ref {
    uint8_t id[PT_DOC_ID_LEN];
    uint64_t revision;
    uint8_t hash[PT_DOC_HASH_LEN];
    uint64_t size, cipher_size;
};

/* A permission rule; also a filter (verbs ignored) and a share's selector. */
struct pt_rule {
    char type[PT_DOC_TYPE_MAX + 1]; /* "bank.statement", "bank.*" or "*" */
    uint32_t verbs;
    char field[16]; /* "", "author", "subject" or "tag" */
    uint32_t n_values;
    char values[PT_VALUES_MAX][PT_DOC_TEXT_MAX + 1];
};

/* ------------------------------------------------------ the file store */

/*
 * The ciphertext files: DIR/<first 2 hex digits>/<64 hex digits>, mode
 * 0600, written to a temporary name and renamed once complete and synced.
 * pt_docstore_open creates DIR (0700) if missing. Names are only ever
 * built from hashes, so no input can name a path outside DIR.
 */
struct pt_docstore;
int pt_docstore_open(struct pt_docstore **out, const char *dir);
void pt_docstore_close(struct pt_docstore *ds); /* NULL is fine */

/* ----------------------------------------------------------- documents */

/* Plaintext in: up to n bytes into buf; the count, 0 at the end, < 0 an error. */
typedef long (*pt_read_fn)(void *ctx, uint8_t *buf, size_t n);
/* Plaintext out: 0, or < 0 to stop (that error is returned). */
typedef int (*pt_write_fn)(void *ctx, const uint8_t *buf, size_t n);

/*
 * Store a document: a new one (id NULL) or a new revision of id at
 * base_revision. meta's created and modified, when 0, become now; its size
 * is the token's. The plaintext streams through the token and the
 * ciphertext into a temporary file of the store, which becomes the
 * revision's file once the token's last answer (which commits the
 * revision) names it, and is removed if anything fails before: a refused
 * write leaves no file. A reader's error is returned as it is. *out (if
 * not NULL): the revision stored. PT_ERR_IO after the token committed (a
 * file that cannot be synced or renamed) says so in st's reason.
 */
int pt_doc_put(struct pt_link *link, struct pt_docstore *ds, int64_t now, const struct pt_cred *who,
               const uint8_t *id, uint64_t base_revision, const struct pt_doc_meta *meta,
               pt_read_fn rd, void *rd_ctx, struct pt_doc_ref *out, struct pt_status *st);

/*
 * A document received in a read-write share is written with
 * pt_doc_put_reply (pt_doc_put refuses it, PT_ERR_INPUT, before anything
 * is written: it would have nowhere to give what goes back). The base is
 * the share's current revision; the owner's metadata must be kept (but
 * modified). The recipient's token keeps the revision (its reader reads
 * its own write) and answers a return grant sealed to the owner's token:
 * *reply then holds the return package (a SharePackage: that grant and
 * the revision's ciphertext file; malloc'd, the caller frees pkg) to
 * deliver to the owner's agent, whose pt_share_accept takes it, and
 * reply_to, the owner agent's URL as the share's last package gave
 * it ("" if none did). For one of the owner's own documents it is
 * pt_doc_put, with reply->pkg NULL. The token committed the revision
 * before the package is made: a file that cannot be read back for it is
 * PT_ERR_IO with the revision stored and no package (the owner's agent
 * will not have it).
 */
#define PT_REPLY_TO_MAX 256u
struct pt_reply {
    uint8_t share_id[16];
    uint8_t *pkg;
    size_t pkg_len;
    char reply_to[PT_REPLY_TO_MAX + 1];
};
int pt_doc_put_reply(struct pt_link *link, struct pt_docstore *ds, int64_t now,
                     const struct pt_cred *who, const uint8_t *id, uint64_t base_revision,
                     const struct pt_doc_meta *meta, pt_read_fn rd, void *rd_ctx,
                     struct pt_doc_ref *out, struct pt_reply *reply, struct pt_status *st);

/*
 * Read revision rev (0: the current) of a document, own or received in a
 * share. The plaintext is given to wr as the token releases it; it may be
 * used only if the call returns 0 (the whole file was checked). ref and
 * meta, if not NULL, receive what the token says of the revision. With wr
 * NULL only that is asked (the token opens the revision, which counts as
 * a read of a received share's document, and nothing is read). A file
 * that the token refuses is PT_ERR_TOKEN with its code (TK_ERR_DECRYPT,
 * TK_ERR_TAMPERED); a missing one is PT_ERR_IO.
 */
int pt_doc_get(struct pt_link *link, struct pt_docstore *ds, int64_t now, const struct pt_cred *who,
               const uint8_t id[PT_DOC_ID_LEN], uint64_t rev, pt_write_fn wr, void *wr_ctx,
               struct pt_doc_ref *ref, struct pt_doc_meta *meta, struct pt_status *st);

/* One page of the current documents the caller may GET, matching filter
 * (NULL: all), after the cursor (0: from the start). */
struct pt_doc_page {
    uint32_t n;
    struct pt_doc_ref refs[PT_DOC_LIST_MAX];
    struct pt_doc_meta metas[PT_DOC_LIST_MAX];
    bool more;
    uint64_t next;
};
int pt_doc_list(struct pt_link *link, int64_t now, const struct pt_cred *who,
                const struct pt_rule *filter, uint64_t after, uint32_t max,
                struct pt_doc_page *page, struct pt_status *st);

/* Delete every revision (at base_revision); the store's files of the
 * revisions the token removed are deleted (those the agent stored, which
 * the store's index lists). */
int pt_doc_delete(struct pt_link *link, struct pt_docstore *ds, int64_t now,
                  const struct pt_cred *who, const uint8_t id[PT_DOC_ID_LEN],
                  uint64_t base_revision, struct pt_status *st);

/* The token's identity, for a sharer: its Ed25519 key and its device
 * certificate (a serialized Certificate; *cert_len 0 before the token is
 * provisioned). PT_ERR_INPUT when it has no keys yet. */
#define PT_CERT_MAX 384u /* the token's TK_CERT_MAX */
int pt_identity(struct pt_link *link, int64_t now, uint8_t sign_pk[32], uint8_t cert[PT_CERT_MAX],
                size_t *cert_len, struct pt_status *st);

/* --------------------------------------------------------- credentials */

struct pt_cred_info {
    uint8_t id[16];
    bool has_parent;
    uint8_t parent[16];
    char name[PT_CRED_NAME_MAX + 1];
    uint32_t n_rules;
    struct pt_rule rules[PT_RULES_MAX];
    int64_t expires, created;
    bool owner, revoked;
};

/* Issue (by the owner, or delegated from who's credential); *secret is the
 * new credential, shown this once. */
int pt_cred_issue(struct pt_link *link, int64_t now, const struct pt_cred *who, const char *name,
                  const struct pt_rule *rules, uint32_t n_rules, int64_t expires, bool owner,
                  struct pt_cred *secret, struct pt_cred_info *info, struct pt_status *st);
int pt_cred_check(struct pt_link *link, int64_t now, const struct pt_cred *who,
                  struct pt_cred_info *info, struct pt_status *st);
int pt_cred_revoke(struct pt_link *link, int64_t now, const struct pt_cred *who,
                   const uint8_t id[16], struct pt_status *st);
/* Every credential, by pages of up to 64; *n receives the count (<= max). */
int pt_cred_list(struct pt_link *link, int64_t now, const struct pt_cred *who,
                 struct pt_cred_info *out, uint32_t max, uint32_t *n, struct pt_status *st);

/* -------------------------------------------------------------- shares */

struct pt_share_policy {
    bool read_write;
    int64_t expires;    /* 0: never */
    uint32_t max_reads; /* 0: unlimited */
};

/*
 * A share package: what the sender's agent gives the recipient's (a
 * SharePackage message: the token's sealed grant and the ciphertext files
 * it names, every one of them in every package). Packages are built by
 * pt_share_create, pt_share_sync and pt_share_revoke (malloc'd, at most
 * PT_PACKAGE_MAX bytes: else PT_ERR_TOO_LARGE; the caller frees) and
 * taken by pt_share_accept: a package that does not decode, a file that
 * is not its hash's or one missing is PT_ERR_INPUT before the token sees
 * it; the files are staged, and named only when the token has accepted
 * the grant, and only those its answer names: a package the token refuses
 * (PT_ERR_TOKEN: TK_ERR_DECRYPT, TK_ERR_BAD_SIGNATURE, TK_ERR_UNTRUSTED,
 * TK_ERR_DENIED, TK_ERR_REPLAY, ...) stores nothing. The recipient's
 * documents are then read with pt_doc_get, under the policy its token
 * enforces. recipient_cert: the recipient token's device certificate, as
 * pt_identity gives it. The token has issued its grant before the agent
 * reads the files: a file missing from the sender's store is PT_ERR_IO
 * (said in st's reason) with the grant issued but no package; a later
 * change of the share's documents, or its revocation, makes a new one.
 */
int pt_share_create(struct pt_link *link, struct pt_docstore *ds, int64_t now,
                    const struct pt_cred *who, const uint8_t *recipient_cert,
                    size_t recipient_cert_len, const uint8_t (*ids)[PT_DOC_ID_LEN], uint32_t n_ids,
                    const struct pt_rule *selector, const struct pt_share_policy *policy,
                    uint8_t share_id[16], uint8_t **pkg, size_t *pkg_len, struct pt_status *st);
/* The next out-of-date share's package; *pkg NULL when none is. */
int pt_share_sync(struct pt_link *link, struct pt_docstore *ds, int64_t now,
                  const struct pt_cred *who, uint8_t share_id[16], uint8_t **pkg, size_t *pkg_len,
                  struct pt_status *st);
int pt_share_revoke(struct pt_link *link, struct pt_docstore *ds, int64_t now,
                    const struct pt_cred *who, const uint8_t share_id[16], uint8_t **pkg,
                    size_t *pkg_len, struct pt_status *st);
int pt_share_accept(struct pt_link *link, struct pt_docstore *ds, int64_t now,
                    const struct pt_cred *who, const uint8_t *pkg, size_t pkg_len,
                    uint8_t share_id[16], struct pt_status *st);
/*
 * A new policy for a share the owner made (not revoked; read-write to
 * read-only, a new expiry, ...): the package of the grant that carries it.
 */
int pt_share_update(struct pt_link *link, struct pt_docstore *ds, int64_t now,
                    const struct pt_cred *who, const uint8_t share_id[16],
                    const struct pt_share_policy *policy, uint8_t **pkg, size_t *pkg_len,
                    struct pt_status *st);

/*
 * Return packages. pt_share_accept takes a return package (what a
 * read-write share's recipient wrote, pt_doc_put_reply) at the owner's
 * agent like any other: its token checks it and stores the revision as
 * the document's next, and the file is kept (and indexed under the
 * document, for its delete). So that the recipient's agent knows where
 * return packages go, the owner's agent sets reply_to, its own URL (given
 * as a share's delivery URL is: the inbox is URL/v1/inbox), on a package
 * before it delivers it (pt_share_package_reply_to: a new package in
 * *out, malloc'd); the recipient's pt_share_accept keeps it
 * for the share once the token accepted the grant (in the store, beside
 * the files). reply_to is outside the seal: anyone who relays a package
 * can change it, and so only learns that a revision was written, and its
 * size. A URL is "http://" or "https://" then printable ASCII, at most
 * PT_REPLY_TO_MAX bytes (PT_ERR_INPUT otherwise).
 * pt_share_package_peek: a package's share id and reply_to ("" if none),
 * without a token.
 */
int pt_share_package_reply_to(const uint8_t *pkg, size_t pkg_len, const char *url, uint8_t **out,
                              size_t *out_len);
int pt_share_package_peek(const uint8_t *pkg, size_t pkg_len, uint8_t share_id[16],
                          char reply_to[PT_REPLY_TO_MAX + 1]);

/*
 * The shares the token knows, sent and received, a page at a time (max
 * 1..16) after the cursor `after` (0: from the start): *n of them in out,
 * *more and *next as for pt_doc_list. Owner only.
 */
struct pt_share_info {
    uint8_t share_id[16];
    bool incoming; /* received (true) or sent */
    bool revoked;
    uint8_t peer_pk[32]; /* the other token's key */
    char peer[64];       /* its certificate's subject (from elsewhere: escape it) */
    struct pt_share_policy policy;
    uint64_t seq;
    int64_t created;
    bool has_selector;
    struct pt_rule selector;
    uint32_t n_docs;
    struct pt_doc_ref refs[PT_SHARE_DOCS_MAX];
    struct pt_doc_meta metas[PT_SHARE_DOCS_MAX]; /* zeros when the token gives none */
    uint32_t reads[PT_SHARE_DOCS_MAX];           /* received: reads so far */
};
int pt_share_list(struct pt_link *link, int64_t now, const struct pt_cred *who, uint64_t after,
                  uint32_t max, struct pt_share_info *out, uint32_t *n, bool *more, uint64_t *next,
                  struct pt_status *st);

/* ------------------------------------------------------------- backups */

/* Write the token's backup to wr. *phrase receives the recovery phrase
 * when this backup drew a new one ("" otherwise). */
#define PT_PHRASE_MAX 127u
int pt_backup_export(struct pt_link *link, int64_t now, const struct pt_cred *who, bool new_phrase,
                     pt_write_fn wr, void *wr_ctx, char phrase[PT_PHRASE_MAX + 1],
                     struct pt_status *st);
/* Restore a backup into a token that holds nothing of an owner yet: the
 * file is read twice (verify, then store), so open() gives a fresh reader
 * each time. */
typedef int (*pt_open_fn)(void *ctx, pt_read_fn *rd, void **rd_ctx);
int pt_backup_restore(struct pt_link *link, int64_t now, const char *phrase, pt_open_fn open,
                      void *open_ctx, uint64_t *documents, struct pt_status *st);

#endif
