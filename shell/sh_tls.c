/*
 * sh_tls.c: transport options for nng listeners and dialers.
 *
 * Cohort accepts three transports: tls+tcp:// for anything that leaves the
 * machine, tcp:// and ipc:// for local use. TLS is nng's (mbed TLS
 * underneath), configured from PEM files: the listener presents its
 * certificate chain and key, and a dialer requires a certificate that
 * chains to its CA file and names the host it dialed (or server_name).
 * TLS authenticates the service to agents and researchers and hides the
 * traffic from the network; tokens are admitted by their own signatures
 * (qr_service), not by TLS client certificates.
 */
#include <stdio.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>

#include "shell/shell.h"

bool sh_url_ok(const char *url, bool *is_tls)
{
    bool tls = url != NULL && strncmp(url, "tls+tcp://", 10) == 0;

    if (is_tls != NULL)
        *is_tls = tls;
    if (url == NULL || strlen(url) > 1024)
        return false;
    return (tls && url[10] != '\0') || (strncmp(url, "tcp://", 6) == 0 && url[6] != '\0') ||
           (strncmp(url, "ipc://", 6) == 0 && url[6] != '\0');
}

static int tls_config(nng_tls_config **out, nng_tls_mode mode, const struct sh_tls *tls, char *err,
                      size_t err_len)
{
    nng_tls_config *cfg = NULL;
    int rv;

    if ((rv = nng_tls_config_alloc(&cfg, mode)) != 0) {
        snprintf(err, err_len, "TLS is not available: %s", nng_strerror(rv));
        return -1;
    }
    if (mode == NNG_TLS_MODE_SERVER) {
        if (tls == NULL || tls->cert_key == NULL) {
            snprintf(err, err_len, "a tls+tcp:// listener needs --tls-cert (certificate and key)");
            goto fail;
        }
        if ((rv = nng_tls_config_cert_key_file(cfg, tls->cert_key, NULL)) != 0) {
            snprintf(err, err_len, "%s: not a usable PEM certificate and key: %s", tls->cert_key,
                     nng_strerror(rv));
            goto fail;
        }
    } else {
        if (tls == NULL || tls->ca == NULL) {
            snprintf(err, err_len,
                     "a tls+tcp:// address needs --ca (the service's CA certificate)");
            goto fail;
        }
        if ((rv = nng_tls_config_ca_file(cfg, tls->ca)) != 0) {
            snprintf(err, err_len, "%s: not a usable PEM CA certificate: %s", tls->ca,
                     nng_strerror(rv));
            goto fail;
        }
        if ((rv = nng_tls_config_auth_mode(cfg, NNG_TLS_AUTH_MODE_REQUIRED)) != 0 ||
            (tls->server_name != NULL &&
             (rv = nng_tls_config_server_name(cfg, tls->server_name)) != 0)) {
            snprintf(err, err_len, "TLS setup failed: %s", nng_strerror(rv));
            goto fail;
        }
    }
    *out = cfg;
    return 0;
fail:
    nng_tls_config_free(cfg);
    return -1;
}

int sh_tls_listener(void *listener, const char *url, const struct sh_tls *tls, char *err,
                    size_t err_len)
{
    nng_tls_config *cfg;
    bool is_tls;
    int rv;

    if (!sh_url_ok(url, &is_tls)) {
        snprintf(err, err_len, "%s: use tls+tcp://HOST:PORT, tcp://HOST:PORT or ipc:///PATH",
                 url ? url : "(none)");
        return -1;
    }
    if (!is_tls)
        return 0;
    if (tls_config(&cfg, NNG_TLS_MODE_SERVER, tls, err, err_len) != 0)
        return -1;
    rv = nng_listener_set_ptr(*(nng_listener *)listener, NNG_OPT_TLS_CONFIG, cfg);
    nng_tls_config_free(cfg); /* the listener holds its own reference */
    if (rv != 0) {
        snprintf(err, err_len, "TLS setup failed: %s", nng_strerror(rv));
        return -1;
    }
    return 0;
}

int sh_tls_dialer(void *dialer, const char *url, const struct sh_tls *tls, char *err,
                  size_t err_len)
{
    nng_tls_config *cfg;
    bool is_tls;
    int rv;

    if (!sh_url_ok(url, &is_tls)) {
        snprintf(err, err_len, "%s: use tls+tcp://HOST:PORT, tcp://HOST:PORT or ipc:///PATH",
                 url ? url : "(none)");
        return -1;
    }
    if (!is_tls)
        return 0;
    if (tls_config(&cfg, NNG_TLS_MODE_CLIENT, tls, err, err_len) != 0)
        return -1;
    rv = nng_dialer_set_ptr(*(nng_dialer *)dialer, NNG_OPT_TLS_CONFIG, cfg);
    nng_tls_config_free(cfg);
    if (rv != 0) {
        snprintf(err, err_len, "TLS setup failed: %s", nng_strerror(rv));
        return -1;
    }
    return 0;
}
