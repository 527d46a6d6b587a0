/*
 * The cost model: what each grouping protocol will cost a study, before it
 * runs, and which protocol to use when the researcher does not say.
 *
 * The model runs nothing. It mirrors, in arithmetic, the layout the
 * coordinator builds (querier/qr_coord.c) from the sizes every token derives
 * from the plan (tk_layout_of, the same function tokens use): how many
 * ciphertexts are collected and how large each is once packed, how the
 * aggregation cuts them into tasks and steps, what every message through
 * the service weighs, and the arena a token call uses. Where the layout
 * depends on the data, it assumes groups of equal size:
 * - s_agg: exact (level 1 of P = RAM / ciphertext, then F partials at a
 *   time, every partial the plan's nchunks chunks);
 * - tagged protocols: the contributor list exactly; the grouping by tag
 *   with tags of equal size (c_noise's are: every participant sends every
 *   tag equally often; rnf_noise's buckets, ed_hist's equi-depth buckets
 *   and the shuffle's groups are so only on average), a tag larger than P
 *   split into partitions whose partials merge F at a time; the shuffle's
 *   rounds exactly (balanced batches of at most tk_shuffle_capacity).
 * ed_hist's prediction adds the histogram study it runs first (s_agg,
 * COUNT(*) over the same groups), and its signed plan carries the bucket
 * bounds, TEXT values counted at TEXT_BYTES each.
 *
 * Time is the simulator's clock (sim/sim_run.c), from the plan's issue:
 * collection closes at the deadline (collect_seconds), then every
 * aggregation step takes rounds of at most ROUND_TASKS tasks (and no more
 * than there are participants to take them), each round two one-way
 * latencies and TASK_WORK_S of token work. Work (token_seconds) is what
 * cohort-sim measures as the study's CPU time: tokens, agents and service
 * together, on the simulator's machine: a cost per participant (the plan's
 * and its certificate's signatures, about 100 us of it, the owner's rows,
 * the upload), per ciphertext handled (collected, and every task's inputs
 * and outputs: sealed, packed, stored, opened) and per byte through the
 * service. RAM is the larger of a collection call and the aggregation
 * session the tokens size (aggregate_ram), or a shuffle's batch; a plan is
 * feasible when tokens take it (aggregate_ram within their RAM) and, for
 * the shuffle, when the coordinator can lay its batches out and a token
 * holds one (each item with its 4-byte index).
 *
 * Calibration. Only the three work constants are fitted; sizes follow the
 * code, except the signed plan's (PLAN_*: 595, 640, 673 and 686 bytes for
 * the sweep's SQL, through qr_sql_compile and qr_plan_sign) and the sealed
 * result's (RESULT_*), and COLLECT_RAM (cohort-sim's peak arena with one
 * group). The work constants minimise the relative error, over the 54
 * studies of the sweep that complete, between each study's CPU seconds as
 * cohort-sim measured them (Release build, --threads 2, on the development
 * machine's 2 shared cores, November 2026) and the model's own counts for
 * it (participants, ciphertexts handled, bytes). The sweep:
 *
 *   scripts/cost-check.sh --keep DIR
 *
 * (cohort-sim --json for every protocol at 1,000, 10,000 and 100,000 tokens
 * over 1, 16, 128 and 1,024 groups). The fit found no cost per task beyond
 * its bytes; it is within a factor of 1.33 on every study it was fitted
 * on, and of 1.48 on a later run of the whole sweep (c_noise's largest
 * studies, 10^7 ciphertexts, run 20 to 50% slower than linear, and CPU time
 * on shared cores varies from run to run by 10 to 20%).
 */
#include <math.h>
#include <string.h>

#include "querier/qr_sql.h"
#include "querier/querier.h"
#include "token/token.h"

static const char *const protocols[] = {"s_agg", "c_noise", "shuffle", "ed_hist", "rnf_noise"};

enum proto { P_S_AGG, P_C_NOISE, P_SHUFFLE, P_ED_HIST, P_RNF_NOISE };

/* A protocol's index in protocols[] (enum proto), or -1. */
static int proto_of(const char *name)
{
    for (size_t i = 0; name != NULL && i < sizeof protocols / sizeof protocols[0]; i++)
        if (strcmp(name, protocols[i]) == 0)
            return (int)i;
    return -1;
}

