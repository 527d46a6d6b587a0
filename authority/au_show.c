/*
 * cohort-authority show: what a key, certificate, request or bundle file
 * holds, in plain words.
 *
 * The file's kind is not trusted to any name or header: the bytes are
 * tried as each message in turn (key file, certificate request, bundle,
 * certificate file) and taken as the first whose required fields are all
 * there with the right sizes. The messages' fields differ in number, wire
 * type or size, so no well-formed file passes as two kinds.
 *
 * What is printed is public: subjects, roles, key ids (the first
 * AU_ID_BYTES bytes of a public key in hex), validity dates in UTC, scopes,
 * and whether each signature verifies. A key file's secret keys are used
 * only to derive their public halves; they, the group secret and the file's
 * bytes are wiped before the memory is freed, and never printed, not even
 * in part. Everything that came from the file is escaped (sh_put).
 *
 * Exit status: AU_OK when the file is one of the kinds and every signature
 * that can be checked here verifies; AU_DATA when it is none of them or a
 * signature fails (after describing it).
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>

#include "authority/au.h"
#include "proto/cohort.pb-c.h"
#include "shell/shell.h"
#include "token/token.h"

#define CMD "show"

static void help(FILE *f)
{
    au_usage(f, CMD);
    fprintf(f,
            "\nDescribes what FILE holds: an authority's or a researcher's key file, a "
            "certificate\nrequest, a certificate file or a provisioning bundle. It shows "
            "subjects, roles,\nkey ids (the first %u bytes of a public key, in hex), validity "
            "in UTC, scopes,\nand whether each signature verifies; never a secret key or the "
            "group secret.\nExit status 2 when the file is none of these or a signature "
            "fails.\n",
            AU_ID_BYTES);
}

static const char *role_name(int role)
{
    switch (role) {
    case COHORT__ROLE__ROLE_AUTHORITY:
        return "authority";
    case COHORT__ROLE__ROLE_TOKEN:
        return "token";
    case COHORT__ROLE__ROLE_RESEARCHER:
        return "researcher";
    default:
        return "none (not a role Cohort gives)";
    }
}

static void put_id(FILE *f, const uint8_t *pk)
{
    char id[AU_ID_TEXT];
    au_id(id, pk);
    fputs(id, f);
}

/* A certificate's body, if it has the shape of one. */
static Cohort__CertBody *body_of(const Cohort__Certificate *c)
{
    Cohort__CertBody *b;

    if (c == NULL || c->body.len == 0 || c->signature.len != crypto_sign_BYTES)
        return NULL;
    b = cohort__cert_body__unpack(NULL, c->body.len, c->body.data);
    if (b != NULL && (b->sign_pk.len != AU_PK_LEN || b->issuer_pk.len != AU_PK_LEN ||
                      (b->box_pk.len != 0 && b->box_pk.len != AU_PK_LEN))) {
        cohort__cert_body__free_unpacked(b, NULL);
        b = NULL;
    }
    return b;
}

static void put_list(FILE *f, char **list, size_t n)
{
    if (n == 0)
        fputs("any", f);
    for (size_t i = 0; i < n; i++) {
        fputs(i > 0 ? ", " : "", f);
        sh_put(f, list[i]);
    }
}

/*
 * One certificate's lines. issuer is the key that should have signed it
 * (NULL: not in this file) and issuer_name says where that key is. Returns
 * false when its signature does not verify.
 */
