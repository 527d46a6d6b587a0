/*
 * sim_leak.c: what the querier service can infer from its view of a run.
 *
 * The attacker is the service. It holds its whole view (sim_view.c), the
 * published result (each group's COUNT(*): group_rows) and, as the worst
 * case, the map from groups to the tags their tuples carry (group_tag;
 * several groups may share a tag: hash or histogram buckets). It guesses
 * each participant's group value, and is scored on the participants that
 * have one (`linked`): a guess is right when it is among the participant's
 * true groups.
 *
 * The model, under which its guess is Bayes-optimal: each participant has
 * one real tuple, whose group is drawn from the published frequencies;
 * every other tuple it sends is a fake or a dummy.
 *
 * - Uploads (s_agg, rnf_noise, c_noise, ed_hist). A fake's tag is uniform
 *   over the tags, so an upload carrying tag t m_t times has likelihood
 *   proportional to m_t given a real tag t, and the posterior over tags is
 *   proportional to m_t f(t), f(t) being the rows of the groups tagged t.
 *   Within a tag, groups split by their rows, so post(g) is proportional to
 *   m_tag(g) rows(g): exact in integers. Untagged ciphertexts (s_agg) tell
 *   nothing: the posterior is the published frequencies.
 * - Shuffle. Tasks of stage STAGE_SHUFFLE at level r form round r. The
 *   service links ciphertext ids: an upload's tuples are inputs of round-1
 *   tasks, a task's result partials are inputs of the next round's tasks,
 *   and the last round's outputs carry tags. Each task is taken as a
 *   uniform random permutation (an input reaches each output with
 *   probability 1 / outputs), so an item's position is a distribution over
 *   the last round's outputs. Those outputs' tags are the realised groups
 *   of the items behind them (dummies carry dummy_tag and drop out), so the
 *   posterior over tags is proportional to the participant's mass on the
 *   outputs tagged t, with no factor f(t): two items behind outputs tagged
 *   x and y are x and y in some order whatever the global frequencies of x
 *   and y (f(t) enters for uploads only because a fake's tag ignores it).
 *   Within a tag, groups split by rows as above. The mass a task's inputs
 *   carry is lost where the task has no accepted result, or where an
 *   output feeds no task of the next round.
 *
 * The guess is the posterior's argmax; ties (within 1e-9 relative) go to
 * the smallest group index. A participant without an accepted upload, or
 * whose evidence carries no mass, gets the published frequencies.
 *
 * Re-issued tasks. A task id may be handed out twice (its first token
 * vanished); its inputs are those of its first TASK event, and its outputs
 * those of the first RESULT accepted for it (status 0, with partials): the
 * coordinator keeps the first valid result and acknowledges later ones.
 *
 * Anonymity set of p: how many participants have p's posterior once every
 * probability is rounded to two decimals (the rounded vectors are hashed
 * with 64 bits; a collision among a million vectors has odds near 10^-8).
 * Mixing (shuffle): for each round-1 task (a class), the total variation
 * distance between where one of its items sits in the last round (its mass
 * in each task) and the size-weighted uniform placement (a task's inputs
 * over all the round's inputs).
 *
 * Cost. Participants with the same evidence share a posterior, computed
 * once per distinct signature: the sorted (tag, count) list of an upload,
 * or for the shuffle the (round-1 task, count) list, keyed by its
 * BLAKE2b-128. For the shuffle a signature's mass is a dense vector over
 * one round's tasks, pushed through the sparse matrix of which task's
 * outputs feed which next task: O(rounds x items of a round) time and O(m)
 * memory each, where m is the tasks of a round. Since the level-1 sort by
 * (key, chunk) keeps a participant's tuples together, signatures number
 * about the m round-1 tasks; so this is m dense vectors over m tasks per
 * round, fine up to m = SIM_LEAK_CLASSES_MAX (20,000: about 2 x 10^10
 * steps per round for a million items, tens of seconds) and refused above.
 *
 * Nothing in the input is trusted to be consistent: every index and size
 * is checked and a bad input is a SIM_LEAK_ERR_INVALID, never a crash.
 */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "sim/sim.h"
#include "sim/sim_leak.h"

#define STAGE_SHUFFLE 2 /* proto enum Stage: STAGE_SHUFFLE */
#define SIM_LEAK_ROUNDS_MAX 256u
#define TIE_REL 1e-9
#define NONE UINT32_MAX

const char *sim_leak_strerror(int code)
{
    switch (code) {
    case 0:
        return "success";
    case SIM_LEAK_ERR_NOMEM:
        return "out of memory, or a message that does not decode";
    case SIM_LEAK_ERR_INVALID:
        return "invalid input to the leakage analysis";
    case SIM_LEAK_ERR_TOO_LARGE:
        return "input beyond the leakage analysis's limits";
    default:
        return "unknown error";
    }
}

/* ------------------------------------------------------------ tables */

/* Make room for `want` elements of `elem` bytes in *arr (capacity *cap). */
static int grow(void **arr, size_t *cap, size_t want, size_t elem)
{
    size_t ncap;
    void *p;

    if (want <= *cap)
        return 0;
    ncap = *cap ? *cap : 16;
    while (ncap < want) {
        if (ncap > SIZE_MAX / 2 / elem)
            return SIM_LEAK_ERR_NOMEM;
        ncap *= 2;
    }
    p = realloc(*arr, ncap * elem);
    if (p == NULL)
        return SIM_LEAK_ERR_NOMEM;
    *arr = p;
    *cap = ncap;
    return 0;
}

static uint64_t load64(const uint8_t *p)
{
    uint64_t x;
    memcpy(&x, p, sizeof x);
    return x;
}

/* An open-addressing map from uint64 to uint32 of fixed capacity (at
 * least twice the entries it will hold); NONE marks an empty slot. */
struct u64map {
    uint64_t *keys;
    uint32_t *vals;
    size_t mask;
};

static int u64map_init(struct u64map *m, size_t entries)
{
    size_t cap = 16;

    memset(m, 0, sizeof *m);
    while (cap < 2 * entries) {
        if (cap > SIZE_MAX / 2 / sizeof *m->keys)
            return SIM_LEAK_ERR_NOMEM;
        cap *= 2;
    }
    m->keys = malloc(cap * sizeof *m->keys);
    m->vals = malloc(cap * sizeof *m->vals);
    if (m->keys == NULL || m->vals == NULL)
        return SIM_LEAK_ERR_NOMEM;
    for (size_t i = 0; i < cap; i++)
        m->vals[i] = NONE;
    m->mask = cap - 1;
    return 0;
}

