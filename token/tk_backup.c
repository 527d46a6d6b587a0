/*
 * Backup and recovery: the owner's whole log, sealed under a recovery
 * phrase, and restored into another token.
 *
 * What a backup holds. Every live record of the log, as the token keeps it
 * (a packed StoreRecord): documents' keys and metadata, tables and rows,
 * the policy in force (superseded ones are left out, as compaction leaves
 * them), the audit log, credentials, shares, and whatever kinds come later:
 * a record is copied as bytes, without being understood. Never in it: the
 * device's keys, its certificate, the group secret, the storage key (none
 * of them is in the log), and the recovery phrase's own secret (a
 * BackupKey record, left out). A restored token thus has the owner's data
 * under its own identity: its documents decrypt with the same keys, so the
 * agent's ciphertext files read back unchanged, and the owner's app
 * credentials authenticate as before (their hashes depend on nothing of the
 * device, tk_cred.c). What a record means under the old device's own keys
 * does not move with it: shares name the old device, so a sender's later
 * grants, sealed to the old device's key, cannot be opened by the new one.
 *
 * The phrase. BackupBegin draws 160 random bits the first time (or when
 * asked for a new phrase), keeps them in a BackupKey record and shows them
 * once, as 32 Crockford base32 symbols and 4 check symbols. The check
 * symbols are the syndromes sum(d_i * a^(j*i)), j = 1..4, of the data
 * symbols over GF(32) (x^5 + x^2 + 1): any one wrong symbol, and any two
 * neighbours swapped, fail the check for certain, other typos with odds
 * of 2^-20 of passing. Later backups use the same phrase and show nothing.
 * 160 bits drawn by the token need no password hashing: the key is
 * BLAKE2b-512 keyed by them over a label and the backup's random salt.
 *
 * The file (proto/cohort.proto has the byte layout). A 108-byte header
 * (magic, version, salt, secretstream header, the record stream's length,
 * and a check: BLAKE2b-256 of the rest under a key from the phrase), then
 * the stream of framed records cut into 2048-byte secretstream chunks, then
 * a final chunk (TAG_FINAL) with the counts of records and documents. With
 * the length in the authenticated header, every chunk's size is known in
 * advance: a reader needs no length prefix it would have to trust.
 *
 * What a restore refuses, and how:
 * - a phrase that does not parse or fails its check symbols:
 *   TK_ERR_MALFORMED at RestoreBegin (a typo); over 128 bytes:
 *   TK_ERR_TOO_LARGE;
 * - a file that is not a backup (magic): TK_ERR_MALFORMED; of another
 *   version: TK_ERR_UNSUPPORTED;
 * - a header whose check fails: TK_ERR_AUTH. A wrong phrase and a changed
 *   header cannot be told apart, and need not be;
 * - any chunk that fails authentication (a flipped bit, chunks reordered,
 *   dropped or taken from another backup): TK_ERR_DECRYPT;
 * - a file that ends early (RestoreFeed with `last`): TK_ERR_TRUNCATED;
 *   bytes after the final chunk, a final chunk that disagrees with what
 *   came before, a record the token never writes: TK_ERR_MALFORMED (these
 *   pass authentication only if whoever made the file knew the phrase);
 *   a record of a kind this token does not know: TK_ERR_UNSUPPORTED;
 * - a commit into a token that holds documents, tables, credentials or
 *   shares: TK_ERR_CONFLICT at RestoreBegin.
 * The phrase is the only secret a backup has: whoever knows it can read a
 * backup, and can write one that a token restores. Records are checked for
 * shape (one known kind, fields that walk), not for meaning.
 *
 * Sessions. A backup or restore session lives at the arena's low end
 * between calls, like a document session, and shares tk->session with the
 * others; any other request closes it. Making a backup: BackupBegin appends
 * (and commits) the BackupKey if drawn and an audit entry, counts what the
 * backup will hold and answers the header; each BackupNext reads the log
 * from the start (each scan verifies the log again), skips what earlier
 * calls sent, and answers as many whole chunks as fit (64 KiB at most),
 * the session remembering the record and the offset the stream goes on
 * at. The log cannot change in between: any request that could change it
 * closes the session first. Restoring: RestoreFeed takes the file in
 * pieces of any size; the session holds the header or the chunk being
 * gathered and the record being assembled, since a record may span
 * chunks and feeds. A commit restore appends each record as it is checked
 * and commits only with the final chunk: until then the appends are
 * pending, and tk_backup_wipe drops them whenever the session closes
 * (another request, an error), so a restore is all or nothing.
 *
 * Numbers. A restore keeps the token's own policy and audit entries before
 * the backup's; the backup's audit entries are numbered on from the
 * token's (audit_seq), and its rows keep their ids, the next row id moving
 * past them. The restored token appends the phrase's secret (its next
 * backups use the phrase the owner already holds) and an audit entry
 * "backup.restore"; a backup appends "backup.export".
 *
 * RAM. A backup session is a few hundred bytes; a BackupNext adds one
 * chunk and one log record in scratch. A restore session holds one chunk
 * and one record (about 10.5 KiB), a RestoreFeed one chunk of plaintext in
 * scratch: both fit the least arena. Nothing depends on the log's size.
 * Time: each BackupNext reads the log once, so a backup reads a log of L
 * bytes about L / 64 KiB times (a token with 100 documents: once); the
 * host's clock (c->now) is only written into the audit entries and
 * BackupKey, never trusted.
 */
#include "token/tk_int.h"