static bool put_cert(const struct au_env *env, const Cohort__Certificate *c,
                     const Cohort__CertBody *b, const uint8_t *issuer, const char *issuer_name)
{
    FILE *f = env->out;
    char from[AU_TIME_TEXT], to[AU_TIME_TEXT];
    bool ok = true;

    fprintf(f, "  role:          %s\n  subject:       ", role_name(b->role));
    sh_put(f, b->subject);
    fprintf(f, "\n  key id:        ");
    put_id(f, b->sign_pk.data);
    if (b->box_pk.len == AU_PK_LEN) {
        fprintf(f, "\n  box key id:    ");
        put_id(f, b->box_pk.data);
    }
    fprintf(f, "\n  issued by:     ");
    put_id(f, b->issuer_pk.data);
    if (memcmp(b->issuer_pk.data, b->sign_pk.data, AU_PK_LEN) == 0)
        fprintf(f, " (itself: a root)");
    else if (issuer != NULL && issuer_name != NULL)
        fprintf(f, " (%s)", issuer_name);
    fprintf(f, "\n  signature:     ");
    if (issuer == NULL) {
        fprintf(f, "not checked here (the issuer's certificate is not in this file)");
    } else if (memcmp(b->issuer_pk.data, issuer, AU_PK_LEN) != 0) {
        fprintf(f, "NOT VALID: it names another issuer than %s", issuer_name);
        ok = false;
    } else if (sh_cert_signed_by(c->signature.data, c->signature.len, c->body.data, c->body.len,
                                 issuer)) {
        fprintf(f, "valid");
    } else {
        fprintf(f, "NOT VALID");
        ok = false;
    }
    au_time(from, b->not_before);
    au_time(to, b->not_after);
    fprintf(f, "\n  valid:         %s to %s%s\n", from, to,
            env->now < b->not_before  ? " (not yet)"
            : env->now > b->not_after ? " (expired)"
                                      : "");
    if (b->scope != NULL) {
        fprintf(f, "  scope:         tables ");
        put_list(f, b->scope->tables, b->scope->n_tables);
        fprintf(f, "; columns ");
        put_list(f, b->scope->columns, b->scope->n_columns);
        fprintf(f, "; studies ");
        put_list(f, b->scope->studies, b->scope->n_studies);
        fprintf(f, "; epsilon at most %g\n", b->scope->max_epsilon);
    } else if (b->role == COHORT__ROLE__ROLE_RESEARCHER) {
        fprintf(f, "  scope:         none (any table, column, study and epsilon)\n");
    }
    if (b->version != 1)
        fprintf(f, "  version:       %u (a token reads version 1 only)\n", b->version);
    return ok;
}

static void header(const struct au_env *env, const char *path, const char *what)
{
    sh_put(env->out, path);
    fprintf(env->out, ": %s\n", what);
}

/* ------------------------------------------------------------ key file */

static Cohort__KeyFile *as_key_file(const uint8_t *buf, size_t len)
{
    Cohort__KeyFile *kf = cohort__key_file__unpack(NULL, len, buf);
    bool authority;

    if (kf == NULL)
        return NULL;
    authority = strcmp(kf->role, AU_ROLE_AUTHORITY) == 0;
    if ((!authority && strcmp(kf->role, AU_ROLE_RESEARCHER) != 0) ||
        kf->sign_sk.len != crypto_sign_SECRETKEYBYTES || kf->box_sk.len != 32 ||
        (authority && (kf->group_secret.len != AU_SECRET_LEN || kf->root == NULL))) {
        au_key_file_free(kf);
        return NULL;
    }
    return kf;
}

static int show_key_file(const struct au_env *env, const char *path, const Cohort__KeyFile *kf)
{
    bool authority = strcmp(kf->role, AU_ROLE_AUTHORITY) == 0, ok = true;
    uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES], box_pk[32];
    Cohort__CertBody *root = NULL;
    struct stat st;

    header(env, path, authority ? "an authority's key file" : "a researcher's key file");
    fprintf(env->out, "  subject:       ");
    sh_put(env->out, kf->subject);
    fprintf(env->out, "\n");
    /* The public halves, derived; a signing key that does not hold together is damaged. */
    if (crypto_sign_seed_keypair(pk, sk, kf->sign_sk.data) != 0 ||
        sodium_memcmp(sk, kf->sign_sk.data, sizeof sk) != 0) {
        fprintf(env->out, "  key:           DAMAGED: the signing key does not hold together\n");
        ok = false;
    } else {
        fprintf(env->out, "  key id:        ");
        put_id(env->out, pk);
        fprintf(env->out, " (signing, Ed25519)\n");
    }
    sodium_memzero(sk, sizeof sk);
    if (crypto_scalarmult_base(box_pk, kf->box_sk.data) == 0) {
        fprintf(env->out, "  box key id:    ");
        put_id(env->out, box_pk);
        fprintf(env->out, " (X25519)\n");
    }
    fprintf(env->out, "  holds:         %s (never shown)\n",
            authority ? "the secret keys and the deployment's group secret" : "the secret keys");
    if (stat(path, &st) == 0) {
        fprintf(env->out, "  file mode:     %04o%s\n", (unsigned)(st.st_mode & 07777),
                (st.st_mode & 077) != 0 ? " (WARNING: others may read it; chmod 600 it)" : "");
    }
    if (authority) {
        fprintf(env->out, "root certificate:\n");
        root = body_of(kf->root);
        if (root == NULL) {
            fprintf(env->out, "  DAMAGED: it does not decode\n");
            ok = false;
        } else {
            ok = put_cert(env, kf->root, root, root->sign_pk.data, "itself") && ok;
            if (ok && memcmp(root->sign_pk.data, pk, AU_PK_LEN) != 0) {
                fprintf(env->out, "  DAMAGED: the root is for another key than this file's\n");
                ok = false;
            }
            cohort__cert_body__free_unpacked(root, NULL);
        }
    }
    return ok ? AU_OK : AU_DATA;
}

