/*
 * The simulator: its data generator, its comparison, and whole small
 * studies through the real cores, checked against the ground truth.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sim/sim.h"
#include "token/token.h"

static void the_generator_is_a_pure_function_of_seed_and_participant(void **state)
{
    struct sim_row a[SIM_ROWS_MAX], b[SIM_ROWS_MAX], c[SIM_ROWS_MAX];
    size_t na = sim_data_rows(a, 42, 7), nb = sim_data_rows(b, 42, 7), nc = sim_data_rows(c, 43, 7);
    size_t i;
    (void)state;
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na * sizeof a[0]);
    assert_true(na >= 3 && na <= 12);
    assert_true(nc != na || memcmp(a, c, na * sizeof a[0]) != 0);
    for (i = 0; i < na; i++) {
        assert_int_equal(a[i].participant, 8);
        assert_true(a[i].age >= 18 && a[i].age <= 95);
        assert_true(a[i].sex == 'F' || a[i].sex == 'M');
        assert_true(a[i].region < SIM_REGIONS);
        assert_int_equal(a[i].age, a[0].age);
        assert_int_equal(a[i].region, a[0].region);
    }
}

static void the_generator_spreads_participants_over_more_than_100_regions(void **state)
{
    int seen[SIM_REGIONS] = {0}, n = 0;
    uint64_t i;
    (void)state;
    for (i = 0; i < 20000; i++) {
        struct sim_row r[SIM_ROWS_MAX];
        sim_data_rows(r, 5, i);
        seen[r[0].region] = 1;
    }
    for (i = 0; i < SIM_REGIONS; i++)
        n += seen[i];
    assert_true(n > 100);
}

static void fill(struct qr_result *r, size_t rows)
{
    size_t k;
    memset(r, 0, sizeof *r);
    r->n_columns = 2;
    r->labels = calloc(2, sizeof *r->labels);
    strcpy(r->labels[0], "region");
    strcpy(r->labels[1], "AVG(x)");
    r->n_rows = rows;
    r->cells = calloc(rows * 2 + 1, sizeof *r->cells);
    for (k = 0; k < rows; k++) {
        r->cells[2 * k].type = QR_TEXT;
        snprintf(r->cells[2 * k].s, sizeof r->cells[2 * k].s, "R%03zu", k);
        r->cells[2 * k + 1].type = QR_DOUBLE;
        r->cells[2 * k + 1].d = 1.0 / 3.0 + (double)k;
    }
    r->participants = 10;
}

static void the_comparison_finds_every_kind_of_difference(void **state)
{
    struct qr_result a, b;
    char *d;
    (void)state;
    fill(&a, 3);
    fill(&b, 3);
    assert_null(sim_compare(&a, &b));
    b.cells[1].d *= 1 + 1e-12; /* within 1e-9 relative */
    assert_null(sim_compare(&a, &b));
    b.cells[3].d *= 1 + 1e-6;
    d = sim_compare(&a, &b);
    assert_non_null(d);
    assert_non_null(strstr(d, "row 2"));
    free(d);
    b.cells[3].d = a.cells[3].d;
    strcpy(b.cells[4].s, "R999");
    d = sim_compare(&a, &b);
    assert_non_null(d);
    free(d);
    strcpy(b.cells[4].s, a.cells[4].s);
    b.participants = 11;
    d = sim_compare(&a, &b);
    assert_non_null(d);
    assert_non_null(strstr(d, "participants"));
    free(d);
    qr_result_free(&b);
    fill(&b, 2);
    d = sim_compare(&a, &b);
    assert_non_null(d);
    assert_non_null(strstr(d, "rows"));
    free(d);
    qr_result_free(&a);
    qr_result_free(&b);
}

static void run_ok(const char *sql, uint64_t tokens, double dropout, size_t ram)
{
    struct sim_config cfg;
    struct sim_report rep;
    sim_config_default(&cfg);
    cfg.tokens = tokens;
    cfg.seed = 3;
    cfg.sql = sql;
    cfg.dropout = dropout;
    if (ram)
        cfg.token_ram = ram;
    assert_int_equal(sim_run(&rep, &cfg), 0);
    if (!rep.ok)
        print_error("%s\n%s\n%s\n", sql, rep.error, rep.diff ? rep.diff : "");
    assert_true(rep.ok);
    assert_false(rep.failed);
    assert_true(rep.contributed > 0);
    assert_int_equal(rep.coord.ciphertext_sizes_distinct, 1);
    assert_true(rep.peak_arena > 0 && rep.peak_arena <= cfg.token_ram);
    if (dropout > 0)
        assert_true(rep.dropped > 0 && rep.contributed == tokens - rep.dropped - rep.refused);
    sim_report_free(&rep);
}

