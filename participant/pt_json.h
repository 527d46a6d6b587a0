/*
 * JSON for the agent's HTTP API: a strict, bounded reader and a writer.
 *
 * The reader takes text from a stranger (an app on the owner's machine,
 * or anything that can reach the loopback port) and builds a tree of
 * values, or refuses the text with the position of the first problem.
 * It accepts exactly RFC 8259 JSON and nothing more: one value, no
 * comments, no trailing commas, no NaN or Infinity, no leading zeros, no
 * byte order mark, no control byte inside a string, no lone or misordered
 * surrogate escape, no invalid UTF-8 (overlong forms, encoded surrogates,
 * code points above U+10FFFF), no "\u0000" (strings are C strings here),
 * and no object with the same member twice (two readers must never
 * disagree on what a body says). Every dimension a hostile body could
 * grow is bounded by struct pt_json_limits: its bytes, its nesting, its
 * values, the items of one array or object, and the bytes of one string.
 * The memory a parse takes is at most about the text's size plus
 * 64 bytes per value, and the nesting is bounded before recursing.
 *
 * The writer builds a JSON text in a malloc'd buffer of bounded size and
 * escapes every string: '"', '\\', every control byte, DEL, U+2028 and
 * U+2029 (which end lines in JavaScript), and each byte that is not part
 * of valid UTF-8 becomes U+FFFD, so any bytes the token gives back (a
 * document's type, a credential's name) print as valid JSON. Errors are
 * sticky: a text that would exceed its maximum, or a failed allocation,
 * makes pt_jw_finish fail, and nothing else needs checking on the way.
 *
 * Neither part holds a secret, and the reader copies strings into its own
 * buffer; the caller's text may be freed once parsed. Not thread-safe per
 * object; separate objects are independent.
 */
#ifndef COHORT_PT_JSON_H
#define COHORT_PT_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------- reader */

#define PT_JSON_DEPTH_MAX 64u /* the most nesting any limits may allow */
#define PT_JSON_MSG_MAX 127u

/* What a parse allows; every field must be set (0 allows nothing). */
struct pt_json_limits {
    size_t bytes;    /* of the whole text */
    uint32_t depth;  /* arrays and objects inside one another (1..PT_JSON_DEPTH_MAX) */
    uint32_t values; /* values in the whole text, containers and members included */
    uint32_t items;  /* items of one array, or members of one object */
    size_t string;   /* bytes of one string or member name, once decoded */
};

/* The HTTP API's bodies: 64 KiB, depth 8, 4096 values, 256 items, 8 KiB strings. */
extern const struct pt_json_limits pt_json_limits_api;

enum pt_json_type {
    PT_JSON_NULL = 0,
    PT_JSON_BOOL = 1,
    PT_JSON_NUMBER = 2,
    PT_JSON_STRING = 3,
    PT_JSON_ARRAY = 4,
    PT_JSON_OBJECT = 5,
};

/*
 * A value. STRING: s is the decoded string, NUL-terminated, len bytes of
 * valid UTF-8 without NUL. NUMBER: s is its text as written (valid JSON
 * number syntax). ARRAY and OBJECT: n items, the first at child, each
 * linked to the following one by next. A member of an object has its
 * name in key (decoded like a string). offset: where the value starts in
 * the text, for error messages.
 */
struct pt_json_value {
    enum pt_json_type type;
    bool b;
    const char *s;
    size_t len;
    const char *key;
    size_t key_len;
    uint32_t n;
    const struct pt_json_value *child;
    const struct pt_json_value *next;
    size_t offset;
};

/* Where and why a text was refused: byte offset, and line and column
 * (from 1; the column counts bytes). msg is one sentence; of the input it
 * quotes at most one printable ASCII character, never a string. */
struct pt_json_error {
    size_t offset;
    uint32_t line, column;
    char msg[PT_JSON_MSG_MAX + 1];
};

struct pt_json_block;
struct pt_json {
    const struct pt_json_value *root;
    /* private */
    struct pt_json_block *blocks;
    char *str;
    size_t str_len, str_cap;
    uint32_t n_values;
};

