/*
 * The owner's side of the participant core: the owner's own tables, rows,
 * consent policy and audit log, through a token link.
 *
 * This header is the data model of the owner's tools (cohort-participant,
 * later the agent's local API): typed values, table schemas, a consent
 * policy, an audit entry, each as a plain struct of our own. The protobuf
 * messages of the token link (proto/cohort.proto) are converted to and from
 * them in pt_owner.c only.
 *
 * What is trusted: the token is; the link and the owner's files are not.
 * Every response is bounded (PT_RESPONSE_MAX) before it is decoded, and
 * every string it carries is copied into a fixed-size field, cut if need
 * be. Strings that came from researchers (study names, subjects, reasons
 * that quote them) may hold any bytes: whoever prints them escapes them.
 *
 * Errors are 0 or a negative PT_ERR_*. PT_ERR_TOKEN means the token
 * answered with an error: its status (a TK_ERR_*) and its reason, if it
 * gave one, are in struct pt_owner. Functions with outputs write them only
 * on success.
 */
#ifndef COHORT_PT_OWNER_H
#define COHORT_PT_OWNER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "participant/participant.h"

/* ------------------------------------------------------------- limits */

/* The token's own limits (token/tk_int.h); test_import checks they agree. */
#define PT_NAME_MAX 32u    /* bytes of a table or column name */
#define PT_TEXT_MAX 64u    /* bytes of a text value */
#define PT_COLUMNS_MAX 32u /* columns of a table */
#define PT_SCALE_MAX 18u   /* digits after the point of a DECIMAL */

#define PT_STUDY_MAX 64u        /* bytes of a study name */
#define PT_SUBJECT_MAX 63u      /* bytes of a certificate's subject */
#define PT_EVENT_MAX 31u        /* bytes of an audit entry's event name */
#define PT_APP_MAX 64u          /* bytes of a credential's name in an audit entry */
#define PT_AUDIT_SQL_MAX 1024u  /* bytes of an audit entry's SQL (the token cuts it there) */
#define PT_POLICY_KEYS_MAX 16u  /* authorities, or researchers, in a policy */
#define PT_POLICY_NAMES_MAX 64u /* studies, or tables and columns, in a policy */
#define PT_POLICY_ITEM_MAX (2u * PT_NAME_MAX + 1u) /* "table.column" */
#define PT_DELETE_IDS_MAX 65536u                   /* row ids in one delete request */
#define PT_SCHEMA_TEXT_MAX 4096u                   /* a schema written as text: "name type, ..." */
#define PT_RESPONSE_MAX (64u << 20)                /* the largest token response decoded */
#define PT_LOAD_REQUEST_MIN 1024u                  /* the smallest LoadTable request a load cuts */
#define PT_LOAD_REQUEST_MAX (1u << 20)             /* the largest: the token's TK_REQUEST_MAX */
#define PT_KEY_LEN 32u                             /* an Ed25519 public key */

/* -------------------------------------------------------------- values */

/* The same numbers as proto's ValueType. */
enum pt_type {
    PT_NULL = 0,
    PT_INT = 1,       /* i */
    PT_DECIMAL = 2,   /* i scaled by 10^scale */
    PT_TEXT = 3,      /* s[0..len), UTF-8, no NUL */
    PT_DATE = 4,      /* i: days since 1970-01-01 */
    PT_BOOL = 5,      /* i: 0 or 1 */
    PT_TIMESTAMP = 7, /* i: seconds since 1970-01-01 00:00:00 UTC */
};

struct pt_value {
    enum pt_type type;
    int64_t i;
    unsigned scale;
    size_t len;
    char s[PT_TEXT_MAX + 1]; /* NUL-terminated too */
};

struct pt_column {
    char name[PT_NAME_MAX + 1];
    enum pt_type type; /* never PT_NULL */
    unsigned scale;    /* DECIMAL only */
};

struct pt_schema {
    char name[PT_NAME_MAX + 1];
    size_t n_columns;
    struct pt_column columns[PT_COLUMNS_MAX];
};

/* "INT", "DECIMAL", ...; "?" for anything else. */
const char *pt_type_name(enum pt_type t);

