/*
 * The token's noise (token/tk_noise.c): the discrete Laplace sampler
 * against its exact distribution, the stated error bounds against exact
 * tails, the rational scales, the uniform source, the per-group noise
 * and the delta of thresholding.
 *
 * The sampler is fed from fixed ChaCha20 keys, so that every run of this
 * test sees the same draws: the goodness-of-fit thresholds are set at a
 * 10^-4 false-alarm level, and a fixed stream means a pass is repeatable.
 * The sampler's speed is printed, not checked.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <math.h>

#include "token/tk_noise.h"

#define DRAWS 200000u /* per scale: the issue asks for at least 100,000 */
#define Z_1E4 3.719   /* standard normal quantile at 1 - 10^-4 */

static void key_of(uint8_t key[32], unsigned which)
{
    memset(key, 0, 32);
    key[0] = (uint8_t)which;
    key[31] = 0xd9;
}

/* P(X = x) for the discrete Laplace of this scale, in long double. */
static long double pmf(const struct tk_lap *l, long long x)
{
    long double la = -(long double)l->den / (long double)l->num;
    long double a = expl(la);
    return (1 - a) / (1 + a) * expl(la * (long double)llabs(x));
}

/* The chi-square critical value at 1 - 10^-4 (Wilson-Hilferty). */
static double chi2_critical(double df)
{
    double h = 2.0 / (9.0 * df);
    return df * pow(1.0 - h + Z_1E4 * sqrt(h), 3.0);
}

/*
 * Draw DRAWS samples of scale `scale` and test them: a chi-square over
 * every value whose expected count is at least 5, the two tails beyond
 * pooled into one bin each; the mean against 0 and the variance against
 * 2a / (1 - a)^2, both within 5 standard errors.
 */
static void check_sampler(double scale, unsigned which)
{
    struct tk_lap l;
    struct tk_rand r;
    uint8_t key[32];
    long long m = 0, x;
    long double a, var, sum = 0, sumsq = 0;
    double chi2 = 0, crit, mean, sample_var;
    unsigned long *count;
    unsigned long tail_n = 0;
    size_t i, bins;

    assert_int_equal(tk_lap_init(&l, scale), TK_OK);
    a = expl(-(long double)l.den / (long double)l.num);
    var = 2 * a / ((1 - a) * (1 - a));
    /* m: the largest |x| whose own bin expects >= 5 draws, less one or
     * more until the pooled tail, |x| > m, expects >= 5 too */
    while (pmf(&l, m + 1) * DRAWS >= 5)
        m++;
    for (;;) {
        long double in = 0;
        for (x = -m; x <= m; x++)
            in += pmf(&l, x);
        if ((1 - in) * DRAWS >= 5 || m == 0)
            break;
        m--;
    }
    bins = (size_t)(2 * m + 1);
    count = calloc(bins, sizeof *count);
    assert_non_null(count);
    key_of(key, which);
    tk_rand_init(&r, key);
    for (i = 0; i < DRAWS; i++) {
        x = tk_lap_sample(&r, &l);
        sum += x;
        sumsq += (long double)x * x;
        if (x < -m || x > m)
            tail_n++;
        else
            count[x + m]++;
    }
    tk_rand_wipe(&r);
    {
        long double in = 0, e;
        for (x = -m; x <= m; x++) {
            e = pmf(&l, x) * DRAWS;
            chi2 += (double)(((long double)count[x + m] - e) * ((long double)count[x + m] - e) / e);
            in += pmf(&l, x);
        }
        e = (1 - in) * DRAWS;
        if (e > 0) {
            chi2 += (double)(((long double)tail_n - e) * ((long double)tail_n - e) / e);
            bins++;
        }
    }
    crit = chi2_critical((double)(bins - 1));
    mean = (double)(sum / DRAWS);
    sample_var = (double)(sumsq / DRAWS - (sum / DRAWS) * (sum / DRAWS));
    print_message("scale %-8g a %.6f: chi2 %.1f over %zu bins (critical %.1f), mean %+.4f "
                  "(sd %.4f), variance %.4f vs %.4f\n",
                  scale, (double)a, chi2, bins, crit, mean, sqrt((double)var / DRAWS), sample_var,
                  (double)var);
    assert_true(chi2 < crit);
    assert_true(fabs(mean) < 5 * sqrt((double)var / DRAWS));
    /* The variance of a squared Laplace draw is about 5 var^2. */
    assert_true(fabs(sample_var - (double)var) < 5 * sqrt(5.0 / DRAWS) * (double)var + 1e-9);
    free(count);
}

static void the_sampler_matches_the_discrete_laplace_pmf_at_small_scales(void **state)
{
    (void)state;
    check_sampler(0.3, 1);
    check_sampler(1.0, 2);
    check_sampler(2.5, 3);
}

