/*
 * keygen_cli.c: `cohort-querier keygen` as a program of its own, for
 * tests/e2e_authority.sh to use while cohort-querier's command table does
 * not list it yet: `keygen_cli keygen --out PREFIX ...` runs exactly what
 * `cohort-querier keygen --out PREFIX ...` runs (rs_keygen_main).
 */
#include <stdio.h>
#include <string.h>

#include "querier/rs.h"

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "keygen") != 0) {
        fprintf(stderr, "usage: keygen_cli keygen --out PREFIX [--subject NAME]\n");
        return RS_EXIT_USAGE;
    }
    return rs_keygen_main(argc - 1, argv + 1);
}
