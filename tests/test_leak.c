/*
 * The leakage report: the view recorder fed real packed ServiceRequest and
 * ServiceReply messages, and the analyzer on synthetic views whose answer
 * is known in closed form (a tag per group, every tag once, no tag, a
 * perfect shuffle, a shuffle of one round) or computed by a plain dense
 * reference of the same Bayes rule; hostile inputs in a table.
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

#include "proto/cohort.pb-c.h"
#include "sim/sim.h"
#include "sim/sim_leak.h"

#define STAGE_MERGE 0
#define STAGE_SHUFFLE 2

/* ------------------------------------------------------------ messages */

/* A ciphertext as the tests describe it: the same spec packs to the same
 * bytes, so a forwarded copy keeps its id. */
struct spec {
    uint32_t serial;
    int tagged;
    uint8_t tag[16];
};

static void group_tag(uint8_t tag[16], uint32_t g)
{
    memset(tag, 0, 16);
    tag[0] = 'G';
    memcpy(tag + 1, &g, sizeof g);
}

static const uint8_t dummy_tag[16] = {0xdd, 0xdd, 0xdd, 0xdd, 0xdd, 0xdd, 0xdd, 0xdd,
                                      0xdd, 0xdd, 0xdd, 0xdd, 0xdd, 0xdd, 0xdd, 0xdd};

static struct spec plain(uint32_t serial)
{
    struct spec s;
    memset(&s, 0, sizeof s);
    s.serial = serial;
    return s;
}

static struct spec tagged(uint32_t serial, uint32_t g)
{
    struct spec s = plain(serial);
    s.tagged = 1;
    group_tag(s.tag, g);
    return s;
}

static struct spec dummy(uint32_t serial)
{
    struct spec s = plain(serial);
    s.tagged = 1;
    memcpy(s.tag, dummy_tag, 16);
    return s;
}

/* n Ciphertext messages built from specs (freed with cts_free). */
struct cts {
    Cohort__Ciphertext *ct;
    Cohort__Ciphertext **ptr;
    uint8_t (*nonce)[24];
    uint8_t box[40];
    size_t n;
};

static void cts_build(struct cts *c, const struct spec *s, size_t n)
{
    c->n = n;
    c->ct = calloc(n + 1, sizeof *c->ct);
    c->ptr = calloc(n + 1, sizeof *c->ptr);
    c->nonce = calloc(n + 1, sizeof *c->nonce);
    assert_non_null(c->ct);
    assert_non_null(c->ptr);
    assert_non_null(c->nonce);
    memset(c->box, 0xab, sizeof c->box);
    for (size_t i = 0; i < n; i++) {
        Cohort__Ciphertext *ct = &c->ct[i];
        cohort__ciphertext__init(ct);
        memcpy(c->nonce[i], &s[i].serial, sizeof s[i].serial);
        ct->phase = COHORT__PHASE__PHASE_SHUFFLE;
        ct->nonce.data = c->nonce[i];
        ct->nonce.len = sizeof c->nonce[i];
        ct->box.data = c->box;
        ct->box.len = sizeof c->box;
        if (s[i].tagged) {
            ct->tag.data = (uint8_t *)s[i].tag;
            ct->tag.len = 16;
        }
        c->ptr[i] = ct;
    }
}

static void cts_free(struct cts *c)
{
    free(c->ct);
    free(c->ptr);
    free(c->nonce);
}

static uint8_t *pack_request(const Cohort__ServiceRequest *r, size_t *len)
{
    uint8_t *b;
    *len = cohort__service_request__get_packed_size(r);
    b = malloc(*len + 1);
    assert_non_null(b);
    assert_int_equal(cohort__service_request__pack(r, b), *len);
    return b;
}

static uint8_t *pack_reply(const Cohort__ServiceReply *r, size_t *len)
{
    uint8_t *b;
    *len = cohort__service_reply__get_packed_size(r);
    b = malloc(*len + 1);
    assert_non_null(b);
    assert_int_equal(cohort__service_reply__pack(r, b), *len);
    return b;
}

static uint8_t *status_reply(int status, size_t *len)
{
    Cohort__ServiceReply rp = COHORT__SERVICE_REPLY__INIT;
    rp.status = status;
    return pack_reply(&rp, len);
}

static void record(struct sim_view *v, uint64_t who, uint8_t *req, size_t req_len, uint8_t *rep,
                   size_t rep_len)
{
    assert_int_equal(sim_view_record(v, who, (int64_t)v->n_ev * 10, req, req_len, rep, rep_len), 0);
    free(req);
    free(rep);
}

static void upload_status(struct sim_view *v, uint64_t who, const struct spec *s, size_t n,
                          int status)
{
    Cohort__ServiceRequest rq = COHORT__SERVICE_REQUEST__INIT;
    Cohort__Upload up = COHORT__UPLOAD__INIT;
    Cohort__Contribution co = COHORT__CONTRIBUTION__INIT;
    struct cts c;
    size_t lq, lp;
    uint8_t *q, *p;

    cts_build(&c, s, n);
    co.n_tuples = n;
    co.tuples = c.ptr;
    up.contribution = &co;
    rq.body_case = COHORT__SERVICE_REQUEST__BODY_UPLOAD;
    rq.upload = &up;
    q = pack_request(&rq, &lq);
    p = status_reply(status, &lp);
    record(v, who, q, lq, p, lp);
    cts_free(&c);
}

static void upload(struct sim_view *v, uint64_t who, const struct spec *s, size_t n)
{
    upload_status(v, who, s, n, 0);
}