/* A column's type as SQL writes it: "DECIMAL(2)", "TEXT", ... */
void pt_column_type(char *buf, size_t cap, const struct pt_column *c);

/*
 * A name a token accepts for a table or column: 1 to PT_NAME_MAX bytes of
 * ASCII letters, digits and '_', not starting with a digit.
 */
bool pt_name_valid(const char *name);

/*
 * Parse a schema written as text, "name type, name type, ...", where a
 * type is INT (or INTEGER, BIGINT, INT64), DECIMAL(s) (or NUMERIC(s)),
 * TEXT, DATE, TIMESTAMP or BOOL (or BOOLEAN), in any case. Returns 0, or
 * PT_ERR_INPUT with a message in err ("column 3: unknown type 'flaot'").
 */
int pt_schema_parse(struct pt_schema *out, const char *table, const char *text, char *err,
                    size_t err_len);

/* The schema as pt_schema_parse reads it back ("day date, kwh decimal(3)"). */
void pt_schema_text(char *buf, size_t cap, const struct pt_schema *s);

/*
 * A serialized TableSchema message (as qr_catalog_schema gives one) as our
 * schema. Returns 0, or PT_ERR_INPUT if it does not decode or is not a
 * schema a token stores.
 */
int pt_schema_decode(struct pt_schema *out, const uint8_t *buf, size_t len);

/* Same name, same columns in the same order with the same types. */
bool pt_schema_equal(const struct pt_schema *a, const struct pt_schema *b);

/* The index of a column (ASCII case-insensitive), or -1. */
int pt_schema_column(const struct pt_schema *s, const char *name, size_t len);

/*
 * Calendar (proleptic Gregorian, UTC), the encoding of the wire, the
 * querier's SQL literals and the simulator. The parsers return 0 or -1 and
 * accept only real dates of years 1 to 9999:
 * - pt_date_parse: "YYYY-MM-DD";
 * - pt_timestamp_parse: "YYYY-MM-DDTHH:MM:SS", with a space for the T if
 *   one likes, and an optional final "Z"; seconds 00 to 59; nothing else
 *   (no fraction, no offset: UTC only).
 * The formatters write "YYYY-MM-DD" and "YYYY-MM-DDTHH:MM:SSZ", and clamp
 * values outside those years to them.
 */
#define PT_DATE_TEXT 11u      /* "YYYY-MM-DD" and its NUL */
#define PT_TIMESTAMP_TEXT 21u /* "YYYY-MM-DDTHH:MM:SSZ" and its NUL */
int pt_date_parse(int64_t *days, const char *s, size_t len);
int pt_timestamp_parse(int64_t *secs, const char *s, size_t len);
void pt_date_format(char buf[static PT_DATE_TEXT], int64_t days);
void pt_timestamp_format(char buf[static PT_TIMESTAMP_TEXT], int64_t secs);

/*
 * Exact number parsing. pt_int_parse reads [-]digits within int64.
 * pt_decimal_parse reads [-]digits[.digits] as an integer scaled by
 * 10^scale: "12.5" at scale 2 is 1250; digits past the scale must be
 * zeros. Both return 0, PT_NUM_SYNTAX, PT_NUM_DIGITS (decimals the scale
 * cannot keep) or PT_NUM_RANGE.
 */
enum { PT_NUM_SYNTAX = -1, PT_NUM_DIGITS = -2, PT_NUM_RANGE = -3 };
int pt_int_parse(int64_t *out, const char *s, size_t len);
int pt_decimal_parse(int64_t *out, const char *s, size_t len, unsigned scale);

/*
 * A value as text: INT and DECIMAL exactly ("-12.50"), DATE and TIMESTAMP
 * as above, BOOL "true"/"false", TEXT as it is, NULL as "". Returns the
 * length the text needs (as snprintf); buf is always NUL-terminated.
 */
size_t pt_value_format(char *buf, size_t cap, const struct pt_value *v);

/* Whether s[0..len) is valid UTF-8 without NUL; *bad gets the first bad byte. */
bool pt_utf8_valid(const uint8_t *s, size_t len, size_t *bad);