#define ABYTES crypto_secretstream_xchacha20poly1305_ABYTES
#define SS_HEADER_LEN crypto_secretstream_xchacha20poly1305_HEADERBYTES
#define TAG_MESSAGE crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
#define TAG_FINAL crypto_secretstream_xchacha20poly1305_TAG_FINAL
#define FILE_MAGIC "cohortbk"
#define FILE_VERSION 1u
#define OFF_VERSION 8u
#define OFF_SALT 12u
#define SALT_LEN 32u
#define OFF_SS 44u
#define OFF_STREAM_LEN 68u
#define OFF_CHECK 76u /* the check covers the bytes before it */
#define CHECK_LEN 32u
#define KDF_LABEL "cohort-backup-v1"
#define FRAME_LEN 4u /* a record's length prefix in the stream */
#define DATA_SYMBOLS 32u
#define CHECK_SYMBOLS 4u
#define SYMBOLS (DATA_SYMBOLS + CHECK_SYMBOLS)
#define STREAM_MAX (UINT64_C(1) << 48) /* a sanity bound on a header's stream length */
#define RESP_ROOM 32u                  /* BackupChunk's framing and what the dispatcher adds */
#define NO_INDEX UINT64_MAX

/* ------------------------------------------------------------ sessions */

struct bk_session {
    uint32_t magic;
    uint8_t id[TK_SESSION_ID_LEN];
    size_t arena_lo;
    bool restore;
    bool commit;
    bool done; /* backup: the final chunk went out; restore: it was checked */
    crypto_secretstream_xchacha20poly1305_state st;
    uint64_t stream_len;  /* bytes of the record stream */
    uint64_t stream_done; /* of them, in chunks made or checked */
    uint64_t records, documents;
    /* Making a backup: where the stream goes on. */
    uint64_t next_index;   /* the log record it continues in */
    uint64_t next_off;     /* bytes of that record's frame already sent */
    uint64_t policy_index; /* the one policy record backed up, or NO_INDEX */
};

/* A restore's buffers, right after its session. */
struct bk_restore {
    uint8_t secret[TK_BACKUP_SECRET_LEN];
    bool header_done;
    size_t buf_len;
    uint8_t buf[TK_BACKUP_CHUNK + ABYTES]; /* the header, then the chunk being gathered */
    size_t rec_have;                       /* bytes of the record's frame gathered */
    uint32_t rec_len;
    uint8_t len_buf[FRAME_LEN];
    uint64_t audit_base, audits;
    uint64_t max_row_id;
    /* Who began it, for the audit line (RestoreFeed carries no credential). */
    bool by_cred;
    uint8_t cred_id[TK_CRED_ID_LEN];
    char app[TK_CRED_NAME_MAX + 1];
    /* The record: room for the log's header before it and tag after it,
     * so that a commit seals it in place. */
    uint8_t rec[TK_REC_HDR + TK_RECORD_MAX + TK_TAG_LEN];
};

#define SESSION_ROOM ((sizeof(struct bk_session) + 7u) & ~(size_t)7u)

static struct bk_session *session_at(uint8_t *arena, size_t arena_len)
{
    struct bk_session *s = (struct bk_session *)arena;
    if (arena == NULL || arena_len < sizeof *s || ((uintptr_t)arena % 8) != 0 ||
        s->magic != TK_BACKUP_MAGIC || s->arena_lo > arena_len || s->arena_lo < sizeof *s)
        return NULL;
    return s;
}

static struct bk_restore *restore_of(struct bk_session *s)
{
    return (struct bk_restore *)((uint8_t *)s + SESSION_ROOM);
}

static bool session_open(const struct tk_token *tk)
{
    static const uint8_t zero[TK_SESSION_ID_LEN];
    return sodium_memcmp(tk->session, zero, sizeof zero) != 0;
}

size_t tk_backup_extent(const struct tk_token *tk, const uint8_t *arena, size_t arena_len)
{
    const struct bk_session *s = session_at((uint8_t *)(uintptr_t)arena, arena_len);
    if (s == NULL || !session_open(tk) || sodium_memcmp(s->id, tk->session, TK_SESSION_ID_LEN) != 0)
        return 0;
    return s->arena_lo;
}

static bool pending(const struct tk_token *tk)
{
    return tk->work.segment != tk->log.segment || tk->work.length != tk->log.length ||
           tk->work.records != tk->log.records || memcmp(tk->work.head, tk->log.head, 32) != 0;
}

void tk_backup_wipe(struct tk_token *tk, uint8_t *arena, size_t arena_len)
{
    struct bk_session *s = session_at(arena, arena_len);
    if (s != NULL)
        sodium_memzero(arena, s->arena_lo);
    /* Appends that no handler committed and no LoadTable batch owns are a
     * restore's, cut off: drop them (whether or not this arena still
     * holds its session). */
    if (!tk->batch_open && pending(tk))
        tk_log_abort(tk);
}

static struct bk_session *find_session(struct tk_call *c, const uint8_t *id, size_t id_len,
                                       bool restore)
{
    struct tk_arena *a = c->arena;
    struct bk_session *s = session_at(a->base, a->cap);
    if (s == NULL || !session_open(c->tk) || id_len != TK_SESSION_ID_LEN ||
        sodium_memcmp(s->id, c->tk->session, TK_SESSION_ID_LEN) != 0 ||
        sodium_memcmp(id, c->tk->session, TK_SESSION_ID_LEN) != 0 || s->restore != restore ||
        s->done || (restore && s->arena_lo < SESSION_ROOM + sizeof(struct bk_restore)))
        return NULL;
    a->lo = s->arena_lo;
    return s;
}

/* A new session at the arena's low end (the dispatcher closed any other);
 * it takes effect with open_session. */
static struct bk_session *new_session(struct tk_call *c, bool restore)
{
    size_t n = restore ? SESSION_ROOM + sizeof(struct bk_restore) : sizeof(struct bk_session);
    struct bk_session *s = tk_arena_keep(c->arena, n);
    if (s == NULL || (uint8_t *)s != c->arena->base)
        return NULL;
    memset(s, 0, n);
    s->restore = restore;
    s->policy_index = NO_INDEX;
    return s;
}

