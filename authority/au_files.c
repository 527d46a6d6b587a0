/*
 * au_files.c: the authority's files, between their messages
 * (proto/cohort.proto's KeyFile, CertChain, ProvisionBundle) and memory.
 *
 * The key file is the one secret: it is refused when others may read it
 * (as ssh refuses such a key), its bytes are wiped as soon as they are
 * decoded, and the decoded secret fields are wiped before protobuf-c frees
 * them. What is kept lives in sodium_malloc'd memory (struct au_authority).
 * A key file is also checked for sense before it is used: the signing key
 * must hold together, and the root must be a self-signed authority
 * certificate for that very key, so a key file pasted together from two
 * authorities is refused rather than used to sign.
 *
 * Certificates from elsewhere (another authority's root, for --trust) are
 * checked with libsodium directly over TK_SIG_CERT || body, the message a
 * token checks (sh_cert_signed_by).
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>

#include "authority/au.h"
#include "proto/cohort.pb-c.h"
#include "shell/shell.h"
#include "token/token.h"

_Static_assert(AU_TRUST_MAX == TK_MAX_AUTHORITIES, "a token trusts TK_MAX_AUTHORITIES at most");
_Static_assert(AU_CERT_BODY_MAX == TK_CERT_MAX, "a token reads TK_CERT_MAX bytes of certificate");
_Static_assert(AU_PK_LEN == TK_PK_LEN, "public keys");
_Static_assert(SH_PK_LEN == TK_PK_LEN, "public keys");

struct au_authority *au_authority_new(void)
{
    struct au_authority *a = sodium_malloc(sizeof *a);

    if (a == NULL)
        return NULL;
    memset(a, 0, sizeof *a);
    if (qr_identity_generate(&a->id) != 0) {
        sodium_free(a);
        return NULL;
    }
    randombytes_buf(a->group_secret, sizeof a->group_secret);
    return a;
}

void au_authority_free(struct au_authority *a)
{
    if (a != NULL)
        sodium_free(a); /* fills with zeros before it frees */
}

/* A root: an authority's certificate for its own key, signed by it. NULL if it is not one. */
static Cohort__CertBody *root_body(const Cohort__Certificate *c)
{
    Cohort__CertBody *b;

    if (c == NULL || c->body.len == 0 || c->body.len > AU_CERT_BODY_MAX)
        return NULL;
    b = cohort__cert_body__unpack(NULL, c->body.len, c->body.data);
    if (b == NULL)
        return NULL;
    if (b->role != COHORT__ROLE__ROLE_AUTHORITY || b->sign_pk.len != AU_PK_LEN ||
        b->issuer_pk.len != AU_PK_LEN ||
        memcmp(b->sign_pk.data, b->issuer_pk.data, AU_PK_LEN) != 0 ||
        !sh_cert_signed_by(c->signature.data, c->signature.len, c->body.data, c->body.len,
                           b->sign_pk.data)) {
        cohort__cert_body__free_unpacked(b, NULL);
        return NULL;
    }
    return b;
}

void au_key_file_free(Cohort__KeyFile *kf)
{
    if (kf == NULL)
        return;
    sodium_memzero(kf->sign_sk.data, kf->sign_sk.len);
    sodium_memzero(kf->box_sk.data, kf->box_sk.len);
    sodium_memzero(kf->group_secret.data, kf->group_secret.len);
    cohort__key_file__free_unpacked(kf, NULL);
}

static int key_refused(const struct au_env *env, const char *cmd, const char *path, const char *why)
{
    fprintf(env->err, AU_PROG ": %s: ", cmd);
    sh_put(env->err, path);
    fprintf(env->err, "%s\n", why);
    return AU_DATA;
}

int au_authority_load(const struct au_env *env, const char *cmd, const char *dir,
                      struct au_authority **out)
{
    char path[AU_PATH_MAX];
    struct au_authority *a = NULL;
    Cohort__KeyFile *kf = NULL;
    Cohort__CertBody *root = NULL;
    struct stat st;
    uint8_t *buf = NULL, pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    size_t len = 0, n;
    int rc;