/* ----------------------------------------------------- the token, owned */

/*
 * An owner's session with a token, over a link. now is the host's clock,
 * sent with every request. token_status and reason describe the last
 * request the token refused.
 */
struct pt_owner {
    struct pt_link link;
    int64_t now;
    int token_status;
    char reason[PT_REASON_MAX + 1];
    uint64_t calls;
};

void pt_owner_init(struct pt_owner *o, const struct pt_link *link, int64_t now);

struct pt_token_info {
    bool has_keys;    /* the identity keys exist (after pt_owner_provision_begin) */
    bool provisioned; /* certified by an authority */
    uint8_t sign_pk[PT_KEY_LEN];
    uint64_t arena_size; /* the token's RAM */
};

int pt_owner_info(struct pt_owner *o, struct pt_token_info *out);

/*
 * Have the token make its identity keys and a certificate request for
 * subject (at most PT_SUBJECT_MAX bytes). *csr (malloc'd, the caller frees
 * it) is the serialized CertRequest that an authority signs later;
 * sign_pk receives the token's public key.
 */
int pt_owner_provision_begin(struct pt_owner *o, const char *subject, uint8_t **csr,
                             size_t *csr_len, uint8_t sign_pk[static PT_KEY_LEN]);

/*
 * A provisioning bundle (proto's ProvisionBundle: what an authority makes
 * for a token with cohort-authority certify-token), as far as the owner
 * can read it: the subject and token key the certificate was made for, its
 * issuer and validity, and the authorities whose researchers the token is
 * to obey. pt_bundle_decode checks the shape only (PT_ERR_TOO_LARGE over
 * PT_BUNDLE_MAX bytes, PT_ERR_INPUT for anything that is not a bundle):
 * what concerns the token, the token checks.
 */
#define PT_BUNDLE_MAX 16384u
#define PT_AUTHORITIES_MAX 8u /* trusted authorities a token keeps (TK_MAX_AUTHORITIES) */
struct pt_bundle {
    char subject[PT_SUBJECT_MAX + 1];
    uint8_t token_pk[PT_KEY_LEN];
    uint8_t issuer_pk[PT_KEY_LEN];
    int64_t not_before, not_after;
    size_t n_authorities;
    uint8_t authorities[PT_AUTHORITIES_MAX][PT_KEY_LEN];
};
int pt_bundle_decode(struct pt_bundle *out, const uint8_t *bundle, size_t len);

/*
 * Give the token the ProvisionFinish a bundle carries (the bundle's
 * bytes, checked as pt_bundle_decode does). The token installs it only if
 * the certificate is for its own keys and the group secret opens with its
 * box key; after that it refuses to be provisioned again (PT_ERR_TOKEN
 * with TK_ERR_PROVISIONED).
 */
int pt_owner_provision_finish(struct pt_owner *o, const uint8_t *bundle, size_t len);

struct pt_table_summary {
    struct pt_schema schema;
    uint64_t rows;
};

/* Every table of the token; *tables is malloc'd (NULL when there is none). */
int pt_owner_tables(struct pt_owner *o, struct pt_table_summary **tables, size_t *n);

/* One table by name: *found says whether the token has it. */
int pt_owner_table(struct pt_owner *o, const char *name, struct pt_table_summary *out, bool *found);

/*
 * Read a table's rows in id order, page by page, calling fn for each, at
 * most limit rows (0: all). values has the schema's n_columns entries. A
 * non-zero return from fn stops the reading and is returned.
 */
typedef int (*pt_row_fn)(void *ctx, const struct pt_schema *schema, uint64_t id,
                         const struct pt_value *values);
int pt_owner_rows(struct pt_owner *o, const char *table, uint64_t limit, pt_row_fn fn, void *ctx,
                  uint64_t *n_rows);

/* What a write did: rows stored or deleted, and the log's size. */
struct pt_changed {
    uint64_t rows;
    uint64_t log_bytes_before;
    uint64_t log_bytes_after;
};

