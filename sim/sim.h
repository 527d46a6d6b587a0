/*
 * libcohort_sim: many tokens, their agents and one coordinator in one
 * process, running the real cores.
 *
 * The simulator owns no protocol logic. It provisions N software tokens
 * (struct tk_token over memory flash) the way an authority would,
 * loads each with a synthetic `health` table generated from the seed,
 * compiles and signs the study's SQL, and then moves bytes: service
 * requests from participant agents (participant/) to the coordinator
 * (querier/), and token requests from agents to their tokens (token/),
 * on a virtual clock with modelled latency, seeded dropouts and vanishing
 * aggregators. Independently, it computes the same query in the clear
 * over the same rows (the ground truth) and compares.
 */
#ifndef COHORT_SIM_H
#define COHORT_SIM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "querier/querier.h"
#include "sim/sim_leak.h"

#define SIM_ROWS_MAX 16u
#define SIM_REGIONS 128u
#define SIM_TOKENS_MAX 2000000u
#define SIM_OWNER_EPSILON                                                                          \
    1000000.0 /* each simulated owner's privacy budget, per study and in all */

struct sim_config {
    uint64_t tokens;
    uint64_t seed;
    const char *sql;
    const char *protocol; /* a protocol's name; NULL or "auto": the SQL's, or the cost model's */
    int max_leakage;      /* what "auto" may choose (enum qr_leakage) */
    int leakage;          /* record the service's view and report what it reveals */
    const char *view_csv; /* with leakage: also write the view there (NULL: no) */
    size_t token_ram;     /* bytes of each token's RAM arena */
    double dropout;       /* fraction of participants / aggregators that vanish */
    unsigned threads;     /* worker threads; 0: one per CPU */
    uint32_t latency_ms;  /* one-way network latency, virtual */
    int progress;         /* draw a progress bar on stderr */
    int keep_artifacts;   /* keep the sealed result and the researcher's keys (tests) */
    /* Differential privacy, unless the SQL's WITH says otherwise (0: none). */
    double epsilon;
    int64_t contribution_bound;
    uint32_t max_rows;
};

void sim_config_default(struct sim_config *cfg);

/*
 * Under differential privacy a run is checked statistically (sim_dp.c):
 * every released COUNT and SUM value against the truth under the same
 * contribution bounds, counting those whose error exceeds the bound the
 * result states.
 */
struct sim_dp_column {
    int checked;       /* a COUNT or SUM column (AVG states no bound) */
    double bound;      /* the stated bound, in the column's natural units */
    uint64_t values;   /* released values compared */
    uint64_t exceed;   /* of which |noisy - truth| > bound */
    double sum_err;    /* of noisy - truth, natural units */
    double sum_sq_err; /* of its square */
};

struct sim_dp_check {
    uint64_t values, exceed; /* over every checked column */
    uint64_t strays;         /* released groups that the truth does not have */
    uint64_t released;       /* groups released */
    uint64_t true_groups;    /* groups of the truth, before any threshold */
    double confidence;       /* what the result states */
    size_t n_aggs;
    struct sim_dp_column agg[QR_AGGREGATES_MAX]; /* plan order */
};

struct sim_report {
    int ok;     /* 1: the result equals the ground truth (under DP: passes the DP check) */
    int failed; /* 1: the study failed (see error) */
    char error[640];
    char *diff;              /* malloc'd account of a mismatch, or NULL */
    struct qr_result result; /* what the researcher got */
    struct qr_result truth;  /* the ground truth, laid out the same way */
    int truth_too_few;       /* the truth is "fewer participants than required" */
    char *explain;           /* the plan, explained (malloc'd) */

    uint64_t tokens;
    uint64_t dropped;            /* participants that never contributed */
    uint64_t contributed;        /* contributions the service accepted */
    uint64_t refused;            /* tokens that refused the plan */
    int refusal;                 /* the most frequent refusal status (TK_ERR_*) */
    char refusal_reason[256];    /* a token's reason for it, as its owner would see it */
    uint64_t vanished;           /* aggregators that never returned their task */
    struct qr_coord_stats coord; /* what the service saw and did */
    size_t ciphertext_bytes;     /* size of one collection ciphertext on the wire */

    double setup_wall_s, setup_cpu_s;
    double study_wall_s, study_cpu_s;
    double virtual_s;           /* virtual time from first request to the result */
    double aggregate_virtual_s; /* of which after collection closed */
    size_t peak_arena;          /* the most arena any token call used */
    size_t token_ram;
    double rest_bytes_per_token; /* resident memory per token at rest */
    size_t token_state_bytes;    /* sizeof(struct tk_token) */
    unsigned threads;

    /* With keep_artifacts: what the researcher holds (malloc'd; wiped by
     * sim_report_free). */
    uint8_t *sealed_result;
    size_t sealed_result_len;
    uint8_t *signed_plan;
    size_t signed_plan_len;
    struct qr_identity researcher;
    uint8_t manufacturer_pk[32];

    int dp; /* the plan has epsilon > 0: see dp_check */
    struct sim_dp_check dp_check;

    char protocol[16];        /* the protocol the plan named */
    struct qr_cost predicted; /* the cost model's prediction for it */
    /* ed_hist: the histogram study run first (s_agg), and the buckets it gave. */
    int hist;
    struct qr_coord_stats hist_coord;
    double hist_virtual_s, hist_wall_s;
    uint32_t hist_buckets;
    /* With leakage: what the service's view reveals (sim_leak.h). */
    int has_leak;
    struct sim_leak_report leak;
};

/* Run a whole simulated study. Returns 0 when it ran (whatever the verdict;
 * see rep->ok), or a negative error with rep->error set. */
