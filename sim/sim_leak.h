/*
 * sim_leak.h: what the untrusted querier service learns from a run.
 *
 * Two parts. The view (sim_view.c) records, for every exchange the
 * coordinator handles, what the service sees of it: who it talks to, when,
 * what kind of message, and each ciphertext as an opaque identity, a size
 * and, for the tagged protocols, its visible deterministic tag. Message
 * bytes are not kept: a ciphertext costs 32 bytes, an event about 80.
 *
 * The analyzer (sim_leak.c) plays the service as an attacker against that
 * view, with the published result and (worst case) the map from tags to
 * groups, and reports how well it links participants to their group
 * values, how large the crowds it cannot split are, and for the shuffle
 * how well the rounds mix. sim_leak.c's opening comment states the model.
 *
 * Errors: 0, or a negative SIM_LEAK_ERR_* (sim_leak_strerror). Nothing
 * here is thread safe; one view is fed by one thread.
 */
#ifndef COHORT_SIM_LEAK_H
#define COHORT_SIM_LEAK_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SIM_LEAK_ERR_NOMEM (-1)     /* out of memory (also: a message that does not decode) */
#define SIM_LEAK_ERR_INVALID (-2)   /* a NULL, an inconsistent size, an unknown protocol */
#define SIM_LEAK_ERR_TOO_LARGE (-3) /* beyond one of the limits below */

const char *sim_leak_strerror(int code);

#define SIM_VIEW_TAG_LEN 16u
#define SIM_VIEW_MESSAGE_MAX (64u << 20) /* one request or reply the view decodes */
#define SIM_VIEW_CTS_MAX (1u << 31)      /* ciphertexts one view holds */
#define SIM_LEAK_PARTICIPANTS_MAX (1u << 26)
#define SIM_LEAK_GROUPS_MAX (1u << 24)
#define SIM_LEAK_CLASSES_MAX 20000u /* shuffle: round-1 tasks (see sim_leak.c) */
#define SIM_LEAK_PROTOCOL_MAX 15u

/* ------------------------------------------------ the view (sim_view.c) */

/* One ciphertext as the service sees it. */
struct sim_view_ct {
    uint64_t id;   /* first 8 bytes (little-endian) of BLAKE2b-256 of the packed Ciphertext: copies
                      have the same id */
    uint32_t size; /* packed bytes */
    uint8_t has_tag;
    uint8_t tag[SIM_VIEW_TAG_LEN];
};

enum sim_view_kind { SIM_VIEW_UPLOAD = 1, SIM_VIEW_TASK = 2, SIM_VIEW_RESULT = 3 };

struct sim_view_event {
    int64_t t_ms;
    uint64_t who;     /* the participant (token index) at the other end */
    int kind;         /* enum sim_view_kind */
    int status;       /* UPLOAD, RESULT: the TaskResult's own status if non-zero, else the reply's
                         ServiceReply.status (0: accepted, or a late result acknowledged); TASK: 0 */
    uint64_t task_id; /* TASK and RESULT */
    int stage;        /* TASK: AggTask.stage (proto enum Stage) */
    uint32_t level, partition; /* TASK */
    int final;                 /* TASK */
    size_t first_ct, n_ct; /* into cts: an upload's tuples, a task's inputs, a result's partials */
    uint32_t bytes;        /* the message's size on the wire (request, or the reply for TASK) */
};

/* The caller owns the struct; sim_view_free releases the arrays. */
struct sim_view {
    struct sim_view_event *ev;
    size_t n_ev, cap_ev;
    struct sim_view_ct *cts;
    size_t n_cts, cap_cts;
};

void sim_view_init(struct sim_view *v);
void sim_view_free(struct sim_view *v); /* NULL is a no-op; the view is empty and usable after */

