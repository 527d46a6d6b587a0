/*
 * The cost model: what each grouping protocol will cost a study, before it
 * runs, and which protocol to use when the researcher does not say.
 *
 * The model mirrors the coordinator's layout (querier/qr_coord.c) with the
 * sizes tokens derive from a plan (token/tk_plan.c), at a coarse grain:
 * ciphertexts collected, tasks per step and the steps in sequence, bytes
 * through the service, and the largest RAM a token call needs. Time is the
 * sum over steps of the slowest task (a task's token work plus a round trip),
 * plus collection. The constants are per-operation costs measured on the
 * simulator's machine; `cohort-sim --cost` prints the prediction beside the
 * measurement so that they can be checked.
 */
#include <math.h>
#include <string.h>

#include "querier/qr_sql.h"
#include "querier/querier.h"
#include "token/token.h"

static const char *const protocols[] = {"s_agg", "c_noise", "shuffle", "ed_hist", "rnf_noise"};

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

/* Per-operation costs (seconds) and sizes (bytes). */
#define C_VERIFY 60e-6   /* a plan's signature check, once per token call that loads it */
#define C_AEAD 1.2e-6    /* one small ciphertext opened or sealed */
#define C_HASH 0.3e-6    /* an origin or a tag */
#define C_GROUP 0.4e-6   /* one group merged */
#define CT_OVERHEAD 80.0 /* a ciphertext's binding, nonce and AEAD tag on the wire */

static double tuple_box(const struct qr_cost_input *in)
{
    return 60.0 + 24.0 * (in->aggregates ? in->aggregates : 1);
}

static double group_bytes(const struct qr_cost_input *in)
{
    return 40.0 + 24.0 * (in->aggregates ? in->aggregates : 1);
}

int qr_cost_predict(struct qr_cost *out, const char *protocol, const struct qr_cost_input *in)
{
    double n, k, g, ram, lat, ct, gb, items, per, steps, tasks, bytes, work, slow, table;
    int leak = qr_protocol_leakage(protocol);

    if (out == NULL || in == NULL || leak < 0 || in->participants == 0)
        return QR_ERR_ARG;
    memset(out, 0, sizeof *out);
    n = (double)in->participants;
    k = in->tuples ? in->tuples : 1;
    g = in->groups ? in->groups : 1;
    ram = (double)(in->token_ram ? in->token_ram : 65536);
    lat = (in->latency_ms ? in->latency_ms : 20) / 1000.0;
    ct = tuple_box(in) + CT_OVERHEAD;
    gb = group_bytes(in);
    table = g * (gb + 32) + 12288; /* the filtering token's group table and working space */
    items = n * k;
    if (strcmp(protocol, "rnf_noise") == 0)
        items = n * (k + (in->has_fakes ? in->fakes : QR_DEFAULT_FAKES));
    else if (strcmp(protocol, "c_noise") == 0)
        items = n * k * (in->buckets ? in->buckets : g);
    per = ram / ct;
    if (per < 2)
        per = 2;
    out->ciphertexts = (uint64_t)items;
    work = items * C_AEAD + n * C_VERIFY;
    bytes = items * ct;
    steps = 0;
    tasks = 0;
    slow = 0;
    if (strcmp(protocol, "s_agg") == 0) {
        /* Every partial carries every group, padded: max_groups. */
        double partial = g * gb + 64, level = ceil(items / per), f;
        out->token_ram_needed = (size_t)table;
        tasks = level;
        steps = 1;
        bytes += level * partial;
        work += level * (C_VERIFY + per * (C_AEAD + C_GROUP) + partial / 4096 * C_AEAD);
        slow = per * (C_AEAD + C_GROUP);
        f = floor(ram / partial);
        if (f < 2)
            f = 2;
        while (level > 1) {
            level = ceil(level / f);
            tasks += level;
            steps++;
            bytes += level * partial * (f + 1);
            work += level * (C_VERIFY + f * g * C_GROUP + f * partial / 4096 * C_AEAD);
            slow += f * g * C_GROUP;
        }
    } else {
        /* Tagged: the list, the grouping by tag, the filtering; partials
         * carry only their tags' groups. */
        double list = ceil(n / (ram / 40.0)), parts = ceil(items / per);
        out->token_ram_needed = (size_t)table;
        tasks = list + parts + 1;
        steps = 2 + ceil(log(list > 1 ? list : 1) / log(ram / 200.0));
        bytes += n * 40 + parts * (gb * (g / parts > 1 ? g / parts : 1) + 200) + g * gb;
        work += items * C_HASH + parts * C_VERIFY + items * C_GROUP + g * C_GROUP;
        slow = per * (C_AEAD + C_GROUP) + g * C_GROUP;
        if (strcmp(protocol, "shuffle") == 0) {
            uint32_t cap = tk_shuffle_capacity(in->token_ram ? in->token_ram : 65536,
                                               (size_t)tuple_box(in) + 16);
            uint32_t rounds =
                in->rounds ? in->rounds : qr_cost_shuffle_rounds((uint64_t)items, cap);
            double batches = cap ? ceil(items / cap) : items;
            tasks += rounds * batches;
            steps += rounds;
            bytes += rounds * items * ct * 2;
            work += rounds * (items * 2 * C_AEAD + batches * C_VERIFY);
            slow += rounds * (cap * 2 * C_AEAD);
            if (cap < QR_DEFAULT_BATCH_MIN)
                out->feasible = -1;
        }
    }
    out->tasks = (uint64_t)tasks;
    out->steps = (uint32_t)steps;
    out->bytes = (uint64_t)bytes;
    out->token_seconds = work;
    out->seconds = 60.0 + steps * (2 * lat + 0.05) + slow;
    out->feasible = out->feasible == 0 && (double)out->token_ram_needed <= ram;
    return 0;
}

const char *qr_cost_choose(const struct qr_cost_input *in, int max_leakage, struct qr_cost *best)
{
    const char *pick = NULL;
    struct qr_cost c, b;

    memset(&b, 0, sizeof b);
    for (size_t i = 0; i < sizeof protocols / sizeof protocols[0]; i++) {
        if (qr_protocol_leakage(protocols[i]) > max_leakage ||
            strcmp(protocols[i], "ed_hist") == 0 || /* needs a histogram first: named only */
            qr_cost_predict(&c, protocols[i], in) != 0 || !c.feasible)
            continue;
        /* Protocols are tried from the least leaky and simplest; another
         * replaces the pick only when it costs less than half as much. */
        if (pick == NULL || c.token_seconds < 0.5 * b.token_seconds) {
            pick = protocols[i];
            b = c;
        }
    }
    if (pick == NULL) {
        pick = "s_agg";
        qr_cost_predict(&b, pick, in);
    }
    if (best != NULL)
        *best = b;
    return pick;
}
