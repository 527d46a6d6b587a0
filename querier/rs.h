/*
 * rs.h: the researcher's side of cohort-querier: their key and
 * certificate files.
 *
 * A researcher makes a key with `cohort-querier keygen --out PREFIX`:
 * PREFIX.key (a KeyFile, role "researcher", mode 0600) holds the secret
 * keys, PREFIX.csr (a CertRequest, mode 0644) asks an authority to certify
 * them. The authority answers with a certificate file (a CertChain: the
 * researcher's certificate, then its issuers up to a root), which the
 * researcher keeps beside the key. rs_load_researcher reads the two back
 * for signing plans (qr_plan_sign).
 *
 * The commands return the exit statuses of cohort-querier: RS_EXIT_OK (0),
 * RS_EXIT_FAILED (1) when the work fails (a file that cannot be written, a
 * key file that is refused), RS_EXIT_USAGE (2) for a wrong command line.
 */
#ifndef COHORT_RS_H
#define COHORT_RS_H

#include <stddef.h>
#include <stdint.h>

#include "querier/querier.h"

enum rs_exit {
    RS_EXIT_OK = 0,
    RS_EXIT_FAILED = 1,
    RS_EXIT_USAGE = 2,
};

/* Errors of the loaders: 0, or one of these with a sentence in err. */
enum rs_error {
    RS_OK = 0,
    RS_ERR_IO = -1,   /* a file that cannot be read */
    RS_ERR_DATA = -2, /* a file that is read but refused */
};

#define RS_KEY_FILE_MAX 4096u /* a researcher's key file */
#define RS_CHAIN_MAX 4u       /* certificates in a chain a token reads */
#define RS_CERT_MAX 384u      /* a certificate body a token reads (TK_CERT_MAX) */
#define RS_CHAIN_FILE_MAX (RS_CHAIN_MAX * 1024u) /* a certificate file */
#define RS_SUBJECT_MAX 63u                       /* bytes of a certificate's subject */
#define RS_SUBJECT_DEFAULT "cohort researcher"
#define RS_PATH_MAX 4096u

/*
 * cohort-querier keygen --out PREFIX [--subject NAME]: argv[0] is
 * "keygen". Makes a new Ed25519 + X25519 identity and writes PREFIX.key and
 * PREFIX.csr, neither of which may exist (nothing is written if one does).
 * Prints the key's id and the files' names, never a secret. Returns an
 * RS_EXIT_* status.
 */
int rs_keygen_main(int argc, char **argv);

/*
 * Load a researcher's key file and certificate file. The key file must be a
 * researcher's KeyFile whose keys agree with each other; the certificate
 * file a CertChain of 1 to RS_CHAIN_MAX certificates, the first a
 * RESEARCHER certificate for exactly these keys ("CERT was not issued for
 * this key" otherwise), each signed by the next, the last a self-signed
 * root. Validity dates are not checked here: a token checks them against
 * its own clock.
 *
 * On success *id holds the keys (the caller wipes it with
 * qr_identity_wipe), and *chain an array of *n_chain serialized
 * Certificates with their lengths in *chain_lens, in the file's order,
 * ready for qr_plan_sign; rs_chain_free releases them. Returns RS_OK,
 * RS_ERR_IO or RS_ERR_DATA with a sentence in err (never a secret); on an
 * error nothing is allocated and *id is wiped.
 */
int rs_load_researcher(const char *key_path, const char *cert_path, struct qr_identity *id,
                       uint8_t ***chain, size_t **chain_lens, size_t *n_chain, char *err,
                       size_t err_len);

/* Free what rs_load_researcher returned (NULL is fine). */
void rs_chain_free(uint8_t **chain, size_t *chain_lens, size_t n_chain);

#endif