static void task(struct sim_view *v, uint64_t who, uint64_t task_id, int stage, uint32_t level,
                 uint32_t partition, const struct spec *s, size_t n)
{
    Cohort__ServiceRequest rq = COHORT__SERVICE_REQUEST__INIT;
    Cohort__WorkRequest wr = COHORT__WORK_REQUEST__INIT;
    Cohort__ServiceReply rp = COHORT__SERVICE_REPLY__INIT;
    Cohort__WorkReply w = COHORT__WORK_REPLY__INIT;
    Cohort__AggTask t = COHORT__AGG_TASK__INIT;
    struct cts c;
    size_t lq, lp;
    uint8_t *q, *p;

    cts_build(&c, s, n);
    rq.body_case = COHORT__SERVICE_REQUEST__BODY_WORK;
    rq.work = &wr;
    t.task_id = task_id;
    t.stage = (Cohort__Stage)stage;
    t.level = level;
    t.partition = partition;
    t.n_inputs = n;
    t.inputs = c.ptr;
    w.work_case = COHORT__WORK_REPLY__WORK_TASK;
    w.task = &t;
    rp.work = &w;
    q = pack_request(&rq, &lq);
    p = pack_reply(&rp, &lp);
    record(v, who, q, lq, p, lp);
    cts_free(&c);
}

static void result(struct sim_view *v, uint64_t who, uint64_t task_id, int status,
                   const struct spec *s, size_t n)
{
    Cohort__ServiceRequest rq = COHORT__SERVICE_REQUEST__INIT;
    Cohort__TaskResult r = COHORT__TASK_RESULT__INIT;
    Cohort__AggOutput out = COHORT__AGG_OUTPUT__INIT;
    struct cts c;
    size_t lq, lp;
    uint8_t *q, *p;

    cts_build(&c, s, n);
    r.task_id = task_id;
    r.status = status;
    if (status == 0) {
        out.n_partials = n;
        out.partials = c.ptr;
        r.output = &out;
    }
    rq.body_case = COHORT__SERVICE_REQUEST__BODY_RESULT;
    rq.result = &r;
    q = pack_request(&rq, &lq);
    p = status_reply(0, &lp);
    record(v, who, q, lq, p, lp);
    cts_free(&c);
}

/* ------------------------------------------------------------ truth */

/* The truth of participants with at most one group each (group[p] < 0:
 * none), rows = participants having the group. */
struct truth {
    uint32_t *first, *ids;
    uint64_t *rows;
    uint8_t (*tags)[16];
    uint32_t n_groups;
    uint64_t participants;
};

static void truth_build(struct truth *t, const int *group, uint64_t participants, uint32_t n_groups,
                        const uint32_t *tag_of_group)
{
    uint32_t k = 0;

    t->participants = participants;
    t->n_groups = n_groups;
    t->first = calloc(participants + 1, sizeof *t->first);
    t->ids = calloc(participants + 1, sizeof *t->ids);
    t->rows = calloc(n_groups + 1, sizeof *t->rows);
    t->tags = calloc(n_groups + 1, sizeof *t->tags);
    assert_true(t->first && t->ids && t->rows && t->tags);
    for (uint64_t p = 0; p < participants; p++) {
        t->first[p] = k;
        if (group[p] >= 0) {
            t->ids[k++] = (uint32_t)group[p];
            t->rows[group[p]]++;
        }
    }
    t->first[participants] = k;
    for (uint32_t g = 0; g < n_groups; g++)
        group_tag(t->tags[g], tag_of_group ? tag_of_group[g] : g);
}

static void truth_free(struct truth *t)
{
    free(t->first);
    free(t->ids);
    free(t->rows);
    free(t->tags);
}

static struct sim_leak_input input(const struct sim_view *v, const char *protocol,
                                   const struct truth *t)
{
    struct sim_leak_input in;
    memset(&in, 0, sizeof in);
    in.view = v;
    in.protocol = protocol;
    in.participants = t->participants;
    in.group_first = t->first;
    in.group_ids = t->ids;
    in.n_groups = t->n_groups;
    in.group_rows = t->rows;
    in.group_tag = (const uint8_t(*)[16])t->tags;
    return in;
}

/* 60 participants: 10 in group 0, 20 in group 1, 30 in group 2. */
#define P60 60
static int group60(uint64_t p)
{
    return p < 10 ? 0 : p < 30 ? 1 : 2;
}

/* ------------------------------------------------------------ the view */

static void the_recorder_keeps_uploads_tasks_and_results_and_nothing_else(void **state)
{
    struct sim_view v;
    struct spec s[3] = {tagged(1, 7), plain(2), plain(3)};
    Cohort__ServiceRequest rq = COHORT__SERVICE_REQUEST__INIT;
    Cohort__WorkRequest wr = COHORT__WORK_REQUEST__INIT;
    Cohort__ServiceReply rp = COHORT__SERVICE_REPLY__INIT;
    Cohort__WorkReply w = COHORT__WORK_REPLY__INIT;
    size_t lq, lp;
    uint8_t *q, *p;
    (void)state;

    sim_view_init(&v);
    upload(&v, 4, s, 2);
    /* A work request answered idle is not recorded. */
    rq.body_case = COHORT__SERVICE_REQUEST__BODY_WORK;
    rq.work = &wr;
    w.retry_after_ms = 500;
    rp.work = &w;
    q = pack_request(&rq, &lq);
    p = pack_reply(&rp, &lp);
    record(&v, 5, q, lq, p, lp);
    assert_int_equal(v.n_ev, 1);
    task(&v, 6, 9, STAGE_MERGE, 1, 3, s, 3);
    result(&v, 6, 9, 0, s + 2, 1);
    result(&v, 7, 9, -4, NULL, 0); /* a failure report: no partials */

    assert_int_equal(v.n_ev, 4);
    assert_int_equal(v.n_cts, 6);
    assert_int_equal(v.ev[0].kind, SIM_VIEW_UPLOAD);
    assert_int_equal(v.ev[0].who, 4);
    assert_int_equal(v.ev[0].n_ct, 2);
    assert_int_equal(v.ev[0].first_ct, 0);
    assert_true(v.cts[0].has_tag);
    assert_false(v.cts[1].has_tag);
    {
        uint8_t t7[16];
        group_tag(t7, 7);
        assert_memory_equal(v.cts[0].tag, t7, 16);
    }
    assert_int_equal(v.ev[1].kind, SIM_VIEW_TASK);
    assert_int_equal(v.ev[1].task_id, 9);
    assert_int_equal(v.ev[1].level, 1);
    assert_int_equal(v.ev[1].partition, 3);
    assert_int_equal(v.ev[1].stage, STAGE_MERGE);
    assert_int_equal(v.ev[1].first_ct, 2);
    assert_int_equal(v.ev[1].n_ct, 3);
    assert_true(v.ev[0].bytes > 0 && v.ev[1].bytes > v.ev[0].bytes);
    assert_int_equal(v.ev[2].kind, SIM_VIEW_RESULT);
    assert_int_equal(v.ev[2].status, 0);
    assert_int_equal(v.ev[3].status, -4);
    assert_int_equal(v.ev[3].n_ct, 0);
    sim_view_free(&v);
    sim_view_free(NULL);
}