    *out = NULL;
    if ((rc = au_path(env, cmd, path, dir, AU_KEY_FILE)) != AU_OK)
        return rc;
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 077) != 0) {
        fprintf(env->err, AU_PROG ": %s: ", cmd);
        sh_put(env->err, path);
        fprintf(env->err, " may be read by others (mode %04o): make it private (chmod 600)\n",
                (unsigned)(st.st_mode & 07777));
        return AU_DATA;
    }
    if ((rc = au_read(env, cmd, path, AU_KEY_FILE_MAX, &buf, &len)) != AU_OK)
        return rc;
    kf = cohort__key_file__unpack(NULL, len, buf);
    sodium_memzero(buf, len);
    free(buf);
    rc = AU_DATA;
    if (kf == NULL) {
        key_refused(env, cmd, path, " is not a key file");
        goto cleanup;
    }
    if (strcmp(kf->role, AU_ROLE_AUTHORITY) != 0) {
        key_refused(env, cmd, path, " is not an authority's key file");
        goto cleanup;
    }
    if (kf->sign_sk.len != crypto_sign_SECRETKEYBYTES || kf->box_sk.len != 32 ||
        kf->group_secret.len != AU_SECRET_LEN || kf->root == NULL) {
        key_refused(env, cmd, path, " is damaged: a key, the group secret or the root is missing");
        goto cleanup;
    }
    if (crypto_sign_seed_keypair(pk, sk, kf->sign_sk.data) != 0 ||
        sodium_memcmp(sk, kf->sign_sk.data, sizeof sk) != 0) {
        key_refused(env, cmd, path, " is damaged: its signing key does not hold together");
        goto cleanup;
    }
    root = root_body(kf->root);
    if (root == NULL || memcmp(root->sign_pk.data, pk, sizeof pk) != 0) {
        key_refused(env, cmd, path, " is damaged: its root certificate is not its own");
        goto cleanup;
    }
    n = cohort__certificate__get_packed_size(kf->root);
    if (n > sizeof a->root) {
        key_refused(env, cmd, path, ": its root certificate is too large");
        goto cleanup;
    }
    a = sodium_malloc(sizeof *a);
    if (a == NULL) {
        rc = au_fail(env, AU_IO, cmd, "out of memory");
        goto cleanup;
    }
    memset(a, 0, sizeof *a);
    memcpy(a->id.sign_sk, kf->sign_sk.data, sizeof a->id.sign_sk);
    memcpy(a->id.sign_pk, pk, sizeof a->id.sign_pk);
    memcpy(a->id.box_sk, kf->box_sk.data, sizeof a->id.box_sk);
    if (crypto_scalarmult_base(a->id.box_pk, a->id.box_sk) != 0) {
        key_refused(env, cmd, path, " is damaged: its box key is not usable");
        goto cleanup;
    }
    memcpy(a->group_secret, kf->group_secret.data, sizeof a->group_secret);
    snprintf(a->subject, sizeof a->subject, "%s", root->subject);
    a->root_len = cohort__certificate__pack(kf->root, a->root);
    a->not_before = root->not_before;
    a->not_after = root->not_after;
    *out = a;
    a = NULL;
    rc = AU_OK;

cleanup:
    sodium_memzero(sk, sizeof sk);
    au_authority_free(a);
    cohort__cert_body__free_unpacked(root, NULL);
    au_key_file_free(kf);
    return rc;
}

int au_key_file_pack(uint8_t **out, size_t *len, const struct au_authority *a)
{
    Cohort__KeyFile kf = COHORT__KEY_FILE__INIT;
    Cohort__Certificate *root;
    int rc = 0;

    root = cohort__certificate__unpack(NULL, a->root_len, a->root);
    if (root == NULL)
        return -1;
    kf.role = (char *)AU_ROLE_AUTHORITY;
    kf.subject = (char *)a->subject;
    kf.sign_sk.data = (uint8_t *)a->id.sign_sk;
    kf.sign_sk.len = sizeof a->id.sign_sk;
    kf.box_sk.data = (uint8_t *)a->id.box_sk;
    kf.box_sk.len = sizeof a->id.box_sk;
    kf.group_secret.data = (uint8_t *)a->group_secret;
    kf.group_secret.len = sizeof a->group_secret;
    kf.root = root;
    *len = cohort__key_file__get_packed_size(&kf);
    *out = malloc(*len);
    if (*out == NULL)
        rc = -1;
    else
        cohort__key_file__pack(&kf, *out);
    cohort__certificate__free_unpacked(root, NULL);
    return rc;
}

int au_chain_pack(uint8_t **out, size_t *len, const uint8_t *const *certs, const size_t *lens,
                  size_t n)
{
    Cohort__CertChain cc = COHORT__CERT_CHAIN__INIT;
    Cohort__Certificate *c[AU_CHAIN_MAX] = {NULL};
    size_t i;
    int rc = -1;

    *out = NULL;
    if (n == 0 || n > AU_CHAIN_MAX)
        return -1;
    for (i = 0; i < n; i++)
        if ((c[i] = cohort__certificate__unpack(NULL, lens[i], certs[i])) == NULL)
            goto cleanup;
    cc.n_certs = n;
    cc.certs = c;
    *len = cohort__cert_chain__get_packed_size(&cc);
    *out = malloc(*len);
    if (*out != NULL) {
        cohort__cert_chain__pack(&cc, *out);
        rc = 0;
    }

cleanup:
    for (i = 0; i < n; i++)
        cohort__certificate__free_unpacked(c[i], NULL);
    return rc;
}