/* ------------------------------------------------------------ request */

static Cohort__CertRequest *as_request(const uint8_t *buf, size_t len)
{
    Cohort__CertRequest *r = cohort__cert_request__unpack(NULL, len, buf);

    if (r != NULL && (r->subject[0] == '\0' || r->sign_pk.len != AU_PK_LEN ||
                      r->box_pk.len != AU_PK_LEN || r->signature.len != crypto_sign_BYTES)) {
        cohort__cert_request__free_unpacked(r, NULL);
        r = NULL;
    }
    return r;
}

static int show_request(const struct au_env *env, const char *path, const Cohort__CertRequest *r,
                        const uint8_t *buf, size_t len)
{
    struct qr_cert_request checked;
    int rc = qr_cert_request_check(&checked, buf, len);

    header(env, path, "a certificate request");
    fprintf(env->out, "  subject:       ");
    sh_put(env->out, r->subject);
    fprintf(env->out, "\n  key id:        ");
    put_id(env->out, r->sign_pk.data);
    fprintf(env->out, "\n  box key id:    ");
    put_id(env->out, r->box_pk.data);
    fprintf(env->out, "\n  signature:     %s\n",
            rc == 0                  ? "valid (made by the key it names)"
            : rc == QR_ERR_SIGNATURE ? "NOT VALID"
                                     : "NOT VALID (a field has the wrong size)");
    return rc == 0 ? AU_OK : AU_DATA;
}

/* ------------------------------------------------------------- bundle */

static Cohort__ProvisionBundle *as_bundle(const uint8_t *buf, size_t len)
{
    Cohort__ProvisionBundle *b = cohort__provision_bundle__unpack(NULL, len, buf);
    const Cohort__ProvisionFinish *f;
    Cohort__CertBody *body;
    bool ok;

    if (b == NULL)
        return NULL;
    f = b->finish;
    ok = f != NULL && f->sealed_group_secret.len == AU_SECRET_LEN + crypto_box_SEALBYTES &&
         f->n_trusted_authorities > 0 && (body = body_of(f->device_cert)) != NULL;
    if (ok) {
        cohort__cert_body__free_unpacked(body, NULL);
        for (size_t i = 0; i < f->n_trusted_authorities; i++)
            ok = ok && f->trusted_authorities[i].len == AU_PK_LEN;
    }
    if (!ok) {
        cohort__provision_bundle__free_unpacked(b, NULL);
        return NULL;
    }
    return b;
}

static int show_bundle(const struct au_env *env, const char *path, const Cohort__ProvisionBundle *b)
{
    const Cohort__ProvisionFinish *f = b->finish;
    Cohort__CertBody *body = body_of(f->device_cert);
    const uint8_t *issuer = NULL;
    bool ok;

    header(env, path, "a provisioning bundle for a token");
    fprintf(env->out, "  subject:       ");
    sh_put(env->out, b->subject);
    fprintf(env->out, "\n  group secret:  sealed to the token's box key (never shown)\n"
                      "  trusts:        ");
    for (size_t i = 0; i < f->n_trusted_authorities; i++) {
        fprintf(env->out, "%s", i > 0 ? ", " : "");
        put_id(env->out, f->trusted_authorities[i].data);
        if (memcmp(f->trusted_authorities[i].data, body->issuer_pk.data, AU_PK_LEN) == 0)
            issuer = f->trusted_authorities[i].data;
    }
    fprintf(env->out, "%s\ndevice certificate:\n",
            f->n_trusted_authorities > AU_TRUST_MAX ? " (more than a token keeps)" : "");
    ok = put_cert(env, f->device_cert, body, issuer, "an authority it trusts");
    if (body->role != COHORT__ROLE__ROLE_TOKEN) {
        fprintf(env->out, "  NOT a token's certificate: a token refuses it\n");
        ok = false;
    }
    cohort__cert_body__free_unpacked(body, NULL);
    return ok && f->n_trusted_authorities <= AU_TRUST_MAX ? AU_OK : AU_DATA;
}