static void a_forwarded_copy_of_a_ciphertext_keeps_its_id(void **state)
{
    struct sim_view v;
    struct spec s[2] = {tagged(1, 0), plain(2)}, t[2] = {plain(2), tagged(3, 0)};
    (void)state;

    sim_view_init(&v);
    upload(&v, 0, s, 2);
    task(&v, 1, 1, STAGE_MERGE, 1, 0, t, 2);
    assert_int_equal(v.n_cts, 4);
    assert_true(v.cts[1].id == v.cts[2].id); /* serial 2 */
    assert_true(v.cts[0].id != v.cts[1].id);
    assert_true(v.cts[0].id != v.cts[3].id); /* same tag, another ciphertext */
    assert_int_equal(v.cts[1].size, v.cts[2].size);
    assert_int_equal(v.cts[0].size, v.cts[1].size + 18); /* the tag field: 2 + 16 bytes */
    sim_view_free(&v);
}

static void a_message_that_does_not_decode_changes_nothing(void **state)
{
    struct sim_view v;
    struct spec s[2] = {tagged(1, 0), plain(2)};
    static const uint8_t junk[] = {0x12, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01};
    Cohort__ServiceRequest rq = COHORT__SERVICE_REQUEST__INIT;
    Cohort__Upload up = COHORT__UPLOAD__INIT;
    Cohort__Contribution co = COHORT__CONTRIBUTION__INIT;
    struct cts c;
    size_t lq, lp, n_ev, n_cts;
    uint8_t *q, *p;
    (void)state;

    sim_view_init(&v);
    upload(&v, 0, s, 2);
    n_ev = v.n_ev;
    n_cts = v.n_cts;

    /* A request, then a reply, that do not decode. */
    p = status_reply(0, &lp);
    assert_int_equal(sim_view_record(&v, 1, 5, junk, sizeof junk, p, lp), -1);
    cts_build(&c, s, 2);
    co.n_tuples = 2;
    co.tuples = c.ptr;
    up.contribution = &co;
    rq.body_case = COHORT__SERVICE_REQUEST__BODY_UPLOAD;
    rq.upload = &up;
    q = pack_request(&rq, &lq);
    assert_int_equal(sim_view_record(&v, 1, 5, q, lq, junk, sizeof junk), -1);
    /* Too large, a NULL with a length, no view. */
    assert_int_equal(sim_view_record(&v, 1, 5, q, (size_t)SIM_VIEW_MESSAGE_MAX + 1, p, lp), -1);
    assert_int_equal(sim_view_record(&v, 1, 5, NULL, 3, p, lp), -1);
    assert_int_equal(sim_view_record(NULL, 1, 5, q, lq, p, lp), -1);
    free(q);
    /* A tag of the wrong length, in the second tuple: the first is not kept either. */
    c.ct[1].tag.data = c.box;
    c.ct[1].tag.len = 5;
    q = pack_request(&rq, &lq);
    assert_int_equal(sim_view_record(&v, 1, 5, q, lq, p, lp), -1);
    assert_int_equal(v.n_ev, n_ev);
    assert_int_equal(v.n_cts, n_cts);
    free(q);
    free(p);
    cts_free(&c);

    /* The view still works. */
    upload(&v, 1, s, 1);
    assert_int_equal(v.n_ev, n_ev + 1);
    assert_int_equal(v.ev[n_ev].first_ct, n_cts);
    sim_view_free(&v);
}

static void the_csv_has_a_header_and_one_line_per_ciphertext(void **state)
{
    struct sim_view v;
    struct spec s[3] = {tagged(1, 2), plain(2), plain(3)};
    FILE *f = tmpfile();
    char line[512];
    size_t lines = 0;
    int saw_tagged = 0, saw_plain = 0;
    (void)state;

    assert_non_null(f);
    sim_view_init(&v);
    upload(&v, 3, s, 3);
    task(&v, 4, 1, STAGE_SHUFFLE, 1, 0, s, 2);
    result(&v, 4, 1, -3, NULL, 0); /* no ciphertext, no line */
    result(&v, 4, 1, 0, s + 2, 1);
    assert_int_equal(sim_view_write_csv(&v, f), 0);
    rewind(f);
    assert_non_null(fgets(line, sizeof line, f));
    assert_string_equal(line, "event,t_ms,who,kind,task_id,stage,level,partition,final,ct_id,"
                              "size,tag\n");
    while (fgets(line, sizeof line, f) != NULL) {
        size_t commas = 0;
        for (char *c = line; *c; c++)
            commas += *c == ',';
        assert_int_equal(commas, 11);
        if (strstr(line, ",47020000000000000000000000000000\n") != NULL) /* 'G', group 2 */
            saw_tagged++;
        if (line[strlen(line) - 2] == ',')
            saw_plain++;
        lines++;
    }
    assert_int_equal(lines, v.n_cts);
    assert_int_equal(lines, 6);
    assert_int_equal(saw_tagged, 2); /* the upload's and the task's copy */
    assert_int_equal(saw_plain, 4);
    assert_int_equal(sim_view_write_csv(NULL, f), -1);
    fclose(f);
    sim_view_free(&v);
}

/* ------------------------------------------------------------ uploads */