int au_bundle_pack(uint8_t **out, size_t *len, const uint8_t *cert, size_t cert_len,
                   const uint8_t *sealed, size_t sealed_len, const uint8_t (*trusted)[AU_PK_LEN],
                   size_t n_trusted, const char *subject)
{
    Cohort__ProvisionBundle b = COHORT__PROVISION_BUNDLE__INIT;
    Cohort__ProvisionFinish f = COHORT__PROVISION_FINISH__INIT;
    ProtobufCBinaryData auth[AU_TRUST_MAX];
    Cohort__Certificate *c;

    *out = NULL;
    if (n_trusted == 0 || n_trusted > AU_TRUST_MAX)
        return -1;
    c = cohort__certificate__unpack(NULL, cert_len, cert);
    if (c == NULL)
        return -1;
    for (size_t i = 0; i < n_trusted; i++) {
        auth[i].data = (uint8_t *)trusted[i];
        auth[i].len = AU_PK_LEN;
    }
    f.device_cert = c;
    f.sealed_group_secret.data = (uint8_t *)sealed;
    f.sealed_group_secret.len = sealed_len;
    f.n_trusted_authorities = n_trusted;
    f.trusted_authorities = auth;
    b.finish = &f;
    b.subject = (char *)subject;
    *len = cohort__provision_bundle__get_packed_size(&b);
    *out = malloc(*len);
    if (*out != NULL)
        cohort__provision_bundle__pack(&b, *out);
    cohort__certificate__free_unpacked(c, NULL);
    return *out != NULL ? 0 : -1;
}

int au_trust_read(const struct au_env *env, const char *cmd, const char *path,
                  uint8_t pk[static AU_PK_LEN])
{
    Cohort__CertChain *cc;
    Cohort__CertBody *root;
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc;

    if ((rc = au_read(env, cmd, path, AU_CERT_FILE_MAX, &buf, &len)) != AU_OK)
        return rc;
    cc = cohort__cert_chain__unpack(NULL, len, buf);
    free(buf);
    if (cc == NULL || cc->n_certs == 0 || cc->n_certs > AU_CHAIN_MAX) {
        cohort__cert_chain__free_unpacked(cc, NULL);
        return key_refused(env, cmd, path, " is not a certificate file");
    }
    root = root_body(cc->certs[cc->n_certs - 1]);
    cohort__cert_chain__free_unpacked(cc, NULL);
    if (root == NULL)
        return key_refused(env, cmd, path,
                           " does not end at a root: its last certificate is not an authority's, "
                           "self-signed one");
    memcpy(pk, root->sign_pk.data, AU_PK_LEN);
    cohort__cert_body__free_unpacked(root, NULL);
    return AU_OK;
}

size_t au_cert_body_len(const uint8_t *cert, size_t len)
{
    Cohort__Certificate *c = cohort__certificate__unpack(NULL, len, cert);
    size_t n;

    if (c == NULL)
        return 0;
    n = c->body.len;
    cohort__certificate__free_unpacked(c, NULL);
    return n;
}

int au_csr_read(const struct au_env *env, const char *cmd, const char *path,
                struct qr_cert_request *req, uint8_t **csr, size_t *csr_len)
{
    int rc;

    if ((rc = au_read(env, cmd, path, AU_CSR_MAX, csr, csr_len)) != AU_OK)
        return rc;
    rc = qr_cert_request_check(req, *csr, *csr_len);
    if (rc == QR_ERR_SIGNATURE)
        key_refused(env, cmd, path,
                    ": its signature does not verify: the request was damaged, or not made by "
                    "the key it names");
    else if (rc == QR_ERR_MALFORMED || rc == QR_ERR_TOO_LARGE)
        key_refused(env, cmd, path, " is not a certificate request");
    else if (rc != 0)
        au_fail(env, AU_IO, cmd, "cannot check the request: %s", qr_strerror(rc));
    else if (!sh_name_ok(req->subject, AU_SUBJECT_MAX))
        key_refused(env, cmd, path,
                    ": its subject is not a name (UTF-8 text without control characters)");
    else
        return AU_OK;
    free(*csr);
    *csr = NULL;
    *csr_len = 0;
    return rc == QR_ERR_SIGNATURE || rc == QR_ERR_MALFORMED || rc == QR_ERR_TOO_LARGE || rc == 0
               ? AU_DATA
               : AU_IO;
}

int au_cert_window(const struct au_env *env, const char *cmd, const struct au_authority *a,
                   uint64_t days, int64_t *not_before, int64_t *not_after, bool *cut)
{
    char from[AU_TIME_TEXT], to[AU_TIME_TEXT];

    if (env->now < a->not_before || env->now > a->not_after) {
        au_time(from, a->not_before);
        au_time(to, a->not_after);
        return au_fail(env, AU_DATA, cmd,
                       "the authority's root is valid from %s to %s, not now: it cannot certify",
                       from, to);
    }
    *not_before = env->now - AU_BACKDATE;
    if (*not_before < a->not_before)
        *not_before = a->not_before;
    *not_after = env->now + (int64_t)days * AU_SECONDS_PER_DAY;
    *cut = *not_after > a->not_after;
    if (*cut)
        *not_after = a->not_after;
    return AU_OK;
}