static void open_session(struct tk_call *c, struct bk_session *s)
{
    randombytes_buf(s->id, sizeof s->id);
    s->magic = TK_BACKUP_MAGIC;
    s->arena_lo = c->arena->lo;
    memcpy(c->tk->session, s->id, sizeof s->id);
}

static void end_session(struct tk_call *c)
{
    tk_session_close(c->tk, c->arena->base, c->arena->cap);
}

/* -------------------------------------------------------------- phrases */

static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/* GF(32) with x^5 + x^2 + 1. */
static uint8_t gf_mul(uint8_t a, uint8_t b)
{
    uint8_t r = 0;
    int i;
    for (i = 0; i < 5; i++) {
        r ^= (uint8_t)(-(b & 1) & a);
        b >>= 1;
        a = (uint8_t)(a << 1);
        a ^= (uint8_t)(-((a >> 5) & 1) & 0x25);
    }
    return r;
}

/* c[j] = sum over i of d[i] * a^((j + 1) * i), by Horner's rule. */
static void check_symbols(uint8_t c[CHECK_SYMBOLS], const uint8_t d[DATA_SYMBOLS])
{
    uint8_t w = 1, acc;
    size_t i, j;
    for (j = 0; j < CHECK_SYMBOLS; j++) {
        w = gf_mul(w, 2);
        acc = 0;
        for (i = DATA_SYMBOLS; i-- > 0;)
            acc = gf_mul(acc, w) ^ d[i];
        c[j] = acc;
    }
}

/* The bits of n_in values of in_bits each, regrouped most significant
 * first into values of out_bits each (a secret's bytes into 5-bit symbols
 * and back: 160 bits either way). The accumulator holds secret bits. */
static void regroup(uint8_t *out, unsigned out_bits, const uint8_t *in, size_t n_in,
                    unsigned in_bits)
{
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t i, n = 0;
    for (i = 0; i < n_in; i++) {
        acc = acc << in_bits | in[i];
        bits += in_bits;
        while (bits >= out_bits) {
            bits -= out_bits;
            out[n++] = (uint8_t)((acc >> bits) & ((1u << out_bits) - 1u));
        }
    }
    sodium_memzero(&acc, sizeof acc);
}

static void secret_to_symbols(uint8_t sym[DATA_SYMBOLS], const uint8_t secret[TK_BACKUP_SECRET_LEN])
{
    regroup(sym, 5, secret, TK_BACKUP_SECRET_LEN, 8);
}

static void symbols_to_secret(uint8_t secret[TK_BACKUP_SECRET_LEN], const uint8_t sym[DATA_SYMBOLS])
{
    regroup(secret, 8, sym, DATA_SYMBOLS, 5);
}

/* The phrase of a secret: 9 groups of 4 symbols joined by '-'. */
static void phrase_write(char out[TK_BACKUP_PHRASE_LEN + 1],
                         const uint8_t secret[TK_BACKUP_SECRET_LEN])
{
    uint8_t sym[SYMBOLS];
    size_t i, n = 0;
    secret_to_symbols(sym, secret);
    check_symbols(sym + DATA_SYMBOLS, sym);
    for (i = 0; i < SYMBOLS; i++) {
        if (i > 0 && i % 4 == 0)
            out[n++] = '-';
        out[n++] = alphabet[sym[i]];
    }
    out[n] = '\0';
    sodium_memzero(sym, sizeof sym);
}

/* A symbol's value, or -1; the alphabet is searched in full whatever the
 * character (the phrase is secret). */
static int symbol_of(char ch)
{
    int i, v = -1;
    if (ch >= 'a' && ch <= 'z')
        ch = (char)(ch - 'a' + 'A');
    if (ch == 'O')
        ch = '0';
    if (ch == 'I' || ch == 'L')
        ch = '1';
    for (i = 0; i < 32; i++)
        v = alphabet[i] == ch ? i : v;
    return v;
}

/* The secret of a phrase as the owner types it: TK_ERR_TOO_LARGE over
 * TK_BACKUP_PHRASE_MAX bytes, TK_ERR_MALFORMED for anything but 36 symbols
 * ('-' and spaces aside) whose check symbols hold. */
static int phrase_parse(uint8_t secret[TK_BACKUP_SECRET_LEN], const char *phrase)
{
    uint8_t sym[SYMBOLS], check[CHECK_SYMBOLS];
    size_t i, n = 0, len = phrase != NULL ? strlen(phrase) : 0;
    int rc = TK_OK;

    if (len > TK_BACKUP_PHRASE_MAX)
        return TK_ERR_TOO_LARGE;
    for (i = 0; i < len && rc == TK_OK; i++) {
        int v;
        if (phrase[i] == '-' || phrase[i] == ' ')
            continue;
        v = symbol_of(phrase[i]);
        if (v < 0 || n == SYMBOLS)
            rc = TK_ERR_MALFORMED;
        else
            sym[n++] = (uint8_t)v;
    }
    if (rc == TK_OK && n != SYMBOLS)
        rc = TK_ERR_MALFORMED;
    if (rc == TK_OK) {
        check_symbols(check, sym);
        if (sodium_memcmp(check, sym + DATA_SYMBOLS, CHECK_SYMBOLS) != 0)
            rc = TK_ERR_MALFORMED;
        else
            symbols_to_secret(secret, sym);
    }
    sodium_memzero(sym, sizeof sym);
    sodium_memzero(check, sizeof check);
    return rc;
}

