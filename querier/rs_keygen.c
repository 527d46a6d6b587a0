/*
 * rs_keygen.c: the researcher's key and certificate files
 * (cohort-querier keygen, and the loader the signing commands use).
 *
 * keygen makes a researcher's identity (an Ed25519 signing key and an
 * X25519 box key, to which results are sealed) and writes two files: the
 * key file, mode 0600, which never leaves the researcher's machine, and a
 * certificate request, mode 0644, for an authority. The request is signed
 * by the new key over exactly the bytes a token signs for its own request
 * (TK_SIG_CSR || subject || sign_pk || box_pk), so an authority checks both
 * kinds with one function (qr_cert_request_check). Both files are written
 * with O_EXCL semantics: an existing key is never replaced.
 *
 * rs_load_researcher reads the key file and the certificate file the
 * authority gave back, and refuses a pair that does not belong together
 * before anything is signed with it: a plan signed under a certificate for
 * another key would be refused by every token, far from here, with a less
 * helpful message.
 *
 * This file is the codec between those files (proto/cohort.proto's
 * KeyFile, CertRequest, CertChain) and our structs. Secret bytes read from
 * or packed for a key file are wiped before their memory is freed.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "proto/cohort.pb-c.h"
#include "querier/rs.h"
#include "shell/shell.h"
#include "token/token.h"

_Static_assert(RS_CERT_MAX == TK_CERT_MAX, "a token reads certificates of TK_CERT_MAX bytes");

#define CMD "keygen"
#define PROG "cohort-querier"
#define ROLE_RESEARCHER "researcher"
#define ID_BYTES 8u /* a key's id: the first bytes of the public key, in hex */

/* ---------------------------------------------------------- keygen */

static void usage(FILE *f)
{
    fprintf(f, "usage: " PROG " " CMD " --out PREFIX [--subject NAME]\n");
}

static void help(FILE *f)
{
    usage(f);
    fprintf(
        f,
        "\nMakes a researcher's key and writes two files, neither of which may exist:\n"
        "  PREFIX.key   the secret key (mode 0600): keep it, never send it\n"
        "  PREFIX.csr   a certificate request for an authority\n"
        "               (cohort-authority certify-researcher --csr PREFIX.csr ...)\n\n"
        "  --subject NAME   the name the request gives the researcher (default '" RS_SUBJECT_DEFAULT
        "';\n                   at most %u bytes of UTF-8, no control characters)\n",
        RS_SUBJECT_MAX);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, PROG ": " CMD ": ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    usage(stderr);
    return RS_EXIT_USAGE;
}

/* The KeyFile of a researcher, packed into a buffer the caller wipes and frees. */
static int pack_key_file(uint8_t **out, size_t *len, const struct qr_identity *id,
                         const char *subject)
{
    Cohort__KeyFile kf = COHORT__KEY_FILE__INIT;

    kf.role = (char *)ROLE_RESEARCHER;
    kf.subject = (char *)subject;
    kf.sign_sk.data = (uint8_t *)id->sign_sk;
    kf.sign_sk.len = sizeof id->sign_sk;
    kf.box_sk.data = (uint8_t *)id->box_sk;
    kf.box_sk.len = sizeof id->box_sk;
    *len = cohort__key_file__get_packed_size(&kf);
    *out = malloc(*len);
    if (*out == NULL)
        return -1;
    cohort__key_file__pack(&kf, *out);
    return 0;
}