static void small_studies_match_their_ground_truth(void **state)
{
    (void)state;
    run_ok("SELECT COUNT(*), SUM(steps), AVG(weight), MIN(age), MAX(heart_rate) FROM health", 300,
           0, 0);
    run_ok("SELECT sex, COUNT(DISTINCT participant), AVG(steps) FROM health WHERE age > 50 "
           "GROUP BY sex",
           300, 0, 0);
    run_ok("SELECT region, COUNT(*) FROM health GROUP BY region HAVING COUNT(*) >= 30 "
           "ORDER BY COUNT(*) DESC LIMIT 5",
           400, 0, 0);
}

static void dropouts_and_vanishing_aggregators_leave_the_result_exact(void **state)
{
    (void)state;
    run_ok("SELECT sex, COUNT(*), SUM(weight) FROM health GROUP BY sex", 600, 0.2, 0);
}

static void a_token_with_the_smallest_ram_still_aggregates_exactly(void **state)
{
    (void)state;
    run_ok("SELECT sex, COUNT(*), MAX(weight) FROM health GROUP BY sex", 400, 0, 16384);
}

static const char *const protocols[] = {"s_agg", "rnf_noise", "c_noise", "ed_hist", "shuffle"};

/* One study under a named protocol, with dropouts; the report, checked. */
static void run_protocol(struct sim_report *rep, const char *protocol, const char *sql,
                         uint64_t tokens, double dropout, int leakage)
{
    struct sim_config cfg;
    sim_config_default(&cfg);
    cfg.tokens = tokens;
    cfg.seed = 11;
    cfg.sql = sql;
    cfg.dropout = dropout;
    cfg.protocol = protocol;
    cfg.leakage = leakage;
    assert_int_equal(sim_run(rep, &cfg), 0);
    if (!rep->ok)
        print_error("%s: %s\n%s\n%s\n", protocol, sql, rep->error, rep->diff ? rep->diff : "");
    assert_true(rep->ok);
    assert_false(rep->failed);
    assert_string_equal(rep->protocol, protocol);
    assert_true(rep->dropped > 0 && rep->contributed == tokens - rep->dropped);
    assert_int_equal(rep->coord.ciphertext_sizes_distinct, 1);
    assert_true(rep->peak_arena > 0 && rep->peak_arena <= cfg.token_ram);
    assert_int_equal(rep->hist, strcmp(protocol, "ed_hist") == 0);
}

static void every_protocol_returns_the_ground_truth_with_dropouts(void **state)
{
    static const char *const queries[] = {
        /* multi-column GROUP BY, WHERE, HAVING, every aggregate */
        "SELECT sex, age_band, COUNT(*), SUM(steps), AVG(heart_rate), MIN(age), MAX(weight) "
        "FROM health WHERE age >= 25 GROUP BY sex, age_band HAVING COUNT(*) >= 20",
        /* no GROUP BY */
        "SELECT COUNT(*), AVG(steps) FROM health",
        /* many groups, a participant count, HAVING on it, ORDER BY and LIMIT */
        "SELECT region, sex, COUNT(DISTINCT participant), SUM(weight) FROM health "
        "GROUP BY region, sex HAVING COUNT(DISTINCT participant) > 2 "
        "ORDER BY COUNT(DISTINCT participant) DESC LIMIT 20",
        /* groups per row: several tuples per participant */
        "SELECT heart_rate, COUNT(*) FROM health WHERE heart_rate < 64 GROUP BY heart_rate",
    };
    (void)state;
    for (size_t p = 0; p < sizeof protocols / sizeof protocols[0]; p++) {
        uint64_t vanished = 0;
        for (size_t q = 0; q < sizeof queries / sizeof queries[0]; q++) {
            struct sim_report rep;
            run_protocol(&rep, protocols[p], queries[q], 600, 0.1, 0);
            vanished += rep.vanished;
            sim_report_free(&rep);
        }
        assert_true(vanished > 0); /* aggregators vanished with tasks, and others took them */
    }
}

/*
 * What the service learns, protocol by protocol (sim_leak.c): nothing
 * linkable from s_agg and c_noise, the frequencies but no link from the
 * shuffle, links from rnf_noise's and ed_hist's tags.
 */
