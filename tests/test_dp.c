/*
 * Differential privacy end to end, through the simulator: real tokens,
 * the real coordinator, the researcher's own opening of the result.
 *
 * - Over 200 seeded small studies, every released COUNT and SUM is within
 *   its stated bound as often as the result says (the simulator's
 *   statistical verdict), and the noise is the one the plan calls for:
 *   its variance and its rate of exceeding the bound match the discrete
 *   Laplace of scale n * sensitivity / epsilon, computed here from the
 *   plan's numbers alone.
 * - With an epsilon so large that the noise is zero, the result equals the
 *   ground truth under the contribution bounds exactly: the tokens cap
 *   groups and rows and clamp values as documented.
 * - Plans the mechanism cannot serve do not compile.
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

#include "sim/sim.h"

#define RUNS 200
#define TOKENS 300
#define CONFIDENCE 0.95

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The discrete Laplace of scale lambda: a = exp(-1 / lambda). */
static double variance_of(double lambda)
{
    double a = exp(-1 / lambda);
    return 2 * a / ((1 - a) * (1 - a));
}

static double tail_of(double lambda, double t)
{
    double a = exp(-1 / lambda);
    return 2 * pow(a, t + 1) / (1 + a);
}

static double bound_of(double lambda)
{
    double t = 0;
    while (tail_of(lambda, t) > 1 - CONFIDENCE)
        t += 1;
    return t;
}

/*
 * One column over all runs: the stated bound is the one the plan calls
 * for, and the noise has the variance and the exceedance rate of the
 * discrete Laplace of scale lambda, within 5 standard errors.
 */
static void check_column(const struct sim_dp_column *c, const char *what, double lambda)
{
    double n = (double)c->values, var = variance_of(lambda), want_bound = bound_of(lambda);
    double p = tail_of(lambda, c->bound), mean = c->sum_err / n, got_var = c->sum_sq_err / n;

    print_message("%s: %llu values, bound +-%g (want %g), %.2f %% beyond (exact %.2f %%), "
                  "mean %+.2f, variance %.4g (want %.4g)\n",
                  what, (unsigned long long)c->values, c->bound, want_bound,
                  100.0 * (double)c->exceed / n, 100 * p, mean, got_var, var);
    assert_true(c->checked);
    assert_true(c->values >= 500);
    assert_true(fabs(c->bound - want_bound) <= 1);
    assert_true(p <= 1 - CONFIDENCE);
    assert_true(fabs((double)c->exceed / n - p) < 5 * sqrt(p * (1 - p) / n));
    assert_true(fabs(mean) < 5 * sqrt(var / n));
    /* A squared Laplace draw has variance about 5 var^2. */
    assert_true(fabs(got_var - var) < 5 * sqrt(5 / n) * var);
}

static void two_hundred_seeded_studies_keep_the_noise_within_its_stated_bounds(void **state)
{
    struct sim_dp_check all;
    struct sim_config cfg;
    double t0 = seconds();
    uint64_t allowed;
    unsigned r;
    size_t a;
    (void)state;

    memset(&all, 0, sizeof all);
    sim_config_default(&cfg);
    cfg.tokens = TOKENS;
    cfg.sql = "SELECT age_band, COUNT(*), SUM(steps) FROM health GROUP BY age_band";
    cfg.epsilon = 1;
    cfg.contribution_bound = 20000;
    for (r = 0; r < RUNS; r++) {
        struct sim_report rep;
        cfg.seed = 7000 + r;
        assert_int_equal(sim_run(&rep, &cfg), 0);
        if (rep.failed || !rep.dp)
            fail_msg("run %u: %s", r, rep.error);
        if (r == 0)
            print_message("%s", rep.explain);
        all.values += rep.dp_check.values;
        all.exceed += rep.dp_check.exceed;
        all.strays += rep.dp_check.strays;
        all.released += rep.dp_check.released;
        all.true_groups += rep.dp_check.true_groups;
        all.confidence = rep.dp_check.confidence;
        for (a = 0; a < 2; a++) {
            all.agg[a].checked = rep.dp_check.agg[a].checked;
            all.agg[a].bound = rep.dp_check.agg[a].bound;
            all.agg[a].values += rep.dp_check.agg[a].values;
            all.agg[a].exceed += rep.dp_check.agg[a].exceed;
            all.agg[a].sum_err += rep.dp_check.agg[a].sum_err;
            all.agg[a].sum_sq_err += rep.dp_check.agg[a].sum_sq_err;
        }
        sim_report_free(&rep);
    }
    allowed = sim_dp_allowed(all.values, 1 - CONFIDENCE, SIM_DP_LEVEL);
    print_message("%d studies of %d tokens in %.1f s: %llu groups released of %llu, %llu values, "
                  "%llu beyond the stated bound (%.2f %%; at most %llu allowed)\n",
                  RUNS, TOKENS, seconds() - t0, (unsigned long long)all.released,
                  (unsigned long long)all.true_groups, (unsigned long long)all.values,
                  (unsigned long long)all.exceed, 100.0 * (double)all.exceed / (double)all.values,
                  (unsigned long long)allowed);
    assert_true(all.confidence == CONFIDENCE);
    assert_int_equal(all.strays, 0);
    assert_true(all.exceed <= allowed);
    /* K = 1 (age_band is per participant), max_rows 1, three quantities:
     * COUNT(*) has scale 3 / epsilon, SUM(steps) 3 * 20000 / epsilon. */
    check_column(&all.agg[0], "COUNT(*)", 3.0);
    check_column(&all.agg[1], "SUM(steps)", 60000.0);
}