/* A CertRequest signed by the identity itself (proof of possession). */
static int pack_csr(uint8_t **out, size_t *len, const struct qr_identity *id, const char *subject)
{
    Cohort__CertRequest cr = COHORT__CERT_REQUEST__INIT;
    size_t p_len = strlen(TK_SIG_CSR), s_len = strlen(subject);
    size_t m_len = p_len + s_len + sizeof id->sign_pk + sizeof id->box_pk;
    uint8_t sig[crypto_sign_BYTES], *msg = malloc(m_len);

    if (msg == NULL)
        return -1;
    memcpy(msg, TK_SIG_CSR, p_len);
    memcpy(msg + p_len, subject, s_len);
    memcpy(msg + p_len + s_len, id->sign_pk, sizeof id->sign_pk);
    memcpy(msg + p_len + s_len + sizeof id->sign_pk, id->box_pk, sizeof id->box_pk);
    if (crypto_sign_detached(sig, NULL, msg, m_len, id->sign_sk) != 0) {
        free(msg);
        return -1;
    }
    free(msg);
    cr.subject = (char *)subject;
    cr.sign_pk.data = (uint8_t *)id->sign_pk;
    cr.sign_pk.len = sizeof id->sign_pk;
    cr.box_pk.data = (uint8_t *)id->box_pk;
    cr.box_pk.len = sizeof id->box_pk;
    cr.signature.data = sig;
    cr.signature.len = sizeof sig;
    *len = cohort__cert_request__get_packed_size(&cr);
    *out = malloc(*len);
    if (*out == NULL)
        return -1;
    cohort__cert_request__pack(&cr, *out);
    return 0;
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

int rs_keygen_main(int argc, char **argv)
{
    const char *prefix = NULL, *subject = RS_SUBJECT_DEFAULT;
    char key_path[RS_PATH_MAX], csr_path[RS_PATH_MAX], err[SH_ERR_MAX], id_hex[2 * ID_BYTES + 1];
    struct qr_identity *id = NULL;
    uint8_t *key_buf = NULL, *csr_buf = NULL;
    size_t key_len = 0, csr_len = 0;
    int rc = RS_EXIT_FAILED, m;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            help(stdout);
            return RS_EXIT_OK;
        }
        if ((m = sh_opt(argc, argv, &i, "--out", &prefix)) != 0 ||
            (m = sh_opt(argc, argv, &i, "--subject", &subject)) != 0) {
            if (m < 0)
                return usage_error("%s needs a value", argv[i]);
            continue;
        }
        return usage_error("unexpected argument '%.60s'", argv[i]);
    }
    if (prefix == NULL || prefix[0] == '\0')
        return usage_error("give the files' name with --out PREFIX");
    if (!sh_name_ok(subject, RS_SUBJECT_MAX))
        return usage_error("--subject: 1 to %u bytes of UTF-8 text without control characters",
                           RS_SUBJECT_MAX);
    if ((size_t)snprintf(key_path, sizeof key_path, "%s.key", prefix) >= sizeof key_path ||
        (size_t)snprintf(csr_path, sizeof csr_path, "%s.csr", prefix) >= sizeof csr_path)
        return usage_error("--out: the path is too long");
    /* Neither file may exist: refuse before either is written. */
    if (exists(key_path) || exists(csr_path)) {
        fprintf(stderr, PROG ": " CMD ": ");
        sh_put(stderr, exists(key_path) ? key_path : csr_path);
        fprintf(stderr, " exists: refusing to overwrite it\n");
        return RS_EXIT_FAILED;
    }
    if (sodium_init() < 0) {
        fprintf(stderr, PROG ": " CMD ": libsodium failed to initialise\n");
        return RS_EXIT_FAILED;
    }
    id = sodium_malloc(sizeof *id);
    if (id == NULL || qr_identity_generate(id) != 0 ||
        pack_key_file(&key_buf, &key_len, id, subject) != 0 ||
        pack_csr(&csr_buf, &csr_len, id, subject) != 0) {
        fprintf(stderr, PROG ": " CMD ": cannot make a key\n");
        goto cleanup;
    }
    if (sh_write_file(key_path, key_buf, key_len, 0600, true, err, sizeof err) != 0) {
        fprintf(stderr, PROG ": " CMD ": ");
        sh_put(stderr, err);
        fputc('\n', stderr);
        goto cleanup;
    }
    if (sh_write_file(csr_path, csr_buf, csr_len, 0644, true, err, sizeof err) != 0) {
        unlink(key_path); /* all or nothing: the key without its request is of no use */
        fprintf(stderr, PROG ": " CMD ": ");
        sh_put(stderr, err);
        fputc('\n', stderr);
        goto cleanup;
    }
    sh_hex(id_hex, id->sign_pk, ID_BYTES);
    printf("created a researcher key\n  key id:               %s\n  subject:              ",
           id_hex);
    sh_put(stdout, subject);
    printf("\n  key file:             ");
    sh_put(stdout, key_path);
    printf(" (secret, mode 0600)\n  certificate request:  ");
    sh_put(stdout, csr_path);
    printf(" (for an authority to sign)\n");
    rc = RS_EXIT_OK;

cleanup:
    if (key_buf != NULL)
        sodium_memzero(key_buf, key_len);
    free(key_buf);
    free(csr_buf);
    if (id != NULL)
        sodium_free(id); /* wipes it */
    return rc;
}

/* ----------------------------------------------------------- loading */

