/*
 * bench_token: what the token core costs per contribution and per
 * aggregated tuple, as ratios to the bare libsodium operations it cannot
 * avoid, all measured in the same run on the same machine.
 *
 * - Collect, cold: a token that has not seen the plan verifies the
 *   researcher's certificate and the plan's signature (two Ed25519
 *   verifications), scans its rows and emits its padded ciphertexts. The
 *   floor is the Ed25519 verifications.
 * - Collect, warm: the same token again (its plan cache skips the
 *   signatures): the cost of everything else.
 * - Aggregate: tuples streamed through an aggregation session (AggFeed),
 *   per tuple. The floor is one XChaCha20-Poly1305 decryption of a tuple.
 * - Finalize: the AggEnd of a final session over every tuple (the
 *   filtering phase: thresholds, HAVING, sealing, signing), exact and
 *   under differential privacy (epsilon 1): the difference is the cost of
 *   the noise (tk_noise.c), drawn twice per group (the result is measured,
 *   then written).
 * Only tk_dispatch is timed: requests are built beforehand, responses are
 * not decoded inside the timed region. Each figure is the median of RUNS
 * runs. Uses the token tests' fixture (tests/tk_fixture.h).
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

#include "tests/tk_fixture.h"

#define BENCH_NAME "bench_token"
#include "tests/bench/bench.h"

#define TOKENS 512
#define RUNS 7
#define BARE_ITERS 20000
#define FEED 64
#define FIN_GROUPS 256 /* final table of the finalize figures: GROUP BY participant */

static double bare_aead_open(size_t plain_len)
{
    uint8_t key[32], nonce[24], ad[64] = {0};
    uint8_t *plain = calloc(1, plain_len), *box = malloc(plain_len + 16);
    double t;
    int i, bad = 0;
    randombytes_buf(key, sizeof key);
    randombytes_buf(nonce, sizeof nonce);
    crypto_aead_xchacha20poly1305_ietf_encrypt(box, NULL, plain, plain_len, ad, sizeof ad, NULL,
                                               nonce, key);
    t = bench_now_s();
    for (i = 0; i < BARE_ITERS; i++)
        bad |= crypto_aead_xchacha20poly1305_ietf_decrypt(plain, NULL, NULL, box, plain_len + 16,
                                                          ad, sizeof ad, nonce, key);
    t = (bench_now_s() - t) / BARE_ITERS;
    free(plain);
    free(box);
    return bad ? -1 : t;
}

static double bare_verify(size_t msg_len)
{
    uint8_t pk[32], sk[64], sig[64];
    uint8_t *msg = calloc(1, msg_len);
    double t;
    int i, bad = 0, n = BARE_ITERS / 10;
    crypto_sign_keypair(pk, sk);
    crypto_sign_detached(sig, NULL, msg, msg_len, sk);
    t = bench_now_s();
    for (i = 0; i < n; i++)
        bad |= crypto_sign_verify_detached(sig, msg, msg_len, pk);
    t = (bench_now_s() - t) / n;
    free(msg);
    return bad ? -1 : t;
}

/* The AggEnd of a final session over all of cts, timed alone. */
static double time_finalize(struct fx_world *w, const struct fx_signed *plan,
                            const struct fx_cts *cts, uint32_t partition, uint8_t *resp, size_t cap)
{
    struct fx_token agg;
    uint8_t session[TK_SESSION_ID_LEN], *end;
    size_t i, len, resp_len;
    double t = -1;

    fx_token_init(&agg, TK_ARENA_DEFAULT);
    fx_provision(&agg, w, "bench-finalizer");
    if (fx_agg_begin(&agg, FX_NOW, plan->sp, 1, partition, true, session) != TK_OK)
        goto out;
    for (i = 0; i < cts->n; i += FEED)
        if (fx_agg_feed(&agg, FX_NOW, session, cts->v + i, cts->n - i < FEED ? cts->n - i : FEED) !=
            TK_OK)
            goto out;
    end = fx_agg_end_request(&len, FX_NOW, session, TK_SESSION_ID_LEN);
    t = bench_now_s();
    if (tk_dispatch(&agg.tk, agg.arena, agg.arena_len, end, len, resp, cap, &resp_len, NULL) !=
        TK_OK)
        t = -1;
    else
        t = bench_now_s() - t;
    free(end);
out:
    fx_token_free(&agg);
    return t;
}