int qr_protocol_leakage(const char *protocol)
{
    if (protocol == NULL)
        return -1;
    if (strcmp(protocol, "s_agg") == 0 || strcmp(protocol, "c_noise") == 0)
        return QR_LEAK_NONE;
    if (strcmp(protocol, "shuffle") == 0)
        return QR_LEAK_FREQUENCIES;
    if (strcmp(protocol, "ed_hist") == 0 || strcmp(protocol, "rnf_noise") == 0)
        return QR_LEAK_BUCKETS;
    return -1;
}

int qr_protocol_valid(const char *name)
{
    if (name != NULL && strcmp(name, "auto") == 0)
        return 0;
    return qr_protocol_leakage(name) < 0 ? -1 : 0;
}

uint32_t qr_cost_shuffle_rounds(uint64_t items, uint32_t batch)
{
    double window = batch > 1 ? batch : 2;
    uint32_t r = 1;

    while (window < (double)items && r < QR_ROUNDS_MAX) {
        window *= batch > 1 ? batch : 2;
        r++;
    }
    r++; /* one past the first window that covers every item */
    if (r < 2)
        r = 2;
    return r > QR_ROUNDS_MAX ? QR_ROUNDS_MAX : r;
}

/* ------------------------------------------------------------ constants */

/* The clock (sim/sim_run.c: ROUND_MAX, TASK_WORK_MS, the deadline + 1 ms). */
#define ROUND_TASKS 2048.0
#define TASK_WORK_S 0.05
#define CLOSE_S 0.001

/* Messages (proto/cohort.proto), bytes. */
#define WORK_REQUEST 36.0 /* ServiceRequest{work{token_id}} */
#define IDLE_REPLY 5.0    /* ServiceReply{work{retry_after_ms}} */
#define TASK_REPLY 51.0   /* an AggTask's fields and wrappers, beside its plan and inputs */
#define TASK_RESULT 79.0  /* a TaskResult's fields and wrappers, beside its outputs */
#define KEY_RECORD 30.0   /* a pseudonym of the contributor list (qr_codec_key_record) */
#define KEYS_PLAIN 96.0   /* a contributor list partial's plaintext (tk_stage.c) */
#define PLAN_BASE 560.0   /* a signed plan: signature, researcher certificate, schema, times */
#define PLAN_PER_GROUP_COLUMN 42.0
#define PLAN_PER_AGGREGATE 18.0
#define TEXT_BYTES 6.0     /* a TEXT group value, typically */
#define RESULT_FIXED 420.0 /* a sealed result: signer certificate, signature, ids, seal */
#define RESULT_PER_COLUMN 20.0
#define RESULT_PER_VALUE 10.0

/* A token call's arena, beside what the layout says: a collection (the
 * decoded plan and chain, the owner's rows; cohort-sim's peak arena with one
 * group), and a decoded input with protobuf-c's bookkeeping around it. */
#define COLLECT_RAM 14336.0
#define SCRATCH_RAM 520.0

/* Work, CPU seconds (see the calibration above). */
#define C_PARTICIPANT 162e-6 /* a contribution: signatures, the owner's rows, its upload */
#define C_CIPHERTEXT 1.30e-6 /* a ciphertext sealed, packed, stored, opened */
#define C_BYTE 10.3e-9       /* a byte through the service */

#define STEPS_MAX 64 /* more than any plan's layout takes (tasks beyond are still counted) */

/* ------------------------------------------------------------ the study */

/* One study: its input resolved as the querier and the tokens resolve it,
 * then what its layout adds up to. Counts are doubles: they are expected
 * values, and a study of 2^64 ciphertexts must not wrap. */
struct study {
    int proto;                                  /* enum proto */
    double n, emit, g;                          /* participants, ciphertexts each, groups */
    double ram, lat, collect;                   /* bytes, seconds, seconds */
    uint32_t k, gc, tc, aggs;                   /* tuples, group and TEXT columns, aggregates */
    uint32_t buckets, fakes, rounds, batch_min; /* the protocol's parameters */
    struct tk_layout lay;
    double plan; /* the signed plan, bytes */
    double ct;   /* a collected ciphertext, packed */

    double step_tasks[STEPS_MAX];
    uint32_t steps;           /* steps used so far */
    double tasks, bytes, cts; /* cts: ciphertexts handled (collected, task inputs and outputs) */
    double ram_peak;
    int feasible;
};