static void u64map_free(struct u64map *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

/* The value for key, or NONE. */
static uint32_t u64map_get(const struct u64map *m, uint64_t key)
{
    for (size_t i = sim_mix(key) & m->mask;; i = (i + 1) & m->mask) {
        if (m->vals[i] == NONE)
            return NONE;
        if (m->keys[i] == key)
            return m->vals[i];
    }
}

/* Insert key -> val unless key is present (the first value stays). The
 * caller sized the map, so there is always a free slot. */
static void u64map_put(struct u64map *m, uint64_t key, uint32_t val)
{
    size_t i;

    for (i = sim_mix(key) & m->mask; m->vals[i] != NONE; i = (i + 1) & m->mask)
        if (m->keys[i] == key)
            return;
    m->keys[i] = key;
    m->vals[i] = val;
}

/* A growable set of 16-byte keys, each given the index of its insertion. */
struct key16 {
    uint8_t (*keys)[16];
    size_t n, cap;
    uint32_t *slots; /* index + 1; 0: empty */
    size_t mask;
};

static void key16_free(struct key16 *k)
{
    free(k->keys);
    free(k->slots);
    memset(k, 0, sizeof *k);
}

static size_t key16_hash(const uint8_t key[16])
{
    return (size_t)sim_mix(load64(key) ^ sim_mix(load64(key + 8)));
}

static int key16_rehash(struct key16 *k, size_t nslots)
{
    uint32_t *s;

    if (nslots > SIZE_MAX / sizeof *s)
        return SIM_LEAK_ERR_NOMEM;
    s = calloc(nslots, sizeof *s);
    if (s == NULL)
        return SIM_LEAK_ERR_NOMEM;
    for (size_t j = 0; j < k->n; j++) {
        size_t i = key16_hash(k->keys[j]) & (nslots - 1);
        while (s[i] != 0)
            i = (i + 1) & (nslots - 1);
        s[i] = (uint32_t)(j + 1);
    }
    free(k->slots);
    k->slots = s;
    k->mask = nslots - 1;
    return 0;
}

/* *idx: the key's index, inserting it if new (*added says which). */
static int key16_get(struct key16 *k, const uint8_t key[16], uint32_t *idx, int *added)
{
    size_t i;
    int rc;

    *added = 0;
    if (k->slots != NULL) {
        for (i = key16_hash(key) & k->mask; k->slots[i] != 0; i = (i + 1) & k->mask) {
            if (memcmp(k->keys[k->slots[i] - 1], key, 16) == 0) {
                *idx = k->slots[i] - 1;
                return 0;
            }
        }
    }
    if (k->n >= NONE - 1)
        return SIM_LEAK_ERR_TOO_LARGE;
    if (k->slots == NULL || 2 * (k->n + 1) > k->mask + 1) {
        if ((rc = key16_rehash(k, k->slots == NULL ? 64 : 2 * (k->mask + 1))) != 0)
            return rc;
    }
    if ((rc = grow((void **)&k->keys, &k->cap, k->n + 1, sizeof *k->keys)) != 0)
        return rc;
    memcpy(k->keys[k->n], key, 16);
    for (i = key16_hash(key) & k->mask; k->slots[i] != 0; i = (i + 1) & k->mask)
        ;
    k->slots[i] = (uint32_t)(k->n + 1);
    *idx = (uint32_t)k->n++;
    *added = 1;
    return 0;
}

/* (index, count) pairs: a signature, a task's row. */
struct pair {
    uint32_t idx, count;
};

static int u32_cmp(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static int dbl_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sort n indices and fold them into (index, count) pairs in place; the
 * number of pairs. */
static size_t fold(uint32_t *ids, size_t n, struct pair *out)
{
    size_t k = 0;

    qsort(ids, n, sizeof *ids, u32_cmp);
    for (size_t i = 0; i < n; i++) {
        if (k > 0 && out[k - 1].idx == ids[i]) {
            out[k - 1].count++;
        } else {
            out[k].idx = ids[i];
            out[k].count = 1;
            k++;
        }
    }
    return k;
}

/* ------------------------------------------------------------ context */

/* A group's unnormalised posterior score. */
struct score {
    uint32_t g;
    double s;
};

static int score_cmp(const void *a, const void *b)
{
    const struct score *x = a, *y = b;
    return (x->g > y->g) - (x->g < y->g);
}

/* One shuffle task: its first TASK event, its first accepted RESULT. */
struct stask {
    uint32_t level;
    uint32_t pos; /* index within its round */
    size_t ev_task, ev_result;
    int has_result;
    size_t tr_first, tr_n; /* its row of the round's transfer matrix, in tr */
    size_t tg_first, tg_n; /* last round: (tag, count) of its outputs, in tg */
    uint32_t out_n;        /* outputs (all of them, dummies and untagged included) */
    uint32_t in_n;
};

struct ctx {
    const struct sim_leak_input *in;
    const struct sim_view *v;
    int shuffle;

    /* Tags: the dictionary (groups' tags first, then tags only seen). */
    struct key16 tags;
    uint32_t dummy;      /* tag index of the dummy tag, or NONE */
    uint32_t *gtag;      /* per group: its tag index */
    uint64_t *f;         /* per tag below n_f: rows of its groups */
    size_t n_f;          /* the groups' tags: indices 0 .. n_f - 1 */
    uint32_t *tg_gfirst; /* per group tag: its groups, CSR into tg_gids */
    uint32_t *tg_gids;
    uint64_t rows_total;

    /* Scratch for one posterior. */
    struct score *sc;
    size_t cap_sc;
    double *lt;        /* per group tag: shuffle mass, zero between uses */
    uint32_t *touched; /* the tags lt holds mass on */

    /* Signatures: key -> result. */
    struct key16 sigs;
    uint32_t *sig_guess;
    uint64_t *sig_hash;
    size_t cap_guess, cap_hash;

    /* Shuffle. */
    struct stask *st;
    size_t n_st;
    uint32_t rounds;
    uint32_t *round_first; /* rounds + 3 entries: the tasks of round r (1 .. rounds) are
                              order[round_first[r] .. round_first[r + 1]) */
    uint32_t *order;
    struct u64map inputs; /* ct id -> shuffle task (inputs of every first TASK event) */
    struct pair *tr, *tg;
    size_t n_tr, n_tg;
    double *va, *vb; /* mass vectors over one round's tasks */
    size_t m_max;
    double *tv;   /* per class (round-1 task): mixing TV, NAN until computed */
    double u_sum; /* inputs of the last round's tasks */
};

static void ctx_free(struct ctx *c)
{
    key16_free(&c->tags);
    free(c->gtag);
    free(c->f);
    free(c->tg_gfirst);
    free(c->tg_gids);
    free(c->sc);
    free(c->lt);
    free(c->touched);
    key16_free(&c->sigs);
    free(c->sig_guess);
    free(c->sig_hash);
    free(c->st);
    free(c->round_first);
    free(c->order);
    u64map_free(&c->inputs);
    free(c->tr);
    free(c->tg);
    free(c->va);
    free(c->vb);
    free(c->tv);
}

static int known_protocol(const char *p)
{
    static const char *const names[] = {"s_agg", "rnf_noise", "c_noise", "ed_hist", "shuffle"};

    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(p, names[i]) == 0)
            return 1;
    return 0;
}

static int check_input(const struct sim_leak_input *in)
{
    const struct sim_view *v;
    uint64_t total;

    if (in == NULL || in->view == NULL || in->protocol == NULL || in->group_first == NULL)
        return SIM_LEAK_ERR_INVALID;
    if (!known_protocol(in->protocol))
        return SIM_LEAK_ERR_INVALID;
    if (in->participants > SIM_LEAK_PARTICIPANTS_MAX || in->n_groups > SIM_LEAK_GROUPS_MAX)
        return SIM_LEAK_ERR_TOO_LARGE;
    if (in->n_groups > 0 && in->group_rows == NULL)
        return SIM_LEAK_ERR_INVALID;
    if (in->group_first[0] != 0)
        return SIM_LEAK_ERR_INVALID;
    for (uint64_t p = 0; p < in->participants; p++)
        if (in->group_first[p + 1] < in->group_first[p])
            return SIM_LEAK_ERR_INVALID;
    total = in->group_first[in->participants];
    if (total > 0 && in->group_ids == NULL)
        return SIM_LEAK_ERR_INVALID;
    for (uint64_t k = 0; k < total; k++)
        if (in->group_ids[k] >= in->n_groups)
            return SIM_LEAK_ERR_INVALID;

    v = in->view;
    if ((v->n_ev > 0 && v->ev == NULL) || (v->n_cts > 0 && v->cts == NULL))
        return SIM_LEAK_ERR_INVALID;
    if (v->n_cts >= NONE || v->n_ev >= NONE)
        return SIM_LEAK_ERR_TOO_LARGE;
    for (size_t e = 0; e < v->n_ev; e++) {
        const struct sim_view_event *ev = &v->ev[e];
        if (ev->first_ct > v->n_cts || ev->n_ct > v->n_cts - ev->first_ct)
            return SIM_LEAK_ERR_INVALID;
        if (ev->kind < SIM_VIEW_UPLOAD || ev->kind > SIM_VIEW_RESULT)
            return SIM_LEAK_ERR_INVALID;
        if (ev->kind == SIM_VIEW_UPLOAD && ev->who >= in->participants)
            return SIM_LEAK_ERR_INVALID;
    }
    if (in->group_tag == NULL && in->n_groups > 0)
        for (size_t i = 0; i < v->n_cts; i++)
            if (v->cts[i].has_tag)
                return SIM_LEAK_ERR_INVALID;
    return 0;
}

/* The tag dictionary, each group's tag, f(t) and the groups of each tag. */
static int setup_tags(struct ctx *c)
{
    const struct sim_leak_input *in = c->in;
    uint32_t n_g = in->n_groups, idx;
    size_t n_t;
    int added, rc;

    c->dummy = NONE;
    c->gtag = malloc((n_g ? n_g : 1) * sizeof *c->gtag);
    if (c->gtag == NULL)
        return SIM_LEAK_ERR_NOMEM;
    for (uint32_t g = 0; g < n_g; g++) {
        if (in->group_tag != NULL) {
            if ((rc = key16_get(&c->tags, in->group_tag[g], &idx, &added)) != 0)
                return rc;
        } else {
            static const uint8_t none[16];
            if ((rc = key16_get(&c->tags, none, &idx, &added)) != 0)
                return rc;
        }
        c->gtag[g] = idx;
        if (in->group_rows[g] > UINT64_MAX - c->rows_total)
            return SIM_LEAK_ERR_TOO_LARGE;
        c->rows_total += in->group_rows[g];
    }
    n_t = c->tags.n;
    c->n_f = n_t;
    c->f = calloc(n_t ? n_t : 1, sizeof *c->f);
    c->tg_gfirst = calloc(n_t + 1, sizeof *c->tg_gfirst);
    c->tg_gids = malloc((n_g ? n_g : 1) * sizeof *c->tg_gids);
    if (c->f == NULL || c->tg_gfirst == NULL || c->tg_gids == NULL)
        return SIM_LEAK_ERR_NOMEM;
    for (uint32_t g = 0; g < n_g; g++) {
        c->f[c->gtag[g]] += in->group_rows[g]; /* bounded by rows_total */
        c->tg_gfirst[c->gtag[g] + 1]++;
    }
    for (size_t t = 0; t < n_t; t++)
        c->tg_gfirst[t + 1] += c->tg_gfirst[t];
    {
        uint32_t *at = malloc((n_t ? n_t : 1) * sizeof *at);
        if (at == NULL)
            return SIM_LEAK_ERR_NOMEM;
        memcpy(at, c->tg_gfirst, n_t * sizeof *at);
        for (uint32_t g = 0; g < n_g; g++)
            c->tg_gids[at[c->gtag[g]]++] = g; /* increasing g within a tag */
        free(at);
    }
    if (in->dummy_tag != NULL) {
        if ((rc = key16_get(&c->tags, in->dummy_tag, &idx, &added)) != 0)
            return rc;
        c->dummy = idx;
    }
    return 0;
}

/* The tag index of a ciphertext's tag (added to the dictionary if new), or
 * NONE for an untagged one. */
static int ct_tag(struct ctx *c, const struct sim_view_ct *ct, uint32_t *idx)
{
    int added;

    *idx = NONE;
    if (!ct->has_tag)
        return 0;
    return key16_get(&c->tags, ct->tag, idx, &added);
}

/* ---------------------------------------------------------- posteriors */

static uint64_t hash_step(uint64_t h, uint64_t x)
{
    return sim_mix(h ^ sim_mix(x));
}

/*
 * The guess and the rounded posterior's hash from n scores (unnormalised,
 * >= 0, one per group, any order); n == 0 or a zero total means no
 * evidence: the published frequencies.
 */
static int conclude(struct ctx *c, size_t n, uint32_t *guess, uint64_t *rhash)
{
    const struct sim_leak_input *in = c->in;
    double z = 0, best = -1;
    uint64_t h = 0x636f686f72742d6cull;
    int rc;

    for (size_t i = 0; i < n; i++)
        z += c->sc[i].s;
    if (n == 0 || !(z > 0)) {
        if ((rc = grow((void **)&c->sc, &c->cap_sc, in->n_groups ? in->n_groups : 1,
                       sizeof *c->sc)) != 0)
            return rc;
        n = in->n_groups;
        z = 0;
        for (uint32_t g = 0; g < n; g++) {
            c->sc[g].g = g;
            c->sc[g].s = c->rows_total > 0 ? (double)in->group_rows[g] : 1.0;
            z += c->sc[g].s;
        }
    }
    qsort(c->sc, n, sizeof *c->sc, score_cmp);
    *guess = NONE;
    for (size_t i = 0; i < n; i++) {
        long r;
        if (c->sc[i].s > best * (1 + TIE_REL)) {
            best = c->sc[i].s;
            *guess = c->sc[i].g;
        }
        r = lround(c->sc[i].s / z * 100.0);
        if (r > 0)
            h = hash_step(h, (uint64_t)c->sc[i].g << 8 | (uint64_t)r);
    }
    *rhash = h;
    return 0;
}

/* Uploads: post(g) proportional to m_tag(g) rows(g). */
static int posterior_upload(struct ctx *c, const struct pair *sig, size_t n_sig, uint32_t *guess,
                            uint64_t *rhash)
{
    const struct sim_leak_input *in = c->in;
    size_t n = 0;
    int rc;

    for (size_t i = 0; i < n_sig; i++) {
        uint32_t t = sig[i].idx;
        if (t >= c->n_f)
            continue; /* a tag no group has: only fakes carry it */
        if ((rc = grow((void **)&c->sc, &c->cap_sc, n + (c->tg_gfirst[t + 1] - c->tg_gfirst[t]),
                       sizeof *c->sc)) != 0)
            return rc;
        for (uint32_t k = c->tg_gfirst[t]; k < c->tg_gfirst[t + 1]; k++) {
            uint32_t g = c->tg_gids[k];
            c->sc[n].g = g;
            c->sc[n].s = (double)sig[i].count * (double)in->group_rows[g];
            n++;
        }
    }
    return conclude(c, n, guess, rhash);
}

/* Push a mass vector over round-1 tasks (c->va) to the last round (in
 * c->va again, over the last round's tasks). */
static void propagate(struct ctx *c)
{
    for (uint32_t r = 1; r < c->rounds; r++) {
        uint32_t m = c->round_first[r + 1] - c->round_first[r];
        uint32_t m2 = c->round_first[r + 2] - c->round_first[r + 1];
        double *t;

        memset(c->vb, 0, (m2 ? m2 : 1) * sizeof *c->vb);
        for (uint32_t j = 0; j < m; j++) {
            const struct stask *s = &c->st[c->order[c->round_first[r] + j]];
            double w;
            if (c->va[j] == 0 || !s->has_result || s->out_n == 0)
                continue;
            w = c->va[j] / s->out_n;
            for (size_t k = 0; k < s->tr_n; k++)
                c->vb[c->tr[s->tr_first + k].idx] += w * c->tr[s->tr_first + k].count;
        }
        t = c->va;
        c->va = c->vb;
        c->vb = t;
    }
}

/* The mixing distance of c->va (the last round, per item: divided by
 * `items`) from the size-weighted uniform placement. */
static double mix_tv(const struct ctx *c, double items)
{
    uint32_t r = c->rounds, m = c->round_first[r + 1] - c->round_first[r];
    double d = 0;

    for (uint32_t j = 0; j < m; j++) {
        const struct stask *s = &c->st[c->order[c->round_first[r] + j]];
        double u = c->u_sum > 0 ? s->in_n / c->u_sum : 0;
        d += fabs(c->va[j] / items - u);
    }
    return d / 2;
}

/* Load the start vector of a shuffle signature into c->va. */
static void shuffle_start(struct ctx *c, const struct pair *sig, size_t n_sig)
{
    uint32_t m1 = c->round_first[2] - c->round_first[1];

    memset(c->va, 0, (m1 ? m1 : 1) * sizeof *c->va);
    for (size_t i = 0; i < n_sig; i++)
        c->va[sig[i].idx] += sig[i].count;
}

/* Shuffle: post(g) proportional to L(tag(g)) rows(g) / f(tag(g)), L(t) the
 * mass on the last round's outputs tagged t. */
static int posterior_shuffle(struct ctx *c, const struct pair *sig, size_t n_sig, uint32_t *guess,
                             uint64_t *rhash)
{
    const struct sim_leak_input *in = c->in;
    uint32_t r = c->rounds, m;
    size_t n = 0, n_touched = 0;
    int rc;

    if (n_sig == 0 || r == 0)
        return conclude(c, 0, guess, rhash);
    shuffle_start(c, sig, n_sig);
    propagate(c);
    if (n_sig == 1 && isnan(c->tv[sig[0].idx]))
        c->tv[sig[0].idx] = mix_tv(c, sig[0].count);

    m = c->round_first[r + 1] - c->round_first[r];
    for (uint32_t j = 0; j < m; j++) {
        const struct stask *s = &c->st[c->order[c->round_first[r] + j]];
        if (c->va[j] == 0 || !s->has_result || s->out_n == 0)
            continue;
        for (size_t k = 0; k < s->tg_n; k++) {
            uint32_t t = c->tg[s->tg_first + k].idx;
            if (t >= c->n_f || c->f[t] == 0)
                continue;
            if (c->lt[t] == 0)
                c->touched[n_touched++] = t;
            c->lt[t] += c->va[j] * c->tg[s->tg_first + k].count / s->out_n;
        }
    }
    for (size_t i = 0; i < n_touched; i++) {
        uint32_t t = c->touched[i];
        double per_row = c->lt[t] / (double)c->f[t];
        if ((rc = grow((void **)&c->sc, &c->cap_sc, n + (c->tg_gfirst[t + 1] - c->tg_gfirst[t]),
                       sizeof *c->sc)) != 0)
            goto cleanup;
        for (uint32_t k = c->tg_gfirst[t]; k < c->tg_gfirst[t + 1]; k++) {
            uint32_t g = c->tg_gids[k];
            c->sc[n].g = g;
            c->sc[n].s = per_row * (double)in->group_rows[g];
            n++;
        }
    }
    rc = conclude(c, n, guess, rhash);
cleanup:
    for (size_t i = 0; i < n_touched; i++)
        c->lt[c->touched[i]] = 0;
    return rc;
}

/* The posterior of a signature, computed once. */
static int signature_result(struct ctx *c, const struct pair *sig, size_t n_sig, uint32_t *guess,
                            uint64_t *rhash)
{
    crypto_generichash_state st;
    uint8_t key[16];
    uint32_t idx;
    int added, rc;

    crypto_generichash_init(&st, NULL, 0, sizeof key);
    crypto_generichash_update(&st, (const uint8_t *)(c->shuffle ? "S" : "U"), 1);
    for (size_t i = 0; i < n_sig; i++) {
        uint8_t b[8];
        for (int k = 0; k < 4; k++) {
            b[k] = (uint8_t)(sig[i].idx >> (8 * k));
            b[4 + k] = (uint8_t)(sig[i].count >> (8 * k));
        }
        crypto_generichash_update(&st, b, sizeof b);
    }
    crypto_generichash_final(&st, key, sizeof key);
    if ((rc = key16_get(&c->sigs, key, &idx, &added)) != 0)
        return rc;
    if (!added) {
        *guess = c->sig_guess[idx];
        *rhash = c->sig_hash[idx];
        return 0;
    }
    if ((rc = grow((void **)&c->sig_guess, &c->cap_guess, c->sigs.n, sizeof *c->sig_guess)) != 0 ||
        (rc = grow((void **)&c->sig_hash, &c->cap_hash, c->sigs.n, sizeof *c->sig_hash)) != 0)
        return rc;
    /* On failure the key stays without a result: the whole analysis fails. */
    rc = c->shuffle ? posterior_shuffle(c, sig, n_sig, guess, rhash)
                    : posterior_upload(c, sig, n_sig, guess, rhash);
    if (rc != 0)
        return rc;
    c->sig_guess[idx] = *guess;
    c->sig_hash[idx] = *rhash;
    return 0;
}

/* ------------------------------------------------------------ shuffle */

/* Gather the shuffle's tasks, rounds, transfer rows and last-round tags. */
static int setup_shuffle(struct ctx *c)
{
    const struct sim_view *v = c->v;
    struct u64map by_id = {0};
    size_t n_inputs = 0, cap_st = 0, cap_tr = 0, cap_tg = 0;
    uint32_t *scratch = NULL;
    size_t cap_scratch = 0;
    uint32_t *count = NULL;
    int rc;

    /* Tasks: the first TASK event of each shuffle task id. */
    for (size_t e = 0; e < v->n_ev; e++)
        if (v->ev[e].kind == SIM_VIEW_TASK && v->ev[e].stage == STAGE_SHUFFLE)
            c->n_st++;
    if ((rc = u64map_init(&by_id, c->n_st)) != 0)
        goto cleanup;
    c->n_st = 0;
    for (size_t e = 0; e < v->n_ev; e++) {
        const struct sim_view_event *ev = &v->ev[e];
        struct stask *s;
        if (ev->kind != SIM_VIEW_TASK || ev->stage != STAGE_SHUFFLE || ev->level == 0)
            continue;
        if (ev->level > SIM_LEAK_ROUNDS_MAX) {
            rc = SIM_LEAK_ERR_TOO_LARGE;
            goto cleanup;
        }
        if (u64map_get(&by_id, ev->task_id) != NONE)
            continue;
        if ((rc = grow((void **)&c->st, &cap_st, c->n_st + 1, sizeof *c->st)) != 0)
            goto cleanup;
        s = &c->st[c->n_st];
        memset(s, 0, sizeof *s);
        s->level = ev->level;
        s->ev_task = e;
        s->in_n = (uint32_t)ev->n_ct;
        u64map_put(&by_id, ev->task_id, (uint32_t)c->n_st);
        n_inputs += ev->n_ct;
        if (ev->level > c->rounds)
            c->rounds = ev->level;
        c->n_st++;
    }
    /* Results: the first accepted one of each task. */
    for (size_t e = 0; e < v->n_ev; e++) {
        const struct sim_view_event *ev = &v->ev[e];
        uint32_t k;
        if (ev->kind != SIM_VIEW_RESULT || ev->status != 0 || ev->n_ct == 0)
            continue;
        k = u64map_get(&by_id, ev->task_id);
        if (k == NONE || c->st[k].has_result)
            continue;
        c->st[k].has_result = 1;
        c->st[k].ev_result = e;
        c->st[k].out_n = (uint32_t)ev->n_ct;
    }
    /* Rounds: tasks ordered by round, then by first appearance. */
    c->round_first = calloc((size_t)c->rounds + 3, sizeof *c->round_first);
    c->order = malloc((c->n_st ? c->n_st : 1) * sizeof *c->order);
    count = calloc((size_t)c->rounds + 2, sizeof *count);
    if (c->round_first == NULL || c->order == NULL || count == NULL) {
        rc = SIM_LEAK_ERR_NOMEM;
        goto cleanup;
    }
    for (size_t k = 0; k < c->n_st; k++)
        c->round_first[c->st[k].level + 1]++;
    for (uint32_t r = 0; r + 1 < c->rounds + 3; r++)
        c->round_first[r + 1] += c->round_first[r];
    for (size_t k = 0; k < c->n_st; k++) {
        uint32_t r = c->st[k].level;
        c->st[k].pos = count[r]++;
        c->order[c->round_first[r] + c->st[k].pos] = (uint32_t)k;
    }
    for (uint32_t r = 1; r <= c->rounds; r++) {
        uint32_t m = c->round_first[r + 1] - c->round_first[r];
        if (m > SIM_LEAK_CLASSES_MAX) {
            rc = SIM_LEAK_ERR_TOO_LARGE;
            goto cleanup;
        }
        if (m > c->m_max)
            c->m_max = m;
        if (r == c->rounds)
            for (uint32_t j = 0; j < m; j++)
                c->u_sum += c->st[c->order[c->round_first[r] + j]].in_n;
    }
    /* Every input id -> its task (the first task that takes it). */
    if ((rc = u64map_init(&c->inputs, n_inputs)) != 0)
        goto cleanup;
    for (size_t k = 0; k < c->n_st; k++) {
        const struct sim_view_event *ev = &v->ev[c->st[k].ev_task];
        for (size_t i = 0; i < ev->n_ct; i++)
            u64map_put(&c->inputs, v->cts[ev->first_ct + i].id, (uint32_t)k);
    }
    /* Transfer rows (rounds before the last) and tag rows (the last). */
    for (size_t k = 0; k < c->n_st; k++) {
        struct stask *s = &c->st[k];
        const struct sim_view_event *ev;
        size_t n = 0, folded;
        if (!s->has_result)
            continue;
        ev = &v->ev[s->ev_result];
        if ((rc = grow((void **)&scratch, &cap_scratch, ev->n_ct, sizeof *scratch)) != 0)
            goto cleanup;
        for (size_t i = 0; i < ev->n_ct; i++) {
            const struct sim_view_ct *ct = &v->cts[ev->first_ct + i];
            if (s->level < c->rounds) {
                uint32_t k2 = u64map_get(&c->inputs, ct->id);
                if (k2 != NONE && c->st[k2].level == s->level + 1)
                    scratch[n++] = c->st[k2].pos;
            } else {
                uint32_t t;
                if ((rc = ct_tag(c, ct, &t)) != 0)
                    goto cleanup;
                if (t != NONE && t != c->dummy)
                    scratch[n++] = t;
            }
        }
        if (s->level < c->rounds) {
            if ((rc = grow((void **)&c->tr, &cap_tr, c->n_tr + n, sizeof *c->tr)) != 0)
                goto cleanup;
            folded = fold(scratch, n, c->tr + c->n_tr);
            s->tr_first = c->n_tr;
            s->tr_n = folded;
            c->n_tr += folded;
        } else {
            if ((rc = grow((void **)&c->tg, &cap_tg, c->n_tg + n, sizeof *c->tg)) != 0)
                goto cleanup;
            folded = fold(scratch, n, c->tg + c->n_tg);
            s->tg_first = c->n_tg;
            s->tg_n = folded;
            c->n_tg += folded;
        }
    }
    {
        uint32_t m1 = c->rounds ? c->round_first[2] - c->round_first[1] : 0;
        size_t mm = c->m_max ? c->m_max : 1;
        c->va = malloc(mm * sizeof *c->va);
        c->vb = malloc(mm * sizeof *c->vb);
        c->tv = malloc((m1 ? m1 : 1) * sizeof *c->tv);
        if (c->va == NULL || c->vb == NULL || c->tv == NULL) {
            rc = SIM_LEAK_ERR_NOMEM;
            goto cleanup;
        }
        for (uint32_t j = 0; j < m1; j++)
            c->tv[j] = NAN;
    }
    rc = 0;
cleanup:
    free(count);
    free(scratch);
    u64map_free(&by_id);
    return rc;
}

/* ------------------------------------------------------------ the report */

/* Linear interpolation between order statistics of sorted x[0..n). */
static double quantile(const double *x, size_t n, double q)
{
    double h = (double)(n - 1) * q;
    size_t lo = (size_t)floor(h);

    if (lo + 1 >= n)
        return x[n - 1];
    return x[lo] + (h - (double)lo) * (x[lo + 1] - x[lo]);
}

/* A tag histogram: counts per tag index, grown as tags appear. */
struct hist {
    uint64_t *cnt;
    size_t cap;
};

static int hist_add(struct hist *h, uint32_t t, uint64_t n)
{
    if (t >= h->cap) {
        size_t old = h->cap;
        int rc = grow((void **)&h->cnt, &h->cap, (size_t)t + 1, sizeof *h->cnt);
        if (rc != 0)
            return rc;
        memset(h->cnt + old, 0, (h->cap - old) * sizeof *h->cnt);
    }
    h->cnt[t] += n;
    return 0;
}

/*
 * The tag histogram of the tagged items (accepted uploads' tuples, or the
 * shuffle's last round's outputs) against the truth aggregated onto tags.
 * Looking tags up may add them to the dictionary.
 */
static int tag_stats(struct sim_leak_report *out, struct ctx *c)
{
    const struct sim_view *v = c->v;
    struct hist h = {NULL, 0};
    uint64_t *cnt, seen = 0, truth = 0;
    size_t cap;
    int rc;

    if (!c->shuffle) {
        for (size_t e = 0; e < v->n_ev; e++) {
            const struct sim_view_event *ev = &v->ev[e];
            if (ev->kind != SIM_VIEW_UPLOAD || ev->status != 0)
                continue;
            for (size_t i = 0; i < ev->n_ct; i++) {
                uint32_t t;
                if ((rc = ct_tag(c, &v->cts[ev->first_ct + i], &t)) != 0)
                    goto cleanup;
                if (t == NONE)
                    continue;
                out->tagged_cts++;
                if (t != c->dummy && (rc = hist_add(&h, t, 1)) != 0)
                    goto cleanup;
            }
        }
    } else if (c->rounds > 0) {
        uint32_t r = c->rounds;
        for (uint32_t j = 0; j < c->round_first[r + 1] - c->round_first[r]; j++) {
            const struct stask *s = &c->st[c->order[c->round_first[r] + j]];
            const struct sim_view_event *ev;
            if (!s->has_result)
                continue;
            ev = &v->ev[s->ev_result];
            for (size_t i = 0; i < ev->n_ct; i++)
                out->tagged_cts += v->cts[ev->first_ct + i].has_tag;
            for (size_t k = 0; k < s->tg_n; k++) /* dummies are not in tg */
                if ((rc = hist_add(&h, c->tg[s->tg_first + k].idx, c->tg[s->tg_first + k].count)) !=
                    0)
                    goto cleanup;
        }
    }
    cnt = h.cnt;
    cap = h.cap;
    for (size_t t = 0; t < cap; t++) {
        if (cnt[t] == 0)
            continue;
        if (out->distinct_tags == 0 || cnt[t] < out->tag_freq_min)
            out->tag_freq_min = cnt[t];
        if (cnt[t] > out->tag_freq_max)
            out->tag_freq_max = cnt[t];
        out->distinct_tags++;
        seen += cnt[t];
    }
    for (size_t t = 0; t < c->n_f; t++)
        if (t != c->dummy)
            truth += c->f[t];
    if (seen > 0 && truth > 0) {
        size_t n = cap > c->n_f ? cap : c->n_f;
        double d = 0;
        for (size_t t = 0; t < n; t++) {
            double p, q;
            if (t == c->dummy)
                continue;
            p = t < cap ? (double)cnt[t] / (double)seen : 0;
            q = t < c->n_f ? (double)c->f[t] / (double)truth : 0;
            d += fabs(p - q);
        }
        out->tag_vs_truth_tv = d / 2;
    }
    rc = 0;
cleanup:
    free(h.cnt);
    return rc;
}

static void report_blank(struct sim_leak_report *out)
{
    memset(out, 0, sizeof *out);
    out->tag_vs_truth_tv = NAN;
    out->accuracy = out->prior_accuracy = out->accuracy_ci = NAN;
    out->anon_min = out->anon_p10 = out->anon_median = NAN;
    out->mix_tv_max = out->mix_tv_mean = NAN;
}

/* The signature of an upload (event ev_idx): its sorted (tag, count)
 * pairs, or for the shuffle its (round-1 task, count) pairs, in *sig
 * (*ids is scratch). */
static int participant_signature(struct ctx *c, size_t ev_idx, uint32_t **ids, size_t *cap_ids,
                                 struct pair **sig, size_t *cap_sig, size_t *n_sig)
{
    const struct sim_view_event *ev = &c->v->ev[ev_idx];
    size_t n = 0;
    int rc;

    *n_sig = 0;
    if ((rc = grow((void **)ids, cap_ids, ev->n_ct, sizeof **ids)) != 0 ||
        (rc = grow((void **)sig, cap_sig, ev->n_ct, sizeof **sig)) != 0)
        return rc;
    for (size_t i = 0; i < ev->n_ct; i++) {
        const struct sim_view_ct *ct = &c->v->cts[ev->first_ct + i];
        if (c->shuffle) {
            uint32_t k = c->rounds ? u64map_get(&c->inputs, ct->id) : NONE;
            if (k != NONE && c->st[k].level == 1)
                (*ids)[n++] = c->st[k].pos;
        } else {
            uint32_t t;
            if ((rc = ct_tag(c, ct, &t)) != 0)
                return rc;
            if (t != NONE && t != c->dummy)
                (*ids)[n++] = t;
        }
    }
    *n_sig = fold(*ids, n, *sig);
    return 0;
}

/*
 * Anonymity sets from every participant's rounded-posterior hash hp: for
 * each linked participant, how many participants share its hash; their
 * minimum, 10th percentile and median.
 */
static int anonymity_sets(struct sim_leak_report *out, const struct sim_leak_input *in,
                          const uint64_t *hp)
{
    uint64_t n_p = in->participants, *sorted;
    double *sizes;
    size_t j = 0;

    sorted = malloc(n_p * sizeof *sorted);
    sizes = malloc(out->linked * sizeof *sizes);
    if (sorted == NULL || sizes == NULL) {
        free(sorted);
        free(sizes);
        return SIM_LEAK_ERR_NOMEM;
    }
    memcpy(sorted, hp, n_p * sizeof *sorted);
    qsort(sorted, n_p, sizeof *sorted, u64_cmp);
    for (uint64_t p = 0; p < n_p; p++) {
        size_t lo = 0, hi = n_p, first;
        if (in->group_first[p] == in->group_first[p + 1])
            continue;
        while (lo < hi) { /* the first >= hp[p] */
            size_t mid = lo + (hi - lo) / 2;
            if (sorted[mid] < hp[p])
                lo = mid + 1;
            else
                hi = mid;
        }
        first = lo;
        hi = n_p;
        while (lo < hi) { /* the first > hp[p] */
            size_t mid = lo + (hi - lo) / 2;
            if (sorted[mid] <= hp[p])
                lo = mid + 1;
            else
                hi = mid;
        }
        sizes[j++] = (double)(lo - first);
    }
    qsort(sizes, j, sizeof *sizes, dbl_cmp);
    out->anon_min = sizes[0];
    out->anon_p10 = quantile(sizes, j, 0.10);
    out->anon_median = quantile(sizes, j, 0.50);
    free(sizes);
    free(sorted);
    return 0;
}

/* Mixing over every round-1 task, including those that no single-class
 * signature covered. */
static void mixing(struct sim_leak_report *out, struct ctx *c)
{
    uint32_t m1;
    double sum = 0, max = 0;

    if (c->rounds == 0)
        return;
    m1 = c->round_first[2] - c->round_first[1];
    for (uint32_t j = 0; j < m1; j++) {
        if (isnan(c->tv[j])) {
            memset(c->va, 0, m1 * sizeof *c->va);
            c->va[j] = 1;
            propagate(c);
            c->tv[j] = mix_tv(c, 1);
        }
        sum += c->tv[j];
        if (c->tv[j] > max)
            max = c->tv[j];
    }
    if (m1 > 0) {
        out->mix_tv_max = max;
        out->mix_tv_mean = sum / m1;
    }
}

int sim_leak_analyze(struct sim_leak_report *out, const struct sim_leak_input *in)
{
    struct ctx c;
    const struct sim_view *v;
    size_t *first_upload = NULL, cap_ids = 0, cap_sig = 0, n_sig;
    uint32_t *ids = NULL;
    struct pair *sig = NULL;
    uint64_t *hp = NULL, n_p, correct = 0, *having = NULL, *mark = NULL;
    int rc;

    if (out == NULL)
        return SIM_LEAK_ERR_INVALID;
    report_blank(out);
    memset(&c, 0, sizeof c);
    if ((rc = check_input(in)) != 0)
        return rc;
    if (sodium_init() < 0)
        return SIM_LEAK_ERR_NOMEM;
    v = in->view;
    n_p = in->participants;
    c.in = in;
    c.v = v;
    c.shuffle = strcmp(in->protocol, "shuffle") == 0;
    snprintf(out->protocol, sizeof out->protocol, "%s", in->protocol);

    if ((rc = setup_tags(&c)) != 0)
        goto cleanup;
    if (c.shuffle && (rc = setup_shuffle(&c)) != 0)
        goto cleanup;
    out->shuffle_rounds_seen = c.rounds;

    /* Each participant's first accepted upload. */
    first_upload = malloc((n_p ? n_p : 1) * sizeof *first_upload);
    if (first_upload == NULL) {
        rc = SIM_LEAK_ERR_NOMEM;
        goto cleanup;
    }
    for (uint64_t p = 0; p < n_p; p++)
        first_upload[p] = SIZE_MAX;
    for (size_t e = 0; e < v->n_ev; e++) {
        if (v->ev[e].kind != SIM_VIEW_UPLOAD || v->ev[e].status != 0)
            continue;
        out->uploads++;
        if (first_upload[v->ev[e].who] == SIZE_MAX)
            first_upload[v->ev[e].who] = e;
    }
    if ((rc = tag_stats(out, &c)) != 0)
        goto cleanup;

    c.lt = calloc(c.n_f ? c.n_f : 1, sizeof *c.lt);
    c.touched = malloc((c.n_f ? c.n_f : 1) * sizeof *c.touched);
    hp = malloc((n_p ? n_p : 1) * sizeof *hp);
    having = calloc(in->n_groups ? in->n_groups : 1, sizeof *having);
    mark = calloc(in->n_groups ? in->n_groups : 1, sizeof *mark);
    if (c.lt == NULL || c.touched == NULL || hp == NULL || having == NULL || mark == NULL) {
        rc = SIM_LEAK_ERR_NOMEM;
        goto cleanup;
    }

    /* The attack, participant by participant (one computation per signature). */
    for (uint64_t p = 0; p < n_p; p++) {
        uint32_t guess;
        uint32_t a = in->group_first[p], b = in->group_first[p + 1];

        n_sig = 0;
        if (first_upload[p] != SIZE_MAX &&
            (rc = participant_signature(&c, first_upload[p], &ids, &cap_ids, &sig, &cap_sig,
                                        &n_sig)) != 0)
            goto cleanup;
        if ((rc = signature_result(&c, sig, n_sig, &guess, &hp[p])) != 0)
            goto cleanup;
        if (a == b)
            continue;
        out->linked++;
        for (uint32_t k = a; k < b; k++) {
            if (in->group_ids[k] == guess) {
                correct++;
                break;
            }
        }
        for (uint32_t k = a; k < b; k++) { /* a group listed twice counts once */
            uint32_t g = in->group_ids[k];
            if (mark[g] != p + 1) {
                mark[g] = p + 1;
                having[g]++;
            }
        }
    }

    if (out->linked > 0) {
        double n = (double)out->linked, acc = (double)correct / n;
        uint64_t best = 0;

        for (uint32_t g = 0; g < in->n_groups; g++)
            if (having[g] > best)
                best = having[g];
        out->accuracy = acc;
        out->accuracy_ci = 1.96 * sqrt(acc * (1 - acc) / n);
        out->prior_accuracy = (double)best / n;

        if ((rc = anonymity_sets(out, in, hp)) != 0)
            goto cleanup;
    }

    if (c.shuffle)
        mixing(out, &c);
    rc = 0;

cleanup:
    free(mark);
    free(having);
    free(hp);
    free(sig);
    free(ids);
    free(first_upload);
    ctx_free(&c);
    if (rc != 0) {
        report_blank(out);
    }
    return rc;
}

/* ------------------------------------------------------------ printing */

static void put_num(FILE *f, const char *fmt, double x)
{
    if (isnan(x))
        fputs("-", f);
    else
        fprintf(f, fmt, x);
}

void sim_leak_print(const struct sim_leak_report *r, FILE *f)
{
    if (r == NULL || f == NULL)
        return;
    fprintf(f, "leakage to the querier service (%s)\n", r->protocol);
    fprintf(f, "  uploads seen            %" PRIu64 "\n", r->uploads);
    fprintf(f, "  tagged ciphertexts      %" PRIu64 ", %" PRIu64 " distinct tags", r->tagged_cts,
            r->distinct_tags);
    if (r->distinct_tags > 0)
        fprintf(f, " (%" PRIu64 " to %" PRIu64 " per tag)", r->tag_freq_min, r->tag_freq_max);
    fputs("\n  tag histogram vs truth  TV ", f);
    put_num(f, "%.4f", r->tag_vs_truth_tv);
    fprintf(f, "\n  linked participants     %" PRIu64 "\n  linking accuracy        ", r->linked);
    put_num(f, "%.4f", r->accuracy);
    fputs(" +/- ", f);
    put_num(f, "%.4f", r->accuracy_ci);
    fputs(" (prior ", f);
    put_num(f, "%.4f", r->prior_accuracy);
    fputs(")\n  anonymity sets          min ", f);
    put_num(f, "%.0f", r->anon_min);
    fputs(", p10 ", f);
    put_num(f, "%.1f", r->anon_p10);
    fputs(", median ", f);
    put_num(f, "%.1f", r->anon_median);
    fputs("\n", f);
    if (r->shuffle_rounds_seen > 0 || !isnan(r->mix_tv_max)) {
        fprintf(f, "  shuffle mixing          %" PRIu32 " rounds, TV max ", r->shuffle_rounds_seen);
        put_num(f, "%.4f", r->mix_tv_max);
        fputs(", mean ", f);
        put_num(f, "%.4f", r->mix_tv_mean);
        fputs("\n", f);
    }
}

void sim_leak_print_row(const struct sim_leak_report *r, FILE *f, int header)
{
    if (r == NULL || f == NULL)
        return;
    if (header) {
        fputs("| protocol | uploads | tagged cts | tags | per tag | tag TV | linked | accuracy | "
              "prior | anonymity min / p10 / median | mix TV max / mean | rounds |\n",
              f);
        fputs("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n", f);
    }
    fprintf(f, "| %s | %" PRIu64 " | %" PRIu64 " | %" PRIu64 " | ", r->protocol, r->uploads,
            r->tagged_cts, r->distinct_tags);
    if (r->distinct_tags > 0)
        fprintf(f, "%" PRIu64 "-%" PRIu64, r->tag_freq_min, r->tag_freq_max);
    else
        fputs("-", f);
    fputs(" | ", f);
    put_num(f, "%.3f", r->tag_vs_truth_tv);
    fprintf(f, " | %" PRIu64 " | ", r->linked);
    put_num(f, "%.3f", r->accuracy);
    if (!isnan(r->accuracy_ci))
        fprintf(f, " ± %.3f", r->accuracy_ci);
    fputs(" | ", f);
    put_num(f, "%.3f", r->prior_accuracy);
    fputs(" | ", f);
    put_num(f, "%.0f", r->anon_min);
    fputs(" / ", f);
    put_num(f, "%.1f", r->anon_p10);
    fputs(" / ", f);
    put_num(f, "%.1f", r->anon_median);
    fputs(" | ", f);
    put_num(f, "%.3f", r->mix_tv_max);
    fputs(" / ", f);
    put_num(f, "%.3f", r->mix_tv_mean);
    fprintf(f, " | %" PRIu32 " |\n", r->shuffle_rounds_seen);
}
