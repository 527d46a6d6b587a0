/*
 * cohort-sim: run a whole study in one process and check it.
 *
 *   cohort-sim --tokens N --seed S --sql "SQL" [--protocol NAME|auto]
 *              [--max-leakage none|frequencies|buckets] [--leakage [--view FILE]]
 *              [--token-ram BYTES] [--dropout RATE] [--threads N]
 *              [--latency-ms MS] [--json] [--no-progress]
 *              [--epsilon E [--contribution-bound B] [--max-rows R]] [--runs N]
 *
 * --protocol picks the grouping protocol (s_agg, rnf_noise, c_noise,
 * ed_hist, shuffle) unless the SQL's WITH names one; auto (the default)
 * lets the querier's cost model choose among those that leak at most
 * --max-leakage (none by default). The cost model's prediction is printed
 * beside the measurement. --leakage records the service's complete view
 * and reports what it reveals (sim/sim_leak.c); --view also writes that
 * view as CSV.
 *
 * Prints the researcher's result, then what it cost and what the querier
 * service saw. Exits 0 only if the result equals the ground truth computed
 * in the clear (AVG to 1e-9 relative), 1 with a diff if it does not, 2 for
 * bad usage or bad SQL, 3 if the study could not run.
 *
 * --epsilon (or WITH (epsilon = ...) in the SQL) makes the study
 * differentially private, and the verdict statistical (sim_dp.c): every
 * released COUNT and SUM value is compared with the truth under the same
 * contribution bounds, and the number of values beyond their stated bound
 * must be within what Binomial(n, 1 - confidence) allows at the 0.999
 * level. --runs N repeats the study with seeds S .. S+N-1 (fresh keys, so
 * fresh noise, each time) and gives one verdict over all runs; the first
 * run's result is printed.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sim/sim.h"
#include "token/token.h"

static void usage(FILE *f)
{
    fputs("usage: cohort-sim --tokens N --seed S --sql \"SQL\" [--protocol NAME|auto]\n"
          "                  [--max-leakage none|frequencies|buckets] [--leakage [--view FILE]]\n"
          "                  [--token-ram BYTES] [--dropout RATE] [--threads N]\n"
          "                  [--latency-ms MS] [--json] [--no-progress]\n"
          "                  [--epsilon E [--contribution-bound B] [--max-rows R]] [--runs N]\n"
          "       cohort-sim --tokens N --sql \"SQL\" [--protocol NAME] [--token-ram BYTES] "
          "--predict\n"
          "       cohort-sim --tokens N --seed S --export-csv DIR\n"
          "       cohort-sim --tokens N --seed S --sql \"SQL\" --truth [--csv]\n"
          "\n"
          "Runs N simulated tokens, their agents and one coordinator with the real\n"
          "protocol code, and checks the decrypted result against the ground truth.\n"
          "The table is `health` (cohort-querier catalog lists its columns).\n"
          "Protocols: s_agg, rnf_noise, c_noise, ed_hist, shuffle; auto (the default) lets\n"
          "the cost model choose one that leaks at most --max-leakage (none). --leakage\n"
          "reports what the service's view reveals; --view FILE writes that view as CSV.\n"
          "With --epsilon the result is noisy: the check is then that the noise stays\n"
          "within the result's stated bounds as often as it says, over --runs runs\n"
          "(seeds S, S+1, ...).\n"
          "--export-csv writes each participant's rows to DIR/p1.csv .. DIR/pN.csv (for\n"
          "cohort-participant import); --truth prints the ground truth over them, as\n"
          "cohort-querier run prints a result (--csv: as run --csv does).\n"
          "Exit status: 0 result matches, 1 mismatch, 2 usage or SQL error, 3 study failed.\n",
          f);
}

static int parse_u64(const char *s, uint64_t *out, uint64_t min, uint64_t max)
{
    char *end;
    unsigned long long v;
    if (s == NULL || *s == '\0' || *s == '-')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* A number, or null for NaN (JSON has no NaN). */
static void json_number(double v)
{
    if (isnan(v) || isinf(v))
        printf("null");
    else
        printf("%.6g", v);
}