/*
 * Rows to delete, exactly one of: all (and the table itself), the given
 * ids (at most PT_DELETE_IDS_MAX), or the rows the WHERE program of a
 * compiled plan selects (a serialized Plan over this table, for instance
 * from the querier's SQL compiler; nothing else of the plan is used, and a
 * plan with grouping, HAVING or a LIMIT is refused as not meant for this).
 */
struct pt_delete {
    bool all;
    const uint64_t *ids;
    size_t n_ids;
    const uint8_t *where_plan;
    size_t where_plan_len;
};

int pt_owner_delete(struct pt_owner *o, const char *table, const struct pt_delete *d,
                    struct pt_changed *out);

/* Rewrite the token's log with only its live records. */
int pt_owner_compact(struct pt_owner *o, struct pt_changed *out);

/*
 * The owner's consent policy (proto's ConsentPolicy says what each field
 * means). Empty lists: no table may be queried; any authority, researcher
 * and study may ask.
 */
struct pt_policy {
    size_t n_authorities;
    uint8_t authorities[PT_POLICY_KEYS_MAX][PT_KEY_LEN];
    size_t n_researchers;
    uint8_t researchers[PT_POLICY_KEYS_MAX][PT_KEY_LEN];
    size_t n_studies;
    char studies[PT_POLICY_NAMES_MAX][PT_STUDY_MAX + 1];
    size_t n_tables;
    char tables[PT_POLICY_NAMES_MAX][PT_POLICY_ITEM_MAX + 1]; /* "table" or "table.column" */
    uint32_t min_participants;
    uint32_t min_group_size;
    bool require_dp;
    double epsilon_per_study;
    double epsilon_total;
    int64_t set_at; /* set by the token */
};

int pt_owner_policy_get(struct pt_owner *o, struct pt_policy *out);

/* Replace the whole policy (set_at is ignored: the token stamps it). */
int pt_owner_policy_set(struct pt_owner *o, const struct pt_policy *p);

struct pt_audit_entry {
    uint64_t seq;
    int64_t time;
    uint8_t query_id[32];
    size_t query_id_len;
    char study[PT_STUDY_MAX + 1];
    char researcher[PT_SUBJECT_MAX + 1];
    uint8_t researcher_pk[PT_KEY_LEN];
    bool has_researcher_pk;
    char table[PT_NAME_MAX + 1];
    bool accepted;
    int status;
    char reason[PT_REASON_MAX + 1];
    double epsilon;
    char sql[PT_AUDIT_SQL_MAX + 1];
    char event[PT_EVENT_MAX + 1];
    /* The personal cloud's events ("doc.read", "share.accept", ...): the
     * document, share or credential concerned, and the credential that
     * asked (none: the owner at the token link). */
    uint8_t object[16];
    bool has_object;
    uint8_t cred_id[16];
    bool has_cred;
    char app[PT_APP_MAX + 1];
};

/*
 * Read the audit log from the entry after seq `after` (0: the first), page
 * by page, calling fn for each entry, at most limit entries (0: all).
 */
typedef int (*pt_audit_fn)(void *ctx, const struct pt_audit_entry *e);
int pt_owner_audit(struct pt_owner *o, uint64_t after, uint64_t limit, pt_audit_fn fn, void *ctx,
                   uint64_t *n_entries);

/*
 * Loading rows: one batch, which the token commits all at once or not at
 * all. The rows go in LoadTable requests of at most request_max bytes
 * (PT_LOAD_REQUEST_MIN to PT_LOAD_REQUEST_MAX), all but the last marked
 * `more`. pt_load_row checks a row against the schema (PT_ERR_INPUT if it
 * does not match: a caller's bug, since the importer checks first) and may
 * send a request. pt_load_commit sends the last one; only its success
 * means the rows are stored. pt_load_free of an uncommitted batch that
 * sent requests tells the token to drop it; it frees l (NULL: no-op).
 */
struct pt_load;
int pt_load_begin(struct pt_load **out, struct pt_owner *o, const struct pt_schema *schema,
                  size_t request_max);
int pt_load_row(struct pt_load *l, const struct pt_value *values);
int pt_load_commit(struct pt_load *l, uint64_t *rows);
void pt_load_free(struct pt_load *l);

#endif
