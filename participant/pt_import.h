/*
 * Private to libcohort_participant and its CLI: importing the owner's data
 * files (CSV, JSON Lines) into a token table.
 *
 * The parser reads a whole file that is already in memory, checks every
 * value against the table's schema, and hands each row, converted to typed
 * values in schema order, to a callback. pt_import_load runs it twice:
 * once to check the whole file, sending nothing; then, only if the file is
 * valid, again to send its rows to the token as one batch, which the token
 * commits all at once or not at all. So a file with one bad value anywhere
 * stores nothing, and the owner is told the file, line and column.
 *
 * The formats, precisely:
 *
 * CSV (RFC 4180). The first line is a header naming every column of the
 * table, in any order, ASCII case-insensitive (spaces around a name are
 * ignored). Records end with LF or CRLF; the last one may lack it; blank
 * lines are skipped. A field is either unquoted (no '"', ',', CR or LF in
 * it) or quoted: '"' ... '"', where '""' stands for one quote and commas
 * and line breaks are data. A UTF-8 byte order mark at the start is
 * skipped. An empty unquoted field is NULL; a quoted empty field "" is the
 * empty text in a TEXT column and NULL in any other. Spaces are data: " 12"
 * is not an integer.
 *
 * JSON Lines. One JSON object per line, flat: its keys are column names
 * (matched exactly as in CSV), its values strings, numbers, true, false or
 * null; an object or array as a value is refused. Every column must appear
 * as a key: a missing key is an error (write null for no value), so that a
 * misspelt key is never silently a NULL. A key may appear once. Blank lines
 * are skipped.
 *
 * Values, by column type (a JSON string is read exactly as the same text
 * in a CSV field; JSON numbers are accepted where a number is expected):
 * - INT: [-]digits, within int64.
 * - DECIMAL(s): [-]digits[.digits], exact (no floating point): "12.5" in a
 *   DECIMAL(2) is 1250; digits past the scale must be zeros ("12.50" is
 *   fine in a DECIMAL(1), "12.55" is not). No exponent.
 * - TEXT: valid UTF-8, no NUL, at most PT_TEXT_MAX bytes.
 * - DATE: YYYY-MM-DD, a real calendar day of years 1 to 9999; stored as
 *   days since 1970-01-01, as the token and the querier's SQL encode it.
 * - TIMESTAMP: YYYY-MM-DDTHH:MM:SS (T or a space), an optional Z; UTC only,
 *   no fraction; stored as seconds since 1970-01-01 00:00:00 UTC.
 * - BOOL: true or false (any case), 1 or 0; in JSON also true, false.
 *
 * Errors read "FILE:LINE: column 'NAME' (N): WHAT", where N is the 1-based
 * position of the field in its line (CSV: in the header; JSON: among the
 * object's keys), or, for a column the file lacks, its position in the
 * table's schema; "field N" stands for a column without a name; a problem
 * of the whole file has no line. Each has a kind (enum pt_import_kind).
 *
 * Bounds: a file of at most PT_IMPORT_FILE_MAX bytes and PT_IMPORT_ROWS_MAX
 * rows; a line (a CSV record, with its quoted line breaks) of at most
 * PT_IMPORT_LINE_MAX bytes. Memory use is the file plus O(one line).
 */
#ifndef COHORT_PT_IMPORT_H
#define COHORT_PT_IMPORT_H

#include <stddef.h>
#include <stdint.h>

#include "participant/pt_owner.h"

#define PT_IMPORT_FILE_MAX (16u << 20) /* bytes of one file */
#define PT_IMPORT_ROWS_MAX 1000000u    /* rows of one file */
#define PT_IMPORT_LINE_MAX 16384u      /* bytes of one line (CSV: one record) */
#define PT_IMPORT_SHOW_MAX 40u         /* bytes of a bad value quoted in an error */
#define PT_IMPORT_WHAT_MAX 192u
#define PT_IMPORT_MSG_MAX 640u

enum pt_format {
    PT_FORMAT_CSV = 1,
    PT_FORMAT_JSONL = 2,
};

enum pt_import_kind {
    PT_IMPORT_OK = 0,
    PT_IMPORT_TYPE,     /* a value that is not of its column's type, or out of its range */
    PT_IMPORT_MISSING,  /* a column the header, a line or an object lacks */
    PT_IMPORT_EXTRA,    /* a column the table does not have, or a field past the header's */
    PT_IMPORT_TOO_LONG, /* a text, a line, or the file over its limit */
    PT_IMPORT_QUOTING,  /* CSV quotes that do not follow RFC 4180 */
    PT_IMPORT_JSON,     /* a line that is not a flat JSON object */
    PT_IMPORT_UTF8,     /* bytes that are not UTF-8, or a NUL */
    PT_IMPORT_EMPTY,    /* no rows at all */
};

struct pt_import_error {
    enum pt_import_kind kind;
    uint64_t line;                     /* 1-based; 0: the whole file */
    unsigned column;                   /* 1-based (see above); 0: none */
    char column_name[PT_NAME_MAX + 1]; /* "" when the field has no name */
    char what[PT_IMPORT_WHAT_MAX];     /* the problem alone: "'abc' is not an integer" */
    char msg[PT_IMPORT_MSG_MAX];       /* all of it, as above */
};

/* The rows, one at a time: values[0..n_columns) in schema order. A
 * non-zero return stops the parse and is returned by pt_import_parse. */
typedef int (*pt_import_row_fn)(void *ctx, const struct pt_value *values);

/*
 * Parse data[0..len) in format fmt for schema; file names the input in
 * messages. fn may be NULL (check only). Returns 0 with *rows set, or
 * PT_ERR_INPUT with err filled in, or PT_ERR_NOMEM, or what fn returned.
 */
int pt_import_parse(const uint8_t *data, size_t len, enum pt_format fmt,
                    const struct pt_schema *schema, const char *file, pt_import_row_fn fn,
                    void *ctx, uint64_t *rows, struct pt_import_error *err);

/*
 * The format of a file: by its name's extension (.csv; .jsonl, .ndjson,
 * .json), else by its first non-blank byte ('{' is JSON Lines).
 */
enum pt_format pt_import_format_guess(const char *file, const uint8_t *data, size_t len);

/*
 * Check the whole file, then load its rows into the token as one batch in
 * requests of at most request_max bytes (or one row). If the token runs
 * out of RAM for a request, the batch (dropped by the token) is sent again
 * in requests half the size, down to PT_LOAD_REQUEST_MIN. Returns 0 with
 * *rows stored; PT_ERR_INPUT with err filled in (nothing was sent); or a
 * PT_ERR_* of the token or the link (nothing was stored).
 */
int pt_import_load(struct pt_owner *o, const uint8_t *data, size_t len, enum pt_format fmt,
                   const struct pt_schema *schema, const char *file, size_t request_max,
                   uint64_t *rows, struct pt_import_error *err);

#endif