/* The cost model's prediction as a JSON member ("predicted": {...}). */
static void print_predicted(const struct sim_report *rep)
{
    /* The prediction; for ed_hist its totals include the histogram study,
     * whose share "histogram" gives. */
    printf("\"predicted\":{\"feasible\":%s,\"seconds\":%.3f,\"token_seconds\":%.3f,"
           "\"bytes\":%llu,\"ciphertexts\":%llu,\"tasks\":%llu,\"steps\":%u,"
           "\"token_ram\":%zu",
           rep->predicted.feasible ? "true" : "false", rep->predicted.seconds,
           rep->predicted.token_seconds, (unsigned long long)rep->predicted.bytes,
           (unsigned long long)rep->predicted.ciphertexts, (unsigned long long)rep->predicted.tasks,
           rep->predicted.steps, rep->predicted.token_ram_needed);
    if (rep->predicted.histogram.steps > 0) {
        const struct qr_cost_part *h = &rep->predicted.histogram;
        printf(",\"histogram\":{\"seconds\":%.3f,\"token_seconds\":%.3f,\"bytes\":%llu,"
               "\"ciphertexts\":%llu,\"tasks\":%llu,\"steps\":%u,\"token_ram\":%zu}",
               h->seconds, h->token_seconds, (unsigned long long)h->bytes,
               (unsigned long long)h->ciphertexts, (unsigned long long)h->tasks, h->steps,
               h->token_ram_needed);
    }
    printf("}");
}