static void a_tag_per_group_links_everyone_and_crowds_are_the_groups(void **state)
{
    struct sim_view v;
    struct truth t;
    struct sim_leak_report r;
    struct sim_leak_input in;
    int group[P60];
    (void)state;

    sim_view_init(&v);
    for (uint64_t p = 0; p < P60; p++) {
        struct spec s = tagged((uint32_t)p, (uint32_t)group60(p));
        group[p] = group60(p);
        upload(&v, p, &s, 1);
    }
    truth_build(&t, group, P60, 3, NULL);
    in = input(&v, "ed_hist", &t);
    assert_int_equal(sim_leak_analyze(&r, &in), 0);
    assert_string_equal(r.protocol, "ed_hist");
    assert_int_equal(r.uploads, P60);
    assert_int_equal(r.tagged_cts, P60);
    assert_int_equal(r.distinct_tags, 3);
    assert_int_equal(r.tag_freq_min, 10);
    assert_int_equal(r.tag_freq_max, 30);
    assert_true(fabs(r.tag_vs_truth_tv) < 1e-12);
    assert_int_equal(r.linked, P60);
    assert_true(r.accuracy == 1.0);
    assert_true(r.accuracy_ci == 0.0);
    assert_true(fabs(r.prior_accuracy - 0.5) < 1e-12);
    /* Sizes: 10 x 10, 20 x 20, 30 x 30. */
    assert_true(r.anon_min == 10);
    assert_true(r.anon_p10 == 10);
    assert_true(fabs(r.anon_median - 25) < 1e-12);
    assert_true(isnan(r.mix_tv_max) && isnan(r.mix_tv_mean));
    assert_int_equal(r.shuffle_rounds_seen, 0);
    truth_free(&t);
    sim_view_free(&v);
}

static void every_tag_once_tells_no_more_than_the_published_counts(void **state)
{
    struct sim_view v;
    struct truth t;
    struct sim_leak_report r;
    struct sim_leak_input in;
    int group[P60];
    (void)state;

    sim_view_init(&v);
    for (uint64_t p = 0; p < P60; p++) {
        /* The real tag at a different place for each participant. */
        struct spec s[3];
        for (uint32_t k = 0; k < 3; k++)
            s[k] = tagged((uint32_t)(3 * p + k), (uint32_t)((k + p) % 3));
        group[p] = group60(p);
        upload(&v, p, s, 3);
    }
    truth_build(&t, group, P60, 3, NULL);
    in = input(&v, "c_noise", &t);
    assert_int_equal(sim_leak_analyze(&r, &in), 0);
    assert_true(r.accuracy == r.prior_accuracy);
    assert_true(fabs(r.accuracy - 0.5) < 1e-12);
    assert_true(r.anon_min == P60 && r.anon_median == P60);
    assert_int_equal(r.tagged_cts, 3 * P60);
    assert_int_equal(r.tag_freq_min, P60);
    assert_int_equal(r.tag_freq_max, P60);
    /* Uniform tags against 1/6, 1/3, 1/2. */
    assert_true(fabs(r.tag_vs_truth_tv - 1.0 / 6) < 1e-12);
    truth_free(&t);
    sim_view_free(&v);
}

static void untagged_uploads_leave_everyone_in_one_crowd(void **state)
{
    struct sim_view v;
    struct truth t;
    struct sim_leak_report r;
    struct sim_leak_input in;
    int group[P60 + 10];
    (void)state;

    sim_view_init(&v);
    for (uint64_t p = 0; p < P60 + 10; p++) {
        struct spec s[2] = {plain((uint32_t)(2 * p)), plain((uint32_t)(2 * p + 1))};
        group[p] = p < P60 ? group60(p) : -1; /* the last ten matched no row */
        upload(&v, p, s, 2);
    }
    truth_build(&t, group, P60 + 10, 3, NULL);
    in = input(&v, "s_agg", &t);
    assert_int_equal(sim_leak_analyze(&r, &in), 0);
    assert_int_equal(r.uploads, P60 + 10);
    assert_int_equal(r.linked, P60);
    assert_true(r.accuracy == r.prior_accuracy);
    assert_true(r.anon_min == P60 + 10 && r.anon_p10 == P60 + 10);
    assert_int_equal(r.tagged_cts, 0);
    assert_int_equal(r.distinct_tags, 0);
    assert_true(isnan(r.tag_vs_truth_tv));
    /* Without any tag in the view, the tag map may be left out. */
    in.group_tag = NULL;
    assert_int_equal(sim_leak_analyze(&r, &in), 0);
    assert_true(r.accuracy == r.prior_accuracy);
    truth_free(&t);
    sim_view_free(&v);
}

/* p0 is in groups 1 and 2 (2 listed three times), p1 in 1, p2 in 0. */
static void a_participant_in_several_groups_is_linked_by_any_of_them(void **state)
{
    static uint32_t first[4] = {0, 4, 5, 6}, ids[6] = {1, 2, 2, 2, 1, 0};
    static uint64_t rows[3] = {1, 2, 1};
    struct sim_view v;
    struct sim_leak_report r;
    struct sim_leak_input in;
    (void)state;

    sim_view_init(&v);
    for (uint64_t p = 0; p < 3; p++) {
        struct spec s = plain((uint32_t)p);
        upload(&v, p, &s, 1);
    }
    memset(&in, 0, sizeof in);
    in.view = &v;
    in.protocol = "s_agg";
    in.participants = 3;
    in.group_first = first;
    in.group_ids = ids;
    in.n_groups = 3;
    in.group_rows = rows;
    assert_int_equal(sim_leak_analyze(&r, &in), 0);
    assert_int_equal(r.linked, 3);
    assert_true(fabs(r.accuracy - 2.0 / 3) < 1e-12);       /* the guess: group 1 */
    assert_true(fabs(r.prior_accuracy - 2.0 / 3) < 1e-12); /* group 2 has one participant */
    assert_true(r.anon_min == 3);
    sim_view_free(&v);
}