int sim_run(struct sim_report *rep, const struct sim_config *cfg);
/* Only compile the study and ask the cost model (rep->protocol and
 * rep->predicted): no token is made. 0, or an error with rep->error set. */
int sim_predict(struct sim_report *rep, const struct sim_config *cfg);
void sim_report_free(struct sim_report *rep);

/* --------------------------------------------- synthetic data (sim_data.c) */

struct sim_row {
    int64_t participant;
    int64_t age;
    char sex;       /* 'F' or 'M' */
    uint8_t region; /* index into sim_region_name */
    int32_t date;   /* days since 1970-01-01 */
    int64_t steps;
    int64_t heart_rate;
    int64_t weight; /* tenths of a kilogram */
    uint8_t null_steps, null_heart_rate, null_weight;
};

/* The rows of participant i (0-based), a pure function of (seed, i). */
size_t sim_data_rows(struct sim_row rows[SIM_ROWS_MAX], uint64_t seed, uint64_t i);
const char *sim_region_name(unsigned region);
/* The age_band column: "18-29", "30-39", ..., "70-79", "80+". */
const char *sim_age_band(int64_t age);

/* One cell of a row: the value of a `health` column, as the owner's token
 * holds it (type is a qr_type; QR_NULL for a missing measurement or an
 * unknown column). Text points into static storage. */
struct sim_cell {
    enum qr_type type;
    int64_t i;
    unsigned scale;
    const char *s;
    size_t len;
};
void sim_row_cell(struct sim_cell *out, const struct sim_row *r, const char *column);

/* Stateless seeded randomness. */
uint64_t sim_mix(uint64_t x);
double sim_uniform(uint64_t *state); /* [0, 1) */

/* ------------------------------------------------ ground truth (sim_truth.c) */

/*
 * Compute the plan's result in the clear over the rows of the participants
 * marked in `included` (N entries), and lay it out like a researcher's
 * result. Returns 0, 1 if the plan's minimum number of participants is not
 * met, or a negative error.
 */
int sim_truth(struct qr_result *out, const uint8_t *plan, size_t plan_len, uint64_t seed,
              const uint8_t *included, uint64_t n);

/*
 * Each participant's groups under a plan (WHERE and GROUP BY over its rows),
 * for the leakage report: CSR arrays over participants 0..n-1 (those not in
 * `included` have none), every group's canonical key as tokens encode it
 * (tk_key_encode), and how many participants have it. Returns 0 or -1.
 */
struct sim_groups {
    uint32_t *first; /* n + 1 */
    uint32_t *ids;
    uint32_t n_groups;
    uint8_t *keys;     /* the groups' keys, one after another */
    size_t *key_off;   /* n_groups + 1 */
    uint64_t *members; /* participants having each group */
};
int sim_truth_groups(struct sim_groups *out, const uint8_t *plan, size_t plan_len, uint64_t seed,
                     const uint8_t *included, uint64_t n);
void sim_groups_free(struct sim_groups *g);

/* Compare two results cell by cell (AVG to 1e-9 relative); NULL if equal,
 * else a malloc'd description of the first differences. */
char *sim_compare(const struct qr_result *got, const struct qr_result *want);

/*
 * The plan (serialized) with every group column then every aggregate as
 * its output, in plan order, and no ORDER BY or LIMIT (malloc'd into
 * *out). Returns 0 or -1.
 */
int sim_full_plan(uint8_t **out, size_t *out_len, const uint8_t *plan, size_t plan_len);

/*
 * The truth for every group, before thresholds and HAVING, laid out by
 * sim_full_plan: what the DP check compares noisy values with. Under DP a
 * SUM over no rows is 0 (tokens release a noisy SUM, never NULL). Returns
 * as sim_truth.
 */
int sim_truth_full(struct qr_result *out, const uint8_t *plan, size_t plan_len, uint64_t seed,
                   const uint8_t *included, uint64_t n);

/* ------------------------------------------- the DP check (sim_dp.c) */

/*
 * Check a DP result: open the sealed table as the researcher, lay it and
 * the bounded truth (sim_truth_full) out in plan order, match groups, and
 * count the values beyond their stated bound into *out (added to what it
 * holds, so runs accumulate). Returns 0 or a negative QR_ERR_* / -1.
 */
int sim_dp_check(struct sim_dp_check *out, const uint8_t *sealed, size_t sealed_len,
                 const uint8_t *signed_plan, size_t signed_plan_len,
                 const struct qr_identity *researcher, const uint8_t authority[32], int64_t now,
                 const uint8_t *plan, size_t plan_len, uint64_t seed, const uint8_t *included,
                 uint64_t n);

/*
 * The statistical verdict: the most exceedances out of n values that
 * Binomial(n, miss) allows at one-sided level `level` (the smallest q with
 * P(X > q) <= 1 - level). Each value exceeds its bound with probability at
 * most miss = 1 - confidence, independently, so more than q exceedances
 * mean the noise is larger than stated (or the bounds wrong).
 */
/* ------------------------------------ files for real deployments (sim_export.c) */

/* Write DIR/p1.csv .. DIR/pN.csv: each participant's `health` rows. 0 or -1. */
int sim_export_csv(const char *dir, uint64_t seed, uint64_t n, char *err, size_t err_len);

/* Print the ground truth of sql over participants 1..n (CSV or a table):
 * 0, 2 for SQL that does not compile, 3 otherwise (err says why). */
int sim_truth_print(FILE *f, const char *sql, uint64_t seed, uint64_t n, int csv, char *err,
                    size_t err_len);

uint64_t sim_dp_allowed(uint64_t n, double miss, double level);
#define SIM_DP_LEVEL 0.999

#endif