static void print_json(const struct sim_config *cfg, const struct sim_report *rep)
{
    const struct qr_coord_stats *s = &rep->coord;
    size_t k, c;
    printf("{\"ok\":%s,\"failed\":%s,", rep->ok ? "true" : "false", rep->failed ? "true" : "false");
    printf("\"error\":");
    qr_print_json_string(stdout, rep->error);
    printf(",\"diff\":");
    if (rep->diff)
        qr_print_json_string(stdout, rep->diff);
    else
        fputs("null", stdout);
    printf(",\"tokens\":%llu,\"seed\":%llu,\"protocol\":\"%s\",\"sql\":",
           (unsigned long long)cfg->tokens, (unsigned long long)cfg->seed, rep->protocol);
    qr_print_json_string(stdout, cfg->sql);
    printf(",\"columns\":[");
    for (c = 0; c < rep->result.n_columns; c++) {
        printf("%s", c ? "," : "");
        qr_print_json_string(stdout, rep->result.labels[c]);
    }
    printf("],\"rows\":[");
    for (k = 0; k < rep->result.n_rows; k++) {
        printf("%s[", k ? "," : "");
        for (c = 0; c < rep->result.n_columns; c++) {
            printf("%s", c ? "," : "");
            qr_print_json_value(stdout, &rep->result.cells[k * rep->result.n_columns + c]);
        }
        putchar(']');
    }
    printf("],\"participants\":{\"total\":%llu,\"dropped\":%llu,\"contributed\":%llu,"
           "\"refused\":%llu,\"in_result\":%llu},",
           (unsigned long long)rep->tokens, (unsigned long long)rep->dropped,
           (unsigned long long)rep->contributed, (unsigned long long)rep->refused,
           (unsigned long long)rep->result.participants);
    printf("\"groups_suppressed\":%llu,", (unsigned long long)rep->result.groups_suppressed);
    if (rep->result.epsilon > 0) {
        printf("\"dp\":{\"epsilon\":%.17g,\"mechanism\":", rep->result.epsilon);
        qr_print_json_string(stdout, rep->result.mechanism);
        printf(",\"confidence\":%.17g,\"error_bound\":[", rep->result.error_confidence);
        for (c = 0; c < rep->result.n_columns; c++)
            printf("%s%.17g", c ? "," : "", rep->result.error_bound[c]);
        printf("]},");
    }
    if (rep->dp && !rep->failed) {
        const struct sim_dp_check *d = &rep->dp_check;
        printf("\"dp_check\":{\"values\":%llu,\"exceed\":%llu,\"allowed\":%llu,"
               "\"strays\":%llu,\"released\":%llu,\"true_groups\":%llu},",
               (unsigned long long)d->values, (unsigned long long)d->exceed,
               (unsigned long long)sim_dp_allowed(d->values, 1 - d->confidence, SIM_DP_LEVEL),
               (unsigned long long)d->strays, (unsigned long long)d->released,
               (unsigned long long)d->true_groups);
    }
    printf("\"time\":{\"setup_wall_s\":%.3f,\"setup_cpu_s\":%.3f,\"study_wall_s\":%.3f,"
           "\"study_cpu_s\":%.3f,\"virtual_s\":%.3f,\"aggregate_virtual_s\":%.3f,"
           "\"threads\":%u},",
           rep->setup_wall_s, rep->setup_cpu_s, rep->study_wall_s, rep->study_cpu_s, rep->virtual_s,
           rep->aggregate_virtual_s, rep->threads);
    printf("\"service\":{\"messages_in\":%llu,\"messages_out\":%llu,\"bytes_in\":%llu,"
           "\"bytes_out\":%llu,\"contributions\":%llu,\"ciphertexts\":%llu,"
           "\"ciphertext_bytes\":%zu,\"ciphertext_sizes_distinct\":%zu,\"levels\":%u,"
           "\"partitions\":%llu,\"tasks_issued\":%llu,\"tasks_reassigned\":%llu,"
           "\"aggregator_tokens\":%llu,\"vanished_aggregators\":%llu},",
           (unsigned long long)s->messages_in, (unsigned long long)s->messages_out,
           (unsigned long long)s->bytes_in, (unsigned long long)s->bytes_out,
           (unsigned long long)s->contributions, (unsigned long long)s->ciphertexts_collected,
           rep->ciphertext_bytes, s->ciphertext_sizes_distinct, s->levels,
           (unsigned long long)s->partitions, (unsigned long long)s->tasks_issued,
           (unsigned long long)s->tasks_reassigned, (unsigned long long)s->aggregator_tokens,
           (unsigned long long)rep->vanished);
    print_predicted(rep);
    printf(",");
    if (rep->hist)
        printf("\"histogram\":{\"contributions\":%llu,\"virtual_s\":%.3f,\"wall_s\":%.3f,"
               "\"bytes\":%llu,\"tasks\":%llu,\"buckets\":%u},",
               (unsigned long long)rep->hist_coord.contributions, rep->hist_virtual_s,
               rep->hist_wall_s,
               (unsigned long long)(rep->hist_coord.bytes_in + rep->hist_coord.bytes_out),
               (unsigned long long)rep->hist_coord.partitions, rep->hist_buckets);
    if (rep->has_leak) {
        const struct sim_leak_report *l = &rep->leak;
        printf("\"leakage\":{\"tagged_ciphertexts\":%llu,\"distinct_tags\":%llu,"
               "\"tag_freq_min\":%llu,\"tag_freq_max\":%llu,\"tag_vs_truth_tv\":",
               (unsigned long long)l->tagged_cts, (unsigned long long)l->distinct_tags,
               (unsigned long long)l->tag_freq_min, (unsigned long long)l->tag_freq_max);
        json_number(l->tag_vs_truth_tv);
        printf(",\"linked\":%llu,\"accuracy\":%.6f,\"prior_accuracy\":%.6f,"
               "\"accuracy_ci\":%.6f,\"anon_min\":%.1f,\"anon_p10\":%.1f,\"anon_median\":%.1f,"
               "\"mix_tv_max\":",
               (unsigned long long)l->linked, l->accuracy, l->prior_accuracy, l->accuracy_ci,
               l->anon_min, l->anon_p10, l->anon_median);
        json_number(l->mix_tv_max);
        printf(",\"mix_tv_mean\":");
        json_number(l->mix_tv_mean);
        printf(",\"shuffle_rounds\":%u},", l->shuffle_rounds_seen);
    }
    printf("\"memory\":{\"token_ram\":%zu,\"peak_arena\":%zu,\"token_state_bytes\":%zu,"
           "\"rest_bytes_per_token\":%.0f}}\n",
           rep->token_ram, rep->peak_arena, rep->token_state_bytes, rep->rest_bytes_per_token);
}