/* "PATH" (escaped, since it is printed) and the rest of a sentence into err; returns rc. */
static int fail(char *err, size_t err_len, int rc, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int fail(char *err, size_t err_len, int rc, const char *path, const char *fmt, ...)
{
    FILE *f;
    va_list ap;

    if (err == NULL || err_len == 0)
        return rc;
    err[0] = '\0';
    f = fmemopen(err, err_len, "w");
    if (f == NULL)
        return rc;
    sh_put(f, path);
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fclose(f);
    err[err_len - 1] = '\0';
    return rc;
}

/* Read a key file into id. */
static int load_key(const char *path, struct qr_identity *id, char *err, size_t err_len)
{
    Cohort__KeyFile *kf = NULL;
    struct stat st;
    uint8_t *buf = NULL, pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    size_t len = 0;
    int rc = RS_ERR_DATA;

    if (sh_read_file(path, RS_KEY_FILE_MAX, &buf, &len, err, err_len) != 0)
        return RS_ERR_IO;
    /* As ssh does: a secret key others may read is refused, not used. */
    if (stat(path, &st) == 0 && (st.st_mode & 077) != 0) {
        sodium_memzero(buf, len);
        free(buf);
        qr_identity_wipe(id);
        return fail(err, err_len, RS_ERR_DATA, path,
                    " may be read by others (mode %04o): make it private (chmod 600)",
                    (unsigned)(st.st_mode & 07777));
    }
    kf = cohort__key_file__unpack(NULL, len, buf);
    sodium_memzero(buf, len);
    free(buf);
    if (kf == NULL) {
        fail(err, err_len, rc, path, " is not a key file");
        goto cleanup;
    }
    if (strcmp(kf->role, ROLE_RESEARCHER) != 0) {
        fail(err, err_len, rc, path, "%s",
             strcmp(kf->role, "authority") == 0 ? " is an authority's key, not a researcher's"
                                                : " is not a researcher's key file");
        goto cleanup;
    }
    if (kf->sign_sk.len != sizeof id->sign_sk || kf->box_sk.len != sizeof id->box_sk) {
        fail(err, err_len, rc, path, " is damaged: its keys have the wrong size");
        goto cleanup;
    }
    /* The signing key holds its public half: it must be the seed's. */
    if (crypto_sign_seed_keypair(pk, sk, kf->sign_sk.data) != 0 ||
        sodium_memcmp(sk, kf->sign_sk.data, sizeof sk) != 0) {
        fail(err, err_len, rc, path, " is damaged: its signing key does not hold together");
        goto cleanup;
    }
    memcpy(id->sign_sk, kf->sign_sk.data, sizeof id->sign_sk);
    memcpy(id->sign_pk, pk, sizeof id->sign_pk);
    memcpy(id->box_sk, kf->box_sk.data, sizeof id->box_sk);
    if (crypto_scalarmult_base(id->box_pk, id->box_sk) != 0) {
        fail(err, err_len, rc, path, " is damaged: its box key is not usable");
        goto cleanup;
    }
    rc = RS_OK;

cleanup:
    sodium_memzero(sk, sizeof sk);
    if (kf != NULL) {
        sodium_memzero(kf->sign_sk.data, kf->sign_sk.len);
        sodium_memzero(kf->box_sk.data, kf->box_sk.len);
        sodium_memzero(kf->group_secret.data, kf->group_secret.len);
        cohort__key_file__free_unpacked(kf, NULL);
    }
    if (rc != RS_OK)
        qr_identity_wipe(id);
    return rc;
}

/* Check the chain against the key; 0 or an error (reported). */
static int check_chain(const Cohort__CertChain *cc, const struct qr_identity *id, const char *path,
                       char *err, size_t err_len)
{
    Cohort__CertBody *bodies[RS_CHAIN_MAX] = {NULL};
    size_t n = cc->n_certs, i;
    int rc = RS_ERR_DATA;

    if (n == 0 || n > RS_CHAIN_MAX)
        return fail(err, err_len, rc, path, " holds %zu certificates: a chain has 1 to %u", n,
                    RS_CHAIN_MAX);
    for (i = 0; i < n; i++) {
        const Cohort__Certificate *c = cc->certs[i];
        if (c->body.len == 0 || c->body.len > RS_CERT_MAX ||
            c->signature.len != crypto_sign_BYTES ||
            (bodies[i] = cohort__cert_body__unpack(NULL, c->body.len, c->body.data)) == NULL ||
            bodies[i]->sign_pk.len != crypto_sign_PUBLICKEYBYTES ||
            bodies[i]->issuer_pk.len != crypto_sign_PUBLICKEYBYTES ||
            (bodies[i]->box_pk.len != 0 && bodies[i]->box_pk.len != crypto_box_PUBLICKEYBYTES)) {
            fail(err, err_len, rc, path, ": certificate %zu is damaged or too large for a token",
                 i + 1);
            goto cleanup;
        }
    }
    if (bodies[0]->role != COHORT__ROLE__ROLE_RESEARCHER) {
        fail(err, err_len, rc, path, " is not a researcher's certificate");
        goto cleanup;
    }
    if (sodium_memcmp(bodies[0]->sign_pk.data, id->sign_pk, sizeof id->sign_pk) != 0 ||
        bodies[0]->box_pk.len != sizeof id->box_pk ||
        sodium_memcmp(bodies[0]->box_pk.data, id->box_pk, sizeof id->box_pk) != 0) {
        fail(err, err_len, rc, path, " was not issued for this key");
        goto cleanup;
    }
    for (i = 0; i < n; i++) {
        const Cohort__CertBody *issuer = i + 1 < n ? bodies[i + 1] : bodies[i];
        if (i > 0 && bodies[i]->role != COHORT__ROLE__ROLE_AUTHORITY) {
            fail(err, err_len, rc, path, ": certificate %zu is not an authority's", i + 1);
            goto cleanup;
        }
        if (memcmp(bodies[i]->issuer_pk.data, issuer->sign_pk.data, crypto_sign_PUBLICKEYBYTES) !=
                0 ||
            !sh_cert_signed_by(cc->certs[i]->signature.data, cc->certs[i]->signature.len,
                               cc->certs[i]->body.data, cc->certs[i]->body.len,
                               issuer->sign_pk.data)) {
            if (i + 1 < n)
                fail(err, err_len, rc, path, ": certificate %zu is not signed by the one after it",
                     i + 1);
            else
                fail(err, err_len, rc, path, ": its last certificate is not a self-signed root");
            goto cleanup;
        }
    }
    rc = RS_OK;

cleanup:
    for (i = 0; i < n && i < RS_CHAIN_MAX; i++)
        cohort__cert_body__free_unpacked(bodies[i], NULL);
    return rc;
}

int rs_load_researcher(const char *key_path, const char *cert_path, struct qr_identity *id,
                       uint8_t ***chain, size_t **chain_lens, size_t *n_chain, char *err,
                       size_t err_len)
{
    Cohort__CertChain *cc = NULL;
    uint8_t *buf = NULL, **certs = NULL;
    size_t len = 0, *lens = NULL, i, n = 0;
    int rc;

    if (err != NULL && err_len > 0)
        err[0] = '\0';
    if (id == NULL || chain == NULL || chain_lens == NULL || n_chain == NULL || key_path == NULL ||
        cert_path == NULL) {
        if (err != NULL && err_len > 0)
            snprintf(err, err_len, "rs_load_researcher: missing argument");
        return RS_ERR_DATA;
    }
    *chain = NULL;
    *chain_lens = NULL;
    *n_chain = 0;
    if (sodium_init() < 0) {
        if (err != NULL && err_len > 0)
            snprintf(err, err_len, "libsodium failed to initialise");
        return RS_ERR_IO;
    }
    if ((rc = load_key(key_path, id, err, err_len)) != RS_OK)
        return rc;
    if (sh_read_file(cert_path, RS_CHAIN_FILE_MAX, &buf, &len, err, err_len) != 0) {
        rc = RS_ERR_IO;
        goto cleanup;
    }
    cc = cohort__cert_chain__unpack(NULL, len, buf);
    if (cc == NULL) {
        rc = fail(err, err_len, RS_ERR_DATA, cert_path, " is not a certificate file");
        goto cleanup;
    }
    if ((rc = check_chain(cc, id, cert_path, err, err_len)) != RS_OK)
        goto cleanup;
    n = cc->n_certs;
    certs = calloc(n, sizeof *certs);
    lens = calloc(n, sizeof *lens);
    if (certs == NULL || lens == NULL) {
        rc = fail(err, err_len, RS_ERR_IO, cert_path, ": out of memory");
        goto cleanup;
    }
    for (i = 0; i < n; i++) {
        lens[i] = cohort__certificate__get_packed_size(cc->certs[i]);
        certs[i] = malloc(lens[i]);
        if (certs[i] == NULL) {
            rc = fail(err, err_len, RS_ERR_IO, cert_path, ": out of memory");
            goto cleanup;
        }
        cohort__certificate__pack(cc->certs[i], certs[i]);
    }
    *chain = certs;
    *chain_lens = lens;
    *n_chain = n;
    certs = NULL;
    lens = NULL;
    rc = RS_OK;

cleanup:
    rs_chain_free(certs, lens, n);
    cohort__cert_chain__free_unpacked(cc, NULL);
    free(buf);
    if (rc != RS_OK)
        qr_identity_wipe(id);
    return rc;
}

void rs_chain_free(uint8_t **chain, size_t *chain_lens, size_t n_chain)
{
    if (chain != NULL)
        for (size_t i = 0; i < n_chain; i++)
            free(chain[i]);
    free(chain);
    free(chain_lens);
}