static void the_sampler_matches_the_discrete_laplace_pmf_at_large_scales(void **state)
{
    (void)state;
    check_sampler(12.0, 4);
    check_sampler(60000.0 / 7.0, 5);
}

/* P(|X| > t), exactly enough: one minus the mass of [-t, t]. */
static long double tail_exact(const struct tk_lap *l, uint64_t t)
{
    long double in = pmf(l, 0);
    uint64_t x;
    for (x = 1; x <= t; x++)
        in += 2 * pmf(l, (long long)x);
    return 1 - in;
}

static void the_stated_bound_is_the_smallest_that_holds_exactly(void **state)
{
    static const double scales[] = {0.1, 0.3, 1.0, 2.0, 3.0, 7.5, 24.0, 300.0, 4096.0};
    static const double confidences[] = {0.5, 0.9, 0.95, 0.99};
    size_t i, j;
    (void)state;
    for (i = 0; i < sizeof scales / sizeof scales[0]; i++) {
        for (j = 0; j < sizeof confidences / sizeof confidences[0]; j++) {
            struct tk_lap l;
            long double miss = 1 - (long double)confidences[j];
            uint64_t t;
            assert_int_equal(tk_lap_init(&l, scales[i]), TK_OK);
            t = tk_lap_bound(&l, confidences[j]);
            /* Summing the PMF and the closed form agree... */
            assert_true(fabsl(tail_exact(&l, t) - (long double)tk_lap_tail(&l, t)) < 1e-9L);
            /* ...the bound holds, and one less would not. */
            assert_true(tail_exact(&l, t) <= miss + 1e-12L);
            if (t > 0)
                assert_true(tail_exact(&l, t - 1) > miss - 1e-12L);
        }
    }
}

/* Empirically too: |X| > t in about 1 - confidence of draws, never more. */
static void the_stated_bound_holds_for_drawn_noise(void **state)
{
    struct tk_lap l;
    struct tk_rand r;
    uint8_t key[32];
    uint64_t t, over = 0, i;
    double p, sd;
    (void)state;
    assert_int_equal(tk_lap_init(&l, 3.0), TK_OK);
    t = tk_lap_bound(&l, TK_DP_CONFIDENCE);
    p = tk_lap_tail(&l, t);
    key_of(key, 9);
    tk_rand_init(&r, key);
    for (i = 0; i < DRAWS; i++) {
        int64_t x = tk_lap_sample(&r, &l);
        over += (uint64_t)(x > (int64_t)t || x < -(int64_t)t);
    }
    tk_rand_wipe(&r);
    sd = sqrt(p * (1 - p) / DRAWS);
    print_message("bound %llu at 0.95: P(|X| > t) = %.4f exactly, %.4f drawn\n",
                  (unsigned long long)t, p, (double)over / DRAWS);
    assert_true(p <= 1 - TK_DP_CONFIDENCE);
    assert_true(fabs((double)over / DRAWS - p) < 5 * sd);
}

static void a_scale_is_rounded_up_to_a_close_rational(void **state)
{
    static const double scales[] = {1e-6, 0.3, 1.0, 3.0, 1234.5678, 6e9, 1e15};
    size_t i;
    struct tk_lap l;
    (void)state;
    for (i = 0; i < sizeof scales / sizeof scales[0]; i++) {
        long double got;
        assert_int_equal(tk_lap_init(&l, scales[i]), TK_OK);
        got = (long double)l.num / (long double)l.den;
        assert_true(got >= (long double)scales[i]);
        assert_true(got - (long double)scales[i] <= 3.0L / (long double)l.den);
        assert_true(l.num < (1ull << 53));
        assert_true((l.den & (l.den - 1)) == 0);
    }
    assert_int_equal(tk_lap_init(&l, 0.0), TK_ERR_BAD_PLAN);
    assert_int_equal(tk_lap_init(&l, -1.0), TK_ERR_BAD_PLAN);
    assert_int_equal(tk_lap_init(&l, NAN), TK_ERR_BAD_PLAN);
    assert_int_equal(tk_lap_init(&l, INFINITY), TK_ERR_BAD_PLAN);
    assert_int_equal(tk_lap_init(&l, 2 * TK_DP_SCALE_MAX), TK_ERR_BAD_PLAN);
}