/*
 * A plain reference of the upload rule: post(g) proportional to
 * m_tag(g) rows(g), dense, for every participant; its argmax (smallest
 * index on ties) and its rounded vector, compared pairwise.
 */
#define RP 240
#define RG 8
#define RT 4 /* groups g and g + 4 share tag g % 4; tag 5 only fakes carry */
static void the_upload_attack_matches_a_plain_reference(void **state)
{
    struct sim_view v;
    struct truth t;
    struct sim_leak_report r;
    struct sim_leak_input in;
    static int group[RP], m[RP][RT + 2], rounded[RP][RG];
    uint32_t tag_of[RG];
    uint64_t correct = 0, linked = 0, rng = 99, having[RG] = {0}, best = 0;
    double sizes[RP], z;
    size_t n = 0;
    uint64_t distinct = 0;
    (void)state;

    for (uint32_t g = 0; g < RG; g++)
        tag_of[g] = g % RT;
    sim_view_init(&v);
    memset(m, 0, sizeof m);
    for (uint64_t p = 0; p < RP; p++) {
        struct spec s[3];
        double u = sim_uniform(&rng);
        /* Skewed groups; one participant in twelve has none (but uploads). */
        group[p] = p % 12 == 5 ? -1 : (int)(u * u * RG);
        s[0] = tagged((uint32_t)(3 * p), group[p] >= 0 ? tag_of[group[p]] : 5);
        for (int k = 1; k < 3; k++)
            s[k] = tagged((uint32_t)(3 * p + k), (uint32_t)(sim_uniform(&rng) * (RT + 2)));
        for (int k = 0; k < 3; k++)
            m[p][s[k].tag[1]]++;
        upload(&v, p, s, 3);
    }
    truth_build(&t, group, RP, RG, tag_of);
    in = input(&v, "rnf_noise", &t);
    assert_int_equal(sim_leak_analyze(&r, &in), 0);

    for (uint64_t p = 0; p < RP; p++) {
        double sc[RG], b = -1;
        int guess = -1;
        z = 0;
        for (int g = 0; g < RG; g++)
            z += sc[g] = (double)m[p][tag_of[g]] * (double)t.rows[g];
        for (int g = 0; g < RG; g++) {
            if (z == 0)
                sc[g] = (double)t.rows[g];
            if (sc[g] > b) {
                b = sc[g];
                guess = g;
            }
        }
        if (z == 0)
            for (int g = 0; g < RG; g++)
                z += sc[g];
        for (int g = 0; g < RG; g++)
            rounded[p][g] = (int)lround(sc[g] / z * 100);
        if (group[p] >= 0) {
            linked++;
            correct += guess == group[p];
            having[group[p]]++;
        }
    }
    for (int g = 0; g < RG; g++)
        best = having[g] > best ? having[g] : best;
    for (int k = 0; k < RT + 2; k++) {
        uint64_t seen = 0;
        for (uint64_t p = 0; p < RP; p++)
            seen += (uint64_t)m[p][k];
        distinct += seen > 0;
    }
    for (uint64_t p = 0; p < RP; p++) {
        double same = 0;
        if (group[p] < 0)
            continue;
        for (uint64_t q = 0; q < RP; q++)
            same += memcmp(rounded[p], rounded[q], sizeof rounded[p]) == 0;
        sizes[n++] = same;
    }
    for (size_t i = 1; i < n; i++) /* insertion sort */
        for (size_t j = i; j > 0 && sizes[j - 1] > sizes[j]; j--) {
            double x = sizes[j];
            sizes[j] = sizes[j - 1];
            sizes[j - 1] = x;
        }

    assert_int_equal(r.linked, linked);
    assert_true(fabs(r.accuracy - (double)correct / (double)linked) < 1e-12);
    assert_true(fabs(r.prior_accuracy - (double)best / (double)linked) < 1e-12);
    assert_true(r.accuracy > r.prior_accuracy && r.accuracy < 1);
    assert_true(r.anon_min == sizes[0]);
    assert_int_equal(n, 220); /* so p10 sits at 21.9, the median at 109.5 */
    assert_true(fabs(r.anon_p10 - (sizes[21] + 0.9 * (sizes[22] - sizes[21]))) < 1e-9);
    assert_true(fabs(r.anon_median - (sizes[109] + 0.5 * (sizes[110] - sizes[109]))) < 1e-9);
    assert_int_equal(r.distinct_tags, distinct); /* tags only fakes carry count too */
    assert_true(distinct > RT);
    assert_true(r.tag_vs_truth_tv > 0);
    truth_free(&t);
    sim_view_free(&v);
}

/*
 * Two groups of 100 published rows each, tagged apart. Uploads of (1, 1)
 * tuples per tag give (0.50, 0.50); (13, 12) and (27, 25) give 0.52 and
 * 0.519 for group 0, equal to two decimals (not to three); (12, 13) gives
 * 0.48. The (1, 1) tie goes to group 0.
 */
static void posteriors_equal_to_two_decimals_share_a_crowd_and_ties_go_to_group_0(void **state)
{
    static const uint32_t mult[6][2] = {{1, 1}, {1, 1}, {13, 12}, {13, 12}, {27, 25}, {12, 13}};
    static const int group[6] = {0, 0, 0, 1, 0, 1};
    struct sim_view v;
    struct truth t;
    struct sim_leak_report r;
    struct sim_leak_input in;
    (void)state;

    sim_view_init(&v);
    for (uint64_t p = 0; p < 6; p++) {
        struct spec s[64];
        size_t n = 0;
        for (uint32_t g = 0; g < 2; g++)
            for (uint32_t k = 0; k < mult[p][g]; k++, n++)
                s[n] = tagged((uint32_t)(p * 100 + n), g);
        upload(&v, p, s, n);
    }
    truth_build(&t, group, 6, 2, NULL);
    t.rows[0] = t.rows[1] = 100;
    in = input(&v, "rnf_noise", &t);
    assert_int_equal(sim_leak_analyze(&r, &in), 0);
    assert_true(fabs(r.accuracy - 5.0 / 6) < 1e-12);
    assert_true(fabs(r.prior_accuracy - 4.0 / 6) < 1e-12);
    /* Crowds 2, 2, 3, 3, 3, 1. */
    assert_true(r.anon_min == 1);
    assert_true(fabs(r.anon_p10 - 1.5) < 1e-12);
    assert_true(fabs(r.anon_median - 2.5) < 1e-12);
    truth_free(&t);
    sim_view_free(&v);
}

