/*
 * Fuzz targets: one per decoder that takes input from outside a core.
 *
 * Each target defines fuzz_one() (one input; it aborts on a broken
 * invariant) and fuzz_seeds() (well-formed inputs to start mutating from).
 * Built with clang -fsanitize=fuzzer (cmake -DCOHORT_LIBFUZZER=ON), a target
 * is a libFuzzer binary; otherwise it is linked with fuzz_driver.c, which
 * runs a fixed, seeded number of mutations of the seeds (and any files named
 * on its command line) as a regression test in CTest.
 */
#ifndef COHORT_FUZZ_H
#define COHORT_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

void fuzz_one(const uint8_t *data, size_t size);
void fuzz_seeds(void (*add)(const uint8_t *data, size_t size));

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