/* One study; its report (caller frees). */
static void run_one(struct sim_report *rep, const char *sql, double epsilon, int64_t bound,
                    uint32_t max_rows)
{
    struct sim_config cfg;
    sim_config_default(&cfg);
    cfg.tokens = TOKENS;
    cfg.seed = 42;
    cfg.sql = sql;
    cfg.epsilon = epsilon;
    cfg.contribution_bound = bound;
    cfg.max_rows = max_rows;
    assert_int_equal(sim_run(rep, &cfg), 0);
    if (rep->failed)
        fail_msg("%s: %s", sql, rep->error);
}

static int64_t cell(const struct sim_report *rep, size_t row, size_t col)
{
    return rep->result.cells[row * rep->result.n_columns + col].i;
}

/*
 * epsilon = 10^6: noise of scale 10^-5 and less, zero in every draw one
 * could make. The result then equals the truth under the bounds, and the
 * bounds show: one row per participant and group, values clamped, at most
 * K groups per participant.
 */
static void a_noise_free_epsilon_shows_the_tokens_bound_every_contribution(void **state)
{
    struct sim_report rep;
    uint64_t total = 0;
    size_t i;
    (void)state;

    run_one(&rep,
            "SELECT sex, COUNT(*), COUNT(DISTINCT participant), SUM(steps), AVG(heart_rate) "
            "FROM health GROUP BY sex WITH (min_group_size = 1)",
            1e6, 5000, 1);
    assert_true(rep.ok);
    assert_null(sim_compare(&rep.result, &rep.truth));
    assert_int_equal(rep.dp_check.exceed, 0);
    assert_true(rep.dp_check.agg[0].sum_sq_err == 0 && rep.dp_check.agg[2].sum_sq_err == 0);
    assert_int_equal(rep.result.n_rows, 2);
    for (i = 0; i < rep.result.n_rows; i++) {
        /* max_rows 1: one row per participant, though each has 3 to 12 */
        assert_int_equal(cell(&rep, i, 1), cell(&rep, i, 2));
        /* every value clamped to 5000 steps, and most days have more */
        assert_true(cell(&rep, i, 3) <= 5000 * cell(&rep, i, 1));
        assert_true(cell(&rep, i, 3) > 4000 * cell(&rep, i, 1));
    }
    sim_report_free(&rep);

    /* K = 2 groups per participant, every one of whom has 3 dates or more. */
    run_one(&rep,
            "SELECT date, COUNT(*) FROM health GROUP BY date WITH (tuples_per_participant = 2, "
            "min_group_size = 0, max_rows = 3)",
            1e6, 0, 0);
    assert_true(rep.ok);
    assert_null(sim_compare(&rep.result, &rep.truth));
    for (i = 0; i < rep.result.n_rows; i++)
        total += (uint64_t)cell(&rep, i, 1);
    assert_int_equal(total, 2 * TOKENS);
    sim_report_free(&rep);
}

static void plans_the_mechanism_cannot_serve_do_not_compile(void **state)
{
    static const struct {
        const char *sql;
        int64_t bound;
        const char *error;
    } cases[] = {
        {"SELECT region, MIN(weight) FROM health GROUP BY region", 100,
         "SQL error at line 1, column 16: MIN(weight) has no differential-privacy mechanism"},
        {"SELECT MAX(steps), COUNT(*) FROM health", 0,
         "SQL error at line 1, column 8: MAX(steps) has no differential-privacy mechanism"},
        {"SELECT sex, SUM(steps) FROM health GROUP BY sex", 0,
         "SQL error at line 1, column 13: SUM(steps) under differential privacy needs "
         "contribution_bound"},
        {"SELECT sex, COUNT(*) FROM health GROUP BY sex HAVING AVG(weight) > 70", 0,
         "SQL error at line 1, column 54: AVG(weight) under differential privacy needs "
         "contribution_bound"},
    };
    size_t i;
    (void)state;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct sim_config cfg;
        struct sim_report rep;
        sim_config_default(&cfg);
        cfg.tokens = 20;
        cfg.sql = cases[i].sql;
        cfg.epsilon = 1;
        cfg.contribution_bound = cases[i].bound;
        assert_int_not_equal(sim_run(&rep, &cfg), 0);
        if (strstr(rep.error, cases[i].error) == NULL)
            fail_msg("%s: got '%s'", cases[i].sql, rep.error);
        sim_report_free(&rep);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_noise_free_epsilon_shows_the_tokens_bound_every_contribution),
        cmocka_unit_test(plans_the_mechanism_cannot_serve_do_not_compile),
        cmocka_unit_test(two_hundred_seeded_studies_keep_the_noise_within_its_stated_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
