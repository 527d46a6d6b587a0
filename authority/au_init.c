/*
 * cohort-authority init: create an authority in a directory.
 *
 * The authority's keys (Ed25519 to sign, X25519 beside it) and the
 * deployment's group secret are made here from libsodium's randomness, and
 * the root certificate is the authority's own key signed by itself (role
 * AUTHORITY). The directory (mode 0700) must be new or empty: an
 * authority is made once, and nothing here ever replaces a key. The key
 * file is written first and the public certificate after it; if the second
 * cannot be written, the first is removed, so a failed init leaves no half
 * authority behind.
 */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "authority/au.h"
#include "proto/cohort.pb-c.h"
#include "shell/shell.h"

#define CMD "init"

static void help(FILE *f)
{
    au_usage(f, CMD);
    fprintf(f,
            "\nCreates a new authority in DIR (made with mode 0700; it must not exist, or be "
            "empty):\n"
            "  DIR/" AU_KEY_FILE "   its secret keys, the deployment's group secret and its "
            "root\n"
            "                   (mode 0600: keep it offline, back it up, never send it)\n"
            "  DIR/" AU_CERT_FILE "  its root certificate (public: for services, tokens of other\n"
            "                   authorities, and cohort-authority certify-token --trust)\n\n"
            "  --subject NAME   the authority's name (at most %u bytes of UTF-8, no control\n"
            "                   characters)\n"
            "  --days N         how long the root is valid (default %u, at most %u); nothing it\n"
            "                   certifies is valid for longer\n",
            AU_SUBJECT_MAX, AU_ROOT_DAYS, AU_DAYS_MAX);
}

static int dir_state(const char *dir, bool *empty)
{
    DIR *d = opendir(dir);
    struct dirent *e;

    if (d == NULL)
        return -1;
    *empty = true;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            *empty = false;
    closedir(d);
    return 0;
}

/* Make dir with mode 0700, or take an empty one and set it to 0700. */
static int make_dir(const struct au_env *env, const char *dir)
{
    bool empty = false;

    if (mkdir(dir, 0700) == 0)
        return AU_OK;
    if (errno != EEXIST)
        return au_fail(env, AU_IO, CMD, "cannot create %s: %s", dir, strerror(errno));
    if (dir_state(dir, &empty) != 0)
        return au_fail(env, AU_DATA, CMD, "%s exists and is not a directory this can use: %s", dir,
                       strerror(errno));
    if (!empty)
        return au_fail(env, AU_DATA, CMD,
                       "%s exists and is not empty: a new authority needs a new directory", dir);
    if (chmod(dir, 0700) != 0)
        return au_fail(env, AU_IO, CMD, "cannot make %s private (mode 0700): %s", dir,
                       strerror(errno));
    return AU_OK;
}

int au_init(int argc, char **argv, const struct au_env *env)
{
    const char *dir = NULL, *subject = NULL, *days_text = NULL;
    char key_path[AU_PATH_MAX], cert_path[AU_PATH_MAX], id[AU_ID_TEXT], from[AU_TIME_TEXT],
        to[AU_TIME_TEXT];
    struct au_authority *a = NULL;
    uint64_t days = AU_ROOT_DAYS;
    uint8_t *root = NULL, *key = NULL, *chain = NULL;
    size_t root_len = 0, key_len = 0, chain_len = 0;
    int rc, m;

    for (int i = 1; i < argc; i++) {
        if (au_is_help(argv[i])) {
            help(env->out);
            return AU_OK;
        }
        if ((m = au_opt(env, CMD, argc, argv, &i, "--dir", &dir)) != 0 ||
            (m = au_opt(env, CMD, argc, argv, &i, "--subject", &subject)) != 0 ||
            (m = au_opt(env, CMD, argc, argv, &i, "--days", &days_text)) != 0) {
            if (m < 0)
                return AU_USAGE;
            continue;
        }
        return au_usage_error(env, CMD, "unexpected argument '%.60s'", argv[i]);
    }
    if (dir == NULL || dir[0] == '\0')
        return au_usage_error(env, CMD, "give the authority's directory with --dir DIR");
    if (subject == NULL)
        return au_usage_error(env, CMD, "give the authority's name with --subject NAME");
    if (!sh_name_ok(subject, AU_SUBJECT_MAX))
        return au_usage_error(env, CMD,
                              "--subject: 1 to %u bytes of UTF-8 text without control characters",
                              AU_SUBJECT_MAX);
    if (days_text != NULL && au_u64(env, CMD, "--days", days_text, 1, AU_DAYS_MAX, &days) != 0)
        return AU_USAGE;
    if ((rc = au_path(env, CMD, key_path, dir, AU_KEY_FILE)) != AU_OK ||
        (rc = au_path(env, CMD, cert_path, dir, AU_CERT_FILE)) != AU_OK)
        return rc;

    if ((rc = make_dir(env, dir)) != AU_OK)
        return rc;
    a = au_authority_new();
    if (a == NULL) {
        rc = au_fail(env, AU_IO, CMD, "cannot make keys (out of memory or no randomness)");
        goto cleanup;
    }
    snprintf(a->subject, sizeof a->subject, "%s", subject);
    a->not_before = env->now - AU_BACKDATE;
    a->not_after = env->now + (int64_t)days * AU_SECONDS_PER_DAY;
    if (qr_cert_issue(&root, &root_len, &a->id, COHORT__ROLE__ROLE_AUTHORITY, subject,
                      a->id.sign_pk, NULL, a->not_before, a->not_after, NULL) != 0 ||
        root_len > sizeof a->root) {
        rc = au_fail(env, AU_IO, CMD, "cannot make the root certificate");
        goto cleanup;
    }
    memcpy(a->root, root, root_len);
    a->root_len = root_len;
    {
        const uint8_t *certs[] = {root};
        if (au_key_file_pack(&key, &key_len, a) != 0 ||
            au_chain_pack(&chain, &chain_len, certs, &root_len, 1) != 0) {
            rc = au_fail(env, AU_IO, CMD, "out of memory");
            goto cleanup;
        }
    }
    if ((rc = au_write(env, CMD, key_path, key, key_len, 0600)) != AU_OK)
        goto cleanup;
    if ((rc = au_write(env, CMD, cert_path, chain, chain_len, 0644)) != AU_OK) {
        unlink(key_path); /* no half authority: the key goes with its certificate */
        goto cleanup;
    }

    au_id(id, a->id.sign_pk);
    au_time(from, a->not_before);
    au_time(to, a->not_after);
    fprintf(env->out, "created the authority ");
    sh_put(env->out, subject);
    fprintf(env->out, " in ");
    sh_put(env->out, dir);
    fprintf(env->out, "\n  root key id:   %s\n  valid:         %s to %s\n  key file:      ", id,
            from, to);
    sh_put(env->out, key_path);
    fprintf(env->out, " (secret, mode 0600: keep it offline)\n  certificate:   ");
    sh_put(env->out, cert_path);
    fprintf(env->out, " (public)\n");
    rc = AU_OK;

cleanup:
    if (key != NULL)
        sodium_memzero(key, key_len);
    free(key);
    free(chain);
    free(root);
    au_authority_free(a);
    return rc;
}