/*
 * The cost model's prediction beside what the run measured. For ed_hist
 * both sides add the histogram study to the main one (the simulator times
 * the histogram by wall clock only: its CPU time is counted as that), and
 * a last line gives the histogram's share.
 */
static void print_cost(const struct sim_report *rep)
{
    const struct qr_cost *p = &rep->predicted;
    const struct qr_coord_stats *s = &rep->coord, *h = &rep->hist_coord;
    int hist = rep->hist;

    printf("protocol      %s%s\n", rep->protocol,
           hist ? " (with its histogram study: both sides are the two studies' sums)" : "");
    printf("cost          %-22s %14s %14s\n", "", "predicted", "measured");
    printf("              %-22s %14llu %14llu\n", "ciphertexts collected",
           (unsigned long long)p->ciphertexts,
           (unsigned long long)(s->ciphertexts_collected + (hist ? h->ciphertexts_collected : 0)));
    printf(
        "              %-22s %14llu %14llu\n", "bytes through service",
        (unsigned long long)p->bytes,
        (unsigned long long)(s->bytes_in + s->bytes_out + (hist ? h->bytes_in + h->bytes_out : 0)));
    printf("              %-22s %14llu %14llu\n", "aggregation tasks", (unsigned long long)p->tasks,
           (unsigned long long)(s->partitions + (hist ? h->partitions : 0)));
    printf("              %-22s %14u %14u\n", "steps", p->steps,
           s->levels + (hist ? h->levels : 0));
    printf("              %-22s %14.1f %14.1f\n", "virtual seconds", p->seconds,
           rep->virtual_s + (hist ? rep->hist_virtual_s : 0));
    printf("              %-22s %14.2f %14.2f%s\n", "token CPU seconds", p->token_seconds,
           rep->study_cpu_s + (hist ? rep->hist_wall_s : 0), hist ? " (histogram: wall)" : "");
    printf("              %-22s %14zu %14zu\n", "token RAM, bytes", p->token_ram_needed,
           rep->peak_arena);
    if (!p->feasible)
        printf("              the model expects tokens to be unable to do this work\n");
    if (hist)
        printf("histogram     predicted %llu bytes, %llu tasks, %u steps, %.1f s; measured %llu "
               "bytes, %llu tasks, %u steps, %.1f s\n",
               (unsigned long long)p->histogram.bytes, (unsigned long long)p->histogram.tasks,
               p->histogram.steps, p->histogram.seconds,
               (unsigned long long)(h->bytes_in + h->bytes_out), (unsigned long long)h->partitions,
               h->levels, rep->hist_virtual_s);
}