/*
 * Parse text[0..len) under lim. Returns 0 with doc->root set; or
 * PT_ERR_INPUT (not JSON, or not allowed: err says where and why),
 * PT_ERR_TOO_LARGE (over one of the limits: err says which, and where) or
 * PT_ERR_NOMEM; on an error doc holds nothing. pt_json_free(doc) releases
 * a parsed document (and is a no-op on a zeroed or failed one); the
 * values' pointers are valid until then.
 */
int pt_json_parse(struct pt_json *doc, const char *text, size_t len,
                  const struct pt_json_limits *lim, struct pt_json_error *err);
void pt_json_free(struct pt_json *doc);

/* A member by name (NULL when obj is not an object or has no such member). */
const struct pt_json_value *pt_json_member(const struct pt_json_value *obj, const char *key);

/* The first member of obj whose name is not one of known[0..n), or NULL. */
const struct pt_json_value *pt_json_unknown_member(const struct pt_json_value *obj,
                                                   const char *const *known, size_t n);

/*
 * A number written as a whole number (no fraction, no exponent) within
 * [min, max] into *out: 0, or PT_ERR_INPUT (not a number, not whole, or
 * out of range).
 */
int pt_json_int(const struct pt_json_value *v, int64_t min, int64_t max, int64_t *out);

/* "null", "true", ..., for messages. */
const char *pt_json_type_name(enum pt_json_type t);

/*
 * A \u escape, shared with the JSON Lines importer (pt_import.c): p is at
 * its first hex digit, with avail bytes there. 0 with the code point in
 * *cp and *used the bytes taken (4, or 10 for a surrogate pair, taken
 * whole); PT_JSON_U_DIGITS when four hex digits do not follow,
 * PT_JSON_U_LOW for a low surrogate first, PT_JSON_U_HIGH for a high
 * surrogate without its low one after it. \u0000 is code point 0: the
 * caller refuses it or lets its UTF-8 check do so.
 */
enum {
    PT_JSON_U_DIGITS = -1,
    PT_JSON_U_LOW = -2,
    PT_JSON_U_HIGH = -3,
};
int pt_json_u_escape(const uint8_t *p, size_t avail, uint32_t *cp, size_t *used);
/* cp (at most U+10FFFF, not a surrogate) as UTF-8 into out: 1 to 4 bytes. */
size_t pt_json_put_utf8(char out[static 4], uint32_t cp);

/* ------------------------------------------------------------- writer */

#define PT_JW_DEPTH_MAX 16u

/*
 * A text being written, at most max bytes. Values are written in order:
 * inside an object, pt_jw_key before each value. Misuse (a value where a
 * key is due, an end without its begin) is a caller's bug: it asserts,
 * and in a release build it makes the text fail like an overflow.
 */
struct pt_jw {
    char *buf;
    size_t len, cap, max;
    int err;
    uint32_t depth;
    bool first[PT_JW_DEPTH_MAX + 1];
    bool in_object[PT_JW_DEPTH_MAX + 1];
    bool key_due;
};

void pt_jw_init(struct pt_jw *w, size_t max);
void pt_jw_object(struct pt_jw *w);
void pt_jw_object_end(struct pt_jw *w);
void pt_jw_array(struct pt_jw *w);
void pt_jw_array_end(struct pt_jw *w);
void pt_jw_key(struct pt_jw *w, const char *key);
void pt_jw_null(struct pt_jw *w);
void pt_jw_bool(struct pt_jw *w, bool b);
void pt_jw_i64(struct pt_jw *w, int64_t v);
void pt_jw_u64(struct pt_jw *w, uint64_t v);
void pt_jw_str(struct pt_jw *w, const char *s);                    /* NUL-terminated */
void pt_jw_strn(struct pt_jw *w, const char *s, size_t len);       /* any bytes */
void pt_jw_hex(struct pt_jw *w, const uint8_t *data, size_t n);    /* lowercase, as a string */
void pt_jw_base64(struct pt_jw *w, const uint8_t *data, size_t n); /* standard, padded */

/*
 * The finished text: 0 with *out (malloc'd, NUL-terminated; the caller
 * frees it) and *len; or PT_ERR_TOO_LARGE (over max), PT_ERR_NOMEM, or
 * PT_ERR_INPUT (the writer was misused or the text is incomplete). The
 * writer is reset either way; pt_jw_free releases an unfinished one.
 */
int pt_jw_finish(struct pt_jw *w, char **out, size_t *len);
void pt_jw_free(struct pt_jw *w);

#endif
