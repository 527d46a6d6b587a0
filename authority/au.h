/*
 * cohort-authority: what its commands share.
 *
 * An authority is the offline root of a deployment: it certifies tokens
 * (as their manufacturer or issuer) and researchers (as an ethics board),
 * and it holds the deployment's group secret, which it seals to each token
 * it certifies. Its directory holds two files:
 *
 *   authority.key   a KeyFile, role "authority": the Ed25519 signing key,
 *                   an X25519 box key, the group secret and the root
 *                   certificate (mode 0600; the only secret file)
 *   authority.cert  a CertChain holding the root alone (mode 0644), for
 *                   services and other authorities
 *
 * Each command is one file (au_<name>.c) with one entry point, listed in
 * the table of au_cli.c, which also holds what they share: options,
 * errors, printing. The files' messages are read and written in
 * au_files.c (au_show.c decodes them too, to describe them). Commands
 * reach the world through struct au_env: its streams and its clock.
 *
 * Exit statuses: AU_OK (0); AU_USAGE (1) for a wrong command line (an
 * unknown option, a table that is not in the catalog, a number out of
 * range); AU_DATA (2) for an input file that is refused (a request whose
 * signature does not verify, a damaged key file, a file that exists where a
 * new one is to be written); AU_IO (3) when a file cannot be read or
 * written. Errors go to stderr, one sentence each. No command ever prints
 * a secret key or the group secret: keys are shown by their id, the first
 * AU_ID_BYTES bytes of the public key in hex.
 */
#ifndef COHORT_AU_H
#define COHORT_AU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "querier/querier.h"

enum au_status {
    AU_OK = 0,
    AU_USAGE = 1,
    AU_DATA = 2,
    AU_IO = 3,
};

#define AU_PROG "cohort-authority"
#define AU_KEY_FILE "authority.key"
#define AU_CERT_FILE "authority.cert"
#define AU_ROLE_AUTHORITY "authority"
#define AU_ROLE_RESEARCHER "researcher"

#define AU_ID_BYTES 8u /* a key's id: the first bytes of its public key, in hex */
#define AU_ID_TEXT (2 * AU_ID_BYTES + 1)
#define AU_PK_LEN 32u           /* Ed25519 and X25519 public keys */
#define AU_SECRET_LEN 32u       /* the group secret */
#define AU_SUBJECT_MAX 63u      /* bytes of a certificate's subject */
#define AU_STUDY_MAX 63u        /* bytes of a study name, as a token reads it */
#define AU_DAYS_MAX 36500u      /* the longest validity, in days */
#define AU_ROOT_DAYS 3650u      /* defaults: a root, */
#define AU_TOKEN_DAYS 1825u     /* a token, */
#define AU_RESEARCHER_DAYS 365u /* a researcher */
#define AU_BACKDATE 3600        /* seconds a certificate starts before it is made */
#define AU_EPSILON_MAX 1000.0   /* the largest epsilon a scope may allow */
#define AU_SCOPE_ITEMS_MAX 64u  /* tables, columns or studies in a scope */
#define AU_TRUST_MAX 8u         /* authorities a token trusts (TK_MAX_AUTHORITIES) */
#define AU_CERT_BODY_MAX 384u   /* a certificate body a token reads (TK_CERT_MAX) */
#define AU_CHAIN_MAX 4u         /* certificates in a chain a token reads */
#define AU_KEY_FILE_MAX 4096u   /* an authority's or a researcher's key file */
#define AU_CSR_MAX 4096u        /* a certificate request */
#define AU_CERT_FILE_MAX 16384u /* a certificate file */
#define AU_BUNDLE_MAX 16384u    /* a provisioning bundle */
#define AU_SHOW_MAX 65536u      /* any file show reads */
#define AU_PATH_MAX 4096u
#define AU_TIME_TEXT 21u /* "YYYY-MM-DDTHH:MM:SSZ" */
#define AU_SECONDS_PER_DAY 86400

/* The world, as the commands see it. */
struct au_env {
    FILE *out;
    FILE *err;
    int64_t now; /* Unix seconds */
};

/* Run the command line (argv[0] is the program). Returns an AU_* status. */
int au_main(int argc, char **argv);

/* The commands: argv[0] is the command's name. */
int au_init(int argc, char **argv, const struct au_env *env);
int au_certify_token(int argc, char **argv, const struct au_env *env);
int au_certify_researcher(int argc, char **argv, const struct au_env *env);
int au_show(int argc, char **argv, const struct au_env *env);

/* ------------------------------------------------------------ helpers */

