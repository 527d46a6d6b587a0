/*
 * sv.h: the shells of cohort-querier that reach the network: the service
 * (serve) and the researcher's commands that talk to it (run, status).
 * Each main takes argv with argv[0] the command's name and returns the
 * program's exit status (0 done, 1 failed, 2 usage).
 */
#ifndef COHORT_SV_H
#define COHORT_SV_H

#include <stddef.h>
#include <stdint.h>

#define SV_EXIT_FAILED 1
#define SV_EXIT_USAGE 2

int sv_serve_main(int argc, char **argv);
int sv_run_main(int argc, char **argv);
int sv_status_main(int argc, char **argv);

/*
 * The root key of an authority from a certificate file (a CertChain whose
 * last certificate is self-signed, as cohort-authority writes
 * authority.cert, or the end of a researcher's chain). 0 or -1 with a
 * sentence in err.
 */
int sv_root_key(const char *path, uint8_t pk[32], char *err, size_t err_len);

#endif
