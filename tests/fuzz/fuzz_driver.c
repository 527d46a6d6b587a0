/*
 * A small mutation driver for the fuzz targets when libFuzzer is not used:
 * the seeds, then ITERS mutations of them (bit flips, byte changes,
 * truncations, insertions, splices of two seeds), from a fixed seed so a
 * failure repeats. Files named on the command line are run as they are.
 *   fuzz_X [ITERS] [FILE...]
 */
#include <string.h>

#include "tests/fuzz/fuzz.h"

#define MAX_SEEDS 64
#define MAX_LEN (256u << 10)

static uint8_t *seeds[MAX_SEEDS];
static size_t seed_len[MAX_SEEDS], n_seeds;
static uint64_t rng = 0x243f6a8885a308d3ull;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void add_seed(const uint8_t *data, size_t size)
{
    if (n_seeds == MAX_SEEDS || size > MAX_LEN)
        return;
    seeds[n_seeds] = malloc(size ? size : 1);
    if (seeds[n_seeds] == NULL)
        return;
    memcpy(seeds[n_seeds], data, size);
    seed_len[n_seeds++] = size;
}

static size_t mutate(uint8_t *buf, size_t len)
{
    unsigned k, rounds = 1 + (unsigned)(next() % 4);
    for (k = 0; k < rounds; k++) {
        switch (next() % 6) {
        case 0:
            if (len)
                buf[next() % len] ^= (uint8_t)(1u << (next() % 8));
            break;
        case 1:
            if (len)
                buf[next() % len] = (uint8_t)next();
            break;
        case 2:
            if (len)
                len = (size_t)(next() % len);
            break;
        case 3:
            if (len < MAX_LEN) {
                size_t at = len ? (size_t)(next() % (len + 1)) : 0;
                memmove(buf + at + 1, buf + at, len - at);
                buf[at] = (uint8_t)next();
                len++;
            }
            break;
        case 4: {
            size_t s = (size_t)(next() % n_seeds), at = len ? (size_t)(next() % len) : 0;
            size_t take = seed_len[s] ? (size_t)(next() % seed_len[s]) : 0;
            if (at + take > MAX_LEN)
                take = MAX_LEN - at;
            memcpy(buf + at, seeds[s], take);
            if (at + take > len)
                len = at + take;
            break;
        }
        default:
            if (len >= 2) {
                size_t a = (size_t)(next() % len), b = (size_t)(next() % len);
                uint8_t t = buf[a];
                buf[a] = buf[b];
                buf[b] = t;
            }
            break;
        }
    }
    return len;
}

int main(int argc, char **argv)
{
    unsigned long iters = argc > 1 ? strtoul(argv[1], NULL, 10) : 5000, i;
    uint8_t *buf = malloc(MAX_LEN + 1);
    int f;

    if (buf == NULL)
        return 1;
    fuzz_seeds(add_seed);
    for (f = 2; f < argc; f++) {
        FILE *in = fopen(argv[f], "rb");
        size_t n;
        if (in == NULL) {
            fprintf(stderr, "cannot open %s\n", argv[f]);
            return 1;
        }
        n = fread(buf, 1, MAX_LEN, in);
        fclose(in);
        fuzz_one(buf, n);
    }
    for (i = 0; i < n_seeds; i++)
        fuzz_one(seeds[i], seed_len[i]);
    for (i = 0; n_seeds > 0 && i < iters; i++) {
        size_t s = (size_t)(next() % n_seeds), len = seed_len[s];
        memcpy(buf, seeds[s], len);
        len = mutate(buf, len);
        fuzz_one(buf, len);
    }
    for (i = 0; i < n_seeds; i++)
        free(seeds[i]);
    free(buf);
    printf("fuzz: %lu inputs, no invariant broken\n", iters + (unsigned long)n_seeds);
    return 0;
}