static void the_uniform_source_has_no_modulo_bias(void **state)
{
    static const uint64_t sizes[] = {3, 7, 10};
    struct tk_rand r;
    uint8_t key[32];
    size_t i, k;
    (void)state;
    key_of(key, 11);
    tk_rand_init(&r, key);
    for (i = 0; i < 3; i++) {
        unsigned long c[16] = {0};
        double chi2 = 0, e = (double)DRAWS / (double)sizes[i];
        for (k = 0; k < DRAWS; k++) {
            uint64_t v = tk_rand_below(&r, sizes[i]);
            assert_true(v < sizes[i]);
            c[v]++;
        }
        for (k = 0; k < sizes[i]; k++)
            chi2 += ((double)c[k] - e) * ((double)c[k] - e) / e;
        assert_true(chi2 < chi2_critical((double)sizes[i] - 1));
    }
    /* Large n: every value below n, the top half hit half the time. */
    {
        uint64_t n = (1ull << 62) + 12345, hi = 0;
        for (k = 0; k < DRAWS; k++) {
            uint64_t v = tk_rand_below(&r, n);
            assert_true(v < n);
            hi += v >= n / 2;
        }
        assert_true(fabs((double)hi / DRAWS - 0.5) < 5 * sqrt(0.25 / DRAWS));
    }
    assert_int_equal(tk_rand_below(&r, 1), 0);
    tk_rand_wipe(&r);
}

/* A plan by hand: K tuples, max_rows, epsilon, COUNT(*) and SUM of an INT column. */
static void small_plan(struct tk_plan *p, double epsilon, uint32_t k, uint32_t max_rows,
                       uint32_t tau)
{
    memset(p, 0, sizeof *p);
    p->epsilon = epsilon;
    p->tuples = k;
    p->max_rows = max_rows;
    p->min_group_size = tau;
    p->n_columns = 1;
    strcpy(p->columns[0].name, "steps");
    p->columns[0].type = COHORT__VALUE_TYPE__VT_INT;
    p->n_aggs = 2;
    p->aggs[0] = (struct tk_agg){COHORT__AGG_FUNC__AGG_COUNT_STAR, -1};
    p->aggs[1] = (struct tk_agg){COHORT__AGG_FUNC__AGG_SUM, 0};
    p->clamp[1] = 20000;
    p->n_noisy = 3;
}

static void delta_follows_the_threshold_and_the_contribution_bound(void **state)
{
    struct tk_plan p;
    double a = exp(-1.0 / 3.0), want;
    (void)state;
    /* K = 1, n = 3, epsilon = 1: the threshold's noise has scale 3. */
    small_plan(&p, 1.0, 1, 1, 41);
    want = pow(a, 40) / (1 + a);
    print_message("delta at tau 41: %.3g (closed form %.3g)\n", tk_dp_delta(&p), want);
    assert_true(fabs(tk_dp_delta(&p) - want) < 1e-6 * want);
    assert_true(tk_dp_delta(&p) < 1e-6);
    small_plan(&p, 1.0, 1, 1, 40);
    assert_true(tk_dp_delta(&p) > 1e-6);
    small_plan(&p, 1.0, 1, 1, 5);
    assert_true(fabs(tk_dp_delta(&p) - pow(a, 4) / (1 + a)) < 1e-6);
    /* K groups: 1 - (1 - p)^K, with K times the scale. */
    small_plan(&p, 1.0, 8, 1, 200);
    a = exp(-1.0 / 24.0);
    want = 1 - pow(1 - pow(a, 199) / (1 + a), 8);
    assert_true(fabs(tk_dp_delta(&p) - want) < 1e-6 * want);
    /* No threshold at all: any group of one is released half the time or more. */
    small_plan(&p, 1.0, 1, 1, 0);
    assert_true(tk_dp_delta(&p) > 0.5);
}

static void error_bounds_and_mechanism_are_stated_in_natural_units(void **state)
{
    struct tk_plan p;
    struct tk_lap l;
    char mech[TK_DP_MECHANISM_MAX];
    (void)state;
    small_plan(&p, 1.0, 2, 3, 41);
    /* COUNT: sensitivity K * max_rows = 6, scale 18; SUM: times 20000. */
    assert_true(tk_dp_sensitivity(&p, 0, false) == 6.0);
    assert_true(tk_dp_sensitivity(&p, 1, false) == 120000.0);
    assert_true(tk_dp_sensitivity(&p, TK_DP_PARTICIPANTS, false) == 2.0);
    assert_int_equal(tk_dp_lap(&l, &p, 0, false), TK_OK);
    assert_true(tk_dp_error_bound(&p, 0) == (double)tk_lap_bound(&l, 0.95));
    assert_true(tk_dp_error_bound(&p, 0) >= 18.0 * log(1 / 0.05) - 18.0);
    /* A DECIMAL(1) column states its bound in its natural units. */
    p.columns[0].type = COHORT__VALUE_TYPE__VT_DECIMAL;
    p.columns[0].scale = 1;
    p.clamp[1] = 2000; /* a bound of 200.0 */
    assert_int_equal(tk_dp_lap(&l, &p, 1, false), TK_OK);
    assert_true(fabs(tk_dp_error_bound(&p, 1) - (double)tk_lap_bound(&l, 0.95) / 10.0) < 1e-9);
    tk_dp_mechanism(mech, sizeof mech, &p);
    print_message("mechanism: %s\n", mech);
    assert_non_null(strstr(mech, "epsilon/3 per quantity"));
    assert_non_null(strstr(mech, ">= 41"));
    assert_non_null(strstr(mech, "delta "));
}