/* "cohort-authority: CMD: ..." on stderr; returns status. */
int au_fail(const struct au_env *env, int status, const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A usage error, then the command's usage line. Returns AU_USAGE. */
int au_usage_error(const struct au_env *env, const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The command's usage line (and its options' text with --help). */
void au_usage(FILE *f, const char *cmd);
bool au_is_help(const char *arg);

/*
 * "--name VALUE" or "--name=VALUE" at argv[*i]: 1 with *value set
 * (advancing *i past a separate value); 0 if it is another argument; -1
 * when the value is missing (reported).
 */
int au_opt(const struct au_env *env, const char *cmd, int argc, char **argv, int *i,
           const char *name, const char **value);
/* Strict numbers: decimal digits only (and one point for a double), within [min, max]. */
int au_u64(const struct au_env *env, const char *cmd, const char *opt, const char *text,
           uint64_t min, uint64_t max, uint64_t *out);
int au_double(const struct au_env *env, const char *cmd, const char *opt, const char *text,
              double min, double max, double *out);

/*
 * The options both certify commands take. au_certify_opt reads argv[*i]
 * as one of them (as au_opt); au_certify_check then requires --dir, --csr
 * and --out (out_name names the file in the message) and reads --days into
 * *days when given. AU_OK or AU_USAGE (reported).
 */
struct au_certify_args {
    const char *dir, *csr, *out, *days;
};
int au_certify_opt(const struct au_env *env, const char *cmd, int argc, char **argv, int *i,
                   struct au_certify_args *args);
int au_certify_check(const struct au_env *env, const char *cmd, const struct au_certify_args *args,
                     const char *out_name, uint64_t *days);

/* A key's id (AU_ID_BYTES bytes in hex), and a time as "YYYY-MM-DDTHH:MM:SSZ". */
void au_id(char out[static AU_ID_TEXT], const uint8_t *pk);
void au_time(char out[static AU_TIME_TEXT], int64_t secs);

/*
 * Read a file of at most max bytes (*buf malloc'd; the caller frees it, and
 * wipes it first if it held a secret): AU_OK, AU_DATA when it is larger or
 * not a regular file, AU_IO when it cannot be read (reported).
 */
int au_read(const struct au_env *env, const char *cmd, const char *path, size_t max, uint8_t **buf,
            size_t *len);
/* AU_DATA (reported) when path exists: a new file is never written over an old one. */
int au_check_new(const struct au_env *env, const char *cmd, const char *path);
/* Write a new file atomically (sh_write_file, exclusive): AU_OK, AU_DATA if it exists, AU_IO. */
int au_write(const struct au_env *env, const char *cmd, const char *path, const uint8_t *data,
             size_t len, unsigned mode);
/* "DIR/NAME" into out; AU_USAGE (reported) when it is too long. */
int au_path(const struct au_env *env, const char *cmd, char out[static AU_PATH_MAX],
            const char *dir, const char *name);

/* ------------------------------------------------------------- files */

/*
 * The authority of a directory, in memory from sodium_malloc (guarded,
 * never swapped, wiped when freed): its identity, group secret and root.
 */
struct au_authority {
    struct qr_identity id;
    uint8_t group_secret[AU_SECRET_LEN];
    char subject[AU_SUBJECT_MAX + 1];
    uint8_t root[AU_CERT_BODY_MAX + 128]; /* the serialized root Certificate */
    size_t root_len;
    int64_t not_before, not_after; /* the root's */
};

/* A new authority (fresh keys and group secret; no root yet). NULL when out of memory. */
struct au_authority *au_authority_new(void);
void au_authority_free(struct au_authority *a); /* wipes; NULL is fine */

/*
 * Load DIR/authority.key, refusing one others may read, one that is not an
 * authority's, or whose root does not belong to its key. Returns an AU_*
 * status (reported); *out is set only on AU_OK.
 */
int au_authority_load(const struct au_env *env, const char *cmd, const char *dir,
                      struct au_authority **out);

/*
 * The authority's files as bytes: its KeyFile (*out malloc'd; the caller
 * wipes and frees it) and a CertChain of the given serialized certificates
 * (*out malloc'd). 0 or -1 (out of memory, or a certificate that does not
 * decode).
 */
int au_key_file_pack(uint8_t **out, size_t *len, const struct au_authority *a);
/* Wipe the secret fields of a decoded KeyFile, then free it; NULL is fine. */
struct Cohort__KeyFile;
void au_key_file_free(struct Cohort__KeyFile *kf);
int au_chain_pack(uint8_t **out, size_t *len, const uint8_t *const *certs, const size_t *lens,
                  size_t n);

/*
 * A ProvisionBundle: the token's certificate, the sealed group secret, the
 * authorities it is to trust, and its subject. 0 or -1.
 */
int au_bundle_pack(uint8_t **out, size_t *len, const uint8_t *cert, size_t cert_len,
                   const uint8_t *sealed, size_t sealed_len, const uint8_t (*trusted)[AU_PK_LEN],
                   size_t n_trusted, const char *subject);

/*
 * The root a certificate file ends at (--trust): the last certificate of a
 * CertChain file must be an authority's, self-signed, with a signature that
 * verifies. *pk receives its key. Returns an AU_* status (reported).
 */
int au_trust_read(const struct au_env *env, const char *cmd, const char *path,
                  uint8_t pk[static AU_PK_LEN]);

/*
 * Read and check a certificate request file (a token's DIR/token.csr or a
 * researcher's PREFIX.csr): qr_cert_request_check, and a subject that is a
 * name (sh_name_ok). *csr receives the file's bytes (malloc'd; the caller
 * frees them). Returns an AU_* status (reported).
 */
int au_csr_read(const struct au_env *env, const char *cmd, const char *path,
                struct qr_cert_request *req, uint8_t **csr, size_t *csr_len);

/*
 * The validity of a certificate the authority issues now for `days`: from
 * AU_BACKDATE seconds ago, to days from now or the root's end, whichever
 * comes first (*cut says which). AU_DATA (reported) when the root is not
 * valid now.
 */
int au_cert_window(const struct au_env *env, const char *cmd, const struct au_authority *a,
                   uint64_t days, int64_t *not_before, int64_t *not_after, bool *cut);

/* The size of a serialized certificate's body, or 0 if it does not decode. */
size_t au_cert_body_len(const uint8_t *cert, size_t len);

#endif