/* The stream key and the header's check key of a backup. */
static void keys_derive(uint8_t key[32], uint8_t check_key[32],
                        const uint8_t secret[TK_BACKUP_SECRET_LEN], const uint8_t salt[SALT_LEN])
{
    crypto_generichash_state st;
    uint8_t out[64];
    crypto_generichash_init(&st, secret, TK_BACKUP_SECRET_LEN, sizeof out);
    crypto_generichash_update(&st, (const uint8_t *)KDF_LABEL, sizeof KDF_LABEL - 1);
    crypto_generichash_update(&st, salt, SALT_LEN);
    crypto_generichash_final(&st, out, sizeof out);
    memcpy(key, out, 32);
    memcpy(check_key, out + 32, 32);
    sodium_memzero(out, sizeof out);
    sodium_memzero(&st, sizeof st);
}

/* ------------------------------------------------------------- records */

/* Whether every field of a message walks (one level). */
static bool fields_walk(const uint8_t *b, size_t n)
{
    struct tk_wfield f;
    size_t pos = 0;
    int more;
    while ((more = tk_wire_next(b, n, &pos, &f)) == 1)
        ;
    return more == 0;
}

/* A DocRecord's revision, if its fields are a revision's: 0 or -1. */
static int doc_revision(const uint8_t *b, size_t n, uint64_t *rev)
{
    struct tk_wfield f;
    size_t pos = 0;
    bool id = false, key = false, hash = false;
    int more;
    *rev = 0;
    while ((more = tk_wire_next(b, n, &pos, &f)) == 1) {
        if (f.field == 1)
            id = f.wire_type == 2 && f.len == TK_DOC_ID_LEN;
        else if (f.field == 2 && f.wire_type == 0)
            *rev = f.varint;
        else if (f.field == 3)
            key = f.wire_type == 2 && f.len == crypto_secretstream_xchacha20poly1305_KEYBYTES;
        else if (f.field == 4)
            hash = f.wire_type == 2 && f.len == TK_DOC_HASH_LEN;
    }
    return more == 0 && id && key && hash && *rev > 0 ? 0 : -1;
}

/* The highest row id of a RowBatch: 0 or -1 when it is not one. */
static int batch_max_id(const uint8_t *b, size_t n, uint64_t *max)
{
    struct tk_wfield f;
    uint64_t first = 0, rows = 0, ids = 0, v;
    size_t pos = 0, p;
    int more;
    *max = 0;
    while ((more = tk_wire_next(b, n, &pos, &f)) == 1) {
        if (f.field == 2 && f.wire_type == 0) {
            first = f.varint;
        } else if (f.field == 3 && f.wire_type == 2) {
            rows++;
        } else if (f.field == 4 && f.wire_type == 0) {
            ids++;
            *max = f.varint > *max ? f.varint : *max;
        } else if (f.field == 4 && f.wire_type == 2) {
            for (p = 0; p < f.len; ids++) {
                if (tk_wire_varint(f.data, f.len, &p, &v) != 0)
                    return -1;
                *max = v > *max ? v : *max;
            }
        }
    }
    if (more != 0 || (ids != 0 && ids != rows))
        return -1;
    if (ids == 0 && rows > 0) {
        if (first == 0 || first > UINT64_MAX - rows)
            return -1;
        *max = first + rows - 1;
    }
    return *max == UINT64_MAX ? -1 : 0;
}

/* A BackupKey's secret: 0 or -1. */
static int key_secret(const uint8_t *b, size_t n, uint8_t secret[TK_BACKUP_SECRET_LEN])
{
    struct tk_wfield f;
    size_t pos = 0;
    bool found = false;
    int more;
    while ((more = tk_wire_next(b, n, &pos, &f)) == 1)
        if (f.field == 1 && f.wire_type == 2 && f.len == TK_BACKUP_SECRET_LEN) {
            memcpy(secret, f.data, TK_BACKUP_SECRET_LEN);
            found = true;
        }
    return more == 0 && found ? 0 : -1;
}

static int append_key(struct tk_call *c, const uint8_t secret[TK_BACKUP_SECRET_LEN])
{
    Cohort__StoreRecord rec = COHORT__STORE_RECORD__INIT;
    Cohort__BackupKey k = COHORT__BACKUP_KEY__INIT;
    k.secret = (ProtobufCBinaryData){TK_BACKUP_SECRET_LEN, (uint8_t *)(uintptr_t)secret};
    k.drawn = c->now;
    rec.body_case = COHORT__STORE_RECORD__BODY_BACKUP_KEY;
    rec.backup_key = &k;
    return tk_log_append(c->tk, c->arena, &rec);
}

/* What a scan of the log learns: the phrase's secret in force, what a
 * backup of the log holds, and whether a restore would mix with data. */
struct census {
    bool have_key;
    uint8_t secret[TK_BACKUP_SECRET_LEN];
    uint64_t records, documents, stream_len; /* policies aside */
    uint64_t policy_index, policy_frame;     /* the latest policy */
    bool conflict;
};

static int census_fn(void *ctx, struct tk_arena *a, const uint8_t *plain, size_t len,
                     uint64_t index)
{
    struct census *n = ctx;
    const uint8_t *body;
    size_t body_len;
    uint32_t kind;
    uint64_t rev;
    int rc;
    (void)a;
    if ((rc = tk_record_body(plain, len, &kind, &body, &body_len)) != TK_OK)
        return rc;
    if (kind != TK_REC_POLICY && kind != TK_REC_AUDIT && kind != TK_REC_BACKUP_KEY)
        n->conflict = true;
    if (kind == TK_REC_BACKUP_KEY) {
        if (key_secret(body, body_len, n->secret) != 0)
            return TK_ERR_TAMPERED;
        n->have_key = true;
        return TK_OK;
    }
    if (kind == TK_REC_POLICY) {
        n->policy_index = index;
        n->policy_frame = FRAME_LEN + len;
        return TK_OK;
    }
    if (kind == TK_REC_DOC) {
        if (doc_revision(body, body_len, &rev) != 0)
            return TK_ERR_TAMPERED;
        n->documents += rev == 1;
    }
    n->records++;
    n->stream_len += FRAME_LEN + len;
    return TK_OK;
}