static double time_collects(struct fx_token *tokens, size_t n, const uint8_t *req, size_t len,
                            uint8_t *resp, size_t cap)
{
    double t = bench_now_s();
    size_t i, resp_len;
    for (i = 0; i < n; i++)
        if (tk_dispatch(&tokens[i].tk, tokens[i].arena, tokens[i].arena_len, req, len, resp, cap,
                        &resp_len, NULL) != TK_OK) {
            fprintf(stderr, "bench_token: a collect failed\n");
            exit(1);
        }
    return (bench_now_s() - t) / (double)n;
}

int main(void)
{
    static struct fx_world w;
    struct fx_token *tokens = calloc(TOKENS, sizeof *tokens), agg;
    struct fx_plan_spec spec;
    struct fx_signed plan;
    struct fx_cts cts = {0};
    double aead[RUNS], verify[RUNS], cold[RUNS], warm[RUNS], per_tuple[RUNS];
    double fin[RUNS], fin_dp[RUNS];
    struct fx_plan_spec fin_spec;
    struct fx_signed fin_plan, dp_plan;
    struct fx_cts fin_cts = {0}, dp_cts = {0};
    size_t req_len, i, cap = 1u << 20, plain_len, plan_len;
    uint8_t *req, *resp = malloc(cap);
    int r;

    if (tokens == NULL || resp == NULL)
        return 1;
    fx_world_init(&w);
    fx_plan_default(&spec);
    spec.tuples = 1; /* one group per participant: GROUP BY region */
    spec.max_groups = 128;
    spec.aggs[2] = (struct fx_agg){COHORT__AGG_FUNC__AGG_AVG, "heart_rate"};
    spec.n_aggs = 3;
    fx_plan_sign(&plan, &spec, &w.researcher);
    fin_spec = spec;
    fin_spec.group_by[0] = "participant";
    fin_spec.max_groups = FIN_GROUPS;
    fx_plan_sign(&fin_plan, &fin_spec, &w.researcher);
    fin_spec.epsilon = 1;
    fin_spec.max_rows = 16;
    fin_spec.contribution_bound = 20000;
    fx_plan_sign(&dp_plan, &fin_spec, &w.researcher);
    plan_len = cohort__signed_plan__get_packed_size(plan.sp);
    req = fx_collect_request(&req_len, FX_NOW, plan.sp);

    for (r = 0; r < RUNS; r++) {
        /* A fresh fleet each run, so that every cold collect is cold. */
        for (i = 0; i < TOKENS; i++) {
            struct fx_row rows[16];
            size_t n = fx_gen_rows(rows, 16, (unsigned)i), k;
            char subject[32];
            for (k = 1; k < n; k++) /* one region per participant, as in life */
                rows[k].region = rows[0].region;
            snprintf(subject, sizeof subject, "bench-%zu", i);
            fx_token_init(&tokens[i], TK_ARENA_DEFAULT);
            fx_provision(&tokens[i], &w, subject);
            fx_load_health(&tokens[i], rows, n);
        }
        cold[r] = time_collects(tokens, TOKENS, req, req_len, resp, cap);
        warm[r] = time_collects(tokens, TOKENS, req, req_len, resp, cap);

        /* Every token's contribution, sorted as the service lays them out. */
        fx_cts_free(&cts);
        memset(&cts, 0, sizeof cts);
        for (i = 0; i < TOKENS; i++)
            if (fx_collect_into(&tokens[i], FX_NOW, plan.sp, &cts) != TK_OK)
                return 1;
        fx_cts_sort(&cts);
        plain_len = cts.v[0]->box.len - 16;
        aead[r] = bare_aead_open(plain_len);
        verify[r] = bare_verify(plan_len);

        /* One partition of all of them, in feeds of FEED tuples. */
        fx_token_init(&agg, TK_ARENA_DEFAULT);
        fx_provision(&agg, &w, "bench-aggregator");
        {
            uint8_t session[TK_SESSION_ID_LEN];
            size_t nfeeds = (cts.n + FEED - 1) / FEED, f, resp_len;
            uint8_t **feeds = calloc(nfeeds, sizeof *feeds);
            size_t *lens = calloc(nfeeds, sizeof *lens);
            double t;
            if (fx_agg_begin(&agg, FX_NOW, plan.sp, 1, (uint32_t)r, false, session) != TK_OK)
                return 1;
            for (f = 0; f < nfeeds; f++) {
                size_t at = f * FEED, n = cts.n - at < FEED ? cts.n - at : FEED;
                feeds[f] = fx_agg_feed_request(&lens[f], FX_NOW, session, TK_SESSION_ID_LEN,
                                               cts.v + at, n);
            }
            t = bench_now_s();
            for (f = 0; f < nfeeds; f++)
                if (tk_dispatch(&agg.tk, agg.arena, agg.arena_len, feeds[f], lens[f], resp, cap,
                                &resp_len, NULL) != TK_OK) {
                    fprintf(stderr, "bench_token: a feed failed\n");
                    return 1;
                }
            per_tuple[r] = (bench_now_s() - t) / (double)cts.n;
            if (fx_agg_end(&agg, FX_NOW, session, NULL) != TK_OK)
                return 1;
            for (f = 0; f < nfeeds; f++)
                free(feeds[f]);
            free(feeds);
            free(lens);
        }
        fx_token_free(&agg);

        /* The filtering phase, exact and under DP, one group per participant. */
        fx_cts_free(&fin_cts);
        fx_cts_free(&dp_cts);
        memset(&fin_cts, 0, sizeof fin_cts);
        memset(&dp_cts, 0, sizeof dp_cts);
        for (i = 0; i < FIN_GROUPS; i++)
            if (fx_collect_into(&tokens[i], FX_NOW, fin_plan.sp, &fin_cts) != TK_OK ||
                fx_collect_into(&tokens[i], FX_NOW, dp_plan.sp, &dp_cts) != TK_OK)
                return 1;
        fx_cts_sort(&fin_cts);
        fx_cts_sort(&dp_cts);
        fin[r] = time_finalize(&w, &fin_plan, &fin_cts, (uint32_t)r, resp, cap);
        fin_dp[r] = time_finalize(&w, &dp_plan, &dp_cts, (uint32_t)r, resp, cap);
        if (fin[r] < 0 || fin_dp[r] < 0) {
            fprintf(stderr, "bench_token: a final session failed\n");
            return 1;
        }
        for (i = 0; i < TOKENS; i++)
            fx_token_free(&tokens[i]);
    }
    {
        double a = bench_median(aead, RUNS), v = bench_median(verify, RUNS),
               c = bench_median(cold, RUNS), wm = bench_median(warm, RUNS),
               p = bench_median(per_tuple, RUNS);
        printf("Token core, %d tokens, GROUP BY region, 1 tuple of %zu plaintext bytes each; "
               "medians of %d runs:\n\n",
               TOKENS, plain_len, RUNS);
        printf("| operation | time | ratio to its floor |\n|---|---:|---:|\n");
        printf("| bare XChaCha20-Poly1305 open (%zu B) | %.2f us | |\n", plain_len, a * 1e6);
        printf("| bare Ed25519 verify (%zu B plan) | %.1f us | |\n", plan_len, v * 1e6);
        printf("| collect, cold (2 verifications) | %.1f us | %.2fx 2 verifies |\n", c * 1e6,
               c / (2 * v));
        printf("| collect, warm (plan cached) | %.1f us | %.2fx 1 verify |\n", wm * 1e6, wm / v);
        printf("| aggregate, per tuple | %.2f us | %.2fx AEAD open |\n", p * 1e6, p / a);
        printf("| finalize (AggEnd), %d groups, exact | %.1f us | |\n", FIN_GROUPS,
               bench_median(fin, RUNS) * 1e6);
        printf("| finalize (AggEnd), %d groups, epsilon 1 (4 noisy quantities a group) | %.1f us "
               "| %.2fx exact |\n",
               FIN_GROUPS, bench_median(fin_dp, RUNS) * 1e6,
               bench_median(fin_dp, RUNS) / bench_median(fin, RUNS));
    }
    fx_cts_free(&fin_cts);
    fx_cts_free(&dp_cts);
    fx_signed_free(&fin_plan);
    fx_signed_free(&dp_plan);
    fx_cts_free(&cts);
    fx_signed_free(&plan);
    free(req);
    free(resp);
    free(tokens);
    return 0;
}