/*
 * Record one exchange with the coordinator: a ServiceRequest (req) from
 * participant `who` at t_ms, and the ServiceReply (reply; NULL when
 * reply_len is 0) it got. An Upload becomes an UPLOAD event (its
 * contribution's tuples); a reply carrying WorkReply.task a TASK event (its
 * inputs, stage, level, partition, final, task_id); a TaskResult a RESULT
 * event (its output's partials; none for a failure report). Anything else
 * (work requests answered idle or with collect work, admission, the
 * researcher's side) is not recorded. The bytes are only read. Returns 0,
 * or -1 when out of memory, when a message is larger than
 * SIM_VIEW_MESSAGE_MAX or does not decode, or when a tag is neither empty
 * nor 16 bytes: nothing is recorded then.
 */
int sim_view_record(struct sim_view *v, uint64_t who, int64_t t_ms, const uint8_t *req,
                    size_t req_len, const uint8_t *reply, size_t reply_len);

/*
 * Write the view as CSV: a header line, then one line per ciphertext in
 * record order: event index, t_ms, who, kind (upload, task, result),
 * task_id, stage, level, partition, final, ct id (16 hex digits), size,
 * tag (32 hex digits, or empty). Events without ciphertexts have no line.
 * Returns 0, or -1 on a NULL argument or a write error.
 */
int sim_view_write_csv(const struct sim_view *v, FILE *f);

/* --------------------------------------------- the analyzer (sim_leak.c) */

/* What the analyzer is given besides the view; everything is only read. */
struct sim_leak_input {
    const struct sim_view *view;
    const char *protocol;        /* "s_agg", "rnf_noise", "c_noise", "ed_hist", "shuffle" */
    uint64_t participants;       /* token indices 0..participants-1 */
    const uint32_t *group_first; /* participants + 1 entries (CSR), group_first[0] == 0 */
    const uint32_t *group_ids;   /* participant p's true groups: group_ids[group_first[p] ..
                                    group_first[p+1]) (may be empty: p matched no row) */
    uint32_t n_groups;
    const uint64_t *group_rows;     /* per group: its published COUNT(*) */
    const uint8_t (*group_tag)[16]; /* per group: the tag its real tuples carry (the attacker is
                                       granted it: worst case); groups may share a tag. May be NULL
                                       only when the view carries no tag. */
    const uint8_t *dummy_tag;       /* 16 bytes: the tag a shuffle gives dummy tuples, or NULL */
};

struct sim_leak_report {
    char protocol[SIM_LEAK_PROTOCOL_MAX + 1];
    uint64_t uploads;                    /* accepted uploads seen */
    uint64_t tagged_cts;                 /* tagged items (uploads; shuffle: last-round outputs),
                                            dummy-tagged included */
    uint64_t distinct_tags;              /* among them, dummy tag excluded */
    uint64_t tag_freq_min, tag_freq_max; /* over tags seen (dummy tag excluded) */
    double tag_vs_truth_tv; /* total variation distance between the tag histogram and group_rows
                               aggregated onto tags (0: the histogram is the truth); NAN: no tags */
    uint64_t linked;        /* participants with at least one true group */
    double accuracy;        /* best-guess linking accuracy over them; NAN when linked == 0 */
    double prior_accuracy;  /* guessing the most frequent group for everyone */
    double accuracy_ci;     /* half-width of a 95% interval on accuracy (normal approximation) */
    double anon_min, anon_p10, anon_median; /* anonymity set sizes over linked participants */
    double mix_tv_max, mix_tv_mean;         /* shuffle: round-1 task to last round vs uniform; NAN
                                               otherwise */
    uint32_t shuffle_rounds_seen;
};

/* Analyze a view. Returns 0 with *out filled, or a negative SIM_LEAK_ERR_*
 * (then *out is zeroed with NAN statistics). */
int sim_leak_analyze(struct sim_leak_report *out, const struct sim_leak_input *in);

/* A readable block. */
void sim_leak_print(const struct sim_leak_report *r, FILE *f);

/* One Markdown table row (preceded by the header lines when header != 0),
 * for the side-by-side table of protocols. */
void sim_leak_print_row(const struct sim_leak_report *r, FILE *f, int header);

#endif
