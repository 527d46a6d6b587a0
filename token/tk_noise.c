/*
 * Differential privacy in the finalizing token: the noise, its sampler and
 * what the result states about it.
 *
 * What is protected. Two inputs are neighbours when they differ in one
 * participant's rows: that participant's table replaced by an empty one
 * ("zero-out" neighbours). Whether a token took part at all is visible to
 * the service by design (DESIGN.md section 1), and the result's count of
 * contributors is exact; the noise protects what a participant's rows say:
 * whether they matched WHERE, in which groups, with which values.
 *
 * Contribution bounds. When a plan carries epsilon > 0, every
 * participant's token enforces them at collection (tk_collect.c): it adds
 * to at most K = tuples_per_participant groups (the first K it meets in
 * storage order; rows of further groups are ignored, not refused, since a
 * refusal would itself say something), at most max_rows rows to each
 * (again the first ones in storage order, so a participant with more rows
 * in a group is under-counted: COUNT estimates the capped count), and
 * clamps every SUM or AVG argument into [-B, B], B = contribution_bound
 * in the column's natural units (a DECIMAL(s) column is clamped to
 * +-B * 10^s in its scaled integer units).
 *
 * Sensitivities (L1, over the whole released vector of one quantity; the
 * participant's K groups each move by at most the per-group amount):
 *   COUNT(*), COUNT(col), the COUNT half of AVG     K * max_rows
 *   SUM(col), the SUM half of AVG                   K * max_rows * B * 10^s
 *   COUNT(DISTINCT participant), and the per-group
 *   participant count the threshold uses            K
 *
 * Budget. epsilon is split equally between n noisy quantities: one per
 * aggregate, two per AVG (its noisy SUM and noisy COUNT), plus the
 * participant count for the threshold. Quantity i gets two-sided geometric
 * (discrete Laplace) noise of scale n * sensitivity_i / epsilon, that is
 * P(X = x) proportional to a^|x| with a = exp(-(epsilon / n) /
 * sensitivity_i): epsilon/n-DP each (Ghosh, Roughgarden, Sundararajan,
 * STOC 2009), epsilon in all by sequential composition. Everything after
 * the noise is post-processing: AVG is the noisy SUM over max(1, noisy
 * COUNT), clamped into [-B, B]; HAVING is evaluated on noisy values; under
 * DP a SUM is never NULL (NULL would say "no rows" exactly), and the
 * result's groups_suppressed is 0 (the exact number of groups would leak).
 * Noisy counts are not clamped at 0, so that they stay unbiased.
 *
 * Thresholding. Which groups exist is itself data: a group may exist only
 * because of one participant. So a group is released only if its noisy
 * participant count reaches min_group_size (tau), as in Wilson et al.,
 * "Differentially Private SQL with Bounded User Contribution" (PETS 2020).
 * The guarantee becomes (epsilon, delta): the neighbour without the
 * participant lacks at most K groups, each of which has one participant
 * and is released with probability p = P(1 + Z >= tau), Z the threshold's
 * noise, so delta = 1 - (1 - p)^K, with P(Z >= m) = a^m / (1 + a) for
 * m >= 1. tk_dp_delta computes it and the result states it in its
 * mechanism. The querier's default tau under DP is the smallest (at least
 * its usual default) that makes delta <= 1e-6. With K = 1, two aggregates
 * (n = 3) and epsilon = 1, a = exp(-1/3): tau = 41 gives delta = 9.4e-7,
 * while tau = 5 would give 0.15.
 *
 * The sampler is exact: Canonne, Kamath and Steinke, "The Discrete
 * Gaussian for Differential Privacy" (NeurIPS 2020), Algorithm 2, with its
 * Bernoulli(exp(-gamma)) of Algorithm 1, all in integer arithmetic over a
 * uniform source with no modulo bias. The scale is the rational num/den,
 * rounded up from the plan's (den a power of two, num < 2^53), so the
 * noise is never smaller than the plan asks. The only departure from the
 * exact distribution: a draw whose intermediate value would not fit in 64
 * bits is drawn again, which needs a geometric variable >= 2^11, of
 * probability below e^-2048.
 *
 * Randomness. All the noise of a final session comes from ChaCha20 key
 * streams keyed, per group, by a keyed BLAKE2b of the group's key and
 * exact state under a session key, itself a keyed BLAKE2b under the group
 * secret of the query id and what the session covers (the range of
 * contribution keys and their number). So any token that finalizes the
 * same input draws the same noise: a service that asks for the final
 * result again (a retried AggEnd, or the same partition handed to another
 * token) cannot average the noise away. A different input (the service
 * leaving contributions out) gets fresh noise; each such release costs
 * its own epsilon, a limit of any service-driven protocol, noted in the
 * README.
 *
 * Error bounds. For each COUNT and SUM column the result states t, the
 * smallest integer with P(|noise| > t) = 2 a^(t+1) / (1 + a) <= 1 -
 * TK_DP_CONFIDENCE, in the column's natural units. AVG, a ratio of two
 * noisy quantities, states none (0).
 */