static int census_take(struct tk_call *c, struct census *n)
{
    memset(n, 0, sizeof *n);
    n->policy_index = NO_INDEX;
    return tk_log_scan(c->tk, c->arena, false, census_fn, n);
}

/* --------------------------------------------------------- making one */

static size_t session_body_len(bool phrase, bool header)
{
    return tk_field_len(1, TK_SESSION_ID_LEN) +
           (phrase ? tk_field_len(2, TK_BACKUP_PHRASE_LEN) : 0) +
           (header ? tk_field_len(3, TK_BACKUP_HEADER_LEN) : 0);
}

int tk_do_backup_begin(struct tk_call *c, const Cohort__BackupBegin *req)
{
    struct tk_token *tk = c->tk;
    const struct tk_cred *cr;
    struct bk_session *s;
    struct census n;
    uint8_t secret[TK_BACKUP_SECRET_LEN], key[32], check_key[32];
    uint8_t header[TK_BACKUP_HEADER_LEN];
    char phrase[TK_BACKUP_PHRASE_LEN + 1];
    uint64_t before;
    size_t audit_len = 0;
    bool drawn;
    int rc;

    if (!tk_has_flag(tk, TK_FLAG_KEYS))
        return TK_ERR_NOT_PROVISIONED;
    if ((rc = tk_cred_owner(c)) != TK_OK || (rc = tk_cred_load(c, &cr)) != TK_OK)
        return rc;
    /* The answer must fit before anything is committed: a phrase drawn
     * and never shown would be kept and never shown again. */
    if (tk_w_room(c->out) < tk_field_len(27, session_body_len(true, true)) + RESP_ROOM)
        return TK_ERR_RESPONSE_SPACE;
    if ((s = new_session(c, false)) == NULL)
        return TK_ERR_NO_MEMORY;
    if ((rc = census_take(c, &n)) != TK_OK)
        goto out;
    drawn = !n.have_key || req->new_phrase;
    if (drawn) {
        randombytes_buf(secret, sizeof secret);
        rc = append_key(c, secret);
    } else {
        memcpy(secret, n.secret, sizeof secret);
    }
    before = tk->work.length;
    if (rc == TK_OK && (rc = tk_audit_event(c, "backup.export", NULL, 0, cr, true)) == TK_OK) {
        /* The audit line's plaintext, as the backup will hold it. */
        audit_len = (size_t)(tk->work.length - before) - TK_REC_HDR - TK_TAG_LEN;
        rc = tk_log_commit(tk, c->arena);
    }
    if (rc != TK_OK) {
        tk_log_abort(tk);
        goto out;
    }
    /* Committed: nothing below can fail. The audit entry is the last
     * record, and in the backup. */
    s->records = n.records + 1;
    s->documents = n.documents;
    s->stream_len = n.stream_len + FRAME_LEN + audit_len;
    if (n.policy_index != NO_INDEX) {
        s->records++;
        s->stream_len += n.policy_frame;
        s->policy_index = n.policy_index;
    }

    memcpy(header, FILE_MAGIC, OFF_VERSION);
    tk_put_le32(header + OFF_VERSION, FILE_VERSION);
    randombytes_buf(header + OFF_SALT, SALT_LEN);
    keys_derive(key, check_key, secret, header + OFF_SALT);
    crypto_secretstream_xchacha20poly1305_init_push(&s->st, header + OFF_SS, key);
    tk_put_le64(header + OFF_STREAM_LEN, s->stream_len);
    crypto_generichash(header + OFF_CHECK, CHECK_LEN, header, OFF_CHECK, check_key,
                       sizeof check_key);
    open_session(c, s);

    /* BackupSession { session, phrase (when drawn), header } */
    tk_w_open(c->out, 27, session_body_len(drawn, true));
    tk_w_bytes(c->out, 1, s->id, sizeof s->id);
    if (drawn) {
        phrase_write(phrase, secret);
        tk_w_bytes(c->out, 2, (const uint8_t *)phrase, TK_BACKUP_PHRASE_LEN);
    }
    tk_w_bytes(c->out, 3, header, sizeof header);
out:
    sodium_memzero(secret, sizeof secret);
    sodium_memzero(key, sizeof key);
    sodium_memzero(check_key, sizeof check_key);
    sodium_memzero(phrase, sizeof phrase);
    sodium_memzero(&n, sizeof n);
    return rc;
}

/* One BackupNext's pass over the log: the stream from where the last one
 * stopped, cut into chunks sealed straight into the response. */
struct filler {
    struct bk_session *s;
    uint8_t *chunk; /* TK_BACKUP_CHUNK bytes of scratch */
    size_t fill;
    uint8_t *out;  /* where the next chunk goes */
    uint64_t want; /* stream bytes this call still takes */
};

static size_t next_chunk_len(const struct bk_session *s)
{
    uint64_t left = s->stream_len - s->stream_done;
    return left < TK_BACKUP_CHUNK ? (size_t)left : TK_BACKUP_CHUNK;
}