/* ------------------------------------------------------------ shuffle */

/*
 * A shuffle over B x B participants, one item each (and, with dummies, a
 * dummy item each too). Batch c (participants c*B .. c*B+B-1) is round-1
 * task c. Groups are concentrated in batches: batches 0-2 are group 0,
 * 3-4 group 1, 5 group 2. With two rounds, output i of round-1 task c
 * goes to round-2 task i, so every round-2 task holds one item of every
 * batch; the last round's outputs carry their items' tags.
 */
#define B 6
static int batch_group(uint32_t c)
{
    return c < 3 ? 0 : c < 5 ? 1 : 2;
}

static void shuffle_view(struct sim_view *v, int rounds, int dummies, int reissue)
{
    uint32_t per = dummies ? 2 : 1, serial_up = 0, serial_r1 = 100000, serial_r2 = 200000;
    struct spec in1[B * 2], out1[B * 2], in2[B * 2], out2[B * 2];

    for (uint32_t p = 0; p < B * B; p++) {
        struct spec s[2] = {plain(serial_up + 2 * p), plain(serial_up + 2 * p + 1)};
        upload(v, p, s, per);
    }
    /* Round 1: task c has batch c's items, in order. */
    for (uint32_t c = 0; c < B; c++) {
        size_t n = 0;
        for (uint32_t i = 0; i < B; i++)
            for (uint32_t d = 0; d < per; d++)
                in1[n++] = plain(serial_up + 2 * (c * B + i) + d);
        task(v, 1000 + c, 1 + c, STAGE_SHUFFLE, 1, c, in1, n);
        if (reissue && c == 1) {
            result(v, 1000 + c, 1 + c, -7, NULL, 0); /* failed, then re-issued */
            task(v, 2000 + c, 1 + c, STAGE_SHUFFLE, 1, c, in1, n);
        }
        for (uint32_t i = 0; i < n; i++) {
            uint32_t item = c * B + i / per, is_dummy = i % per;
            if (rounds == 1)
                out1[i] = is_dummy
                              ? dummy(serial_r1 + c * 100 + i)
                              : tagged(serial_r1 + c * 100 + i, (uint32_t)batch_group(item / B));
            else
                out1[i] = plain(serial_r1 + c * 100 + i);
        }
        result(v, 1000 + c, 1 + c, 0, out1, n);
    }
    if (rounds == 1)
        return;
    /* Round 2: task i takes output i (and its dummy) of every round-1 task. */
    for (uint32_t i = 0; i < B; i++) {
        size_t n = 0;
        for (uint32_t c = 0; c < B; c++) {
            for (uint32_t d = 0; d < per; d++) {
                uint32_t k = i * per + d;
                in2[n] = plain(serial_r1 + c * 100 + k);
                out2[n] = d ? dummy(serial_r2 + i * 100 + (uint32_t)n)
                            : tagged(serial_r2 + i * 100 + (uint32_t)n, (uint32_t)batch_group(c));
                n++;
            }
        }
        task(v, 3000 + i, 100 + i, STAGE_SHUFFLE, 2, i, in2, n);
        result(v, 3000 + i, 100 + i, 0, out2, n);
        if (reissue && i == 2) {
            /* A late second result for the same task, its items all claiming
             * group 2: acknowledged by the service, and ignored here. */
            struct spec late[B * 2];
            for (size_t k = 0; k < n; k++)
                late[k] = tagged(serial_r2 + 90000 + (uint32_t)k, 2);
            result(v, 4000 + i, 100 + i, 0, late, n);
        }
    }
}

static void shuffle_truth(struct truth *t)
{
    int group[B * B];
    for (uint32_t p = 0; p < B * B; p++)
        group[p] = batch_group(p / B);
    truth_build(t, group, B * B, 3, NULL);
}

static void a_perfect_two_round_shuffle_tells_no_more_than_the_published_counts(void **state)
{
    struct sim_view v;
    struct truth t;
    struct sim_leak_report r;
    struct sim_leak_input in;
    (void)state;

    for (int variant = 0; variant < 3; variant++) {
        int dummies = variant >= 1, reissue = variant == 2;
        sim_view_init(&v);
        shuffle_view(&v, 2, dummies, reissue);
        shuffle_truth(&t);
        in = input(&v, "shuffle", &t);
        in.dummy_tag = dummy_tag;
        assert_int_equal(sim_leak_analyze(&r, &in), 0);
        assert_int_equal(r.shuffle_rounds_seen, 2);
        assert_int_equal(r.uploads, B * B);
        assert_int_equal(r.linked, B * B);
        assert_true(fabs(r.prior_accuracy - 0.5) < 1e-12);
        assert_true(r.accuracy == r.prior_accuracy);
        assert_true(r.mix_tv_max < 1e-12);
        assert_true(r.mix_tv_mean < 1e-12);
        assert_true(r.anon_min == B * B);
        assert_int_equal(r.tagged_cts, (uint64_t)B * B * (dummies ? 2 : 1));
        assert_int_equal(r.distinct_tags, 3);
        assert_int_equal(r.tag_freq_min, B);
        assert_int_equal(r.tag_freq_max, 3 * B);
        assert_true(fabs(r.tag_vs_truth_tv) < 1e-12);
        truth_free(&t);
        sim_view_free(&v);
    }
}