#include <math.h>

#include "token/tk_noise.h"

/* ------------------------------------------------------ randomness */

void tk_rand_init(struct tk_rand *r, const uint8_t key[32])
{
    memcpy(r->key, key, sizeof r->key);
    r->block = 0;
    r->pos = sizeof r->buf;
}

void tk_rand_wipe(struct tk_rand *r)
{
    sodium_memzero(r, sizeof *r);
}

static void refill(struct tk_rand *r)
{
    static const uint8_t nonce[crypto_stream_chacha20_NONCEBYTES];
    memset(r->buf, 0, sizeof r->buf);
    crypto_stream_chacha20_xor_ic(r->buf, r->buf, sizeof r->buf, nonce, r->block, r->key);
    r->block += sizeof r->buf / 64;
    r->pos = 0;
}

uint64_t tk_rand_u64(struct tk_rand *r)
{
    uint64_t v = 0;
    unsigned k;
    if (r->pos + 8 > sizeof r->buf)
        refill(r);
    for (k = 0; k < 8; k++)
        v |= (uint64_t)r->buf[r->pos + k] << (8 * k);
    r->pos += 8;
    return v;
}

uint64_t tk_rand_below(struct tk_rand *r, uint64_t n)
{
    uint64_t x, min;
    if (n <= 1)
        return 0;
    if ((n & (n - 1)) == 0)
        return tk_rand_u64(r) & (n - 1);
    min = (0 - n) % n; /* 2^64 mod n: the values below it are rejected */
    do
        x = tk_rand_u64(r);
    while (x < min);
    return x % n;
}

/* ---------------------------------------------- discrete Laplace */

#define TWO_52 4503599627370496.0
#define DEN_BITS_MAX 30

int tk_lap_init(struct tk_lap *l, double scale)
{
    double v;
    uint64_t num;
    unsigned k = DEN_BITS_MAX;

    if (!(scale > 0) || !(scale <= TK_DP_SCALE_MAX))
        return TK_ERR_BAD_PLAN;
    while (k > 0 && ldexp(scale, (int)k) >= TWO_52)
        k--;
    v = ldexp(scale, (int)k); /* exact: a power-of-two scaling */
    num = (uint64_t)v;
    if ((double)num < v)
        num++;
    /* One more: the scale was itself a rounded quotient. */
    l->num = num + 1;
    l->den = (uint64_t)1 << k;
    return TK_OK;
}

double tk_lap_log_alpha(const struct tk_lap *l)
{
    return -(double)l->den / (double)l->num;
}

double tk_lap_alpha(const struct tk_lap *l)
{
    return exp(tk_lap_log_alpha(l));
}

/* Bernoulli(n/d), 0 <= n <= d. */
static bool bern_frac(struct tk_rand *r, uint64_t n, uint64_t d)
{
    return tk_rand_below(r, d) < n;
}

/*
 * Bernoulli(exp(-n/d)) for 0 <= n/d <= 1 (Algorithm 1): K = 1; while
 * Bernoulli(gamma / K), K++; true iff K is odd. Bernoulli(gamma / K) is
 * drawn as Bernoulli(n/d) and Bernoulli(1/K), so nothing overflows.
 */
static bool bern_exp01(struct tk_rand *r, uint64_t n, uint64_t d)
{
    uint64_t k = 1;
    while (bern_frac(r, n, d) && bern_frac(r, 1, k))
        k++;
    return (k & 1) != 0;
}

int64_t tk_lap_sample(struct tk_rand *r, const struct tk_lap *l)
{
    const uint64_t t = l->num, s = l->den;
    for (;;) {
        uint64_t u = tk_rand_below(r, t), v = 0, x, y;
        bool neg;
        /* X = U + t V is geometric: P(X = x) proportional to exp(-x / t). */
        if (!bern_exp01(r, u, t))
            continue;
        while (bern_exp01(r, 1, 1))
            v++;
        if (v > (UINT64_MAX - u) / t)
            continue; /* probability below e^-2048; see the top of the file */
        x = u + t * v;
        /* Y = floor(X / s) is geometric with parameter exp(-s / t). */
        y = x / s;
        neg = (tk_rand_u64(r) & 1) != 0;
        if ((neg && y == 0) || y > (uint64_t)INT64_MAX)
            continue;
        return neg ? -(int64_t)y : (int64_t)y;
    }
}

double tk_lap_tail(const struct tk_lap *l, uint64_t t)
{
    double la = tk_lap_log_alpha(l);
    return 2.0 * exp(((double)t + 1.0) * la) / (1.0 + exp(la));
}