static void print_text(const struct sim_config *cfg, const struct sim_report *rep)
{
    const struct qr_coord_stats *s = &rep->coord;
    if (!rep->failed)
        qr_print_table(stdout, &rep->result);
    else
        printf("no result: %s\n", rep->error);
    printf("\nparticipants  %llu tokens, %llu dropped out, %llu contributed, %llu refused%s%s%s, "
           "%llu in the result\n",
           (unsigned long long)rep->tokens, (unsigned long long)rep->dropped,
           (unsigned long long)rep->contributed, (unsigned long long)rep->refused,
           rep->refused ? " (" : "", rep->refused ? tk_errname(rep->refusal) : "",
           rep->refused ? ")" : "", (unsigned long long)rep->result.participants);
    if (rep->refused && rep->refusal_reason[0] != '\0')
        printf("refusal       a token told its owner: %s\n", rep->refusal_reason);
    if (rep->result.groups_suppressed)
        printf("suppressed    %llu group(s) below the minimum group size\n",
               (unsigned long long)rep->result.groups_suppressed);
    printf("time          setup %.2f s wall (%.2f s CPU); study %.2f s wall (%.2f s CPU) on "
           "%u thread(s); %.1f s virtual\n",
           rep->setup_wall_s, rep->setup_cpu_s, rep->study_wall_s, rep->study_cpu_s, rep->threads,
           rep->virtual_s);
    printf("service saw   %llu messages in (%llu bytes), %llu out (%llu bytes)\n",
           (unsigned long long)s->messages_in, (unsigned long long)s->bytes_in,
           (unsigned long long)s->messages_out, (unsigned long long)s->bytes_out);
    printf("              %llu contributions of %llu ciphertexts, %zu distinct size(s) "
           "(%zu bytes each)%s\n",
           (unsigned long long)s->contributions, (unsigned long long)s->ciphertexts_collected,
           s->ciphertext_sizes_distinct, rep->ciphertext_bytes,
           strcmp(rep->protocol, "s_agg") == 0 ? ": no way to tell who matched"
           : strcmp(rep->protocol, "shuffle") == 0
               ? ", untagged; tags only after the shuffle"
               : ", each with a det tag (--leakage says what they reveal)");
    printf("aggregation   %u level(s), %llu partitions, %llu tasks issued, %llu reassigned, "
           "%llu aggregator vanished, %llu tokens did aggregation work\n",
           s->levels, (unsigned long long)s->partitions, (unsigned long long)s->tasks_issued,
           (unsigned long long)s->tasks_reassigned, (unsigned long long)rep->vanished,
           (unsigned long long)s->aggregator_tokens);
    printf("memory        token RAM %zu bytes, peak arena use %zu bytes; %.0f bytes per token "
           "at rest (state %zu)\n",
           rep->token_ram, rep->peak_arena, rep->rest_bytes_per_token, rep->token_state_bytes);
    if (rep->hist)
        printf("histogram     a first s_agg study: %llu contributions, %.1f s virtual, %llu bytes "
               "through the service; %u bucket(s)\n",
               (unsigned long long)rep->hist_coord.contributions, rep->hist_virtual_s,
               (unsigned long long)(rep->hist_coord.bytes_in + rep->hist_coord.bytes_out),
               rep->hist_buckets);
    print_cost(rep);
    if (rep->has_leak)
        sim_leak_print(&rep->leak, stdout);
    (void)cfg;
}

#define SIM_RUNS_MAX 100000u

/* The statistical verdict over everything in d (one run or many). */
static int print_dp(const struct sim_dp_check *d, uint64_t runs)
{
    double miss = 1 - d->confidence;
    uint64_t allowed = sim_dp_allowed(d->values, miss, SIM_DP_LEVEL);
    int ok = d->strays == 0 && d->exceed <= allowed;
    size_t a;

    printf("dp check      %llu run%s: %llu groups released of %llu in the truth; %llu released "
           "COUNT/SUM values, %llu beyond the stated bound\n",
           (unsigned long long)runs, runs == 1 ? "" : "s", (unsigned long long)d->released,
           (unsigned long long)d->true_groups, (unsigned long long)d->values,
           (unsigned long long)d->exceed);
    for (a = 0; a < d->n_aggs && a < QR_AGGREGATES_MAX; a++) {
        const struct sim_dp_column *c = &d->agg[a];
        double n = c->values ? (double)c->values : 1;
        if (!c->checked)
            continue;
        printf(
            "              aggregate #%zu: bound +-%g, %llu of %llu beyond (%.2f %%); error mean "
            "%+.2f, rms %.2f\n",
            a, c->bound, (unsigned long long)c->exceed, (unsigned long long)c->values,
            100.0 * (double)c->exceed / n, c->sum_err / n, sqrt(c->sum_sq_err / n));
    }
    printf("verdict       %s: %.2f %% beyond the bound observed, at most %.0f %% stated; "
           "Binomial(%llu, %.2f) allows %llu at the %.3f level%s\n",
           ok ? "noise within its stated bounds" : "NOISE BEYOND ITS STATED BOUNDS",
           d->values ? 100.0 * (double)d->exceed / (double)d->values : 0.0, 100 * miss,
           (unsigned long long)d->values, miss, (unsigned long long)allowed, SIM_DP_LEVEL,
           d->strays ? "; and released groups the truth does not have" : "");
    return ok;
}