/* The bytes of a varint. */
static double vlen(double v)
{
    double n = 1;

    while (v >= 128) {
        v = floor(v / 128);
        n++;
    }
    return n;
}

/* A count as an integer, saturated. */
static uint64_t whole(double v)
{
    if (!(v > 0))
        return 0;
    return v >= 18446744073709551615.0 ? UINT64_MAX : (uint64_t)llround(v);
}

/* A length-delimited field of `payload` bytes. */
static double field(double payload)
{
    return 1 + vlen(payload) + payload;
}

/* A packed Ciphertext as the service keeps it: zero fields take nothing. */
static double ct_size(double level, double partition, double chunk, double nchunks, double key,
                      double plain, int tag)
{
    return field(8) + 2 + (level > 0 ? 1 + vlen(level) : 0) +
           (partition > 0 ? 1 + vlen(partition) : 0) + (chunk > 0 ? 1 + vlen(chunk) : 0) +
           (nchunks > 0 ? 1 + vlen(nchunks) : 0) + (key > 0 ? field(key) : 0) +
           (plain > 0 ? field(24) + field(plain + 16) : 0) + (tag ? field(16) : 0);
}

/* A partial chunk of any stage (s_agg's or a tagged one). */
static double partial_size(const struct study *s, double level, double parts, double nchunks)
{
    return ct_size(level, parts - 1, nchunks - 1, nchunks, 0, (double)s->lay.chunk_plain_len, 0);
}

/* The final task's output: the SealedResult in a TaskResult. */
static double result_size(const struct study *s)
{
    double cols = s->gc + s->aggs;
    double table = 40 + cols * RESULT_PER_COLUMN + s->g * (2 + cols * RESULT_PER_VALUE);

    return RESULT_FIXED + table + 64 * ceil(table / 4096);
}

/* `count` tasks join a step; `in` and `out` are their inputs' and outputs'
 * bytes (fields included), `n_in` and `n_out` their ciphertexts. */
static void tasks_add(struct study *s, uint32_t step, double count, double in, double n_in,
                      double out, double n_out)
{
    if (count <= 0)
        return;
    if (step >= STEPS_MAX) /* beyond any plan's reach: counted, if not timed, exactly */
        step = STEPS_MAX - 1;
    if (step + 1 > s->steps)
        s->steps = step + 1;
    s->step_tasks[step] += count;
    s->tasks += count;
    s->cts += n_in + n_out;
    s->bytes += count * (WORK_REQUEST + TASK_REPLY + field(s->plan) + TASK_RESULT) + in + out;
}

/* s_agg's levels: P collected ciphertexts per task, then F partials. */
static void layout_s_agg(struct study *s)
{
    double items = s->n * s->emit, per = fmax(2, floor(s->ram / s->ct));
    double parts = ceil(items / per), m = s->lay.nchunks, in = items * field(s->ct), n_in = items;

    for (uint32_t level = 1;; level++) {
        double pc = partial_size(s, level, parts, m), f;

        if (parts <= 1) {
            tasks_add(s, level - 1, 1, in, n_in, result_size(s), 1);
            break;
        }
        tasks_add(s, level - 1, parts, in, n_in, parts * m * field(pc), parts * m);
        f = fmax(2, floor(s->ram / (m * pc)));
        in = parts * m * field(pc);
        n_in = parts * m;
        parts = ceil(parts / f);
    }
}

/* The contributor list: its steps; the root's size goes to *root. */
static uint32_t layout_keys(struct study *s, double *root)
{
    double parts = ceil(s->n / fmax(2, floor(s->ram / KEY_RECORD)));
    double in = s->n * field(KEY_RECORD), n_in = s->n;
    uint32_t level = 1;

    for (;; level++) {
        double kp = ct_size(level, parts - 1, 0, 1, 0, KEYS_PLAIN, 0);

        tasks_add(s, level - 1, parts, in, n_in, parts * field(kp), parts);
        if (parts <= 1) {
            *root = field(kp);
            return level;
        }
        in = parts * field(kp);
        n_in = parts;
        parts = ceil(parts / fmax(2, floor(s->ram / kp)));
    }
}