uint64_t tk_lap_bound(const struct tk_lap *l, double confidence)
{
    double la = tk_lap_log_alpha(l), miss = 1.0 - confidence, guess;
    uint64_t t = 0;

    if (!(miss > 0 && miss < 1))
        return 0;
    /* 2 a^(t+1) / (1 + a) <= miss  <=>  t + 1 >= log(miss (1 + a) / 2) / log a */
    guess = log(miss * (1.0 + exp(la)) / 2.0) / la - 1.0;
    if (guess > 0)
        t = guess < 9.0e18 ? (uint64_t)ceil(guess) : (uint64_t)9e18;
    while (t > 0 && tk_lap_tail(l, t - 1) <= miss)
        t--;
    while (tk_lap_tail(l, t) > miss)
        t++;
    return t;
}

/* ------------------------------------------------------- the plan */

int tk_dp_lap(struct tk_lap *l, const struct tk_plan *p, int agg, bool avg_count)
{
    double sens = tk_dp_sensitivity(p, agg, avg_count);
    if (!(p->epsilon > 0) || !(sens > 0))
        return TK_ERR_BAD_PLAN;
    return tk_lap_init(l, (double)p->n_noisy * sens / p->epsilon);
}

double tk_dp_delta(const struct tk_plan *p)
{
    struct tk_lap l;
    double a, q;
    int64_t m = (int64_t)p->min_group_size - 1; /* released iff Z >= m */

    if (tk_dp_lap(&l, p, TK_DP_PARTICIPANTS, false) != TK_OK)
        return 1.0;
    a = tk_lap_alpha(&l);
    if (m >= 1)
        q = exp((double)m * tk_lap_log_alpha(&l)) / (1.0 + a);
    else if (m == 0)
        q = 1.0 / (1.0 + a);
    else
        q = 1.0 - a * a / (1.0 + a); /* P(Z >= -1) */
    if (q >= 1.0)
        return 1.0;
    return -expm1((double)p->tuples * log1p(-q));
}

static double pow10_int(unsigned k)
{
    double d = 1.0;
    while (k-- > 0)
        d *= 10.0;
    return d;
}

double tk_dp_error_bound(const struct tk_plan *p, uint32_t i)
{
    const struct tk_agg *g = &p->aggs[i];
    struct tk_lap l;
    double t;

    if (g->func == COHORT__AGG_FUNC__AGG_AVG || tk_dp_lap(&l, p, (int)i, false) != TK_OK)
        return 0.0;
    t = (double)tk_lap_bound(&l, TK_DP_CONFIDENCE);
    if (g->func == COHORT__AGG_FUNC__AGG_SUM)
        t /= pow10_int(p->columns[g->col].scale);
    return t;
}

static size_t put_sci(char *out, size_t at, size_t cap, double x)
{
    int e;
    long m;
    if (!(x > 0))
        return tk_text_put(out, at, cap, "0");
    if (x >= 1)
        return tk_text_put(out, at, cap, "1");
    e = (int)floor(log10(x));
    m = lround(x / pow(10.0, e) * 10.0);
    if (m >= 100) {
        m /= 10;
        e++;
    }
    at = tk_text_u64(out, at, cap, (uint64_t)(m / 10));
    at = tk_text_put(out, at, cap, ".");
    at = tk_text_u64(out, at, cap, (uint64_t)(m % 10));
    at = tk_text_put(out, at, cap, e < 0 ? "e-" : "e+");
    e = e < 0 ? -e : e;
    if (e < 10)
        at = tk_text_put(out, at, cap, "0");
    at = tk_text_u64(out, at, cap, (uint64_t)e);
    return at;
}

size_t tk_dp_mechanism(char *out, size_t cap, const struct tk_plan *p)
{
    size_t n;
    if (cap == 0)
        return 0;
    n = tk_text_put(out, 0, cap, "two-sided geometric (discrete Laplace), epsilon/");
    n = tk_text_u64(out, n, cap, p->n_noisy);
    n = tk_text_put(out, n, cap, " per quantity; groups with noisy participants >= ");
    n = tk_text_u64(out, n, cap, p->min_group_size);
    n = tk_text_put(out, n, cap, "; delta ");
    n = put_sci(out, n, cap, tk_dp_delta(p));
    return n;
}

/* ----------------------------------------------------- final noise */

static void put_le64(uint8_t out[8], uint64_t v)
{
    unsigned k;
    for (k = 0; k < 8; k++)
        out[k] = (uint8_t)(v >> (8 * k));
}