/* --runs N: the study with seeds S .. S+N-1; the first run printed. */
static int run_many(const struct sim_config *base, uint64_t runs, int json)
{
    struct sim_config cfg = *base;
    struct sim_dp_check all;
    uint64_t r, exact_ok = 0, failed = 0, no_result = 0;
    int dp = -1, rc = 0;

    memset(&all, 0, sizeof all);
    cfg.progress = 0;
    for (r = 0; r < runs; r++) {
        struct sim_report rep;
        size_t a;
        cfg.seed = base->seed + r;
        if (sim_run(&rep, &cfg) != 0) {
            fprintf(stderr, "cohort-sim: run %llu (seed %llu): %s\n", (unsigned long long)r + 1,
                    (unsigned long long)cfg.seed, rep.error);
            rc = strncmp(rep.error, "SQL error", 9) == 0 ? 2 : 3;
            sim_report_free(&rep);
            return rc;
        }
        if (r == 0) {
            if (json)
                print_json(&cfg, &rep);
            else
                print_text(&cfg, &rep);
        }
        dp = rep.dp;
        if (rep.failed && rep.ok) {
            no_result++; /* too few participants, as the truth requires */
        } else if (rep.failed) {
            fprintf(stderr, "cohort-sim: run %llu (seed %llu): %s\n", (unsigned long long)r + 1,
                    (unsigned long long)cfg.seed, rep.error);
            failed++;
        } else if (rep.dp) {
            const struct sim_dp_check *d = &rep.dp_check;
            all.values += d->values;
            all.exceed += d->exceed;
            all.strays += d->strays;
            all.released += d->released;
            all.true_groups += d->true_groups;
            all.confidence = d->confidence;
            all.n_aggs = d->n_aggs;
            for (a = 0; a < d->n_aggs && a < QR_AGGREGATES_MAX; a++) {
                all.agg[a].checked |= d->agg[a].checked;
                all.agg[a].bound = d->agg[a].bound;
                all.agg[a].values += d->agg[a].values;
                all.agg[a].exceed += d->agg[a].exceed;
                all.agg[a].sum_err += d->agg[a].sum_err;
                all.agg[a].sum_sq_err += d->agg[a].sum_sq_err;
            }
        } else if (rep.ok) {
            exact_ok++;
        } else {
            fprintf(stderr, "cohort-sim: run %llu (seed %llu): MISMATCH with the ground truth\n%s",
                    (unsigned long long)r + 1, (unsigned long long)cfg.seed,
                    rep.diff ? rep.diff : "");
            rc = 1;
        }
        sim_report_free(&rep);
    }
    if (!json)
        printf("runs          %llu (seeds %llu..%llu): %llu without a result as the truth "
               "requires, %llu failed\n",
               (unsigned long long)runs, (unsigned long long)base->seed,
               (unsigned long long)(base->seed + runs - 1), (unsigned long long)no_result,
               (unsigned long long)failed);
    if (dp == 1) {
        uint64_t allowed = sim_dp_allowed(all.values, 1 - all.confidence, SIM_DP_LEVEL);
        int ok = all.strays == 0 && all.exceed <= allowed;
        if (json)
            printf("{\"runs\":%llu,\"values\":%llu,\"exceed\":%llu,\"allowed\":%llu,"
                   "\"strays\":%llu,\"confidence\":%.17g,\"ok\":%s}\n",
                   (unsigned long long)runs, (unsigned long long)all.values,
                   (unsigned long long)all.exceed, (unsigned long long)allowed,
                   (unsigned long long)all.strays, all.confidence, ok ? "true" : "false");
        else
            print_dp(&all, runs);
        if (!ok)
            rc = 1;
    } else if (!json && rc == 0 && failed == 0) {
        printf("verdict       every run's result equals its ground truth\n");
    }
    if (failed > 0 && rc == 0)
        rc = 3;
    return rc;
}