static int fill_fn(void *ctx, struct tk_arena *a, const uint8_t *plain, size_t len, uint64_t index)
{
    struct filler *f = ctx;
    struct bk_session *s = f->s;
    const uint8_t *body;
    size_t body_len, frame_len = FRAME_LEN + len, off;
    uint8_t prefix[FRAME_LEN];
    uint32_t kind;
    int rc;
    (void)a;

    if (index < s->next_index)
        return TK_OK;
    if ((rc = tk_record_body(plain, len, &kind, &body, &body_len)) != TK_OK)
        return rc;
    if (kind == TK_REC_BACKUP_KEY || (kind == TK_REC_POLICY && index != s->policy_index))
        return TK_OK;
    off = index == s->next_index ? (size_t)s->next_off : 0;
    if (off >= frame_len)
        return TK_ERR_TAMPERED; /* not the log BackupBegin counted */
    tk_put_le32(prefix, (uint32_t)len);
    while (off < frame_len && f->want > 0) {
        size_t target = next_chunk_len(s), take = target - f->fill;
        if (take > frame_len - off)
            take = frame_len - off;
        if (off < FRAME_LEN) {
            take = take < FRAME_LEN - off ? take : FRAME_LEN - off;
            memcpy(f->chunk + f->fill, prefix + off, take);
        } else {
            memcpy(f->chunk + f->fill, plain + (off - FRAME_LEN), take);
        }
        f->fill += take;
        off += take;
        if (f->fill == target) {
            crypto_secretstream_xchacha20poly1305_push(&s->st, f->out, NULL, f->chunk, target, NULL,
                                                       0, TAG_MESSAGE);
            f->out += target + ABYTES;
            s->stream_done += target;
            f->want -= target;
            f->fill = 0;
        }
    }
    if (off == frame_len) {
        s->next_index = index + 1;
        s->next_off = 0;
    } else {
        s->next_index = index;
        s->next_off = off;
    }
    return f->want == 0 ? TK_SCAN_STOP : TK_OK;
}

int tk_do_backup_next(struct tk_call *c, const Cohort__BackupNext *req)
{
    struct bk_session *s;
    struct filler f;
    uint8_t trailer[TK_BACKUP_TRAILER_LEN];
    uint64_t left, take = 0;
    size_t room, bytes = 0, mark;
    uint8_t *p;
    bool final;
    int rc;

    if ((s = find_session(c, req->session.data, req->session.len, false)) == NULL)
        return TK_ERR_SESSION;
    room = tk_w_room(c->out);
    if (room < RESP_ROOM)
        return TK_ERR_RESPONSE_SPACE;
    room -= RESP_ROOM;
    if (room > TK_BACKUP_DATA_MAX)
        room = TK_BACKUP_DATA_MAX;
    /* Whole chunks only, as many as fit; the final one if it fits too. */
    left = s->stream_len - s->stream_done;
    while (take < left) {
        size_t n = left - take < TK_BACKUP_CHUNK ? (size_t)(left - take) : TK_BACKUP_CHUNK;
        if (bytes + n + ABYTES > room)
            break;
        bytes += n + ABYTES;
        take += n;
    }
    final = take == left && bytes + TK_BACKUP_TRAILER_LEN + ABYTES <= room;
    if (final)
        bytes += TK_BACKUP_TRAILER_LEN + ABYTES;
    if (bytes == 0)
        return TK_ERR_RESPONSE_SPACE;

    /* BackupChunk { data, last } */
    tk_w_open(c->out, 28, tk_field_len(1, bytes) + (final ? 2 : 0));
    tk_w_open(c->out, 1, bytes);
    if ((p = tk_w_reserve(c->out, bytes)) == NULL)
        return TK_ERR_RESPONSE_SPACE;
    if (final)
        tk_w_uint(c->out, 2, 1);

    mark = tk_arena_mark(c->arena);
    f = (struct filler){s, tk_arena_scratch(c->arena, TK_BACKUP_CHUNK), 0, p, take};
    if (f.chunk == NULL)
        return TK_ERR_NO_MEMORY;
    rc = take > 0 ? tk_log_scan(c->tk, c->arena, false, fill_fn, &f) : TK_OK;
    sodium_memzero(f.chunk, TK_BACKUP_CHUNK);
    tk_arena_release(c->arena, mark);
    if (rc != TK_OK)
        return rc;
    if (f.want != 0)
        return TK_ERR_TAMPERED; /* the log ended before what BackupBegin counted */
    if (final) {
        tk_put_le64(trailer, s->records);
        tk_put_le64(trailer + 8, s->documents);
        tk_put_le64(trailer + 16, s->stream_len);
        crypto_secretstream_xchacha20poly1305_push(&s->st, f.out, NULL, trailer, sizeof trailer,
                                                   NULL, 0, TAG_FINAL);
        s->done = true;
        end_session(c);
    }
    return TK_OK;
}

/* ----------------------------------------------------------- restoring */

int tk_do_restore_begin(struct tk_call *c, const Cohort__RestoreBegin *req)
{
    const struct tk_cred *cr;
    struct bk_session *s;
    struct bk_restore *r;
    struct census n;
    uint8_t secret[TK_BACKUP_SECRET_LEN];
    int rc;

    if (!tk_has_flag(c->tk, TK_FLAG_KEYS))
        return TK_ERR_NOT_PROVISIONED;
    if ((rc = tk_cred_owner(c)) != TK_OK || (rc = tk_cred_load(c, &cr)) != TK_OK)
        return rc;
    if ((rc = phrase_parse(secret, req->phrase)) != TK_OK)
        return rc;
    if (req->commit) {
        rc = census_take(c, &n);
        if (rc == TK_OK && n.conflict)
            rc = TK_ERR_CONFLICT;
        sodium_memzero(&n, sizeof n);
    }
    if (rc == TK_OK && (s = new_session(c, true)) == NULL)
        rc = TK_ERR_NO_MEMORY;
    if (rc != TK_OK) {
        sodium_memzero(secret, sizeof secret);
        return rc;
    }
    r = restore_of(s);
    s->commit = req->commit;
    memcpy(r->secret, secret, sizeof secret);
    sodium_memzero(secret, sizeof secret);
    r->audit_base = c->tk->audit_seq;
    if (cr != NULL) {
        r->by_cred = true;
        memcpy(r->cred_id, cr->id, TK_CRED_ID_LEN);
        tk_text_put(r->app, 0, sizeof r->app, cr->info->name);
    }
    open_session(c, s);

    tk_w_open(c->out, 27, session_body_len(false, false));
    tk_w_bytes(c->out, 1, s->id, sizeof s->id);
    return TK_OK;
}