/* ------------------------------------------------------- certificates */

static Cohort__CertChain *as_chain(const uint8_t *buf, size_t len)
{
    Cohort__CertChain *cc = cohort__cert_chain__unpack(NULL, len, buf);
    bool ok = cc != NULL && cc->n_certs > 0;

    for (size_t i = 0; ok && i < cc->n_certs; i++) {
        Cohort__CertBody *b = body_of(cc->certs[i]);
        ok = b != NULL;
        cohort__cert_body__free_unpacked(b, NULL);
    }
    if (!ok) {
        cohort__cert_chain__free_unpacked(cc, NULL);
        return NULL;
    }
    return cc;
}

static int show_chain(const struct au_env *env, const char *path, const Cohort__CertChain *cc)
{
    size_t n = cc->n_certs;
    bool ok = true;
    char what[96], name[48];

    snprintf(what, sizeof what, "a certificate file (%zu certificate%s)", n, n == 1 ? "" : "s");
    header(env, path, what);
    for (size_t i = 0; i < n; i++) {
        Cohort__CertBody *b = body_of(cc->certs[i]), *next = NULL;
        const uint8_t *issuer = NULL;

        if (i + 1 < n) {
            next = body_of(cc->certs[i + 1]);
            issuer = next->sign_pk.data;
            snprintf(name, sizeof name, "certificate %zu", i + 2);
        } else if (memcmp(b->issuer_pk.data, b->sign_pk.data, AU_PK_LEN) == 0) {
            issuer = b->sign_pk.data;
            snprintf(name, sizeof name, "itself");
        }
        fprintf(env->out, "certificate %zu of %zu:\n", i + 1, n);
        ok = put_cert(env, cc->certs[i], b, issuer, name) && ok;
        if (cc->certs[i]->body.len > AU_CERT_BODY_MAX) {
            fprintf(env->out, "  size:          %zu bytes: more than the %u a token reads\n",
                    cc->certs[i]->body.len, AU_CERT_BODY_MAX);
            ok = false;
        }
        cohort__cert_body__free_unpacked(next, NULL);
        cohort__cert_body__free_unpacked(b, NULL);
    }
    if (n > AU_CHAIN_MAX) {
        fprintf(env->out, "(more than the %u certificates a token reads in a chain)\n",
                AU_CHAIN_MAX);
        ok = false;
    }
    return ok ? AU_OK : AU_DATA;
}

/* ---------------------------------------------------------------- show */

int au_show(int argc, char **argv, const struct au_env *env)
{
    const char *path = NULL;
    uint8_t *buf = NULL;
    size_t len = 0;
    Cohort__KeyFile *kf;
    Cohort__CertRequest *req;
    Cohort__ProvisionBundle *bundle;
    Cohort__CertChain *chain;
    int rc;

    for (int i = 1; i < argc; i++) {
        if (au_is_help(argv[i])) {
            help(env->out);
            return AU_OK;
        }
        if (path == NULL && (argv[i][0] != '-' || argv[i][1] == '\0')) {
            path = argv[i];
            continue;
        }
        return au_usage_error(env, CMD, "unexpected argument '%.60s'", argv[i]);
    }
    if (path == NULL)
        return au_usage_error(env, CMD, "give the FILE to describe");
    if ((rc = au_read(env, CMD, path, AU_SHOW_MAX, &buf, &len)) != AU_OK)
        return rc;

    if ((kf = as_key_file(buf, len)) != NULL) {
        rc = show_key_file(env, path, kf);
        au_key_file_free(kf);
    } else if ((req = as_request(buf, len)) != NULL) {
        rc = show_request(env, path, req, buf, len);
        cohort__cert_request__free_unpacked(req, NULL);
    } else if ((bundle = as_bundle(buf, len)) != NULL) {
        rc = show_bundle(env, path, bundle);
        cohort__provision_bundle__free_unpacked(bundle, NULL);
    } else if ((chain = as_chain(buf, len)) != NULL) {
        rc = show_chain(env, path, chain);
        cohort__cert_chain__free_unpacked(chain, NULL);
    } else {
        fprintf(env->err, AU_PROG ": " CMD ": ");
        sh_put(env->err, path);
        fprintf(env->err, " is not a key, certificate, certificate request or bundle file\n");
        rc = AU_DATA;
    }
    sodium_memzero(buf, len);
    free(buf);
    return rc;
}