int main(int argc, char **argv)
{
    struct sim_config cfg;
    struct sim_report rep;
    int json = 0, truth = 0, csv = 0, predict_only = 0, i, rc;
    const char *export_dir = NULL;
    char err[512];
    uint64_t v, runs = 1;

    sim_config_default(&cfg);
    cfg.progress = isatty(2);
    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--json") == 0) {
            json = 1;
        } else if (strcmp(a, "--no-progress") == 0) {
            cfg.progress = 0;
        } else if (strcmp(a, "--truth") == 0) {
            truth = 1;
        } else if (strcmp(a, "--csv") == 0) {
            csv = 1;
        } else if (strcmp(a, "--leakage") == 0) {
            cfg.leakage = 1;
        } else if (strcmp(a, "--predict") == 0) {
            predict_only = 1;
        } else if (strcmp(a, "--export-csv") == 0 && next != NULL) {
            export_dir = next;
            i++;
        } else if (next == NULL) {
            fprintf(stderr, "cohort-sim: %s needs a value\n", a);
            usage(stderr);
            return 2;
        } else if (strcmp(a, "--tokens") == 0) {
            if (parse_u64(next, &cfg.tokens, 1, SIM_TOKENS_MAX) != 0) {
                fprintf(stderr, "cohort-sim: --tokens must be 1..%u\n", SIM_TOKENS_MAX);
                return 2;
            }
            i++;
        } else if (strcmp(a, "--seed") == 0) {
            if (parse_u64(next, &cfg.seed, 0, UINT64_MAX) != 0) {
                fprintf(stderr, "cohort-sim: --seed must be a non-negative integer\n");
                return 2;
            }
            i++;
        } else if (strcmp(a, "--sql") == 0) {
            cfg.sql = next;
            i++;
        } else if (strcmp(a, "--protocol") == 0) {
            if (qr_protocol_valid(next) != 0) {
                fprintf(stderr, "cohort-sim: --protocol must be auto, s_agg, rnf_noise, c_noise, "
                                "ed_hist or shuffle\n");
                return 2;
            }
            cfg.protocol = next;
            i++;
        } else if (strcmp(a, "--max-leakage") == 0) {
            if (strcmp(next, "none") == 0)
                cfg.max_leakage = QR_LEAK_NONE;
            else if (strcmp(next, "frequencies") == 0)
                cfg.max_leakage = QR_LEAK_FREQUENCIES;
            else if (strcmp(next, "buckets") == 0)
                cfg.max_leakage = QR_LEAK_BUCKETS;
            else {
                fprintf(stderr, "cohort-sim: --max-leakage must be none, frequencies or buckets\n");
                return 2;
            }
            i++;
        } else if (strcmp(a, "--view") == 0) {
            cfg.view_csv = next;
            cfg.leakage = 1;
            i++;
        } else if (strcmp(a, "--token-ram") == 0) {
            if (parse_u64(next, &v, TK_ARENA_MIN, 64u << 20) != 0) {
                fprintf(stderr, "cohort-sim: --token-ram must be %u..%u bytes\n", TK_ARENA_MIN,
                        64u << 20);
                return 2;
            }
            cfg.token_ram = (size_t)v;
            i++;
        } else if (strcmp(a, "--threads") == 0) {
            if (parse_u64(next, &v, 1, 64) != 0) {
                fprintf(stderr, "cohort-sim: --threads must be 1..64\n");
                return 2;
            }
            cfg.threads = (unsigned)v;
            i++;
        } else if (strcmp(a, "--latency-ms") == 0) {
            if (parse_u64(next, &v, 0, 60000) != 0) {
                fprintf(stderr, "cohort-sim: --latency-ms must be 0..60000\n");
                return 2;
            }
            cfg.latency_ms = (uint32_t)v;
            i++;
        } else if (strcmp(a, "--runs") == 0) {
            if (parse_u64(next, &runs, 1, SIM_RUNS_MAX) != 0) {
                fprintf(stderr, "cohort-sim: --runs must be 1..%u\n", SIM_RUNS_MAX);
                return 2;
            }
            i++;
        } else if (strcmp(a, "--max-rows") == 0) {
            if (parse_u64(next, &v, 1, 1000000) != 0) {
                fprintf(stderr, "cohort-sim: --max-rows must be 1..1000000\n");
                return 2;
            }
            cfg.max_rows = (uint32_t)v;
            i++;
        } else if (strcmp(a, "--contribution-bound") == 0) {
            if (parse_u64(next, &v, 1, INT64_MAX) != 0) {
                fprintf(stderr, "cohort-sim: --contribution-bound must be a positive integer\n");
                return 2;
            }
            cfg.contribution_bound = (int64_t)v;
            i++;
        } else if (strcmp(a, "--epsilon") == 0) {
            char *end;
            errno = 0;
            cfg.epsilon = strtod(next, &end);
            if (errno != 0 || *end != '\0' || !(cfg.epsilon >= 0 && cfg.epsilon <= 1e9)) {
                fprintf(stderr, "cohort-sim: --epsilon must be a number in [0, 1e9]\n");
                return 2;
            }
            i++;
        } else if (strcmp(a, "--dropout") == 0) {
            char *end;
            errno = 0;
            cfg.dropout = strtod(next, &end);
            if (errno != 0 || *end != '\0' || !(cfg.dropout >= 0 && cfg.dropout < 0.9)) {
                fprintf(stderr, "cohort-sim: --dropout must be a rate in [0, 0.9)\n");
                return 2;
            }
            i++;
        } else {
            fprintf(stderr, "cohort-sim: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (export_dir != NULL) {
        if (sim_export_csv(export_dir, cfg.seed, cfg.tokens, err, sizeof err) != 0) {
            fprintf(stderr, "cohort-sim: %s\n", err);
            return 3;
        }
        return 0;
    }
    if (truth && cfg.sql != NULL) {
        rc = sim_truth_print(stdout, cfg.sql, cfg.seed, cfg.tokens, csv, err, sizeof err);
        if (rc != 0)
            fprintf(stderr, "cohort-sim: %s\n", err);
        return rc;
    }
    if (cfg.sql == NULL) {
        fprintf(stderr, "cohort-sim: --sql is required\n");
        usage(stderr);
        return 2;
    }
    if (predict_only) {
        rc = sim_predict(&rep, &cfg);
        if (rc != 0) {
            fprintf(stderr, "cohort-sim: %s\n", rep.error);
            sim_report_free(&rep);
            return 2;
        }
        printf("{\"protocol\":\"%s\",\"tokens\":%llu,\"token_ram\":%zu,", rep.protocol,
               (unsigned long long)cfg.tokens, cfg.token_ram);
        print_predicted(&rep);
        printf("}\n");
        sim_report_free(&rep);
        return 0;
    }
    if (runs > 1)
        return run_many(&cfg, runs, json);
    rc = sim_run(&rep, &cfg);
    if (rc != 0) {
        fprintf(stderr, "cohort-sim: %s\n", rep.error);
        rc = strncmp(rep.error, "SQL error", 9) == 0 || strncmp(rep.error, "protocol", 8) == 0 ? 2
                                                                                               : 3;
        sim_report_free(&rep);
        return rc;
    }
    if (json)
        print_json(&cfg, &rep);
    else
        print_text(&cfg, &rep);
    if (rep.dp && !rep.failed) {
        if (!json)
            print_dp(&rep.dp_check, 1);
        rc = rep.ok ? 0 : 1;
    } else if (rep.ok) {
        if (!json)
            printf("verdict       %s\n", rep.failed ? "no result, as the ground truth requires"
                                                    : "result equals the ground truth");
        rc = 0;
    } else if (rep.diff != NULL) {
        fprintf(stderr, "cohort-sim: MISMATCH with the ground truth:\n%s", rep.diff);
        rc = 1;
    } else if (!rep.failed && rep.truth_too_few) {
        fprintf(stderr, "cohort-sim: MISMATCH: the ground truth has too few participants "
                        "but the study returned a result\n");
        rc = 1;
    } else {
        fprintf(stderr, "cohort-sim: %s\n", rep.error);
        rc = 3;
    }
    sim_report_free(&rep);
    return rc;
}