static int header_open(struct bk_session *s, struct bk_restore *r)
{
    uint8_t key[32], check_key[32], check[CHECK_LEN];
    int rc = TK_OK;

    keys_derive(key, check_key, r->secret, r->buf + OFF_SALT);
    crypto_generichash(check, sizeof check, r->buf, OFF_CHECK, check_key, sizeof check_key);
    if (sodium_memcmp(check, r->buf + OFF_CHECK, CHECK_LEN) != 0)
        rc = TK_ERR_AUTH;
    else if ((s->stream_len = tk_get_le64(r->buf + OFF_STREAM_LEN)) > STREAM_MAX)
        rc = TK_ERR_MALFORMED;
    else if (crypto_secretstream_xchacha20poly1305_init_pull(&s->st, r->buf + OFF_SS, key) != 0)
        rc = TK_ERR_DECRYPT;
    sodium_memzero(key, sizeof key);
    sodium_memzero(check_key, sizeof check_key);
    return rc;
}

/*
 * An audit entry of the backup, numbered on from the token's own: its seq
 * (the entry's first field, as the token writes it) is rewritten in place
 * and the rest moved behind it.
 */
static int audit_renumber(struct bk_restore *r, const uint8_t *body, size_t body_len)
{
    uint8_t *p = r->rec + TK_REC_HDR;
    struct tk_wbuf w;
    struct tk_wfield g;
    size_t pos = 0, rest_off, rest_len, new_body, prefix;
    uint64_t seq = r->audit_base + r->audits + 1;

    if (tk_wire_next(body, body_len, &pos, &g) != 1 || g.field != 1 || g.wire_type != 0)
        return TK_ERR_MALFORMED;
    rest_off = (size_t)(body - p) + pos;
    rest_len = body_len - pos;
    new_body = 1 + tk_varint_len(seq) + rest_len;
    prefix = 1 + tk_varint_len(new_body) + 1 + tk_varint_len(seq);
    if (prefix + rest_len > TK_RECORD_MAX)
        return TK_ERR_TOO_LARGE;
    memmove(p + prefix, p + rest_off, rest_len);
    w = (struct tk_wbuf){p, prefix, 0, false};
    tk_w_open(&w, TK_REC_AUDIT, new_body);
    tk_w_uint(&w, 1, seq);
    if (w.overflow || w.len != prefix)
        abort(); /* the prefix was measured above */
    r->rec_len = (uint32_t)(prefix + rest_len);
    r->audits++;
    return TK_OK;
}

/* One whole record of the stream: checked, counted, and with a commit
 * appended (sealed in place). */
static int record_take(struct tk_call *c, struct bk_session *s, struct bk_restore *r)
{
    uint8_t *plain = r->rec + TK_REC_HDR;
    struct tk_wfield f;
    size_t pos = 0, used = r->rec_len;
    uint64_t v;
    int rc = TK_OK;

    if (tk_wire_next(plain, r->rec_len, &pos, &f) != 1 || f.wire_type != 2 || pos != r->rec_len)
        return TK_ERR_MALFORMED;
    if (f.field > TK_REC_LAST)
        return TK_ERR_UNSUPPORTED;
    if (f.field == TK_REC_BACKUP_KEY || !fields_walk(f.data, f.len))
        return TK_ERR_MALFORMED;
    if (f.field == TK_REC_DOC) {
        if (doc_revision(f.data, f.len, &v) != 0)
            return TK_ERR_MALFORMED;
        s->documents += v == 1;
    } else if (f.field == TK_REC_ROWS) {
        if (batch_max_id(f.data, f.len, &v) != 0)
            return TK_ERR_MALFORMED;
        r->max_row_id = v > r->max_row_id ? v : r->max_row_id;
    } else if (f.field == TK_REC_AUDIT) {
        rc = audit_renumber(r, f.data, f.len);
        used = r->rec_len > used ? r->rec_len : used;
    }
    s->records++;
    if (rc == TK_OK && s->commit)
        rc = tk_log_append_sealed(c->tk, r->rec, r->rec_len);
    sodium_memzero(r->rec, TK_REC_HDR + used + TK_TAG_LEN);
    return rc;
}

/* Stream bytes (a chunk's plaintext) into records. */
static int stream_take(struct tk_call *c, struct bk_session *s, struct bk_restore *r,
                       const uint8_t *p, size_t n)
{
    size_t i = 0, take;
    int rc;
    while (i < n) {
        if (r->rec_have < FRAME_LEN) {
            take = FRAME_LEN - r->rec_have < n - i ? FRAME_LEN - r->rec_have : n - i;
            memcpy(r->len_buf + r->rec_have, p + i, take);
            r->rec_have += take;
            i += take;
            if (r->rec_have == FRAME_LEN) {
                r->rec_len = tk_get_le32(r->len_buf);
                if (r->rec_len == 0 || r->rec_len > TK_RECORD_MAX)
                    return TK_ERR_MALFORMED;
            }
            continue;
        }
        take = FRAME_LEN + r->rec_len - r->rec_have;
        take = take < n - i ? take : n - i;
        memcpy(r->rec + TK_REC_HDR + (r->rec_have - FRAME_LEN), p + i, take);
        r->rec_have += take;
        i += take;
        if (r->rec_have == FRAME_LEN + r->rec_len) {
            r->rec_have = 0;
            if ((rc = record_take(c, s, r)) != TK_OK)
                return rc;
        }
    }
    return TK_OK;
}