static void a_group_gets_the_same_noise_from_the_same_input_and_fresh_noise_otherwise(void **state)
{
    struct tk_plan p;
    uint8_t key1[32], key2[32], storage[sizeof(struct tk_group) + 2 * sizeof(struct tk_agg_state)];
    struct tk_group *e = (struct tk_group *)storage;
    struct tk_value a[2], b[2];
    int64_t pa, pb;
    const uint8_t gkey[] = {3, 1, 'F'};
    int differ = 0, i;
    (void)state;
    small_plan(&p, 1.0, 1, 1, 5);
    memset(storage, 0, sizeof storage);
    e->participants = 100;
    e->rows = 100;
    e->aggs[0].count = 100;
    e->aggs[1].count = 100;
    e->aggs[1].value = 650000;
    key_of(key1, 21);
    key_of(key2, 22);
    assert_int_equal(tk_dp_group(&pa, a, &p, key1, gkey, sizeof gkey, e), TK_OK);
    assert_int_equal(tk_dp_group(&pb, b, &p, key1, gkey, sizeof gkey, e), TK_OK);
    assert_true(pa == pb && a[0].i == b[0].i && a[1].i == b[1].i);
    assert_int_equal(a[0].type, COHORT__VALUE_TYPE__VT_INT);
    assert_int_equal(a[1].type, COHORT__VALUE_TYPE__VT_INT);
    /* Another session key, or another exact state: other noise (almost surely). */
    for (i = 0; i < 8; i++) {
        key2[1] = (uint8_t)i;
        assert_int_equal(tk_dp_group(&pb, b, &p, key2, gkey, sizeof gkey, e), TK_OK);
        differ += pb != pa || b[0].i != a[0].i || b[1].i != a[1].i;
    }
    e->aggs[1].value++;
    assert_int_equal(tk_dp_group(&pb, b, &p, key1, gkey, sizeof gkey, e), TK_OK);
    differ += b[1].i != a[1].i + 1 || b[0].i != a[0].i;
    assert_true(differ >= 8);
    /* MIN has no mechanism. */
    p.aggs[1].func = COHORT__AGG_FUNC__AGG_MIN;
    assert_int_equal(tk_dp_group(&pb, b, &p, key1, gkey, sizeof gkey, e), TK_ERR_BAD_PLAN);
}

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void the_sampler_speed_is_reported(void **state)
{
    static const double scales[] = {3.0, 240000.0};
    struct tk_rand r;
    uint8_t key[32];
    size_t i, k;
    (void)state;
    key_of(key, 31);
    for (i = 0; i < 2; i++) {
        struct tk_lap l;
        int64_t acc = 0;
        double t0;
        assert_int_equal(tk_lap_init(&l, scales[i]), TK_OK);
        tk_rand_init(&r, key);
        t0 = seconds();
        for (k = 0; k < 1000000; k++)
            acc += tk_lap_sample(&r, &l);
        print_message("sampler at scale %g: %.2f million draws/s (checksum %lld)\n", scales[i],
                      1.0 / (seconds() - t0), (long long)acc);
        tk_rand_wipe(&r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_sampler_matches_the_discrete_laplace_pmf_at_small_scales),
        cmocka_unit_test(the_sampler_matches_the_discrete_laplace_pmf_at_large_scales),
        cmocka_unit_test(the_stated_bound_is_the_smallest_that_holds_exactly),
        cmocka_unit_test(the_stated_bound_holds_for_drawn_noise),
        cmocka_unit_test(a_scale_is_rounded_up_to_a_close_rational),
        cmocka_unit_test(the_uniform_source_has_no_modulo_bias),
        cmocka_unit_test(delta_follows_the_threshold_and_the_contribution_bound),
        cmocka_unit_test(error_bounds_and_mechanism_are_stated_in_natural_units),
        cmocka_unit_test(a_group_gets_the_same_noise_from_the_same_input_and_fresh_noise_otherwise),
        cmocka_unit_test(the_sampler_speed_is_reported),
    };
    if (tk_library_init() != TK_OK)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