static void one_round_of_shuffle_leaks_groups_concentrated_in_batches(void **state)
{
    struct sim_view v;
    struct truth t;
    struct sim_leak_report r;
    struct sim_leak_input in;
    (void)state;

    for (int dummies = 0; dummies < 2; dummies++) {
        sim_view_init(&v);
        shuffle_view(&v, 1, dummies, 0);
        shuffle_truth(&t);
        in = input(&v, "shuffle", &t);
        in.dummy_tag = dummy_tag;
        assert_int_equal(sim_leak_analyze(&r, &in), 0);
        assert_int_equal(r.shuffle_rounds_seen, 1);
        assert_true(r.accuracy > r.prior_accuracy);
        assert_true(r.accuracy == 1.0);
        /* Every batch stays in its task: 1 - 1/B from uniform. */
        assert_true(fabs(r.mix_tv_max - (1 - 1.0 / B)) < 1e-12);
        assert_true(fabs(r.mix_tv_mean - (1 - 1.0 / B)) < 1e-12);
        /* Crowds: the groups (18, 12, 6 participants). */
        assert_true(r.anon_min == B);
        assert_true(fabs(r.anon_median - 15) < 1e-12);
        truth_free(&t);
        sim_view_free(&v);
    }
}

static void a_shuffle_task_without_a_result_loses_its_items_to_the_prior(void **state)
{
    struct sim_view v;
    struct truth t;
    struct sim_leak_report r;
    struct sim_leak_input in;
    struct spec s[B];
    (void)state;

    /* Round 1 only, with batch 5 (group 2) never answered: its six
     * participants fall back to the published counts (guess: group 0). */
    sim_view_init(&v);
    for (uint32_t p = 0; p < B * B; p++) {
        struct spec u = plain(p);
        upload(&v, p, &u, 1);
    }
    for (uint32_t c = 0; c < B; c++) {
        for (uint32_t i = 0; i < B; i++)
            s[i] = plain(c * B + i);
        task(&v, 1000 + c, 1 + c, STAGE_SHUFFLE, 1, c, s, B);
        if (c == B - 1)
            continue;
        for (uint32_t i = 0; i < B; i++)
            s[i] = tagged(100000 + c * 100 + i, (uint32_t)batch_group(c));
        result(&v, 1000 + c, 1 + c, 0, s, B);
    }
    shuffle_truth(&t);
    in = input(&v, "shuffle", &t);
    assert_int_equal(sim_leak_analyze(&r, &in), 0);
    assert_true(fabs(r.accuracy - 30.0 / 36) < 1e-12);
    assert_true(r.anon_min == 6); /* the lost batch, alone with the prior */
    assert_true(fabs(r.tag_vs_truth_tv - 1.0 / 6) < 1e-12);
    truth_free(&t);
    sim_view_free(&v);
}

/*
 * One round over four batches of four: batch 0 holds groups (0, 0, 0, 1),
 * the others group 1 only, so group 1 is published 13 times and group 0
 * three. A batch's outputs are its own items: batch 0's participants are
 * group 0 with probability 3/4 whatever the global counts (weighing the
 * tags by them, as for uploads, would guess group 1: 3 x 3 < 1 x 13).
 */