/* The shuffle's rounds over `items`; the last round's ciphertext size. */
static double layout_shuffle(struct study *s, double items)
{
    uint32_t cap = tk_shuffle_capacity((size_t)s->ram, s->lay.tuple_plain_len + 16);
    double m = cap ? ceil(items / cap) : 0, batch, in = items * field(s->ct), out = 0, size = s->ct;
    double held = (double)s->lay.shuffle_item_len + 4; /* an item and its index */

    /* What the coordinator refuses to lay out, and batches (balanced, of at
     * most cap) larger than a token's arena holds. */
    if (cap < s->batch_min || items < s->batch_min || m == 0 || floor(items / m) < s->batch_min) {
        s->feasible = 0;
        return size;
    }
    batch = ceil(items / m);
    if ((double)s->lay.shuffle_overhead + batch * held > s->ram)
        s->feasible = 0;
    for (uint32_t r = 1; r <= s->rounds; r++) {
        size =
            ct_size(r, m - 1, batch / 2, batch, 0, (double)s->lay.tuple_plain_len, r == s->rounds);
        out = items * field(size);
        tasks_add(s, r - 1, m, in, items, out, items);
        in = out;
    }
    /* The session, its batch, and one decoded input. */
    s->ram_peak =
        fmax(s->ram_peak, (double)s->lay.shuffle_overhead - 3.0 * (double)s->lay.tuple_plain_len -
                              4096 + batch * held + SCRATCH_RAM);
    return size;
}

/*
 * The grouping by tag at `step`: `items` ciphertexts of `size` bytes in
 * `tags` tags of equal size, `gpt` groups each. Whole tags are packed into
 * partitions of at most P; a larger tag is split into partitions whose
 * partials merge F at a time. Returns the last step it uses; what waits
 * for the filtering goes to *carried (bytes) and *n_carried.
 */
static uint32_t layout_grouping(struct study *s, uint32_t step, double items, double tags,
                                double gpt, double size, double *carried, double *n_carried)
{
    double per = fmax(2, floor(s->ram / size)), len = items / tags, gpc = s->lay.groups_per_chunk;
    double in = items * field(size), parts, m, pc, r = 1, level = 1;

    if (len > per) { /* every tag split: runs of r partitions */
        r = ceil(len / per);
        parts = tags * r;
        m = fmax(1, ceil(fmin(gpt, len) / gpc));
    } else {
        double tpp = floor(per / len);

        parts = ceil(tags / tpp);
        m = fmax(1, ceil(fmin(s->g, tpp * gpt) / gpc));
    }
    pc = partial_size(s, level, parts, m);
    tasks_add(s, step, parts, in, items, parts * m * field(pc), parts * m);
    while (r > 1) {
        double f = fmax(2, floor(s->ram / (m * pc))), next = ceil(r / f);

        in = tags * r * m * field(pc);
        level++;
        pc = partial_size(s, level, tags * next, m);
        tasks_add(s, ++step, tags * next, in, tags * r * m, tags * next * m * field(pc),
                  tags * next * m);
        r = next;
        parts = tags;
    }
    *carried = parts * m * field(pc);
    *n_carried = parts * m;
    return step;
}

/* rnf_noise, c_noise, ed_hist and shuffle: the list, the shuffle's rounds,
 * the grouping by tag, and the filtering after the last of them. */
static void layout_tagged(struct study *s)
{
    double items = s->n * s->emit, size = s->ct, tags, gpt, root = 0, carried = 0, n_carried = 0;
    uint32_t keys_steps = layout_keys(s, &root), first = 0, last;

    if (s->proto == P_SHUFFLE) {
        size = layout_shuffle(s, items);
        first = s->rounds;
        tags = s->g + (s->k > 1 ? 1 : 0); /* a group each, and the dummies' */
    } else {
        tags = fmin(s->buckets, items);
    }
    gpt = fmax(1, s->g / tags);
    last = layout_grouping(s, first, items, tags, gpt, size, &carried, &n_carried);
    if (keys_steps > last + 1)
        last = keys_steps - 1;
    tasks_add(s, last + 1, 1, root + carried, 1 + n_carried, result_size(s), 1);
}

/*
 * The groups a histogram shows: those of at least the default minimum group
 * size. Equal groups of n k / g tuples each would show g P(Poisson >= m);
 * skewed ones show more, taken as at least n k / 4m.
 */
static double visible_groups(const struct study *s)
{
    double lambda = s->n * s->k / s->g, term = exp(-lambda), below = 0,
           m = QR_DEFAULT_MIN_GROUP_SIZE;

    for (unsigned j = 0; j < QR_DEFAULT_MIN_GROUP_SIZE; j++) {
        below += term;
        term *= lambda / (j + 1);
    }
    return fmin(s->g, fmax(s->g * fmax(0, 1 - below), s->n * s->k / (4 * m)));
}

