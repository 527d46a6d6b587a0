/*
 * libcohort_shell: what the programs' shells share (cohort-authority,
 * cohort-querier, cohort-participant): files, logs, and the nng transport
 * options. None of the cores uses it.
 *
 * Functions return 0 or -1; on -1 a sentence for the user is in err (always
 * NUL-terminated, never holding a secret).
 */
#ifndef COHORT_SHELL_H
#define COHORT_SHELL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define SH_ERR_MAX 512u
#define SH_FILE_MAX (16u << 20) /* the largest key, certificate or bundle file read */
#define SH_PK_LEN 32u           /* an Ed25519 public key */
#define SH_U64_DIGITS 20u       /* digits of a whole number on a command line */
#define SH_DOUBLE_CHARS 32u     /* characters of a decimal number on a command line */

/*
 * Read a whole regular file of at most max bytes into *out (malloc'd, with
 * one extra NUL byte after the data). "PATH: no such file", "PATH: larger
 * than N bytes", ...
 */
int sh_read_file(const char *path, size_t max, uint8_t **out, size_t *len, char *err,
                 size_t err_len);

/*
 * Write a file atomically: a temporary file in the same directory with
 * `mode`, written, fsync'd, renamed over path, and the directory fsync'd.
 * With exclusive, an existing path is an error ("PATH exists: refusing to
 * overwrite it", with errno EEXIST), so keys are never overwritten by
 * accident; the final name is taken with O_EXCL semantics, so a file that
 * appears meanwhile is not replaced either.
 */
int sh_write_file(const char *path, const uint8_t *data, size_t len, mode_t mode, bool exclusive,
                  char *err, size_t err_len);

/*
 * Command lines. sh_opt reads argv[*i] as "--name VALUE" or "--name=VALUE":
 * 1 with *value set (and *i moved past a separate value), 0 when argv[*i]
 * is another argument, -1 when the value is missing. The parsers take
 * decimal digits only (sh_parse_double: with at most one point) and a
 * value from min to max, and return 0 with *out set or -1 with *out
 * untouched; the caller words the message.
 */
int sh_opt(int argc, char **argv, int *i, const char *name, const char **value);
int sh_parse_u64(const char *text, uint64_t min, uint64_t max, uint64_t *out);
int sh_parse_double(const char *text, double min, double max, double *out);

/*
 * Whether sig (sig_len bytes) is pk's signature over TK_SIG_CERT || body,
 * as a token checks a certificate. Allocates; false also when out of memory.
 */
bool sh_cert_signed_by(const uint8_t *sig, size_t sig_len, const uint8_t *body, size_t body_len,
                       const uint8_t pk[static SH_PK_LEN]);

/*
 * Logs: one line on stderr, "2026-11-22T10:00:00Z PROG[PID]: message".
 * Callers never pass a secret: keys, plaintexts and group secrets are not
 * logged, only ids (the first 8 bytes of a key, in hex) and counts.
 */
void sh_log_init(const char *prog, bool quiet);
void sh_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Lower-case hex of n bytes into out (2n + 1 bytes). */
void sh_hex(char *out, const uint8_t *p, size_t n);
/* Parse exactly 2n hex digits. */
int sh_unhex(uint8_t *out, size_t n, const char *hex);
/* The value of one hex digit (either case), or -1. */
int sh_hex_digit(int c);

/*
 * Text that names something (a certificate's subject, a study): 1 to max
 * bytes of valid UTF-8 without control characters.
 */
bool sh_name_ok(const char *s, size_t max);
/*
 * Write text that came from elsewhere (a file, a peer) to f, safe for a
 * terminal: control bytes and bytes that are not UTF-8 become \xNN, a
 * backslash becomes \\.
 */
void sh_put(FILE *f, const char *s);

/* Milliseconds of the real-time clock (Unix epoch), and of a monotonic one. */
int64_t sh_now_ms(void);
int64_t sh_mono_ms(void);

/*
 * TLS for nng: the options of a listener or dialer whose URL starts with
 * tls+tcp://. A listener needs cert_key (a PEM file holding the server's
 * certificate chain and its private key); a dialer needs ca (a PEM file of
 * the certificates it trusts) and checks the server's name against the
 * URL's host unless server_name is given. The object is an nng_listener or
 * nng_dialer (passed as a pointer to it).
 */
struct sh_tls {
    const char *cert_key; /* listener */
    const char *ca;       /* dialer */
    const char *server_name;
};
int sh_tls_listener(void *nng_listener, const char *url, const struct sh_tls *tls, char *err,
                    size_t err_len);
int sh_tls_dialer(void *nng_dialer, const char *url, const struct sh_tls *tls, char *err,
                  size_t err_len);
/* Whether a URL is one Cohort accepts: tls+tcp://, tcp:// or ipc://. */
bool sh_url_ok(const char *url, bool *is_tls);

#endif