static void a_shuffle_batch_reveals_its_own_mix_whatever_the_global_counts(void **state)
{
    static const int group[16] = {0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    struct sim_view v;
    struct truth t;
    struct sim_leak_report r;
    struct sim_leak_input in;
    struct spec s[4];
    (void)state;

    sim_view_init(&v);
    for (uint32_t p = 0; p < 16; p++) {
        struct spec u = plain(p);
        upload(&v, p, &u, 1);
    }
    for (uint32_t c = 0; c < 4; c++) {
        for (uint32_t i = 0; i < 4; i++)
            s[i] = plain(c * 4 + i);
        task(&v, 100 + c, 1 + c, STAGE_SHUFFLE, 1, c, s, 4);
        for (uint32_t i = 0; i < 4; i++) /* outputs in another order */
            s[i] = tagged(1000 + c * 10 + i, (uint32_t)group[c * 4 + (i + 1) % 4]);
        result(&v, 100 + c, 1 + c, 0, s, 4);
    }
    truth_build(&t, group, 16, 2, NULL);
    in = input(&v, "shuffle", &t);
    assert_int_equal(sim_leak_analyze(&r, &in), 0);
    assert_true(fabs(r.accuracy - 15.0 / 16) < 1e-12);
    assert_true(fabs(r.prior_accuracy - 13.0 / 16) < 1e-12);
    assert_true(r.anon_min == 4);
    assert_true(r.anon_median == 12);
    truth_free(&t);
    sim_view_free(&v);
}

/* ------------------------------------------------------------ hostile */

enum bad {
    BAD_NULL_IN,
    BAD_NULL_VIEW,
    BAD_PROTOCOL,
    BAD_NULL_FIRST,
    BAD_FIRST_NOT_ZERO,
    BAD_FIRST_DECREASES,
    BAD_GROUP_ID,
    BAD_NULL_ROWS,
    BAD_WHO,
    BAD_EVENT_RANGE,
    BAD_KIND,
    BAD_TAGS_WITHOUT_MAP,
    BAD_TOO_MANY_PARTICIPANTS,
};

static void bad_inputs_are_refused_with_their_error(void **state)
{
    static const struct {
        enum bad bad;
        int rc;
    } cases[] = {
        {BAD_NULL_IN, SIM_LEAK_ERR_INVALID},
        {BAD_NULL_VIEW, SIM_LEAK_ERR_INVALID},
        {BAD_PROTOCOL, SIM_LEAK_ERR_INVALID},
        {BAD_NULL_FIRST, SIM_LEAK_ERR_INVALID},
        {BAD_FIRST_NOT_ZERO, SIM_LEAK_ERR_INVALID},
        {BAD_FIRST_DECREASES, SIM_LEAK_ERR_INVALID},
        {BAD_GROUP_ID, SIM_LEAK_ERR_INVALID},
        {BAD_NULL_ROWS, SIM_LEAK_ERR_INVALID},
        {BAD_WHO, SIM_LEAK_ERR_INVALID},
        {BAD_EVENT_RANGE, SIM_LEAK_ERR_INVALID},
        {BAD_KIND, SIM_LEAK_ERR_INVALID},
        {BAD_TAGS_WITHOUT_MAP, SIM_LEAK_ERR_INVALID},
        {BAD_TOO_MANY_PARTICIPANTS, SIM_LEAK_ERR_TOO_LARGE},
    };
    struct sim_view v;
    struct truth t;
    struct sim_leak_report r;
    int group[4] = {0, 1, 1, -1};
    (void)state;

    sim_view_init(&v);
    for (uint64_t p = 0; p < 4; p++) {
        struct spec s = tagged((uint32_t)p, group[p] >= 0 ? (uint32_t)group[p] : 0);
        upload(&v, p, &s, 1);
    }
    truth_build(&t, group, 4, 2, NULL);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct sim_leak_input in = input(&v, "c_noise", &t);
        struct sim_view bad_view = v;
        struct sim_view_event ev[4];
        uint32_t first[5];
        uint32_t ids[3];

        memcpy(ev, v.ev, sizeof ev);
        memcpy(first, t.first, sizeof first);
        memcpy(ids, t.ids, sizeof ids);
        bad_view.ev = ev;
        in.view = &bad_view;
        in.group_first = first;
        in.group_ids = ids;
        switch (cases[i].bad) {
        case BAD_NULL_IN:
            break;
        case BAD_NULL_VIEW:
            in.view = NULL;
            break;
        case BAD_PROTOCOL:
            in.protocol = "s_agg2";
            break;
        case BAD_NULL_FIRST:
            in.group_first = NULL;
            break;
        case BAD_FIRST_NOT_ZERO:
            first[0] = 1;
            break;
        case BAD_FIRST_DECREASES:
            first[2] = 0;
            break;
        case BAD_GROUP_ID:
            ids[1] = 2;
            break;
        case BAD_NULL_ROWS:
            in.group_rows = NULL;
            break;
        case BAD_WHO:
            ev[2].who = 4;
            break;
        case BAD_EVENT_RANGE:
            ev[3].first_ct = 3;
            ev[3].n_ct = 2;
            break;
        case BAD_KIND:
            ev[0].kind = 9;
            break;
        case BAD_TAGS_WITHOUT_MAP:
            in.group_tag = NULL;
            break;
        case BAD_TOO_MANY_PARTICIPANTS:
            in.participants = (uint64_t)SIM_LEAK_PARTICIPANTS_MAX + 1;
            break;
        }
        assert_int_equal(sim_leak_analyze(&r, cases[i].bad == BAD_NULL_IN ? NULL : &in),
                         cases[i].rc);
        assert_true(isnan(r.accuracy));
        assert_int_equal(r.linked, 0);
    }
    {
        struct sim_leak_input in = input(&v, "c_noise", &t);
        assert_int_equal(sim_leak_analyze(NULL, &in), SIM_LEAK_ERR_INVALID);
        assert_int_equal(sim_leak_analyze(&r, &in), 0);
    }
    assert_non_null(strstr(sim_leak_strerror(SIM_LEAK_ERR_TOO_LARGE), "limits"));
    truth_free(&t);
    sim_view_free(&v);
}

/* ------------------------------------------------------------ printing */

static void the_report_prints_as_a_block_and_as_a_table_row(void **state)
{
    struct sim_view v;
    struct truth t;
    struct sim_leak_report r;
    struct sim_leak_input in;
    FILE *f = tmpfile();
    char buf[4096];
    size_t n, bars = 0, lines = 0;
    (void)state;

    assert_non_null(f);
    sim_view_init(&v);
    shuffle_view(&v, 2, 1, 0);
    shuffle_truth(&t);
    in = input(&v, "shuffle", &t);
    in.dummy_tag = dummy_tag;
    assert_int_equal(sim_leak_analyze(&r, &in), 0);
    sim_leak_print(&r, f);
    sim_leak_print_row(&r, f, 1);
    rewind(f);
    n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    assert_non_null(strstr(buf, "leakage to the querier service (shuffle)"));
    assert_non_null(strstr(buf, "2 rounds"));
    assert_non_null(strstr(buf, "| shuffle | 36 | 72 | 3 | 6-18 |"));
    for (char *c = strstr(buf, "| protocol"); c && *c; c++) {
        bars += *c == '|';
        lines += *c == '\n';
    }
    assert_int_equal(lines, 3);
    assert_int_equal(bars, 3 * 13); /* 12 columns */
    fclose(f);
    truth_free(&t);
    sim_view_free(&v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_recorder_keeps_uploads_tasks_and_results_and_nothing_else),
        cmocka_unit_test(a_forwarded_copy_of_a_ciphertext_keeps_its_id),
        cmocka_unit_test(a_message_that_does_not_decode_changes_nothing),
        cmocka_unit_test(the_csv_has_a_header_and_one_line_per_ciphertext),
        cmocka_unit_test(a_tag_per_group_links_everyone_and_crowds_are_the_groups),
        cmocka_unit_test(every_tag_once_tells_no_more_than_the_published_counts),
        cmocka_unit_test(untagged_uploads_leave_everyone_in_one_crowd),
        cmocka_unit_test(a_participant_in_several_groups_is_linked_by_any_of_them),
        cmocka_unit_test(the_upload_attack_matches_a_plain_reference),
        cmocka_unit_test(posteriors_equal_to_two_decimals_share_a_crowd_and_ties_go_to_group_0),
        cmocka_unit_test(a_perfect_two_round_shuffle_tells_no_more_than_the_published_counts),
        cmocka_unit_test(one_round_of_shuffle_leaks_groups_concentrated_in_batches),
        cmocka_unit_test(a_shuffle_task_without_a_result_loses_its_items_to_the_prior),
        cmocka_unit_test(a_shuffle_batch_reveals_its_own_mix_whatever_the_global_counts),
        cmocka_unit_test(bad_inputs_are_refused_with_their_error),
        cmocka_unit_test(the_report_prints_as_a_block_and_as_a_table_row),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