/*
 * One study of `protocol` with `aggs` aggregates: resolve the input as the
 * querier and the tokens would, then lay it out. QR_ERR_ARG for bad input.
 */
static int study_run(struct study *s, const char *protocol, const struct qr_cost_input *in,
                     uint32_t aggs)
{
    int tagged_collect, rc;
    uint32_t cap;

    memset(s, 0, sizeof *s);
    s->proto = proto_of(protocol);
    if (s->proto < 0 || in->participants == 0 || in->group_columns > QR_GROUP_COLUMNS_MAX ||
        (in->group_columns > 0 && in->group_text_columns > in->group_columns) ||
        in->buckets > QR_BUCKETS_MAX)
        return QR_ERR_ARG;
    s->n = (double)in->participants;
    s->k = in->tuples ? in->tuples : 1;
    s->aggs = aggs;
    s->gc = in->group_columns;
    s->tc = in->group_text_columns;
    if (s->gc == 0)
        s->gc = s->tc = in->groups > 1 ? 1 : 0;
    s->g = s->gc > 0 && in->groups > 0 ? in->groups : 1;
    s->ram = (double)(in->token_ram ? in->token_ram : 65536);
    s->lat = (in->latency_ms ? in->latency_ms : 20) / 1000.0;
    s->collect = in->collect_seconds ? in->collect_seconds : QR_DEFAULT_COLLECT_SECONDS;
    s->feasible = 1;

    /* The protocol's parameters, as qr_plan.c and qr_hist.c set them. */
    if (s->proto == P_RNF_NOISE) {
        s->buckets = in->buckets ? in->buckets : (uint32_t)fmin(s->g, QR_BUCKETS_MAX);
        s->fakes = in->has_fakes ? in->fakes : QR_DEFAULT_FAKES;
    } else if (s->proto == P_C_NOISE) {
        s->buckets = in->buckets ? in->buckets : (uint32_t)fmin(s->g, QR_C_NOISE_EMIT_MAX / s->k);
    } else if (s->proto == P_ED_HIST) {
        /* The histogram draws at most this many buckets, each starting at a
         * group it shows. */
        s->buckets = in->buckets ? in->buckets : ((uint32_t)s->g + 3) / 4;
        if (s->buckets > visible_groups(s))
            s->buckets = (uint32_t)fmax(1, floor(visible_groups(s)));
    } else if (s->proto == P_SHUFFLE) {
        s->batch_min = in->batch_min ? in->batch_min : QR_DEFAULT_BATCH_MIN;
    }
    s->emit = tk_plan_emit(protocol, s->k, s->buckets ? s->buckets : 1, s->fakes);
    rc = tk_layout_of(&s->lay, protocol, s->gc, s->tc, aggs, (uint32_t)s->g, s->batch_min, 0);
    if (s->emit == 0 || s->batch_min > 65535 || in->rounds > QR_ROUNDS_MAX ||
        (rc != TK_OK && rc != TK_ERR_BAD_PLAN))
        return QR_ERR_ARG;
    if (rc == TK_ERR_BAD_PLAN) { /* no token takes a plan of that shape */
        s->feasible = 0;
        return 0;
    }
    s->plan = PLAN_BASE + s->gc * PLAN_PER_GROUP_COLUMN + aggs * PLAN_PER_AGGREGATE;
    if (s->proto == P_ED_HIST) /* the bounds: a group key each but the first bucket */
        s->plan += (s->buckets - 1.0) * field(1 + s->tc * (2 + TEXT_BYTES) + (s->gc - s->tc) * 9.5);
    tagged_collect = s->proto == P_RNF_NOISE || s->proto == P_C_NOISE || s->proto == P_ED_HIST;
    s->ct = ct_size(0, 0, s->emit - 1, s->emit, 16, (double)s->lay.tuple_plain_len, tagged_collect);
    cap = tk_shuffle_capacity((size_t)s->ram, s->lay.tuple_plain_len + 16);
    s->rounds = in->rounds ? in->rounds : qr_cost_shuffle_rounds(whole(s->n * s->emit), cap);
    if ((double)s->lay.aggregate_ram > s->ram)
        s->feasible = 0; /* every token refuses to contribute (TK_ERR_NO_MEMORY) */

    /* Collection: the plan to every participant, a contribution back. */
    s->cts = s->n * s->emit;
    s->bytes = s->n * (WORK_REQUEST + field(field(field(s->plan))) +
                       field(field(32) + field(field(32) + field(16) + s->emit * field(s->ct))));
    /* A collection call, or an aggregation session as the token sizes it. */
    s->ram_peak = fmax(COLLECT_RAM, (double)s->lay.aggregate_ram);
    if (s->proto == P_S_AGG)
        layout_s_agg(s);
    else
        layout_tagged(s);
    return 0;
}

