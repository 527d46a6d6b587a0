/*
 * Private to libcohort_token: differential privacy (tk_noise.c for the
 * sampler, the bounds and the per-group noise; tk_plan.c for the checks
 * and the sensitivities). The mechanism, its sensitivities and its delta
 * are described at the top of tk_noise.c.
 */
#ifndef COHORT_TK_NOISE_H
#define COHORT_TK_NOISE_H

#include "token/tk_int.h"

/* Limits and constants of the mechanism. */
#define TK_DP_CONFIDENCE 0.95        /* stated error bounds hold with this probability */
#define TK_DP_MAX_ROWS 1000000u      /* Privacy.max_rows, at most */
#define TK_DP_SENSITIVITY_MAX 9.0e15 /* a quantity's L1 sensitivity, at most (< 2^53) */
#define TK_DP_SCALE_MAX 1.0e15       /* a quantity's noise scale, at most (< 2^50) */
#define TK_DP_MECHANISM_MAX 200u     /* bytes of ResultTable.mechanism */
#define TK_DP_NOISE_CONTEXT "cohort-dp-noise-v1"

/* ------------------------------------------------------ randomness */

/*
 * A ChaCha20 key stream: the noise's only source of randomness. Keyed from
 * libsodium's randombytes (tests) or derived from the group secret and the
 * exact input of a final session (tk_dp_group), so that the same input
 * always gets the same noise. Wipe it when done.
 */
struct tk_rand {
    uint8_t key[32];
    uint64_t block; /* the next 64-byte block of the stream */
    uint8_t buf[256];
    size_t pos; /* bytes of buf used */
};

void tk_rand_init(struct tk_rand *r, const uint8_t key[32]);
void tk_rand_wipe(struct tk_rand *r);
uint64_t tk_rand_u64(struct tk_rand *r);
/* Uniform in [0, n), exactly (rejection, no modulo bias); n >= 1. */
uint64_t tk_rand_below(struct tk_rand *r, uint64_t n);

/* ---------------------------------------------- discrete Laplace */

/*
 * The discrete Laplace (two-sided geometric) distribution of scale
 * num/den: P(X = x) = (1 - a) / (1 + a) * a^|x| with a = exp(-den/num).
 * The scale is an exact rational so that the sampler is exact.
 */
struct tk_lap {
    uint64_t num, den;
};

/*
 * The smallest scale num/den >= scale with den a power of two and
 * num < 2^53 (so the mechanism never protects less than asked).
 * TK_ERR_BAD_PLAN unless 0 < scale <= TK_DP_SCALE_MAX.
 */
int tk_lap_init(struct tk_lap *l, double scale);
double tk_lap_log_alpha(const struct tk_lap *l); /* log a = -den/num */
double tk_lap_alpha(const struct tk_lap *l);
/* One exact draw (Canonne, Kamath, Steinke 2020, Algorithm 2). */
int64_t tk_lap_sample(struct tk_rand *r, const struct tk_lap *l);
/* P(|X| > t) = 2 a^(t+1) / (1 + a). */
double tk_lap_tail(const struct tk_lap *l, uint64_t t);
/* The smallest t with P(|X| > t) <= 1 - confidence. */
uint64_t tk_lap_bound(const struct tk_lap *l, double confidence);

/* ------------------------------------------------------- the plan */

/* Which noisy quantity of a plan (see tk_dp_sensitivity). */
#define TK_DP_PARTICIPANTS (-1) /* the per-group participant count for the threshold */

/*
 * The L1 sensitivity of quantity `agg` (an aggregate index, or
 * TK_DP_PARTICIPANTS) over the released vector; avg_count: the COUNT half
 * of an AVG. tk_plan.c; the plan must have passed its DP checks.
 */
double tk_dp_sensitivity(const struct tk_plan *p, int agg, bool avg_count);
/* The noise of that quantity: scale n_noisy * sensitivity / epsilon. */
int tk_dp_lap(struct tk_lap *l, const struct tk_plan *p, int agg, bool avg_count);
/* The delta that thresholding on a noisy count adds (see tk_noise.c). */
double tk_dp_delta(const struct tk_plan *p);
/* Aggregate i's stated error bound, in the result's natural units (0: none, AVG). */
double tk_dp_error_bound(const struct tk_plan *p, uint32_t agg);
/* ResultTable.mechanism, NUL-terminated; returns its length. */
size_t tk_dp_mechanism(char *out, size_t cap, const struct tk_plan *p);

/* ----------------------------------------------------- final noise */

/*
 * The key from which a final session draws all its noise: a keyed BLAKE2b
 * of the query and what the session covers, under the group secret.
 */
void tk_dp_noise_key(uint8_t key[32], const uint8_t group_secret[32],
                     const uint8_t query_id[TK_QUERY_ID_LEN], const uint8_t lo[TK_KEY_LEN],
                     const uint8_t hi[TK_KEY_LEN], uint64_t contributors);

/*
 * One group's noisy release: *participants, the noisy participant count
 * the threshold is applied to, and aggs[0..n_aggs), the aggregates' noisy
 * final values. A pure function of (noise key, the group's key and exact
 * state): called twice for the same group, it gives the same values.
 * Returns 0, or TK_ERR_BAD_PLAN for a plan that skipped tk_plan.c's checks.
 */
int tk_dp_group(int64_t *participants, struct tk_value *aggs, const struct tk_plan *p,
                const uint8_t noise_key[32], const uint8_t *group_key, size_t group_key_len,
                const struct tk_group *e);

#endif