void tk_dp_noise_key(uint8_t key[32], const uint8_t group_secret[32],
                     const uint8_t query_id[TK_QUERY_ID_LEN], const uint8_t lo[TK_KEY_LEN],
                     const uint8_t hi[TK_KEY_LEN], uint64_t contributors)
{
    crypto_generichash_state st;
    uint8_t n[8];
    crypto_generichash_init(&st, group_secret, 32, 32);
    crypto_generichash_update(&st, (const uint8_t *)TK_DP_NOISE_CONTEXT,
                              sizeof TK_DP_NOISE_CONTEXT - 1);
    crypto_generichash_update(&st, query_id, TK_QUERY_ID_LEN);
    crypto_generichash_update(&st, lo, TK_KEY_LEN);
    crypto_generichash_update(&st, hi, TK_KEY_LEN);
    put_le64(n, contributors);
    crypto_generichash_update(&st, n, sizeof n);
    crypto_generichash_final(&st, key, 32);
    sodium_memzero(&st, sizeof st);
}

static int64_t add_sat(int64_t a, int64_t b)
{
    int64_t r;
    if (__builtin_add_overflow(a, b, &r))
        return b > 0 ? INT64_MAX : INT64_MIN;
    return r;
}

/* One quantity's noise; the plan passed tk_plan.c's checks, which tried
 * every quantity's scale, so tk_dp_lap cannot fail here. */
static int draw(int64_t *out, struct tk_rand *r, const struct tk_plan *p, int agg, bool avg_count)
{
    struct tk_lap l;
    int rc = tk_dp_lap(&l, p, agg, avg_count);
    if (rc == TK_OK)
        *out = tk_lap_sample(r, &l);
    return rc;
}

int tk_dp_group(int64_t *participants, struct tk_value *aggs, const struct tk_plan *p,
                const uint8_t noise_key[32], const uint8_t *group_key, size_t group_key_len,
                const struct tk_group *e)
{
    crypto_generichash_state st;
    struct tk_rand r;
    uint8_t seed[32], n[8];
    int64_t z = 0, z2 = 0;
    uint16_t i;
    int rc;

    crypto_generichash_init(&st, noise_key, 32, sizeof seed);
    put_le64(n, group_key_len);
    crypto_generichash_update(&st, n, sizeof n);
    crypto_generichash_update(&st, group_key, group_key_len);
    put_le64(n, e->participants);
    crypto_generichash_update(&st, n, sizeof n);
    put_le64(n, e->rows);
    crypto_generichash_update(&st, n, sizeof n);
    for (i = 0; i < p->n_aggs; i++) {
        put_le64(n, (uint64_t)e->aggs[i].count);
        crypto_generichash_update(&st, n, sizeof n);
        put_le64(n, (uint64_t)e->aggs[i].value);
        crypto_generichash_update(&st, n, sizeof n);
    }
    crypto_generichash_final(&st, seed, sizeof seed);
    tk_rand_init(&r, seed);

    rc = draw(&z, &r, p, TK_DP_PARTICIPANTS, false);
    *participants =
        add_sat(e->participants > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)e->participants, z);
    for (i = 0; i < p->n_aggs && rc == TK_OK; i++) {
        const struct tk_agg *g = &p->aggs[i];
        const struct tk_agg_state *s = &e->aggs[i];
        struct tk_value *v = &aggs[i];
        int64_t count;

        memset(v, 0, sizeof *v);
        switch (g->func) {
        case COHORT__AGG_FUNC__AGG_COUNT_STAR:
        case COHORT__AGG_FUNC__AGG_COUNT:
        case COHORT__AGG_FUNC__AGG_COUNT_PARTICIPANTS:
            rc = draw(&z, &r, p, i, false);
            v->type = COHORT__VALUE_TYPE__VT_INT;
            v->i = add_sat(s->count, z);
            break;
        case COHORT__AGG_FUNC__AGG_SUM:
            rc = draw(&z, &r, p, i, false);
            v->type = p->columns[g->col].type;
            v->scale = p->columns[g->col].scale;
            v->i = add_sat(s->value, z);
            break;
        case COHORT__AGG_FUNC__AGG_AVG:
            rc = draw(&z, &r, p, i, false);
            if (rc == TK_OK)
                rc = draw(&z2, &r, p, i, true);
            count = add_sat(s->count, z2);
            v->type = COHORT__VALUE_TYPE__VT_DOUBLE;
            v->d = (double)add_sat(s->value, z) / (double)(count < 1 ? 1 : count);
            if (v->d > (double)p->clamp[i])
                v->d = (double)p->clamp[i];
            if (v->d < -(double)p->clamp[i])
                v->d = -(double)p->clamp[i];
            v->d /= pow10_int(p->columns[g->col].scale);
            break;
        default: /* MIN and MAX have no mechanism: tk_plan.c refuses them under DP */
            rc = TK_ERR_BAD_PLAN;
            break;
        }
    }
    tk_rand_wipe(&r);
    sodium_memzero(seed, sizeof seed);
    sodium_memzero(&st, sizeof st);
    return rc;
}