static void the_leakage_report_shows_what_each_protocol_reveals(void **state)
{
    const char *sql = "SELECT sex, age_band, COUNT(*) FROM health GROUP BY sex, age_band";
    (void)state;
    for (size_t p = 0; p < sizeof protocols / sizeof protocols[0]; p++) {
        struct sim_report rep;
        const struct sim_leak_report *l = &rep.leak;

        run_protocol(&rep, protocols[p], sql, 1500, 0.1, 1);
        assert_true(rep.has_leak);
        assert_int_equal(l->linked, rep.contributed);
        assert_true(l->prior_accuracy > 0.05 && l->prior_accuracy < 0.5);
        if (strcmp(protocols[p], "s_agg") == 0) {
            assert_int_equal(l->tagged_cts, 0);
            assert_true(fabs(l->accuracy - l->prior_accuracy) < 1e-12);
        } else if (strcmp(protocols[p], "c_noise") == 0) {
            assert_int_equal(l->tag_freq_min, l->tag_freq_max); /* flat */
            assert_true(fabs(l->accuracy - l->prior_accuracy) < 1e-12);
        } else if (strcmp(protocols[p], "shuffle") == 0) {
            assert_true(l->tag_vs_truth_tv < 1e-9); /* the exact frequencies... */
            assert_true(l->accuracy <= l->prior_accuracy + l->accuracy_ci); /* ...and no link */
            assert_true(l->mix_tv_max < 0.05);
            assert_true(l->shuffle_rounds_seen >= 2);
            assert_true(l->anon_min >= (double)rep.contributed);
        } else { /* rnf_noise, ed_hist: tags link participants to buckets */
            assert_true(l->accuracy > l->prior_accuracy + l->accuracy_ci);
            assert_true(l->anon_median < (double)rep.contributed);
        }
        sim_report_free(&rep);
    }
}

/* A token with a large RAM shuffles batches of thousands: the service takes
 * a task result of that many ciphertexts, and the response that did not
 * fit the link's first buffer is retried without losing the batch. */
static void a_shuffle_batch_of_thousands_goes_through(void **state)
{
    struct sim_config cfg;
    struct sim_report rep;
    (void)state;
    sim_config_default(&cfg);
    cfg.tokens = 5000;
    cfg.token_ram = 1u << 20;
    cfg.protocol = "shuffle";
    cfg.sql = "SELECT sex, COUNT(*) FROM health GROUP BY sex";
    assert_int_equal(sim_run(&rep, &cfg), 0);
    if (!rep.ok)
        print_error("%s\n", rep.error);
    assert_true(rep.ok);
    assert_true(tk_shuffle_capacity(cfg.token_ram, 200) > 4096);
    sim_report_free(&rep);
}

/* Without a protocol named, the cost model picks one that leaks nothing;
 * under differential privacy a leaky one is refused even when named. */
static void the_default_protocol_leaks_nothing(void **state)
{
    struct sim_config cfg;
    struct sim_report rep;
    (void)state;
    sim_config_default(&cfg);
    cfg.tokens = 200;
    cfg.protocol = NULL;
    cfg.sql = "SELECT sex, COUNT(*) FROM health GROUP BY sex";
    assert_int_equal(sim_run(&rep, &cfg), 0);
    assert_true(rep.ok);
    assert_int_equal(qr_protocol_leakage(rep.protocol), QR_LEAK_NONE);
    sim_report_free(&rep);
    cfg.sql = "SELECT sex, COUNT(*) FROM health GROUP BY sex WITH (protocol = shuffle, "
              "epsilon = 1)";
    assert_true(sim_run(&rep, &cfg) < 0);
    assert_non_null(strstr(rep.error, "differential privacy cannot allow"));
    sim_report_free(&rep);
}

static void a_study_below_its_minimum_participants_yields_no_result(void **state)
{
    struct sim_config cfg;
    struct sim_report rep;
    (void)state;
    sim_config_default(&cfg);
    cfg.tokens = 50;
    cfg.sql = "SELECT COUNT(*) FROM health WITH (min_participants = 1000)";
    assert_int_equal(sim_run(&rep, &cfg), 0);
    assert_true(rep.failed);
    assert_true(rep.truth_too_few);
    assert_true(rep.ok);
    sim_report_free(&rep);
}

static void bad_sql_is_reported_with_its_position(void **state)
{
    struct sim_config cfg;
    struct sim_report rep;
    (void)state;
    sim_config_default(&cfg);
    cfg.tokens = 10;
    cfg.sql = "SELECT COUNT(*) FORM health";
    assert_true(sim_run(&rep, &cfg) < 0);
    assert_non_null(strstr(rep.error, "SQL error at line 1, column"));
    sim_report_free(&rep);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_generator_is_a_pure_function_of_seed_and_participant),
        cmocka_unit_test(the_generator_spreads_participants_over_more_than_100_regions),
        cmocka_unit_test(the_comparison_finds_every_kind_of_difference),
        cmocka_unit_test(small_studies_match_their_ground_truth),
        cmocka_unit_test(dropouts_and_vanishing_aggregators_leave_the_result_exact),
        cmocka_unit_test(a_token_with_the_smallest_ram_still_aggregates_exactly),
        cmocka_unit_test(every_protocol_returns_the_ground_truth_with_dropouts),
        cmocka_unit_test(the_leakage_report_shows_what_each_protocol_reveals),
        cmocka_unit_test(the_default_protocol_leaks_nothing),
        cmocka_unit_test(a_shuffle_batch_of_thousands_goes_through),
        cmocka_unit_test(a_study_below_its_minimum_participants_yields_no_result),
        cmocka_unit_test(bad_sql_is_reported_with_its_position),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