/* A study's figures: time and work from its layout. */
static void study_cost(struct qr_cost_part *out, const struct study *s)
{
    double rounds = 0, per_round = fmin(ROUND_TASKS, s->n), seconds, work;

    for (uint32_t i = 0; i < s->steps; i++)
        rounds += ceil(s->step_tasks[i] / per_round);
    seconds = s->collect + CLOSE_S + rounds * (2 * s->lat + TASK_WORK_S);
    work = s->n * C_PARTICIPANT + s->cts * C_CIPHERTEXT +
           (s->bytes + rounds * (WORK_REQUEST + IDLE_REPLY)) * C_BYTE;
    memset(out, 0, sizeof *out);
    out->seconds = seconds;
    out->token_seconds = work;
    out->bytes = whole(s->bytes + rounds * (WORK_REQUEST + IDLE_REPLY));
    out->ciphertexts = whole(s->n * s->emit);
    out->tasks = whole(s->tasks);
    out->steps = s->steps;
    out->token_ram_needed = (size_t)whole(ceil(s->ram_peak));
}

int qr_cost_predict(struct qr_cost *out, const char *protocol, const struct qr_cost_input *in)
{
    struct study s;
    struct qr_cost_part study, hist;
    int rc;

    if (out != NULL)
        memset(out, 0, sizeof *out);
    if (out == NULL || in == NULL || protocol == NULL)
        return QR_ERR_ARG;
    if ((rc = study_run(&s, protocol, in, in->aggregates ? in->aggregates : 1)) != 0)
        return rc;
    study_cost(&study, &s);
    out->feasible = s.feasible;
    if (s.proto == P_ED_HIST) {
        /* The histogram first: s_agg, COUNT(*) over the same groups. */
        if ((rc = study_run(&s, "s_agg", in, 1)) != 0) {
            memset(out, 0, sizeof *out);
            return rc;
        }
        study_cost(&hist, &s);
        out->feasible = out->feasible && s.feasible;
        out->histogram = hist;
    } else {
        memset(&hist, 0, sizeof hist);
    }
    out->seconds = study.seconds + hist.seconds;
    out->token_seconds = study.token_seconds + hist.token_seconds;
    out->bytes = study.bytes + hist.bytes;
    out->ciphertexts = study.ciphertexts + hist.ciphertexts;
    out->tasks = study.tasks + hist.tasks;
    out->steps = study.steps + hist.steps;
    out->token_ram_needed = study.token_ram_needed > hist.token_ram_needed ? study.token_ram_needed
                                                                           : hist.token_ram_needed;
    return 0;
}

const char *qr_cost_choose(const struct qr_cost_input *in, int max_leakage, struct qr_cost *best)
{
    const char *pick = NULL;
    struct qr_cost c, b, s_agg;
    int have_s_agg;

    memset(&b, 0, sizeof b);
    have_s_agg = qr_cost_predict(&s_agg, "s_agg", in) == 0 && s_agg.feasible;
    for (size_t i = 0; i < sizeof protocols / sizeof protocols[0]; i++) {
        if (qr_protocol_leakage(protocols[i]) > max_leakage ||
            strcmp(protocols[i], "ed_hist") == 0 || /* needs a histogram first: named only */
            qr_cost_predict(&c, protocols[i], in) != 0 || !c.feasible)
            continue;
        if (pick == NULL || c.token_seconds < b.token_seconds) {
            pick = protocols[i];
            b = c;
        }
    }
    /* s_agg shows the service nothing: another must be at most half as costly. */
    if (pick == NULL || (have_s_agg && b.token_seconds > 0.5 * s_agg.token_seconds)) {
        pick = "s_agg";
        b = s_agg;
    }
    if (best != NULL)
        *best = b;
    return pick;
}