/* The chunk gathered in r->buf (box bytes): opened, then its records or,
 * for the final one, the counts checked. */
static int chunk_open(struct tk_call *c, struct bk_session *s, struct bk_restore *r, size_t box,
                      uint8_t *plain)
{
    bool final = s->stream_done == s->stream_len;
    unsigned long long m_len = 0;
    unsigned char tag = 0;
    int rc;

    if (crypto_secretstream_xchacha20poly1305_pull(&s->st, plain, &m_len, &tag, r->buf, box, NULL,
                                                   0) != 0)
        return TK_ERR_DECRYPT;
    if (tag != (final ? TAG_FINAL : TAG_MESSAGE))
        return TK_ERR_MALFORMED;
    if (final) {
        if (m_len != TK_BACKUP_TRAILER_LEN || tk_get_le64(plain) != s->records ||
            tk_get_le64(plain + 8) != s->documents || tk_get_le64(plain + 16) != s->stream_len ||
            r->rec_have != 0)
            return TK_ERR_MALFORMED;
        s->done = true;
        return TK_OK;
    }
    s->stream_done += m_len;
    rc = stream_take(c, s, r, plain, (size_t)m_len);
    sodium_memzero(plain, (size_t)m_len);
    return rc;
}

/* Take n bytes of the file. */
static int file_take(struct tk_call *c, struct bk_session *s, struct bk_restore *r,
                     const uint8_t *d, size_t n, uint8_t *plain)
{
    size_t i = 0, box, take;
    int rc;
    while (i < n) {
        if (s->done)
            return TK_ERR_MALFORMED; /* bytes after the final chunk */
        if (!r->header_done) {
            take = TK_BACKUP_HEADER_LEN - r->buf_len;
            take = take < n - i ? take : n - i;
            memcpy(r->buf + r->buf_len, d + i, take);
            r->buf_len += take;
            i += take;
            if (sodium_memcmp(r->buf, FILE_MAGIC,
                              r->buf_len < OFF_VERSION ? r->buf_len : OFF_VERSION) != 0)
                return TK_ERR_MALFORMED;
            if (r->buf_len >= OFF_SALT && tk_get_le32(r->buf + OFF_VERSION) != FILE_VERSION)
                return TK_ERR_UNSUPPORTED;
            if (r->buf_len == TK_BACKUP_HEADER_LEN) {
                if ((rc = header_open(s, r)) != TK_OK)
                    return rc;
                r->header_done = true;
                r->buf_len = 0;
            }
            continue;
        }
        box = (s->stream_done < s->stream_len ? next_chunk_len(s) : TK_BACKUP_TRAILER_LEN) + ABYTES;
        take = box - r->buf_len < n - i ? box - r->buf_len : n - i;
        memcpy(r->buf + r->buf_len, d + i, take);
        r->buf_len += take;
        i += take;
        if (r->buf_len == box) {
            r->buf_len = 0;
            if ((rc = chunk_open(c, s, r, box, plain)) != TK_OK)
                return rc;
        }
    }
    return TK_OK;
}

/* The commit at the end of a restore: counters past the backup's, the
 * phrase kept as the token's own, the audit entry; all committed at once. */
static int restore_commit(struct tk_call *c, struct bk_restore *r)
{
    struct tk_token *tk = c->tk;
    int rc;
    if (r->max_row_id >= tk->next_row_id)
        tk->next_row_id = r->max_row_id + 1;
    tk->audit_seq = r->audit_base + r->audits;
    if ((rc = append_key(c, r->secret)) != TK_OK)
        return rc;
    if ((rc = tk_audit_event_by(c, "backup.restore", NULL, 0, r->by_cred ? r->cred_id : NULL,
                                r->app, true)) != TK_OK)
        return rc;
    return tk_log_commit(tk, c->arena);
}

int tk_do_restore_feed(struct tk_call *c, const uint8_t *body, size_t len)
{
    struct bk_session *s;
    struct bk_restore *r;
    const uint8_t *sid, *data;
    size_t sid_len, data_len, mark;
    uint8_t *plain;
    bool last;
    int rc;

    if ((rc = tk_stream_parse(body, len, TK_BACKUP_DATA_MAX, &sid, &sid_len, &data, &data_len,
                              &last)) != TK_OK)
        return rc;
    if ((s = find_session(c, sid, sid_len, true)) == NULL)
        return TK_ERR_SESSION;
    r = restore_of(s);
    mark = tk_arena_mark(c->arena);
    if ((plain = tk_arena_scratch(c->arena, TK_BACKUP_CHUNK)) == NULL)
        return TK_ERR_NO_MEMORY;
    rc = file_take(c, s, r, data, data_len, plain);
    sodium_memzero(plain, TK_BACKUP_CHUNK);
    tk_arena_release(c->arena, mark);
    if (rc == TK_OK && last && !s->done)
        rc = TK_ERR_TRUNCATED;
    if (rc == TK_OK && s->done && s->commit)
        rc = restore_commit(c, r);
    if (rc != TK_OK) {
        /* Drop this call's appends from the flash too (the dispatcher
         * restores the state before it, which does not know of them). */
        tk_log_abort(c->tk);
        return rc;
    }

    /* RestoreDone { done, records, documents } */
    tk_w_open(c->out, 29, 2 + 1 + tk_varint_len(s->records) + 1 + tk_varint_len(s->documents));
    tk_w_uint(c->out, 1, s->done);
    tk_w_uint(c->out, 2, s->records);
    tk_w_uint(c->out, 3, s->documents);
    if (s->done)
        end_session(c);
    return TK_OK;
}
