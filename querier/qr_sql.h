/*
 * Private to libcohort_querier: the SQL front end's internal interface.
 *
 * qr_sql.c reads SQL text into a syntax tree (struct qr_query): it knows the
 * grammar and nothing of the catalog. qr_plan.c checks the tree against the
 * catalog, types every comparison, and lowers the result to a Plan message.
 * Both report problems through qr_sql_error_at(), which fills a struct
 * qr_sql_error with the byte offset, line and column of the problem.
 *
 * The tree lives inside struct qr_query, in a fixed pool of nodes: parsing
 * allocates nothing, and a query that needs more nodes than the pool holds
 * is "too complex". Every string in the tree is a NUL-terminated copy, so
 * the tree does not point into the caller's text.
 */
#ifndef COHORT_QR_SQL_H
#define COHORT_QR_SQL_H

#include <stddef.h>
#include <stdint.h>

#include "querier/querier.h"

/* ------------------------------------------------------------- limits */

#define QR_SQL_DEPTH_MAX 32u            /* nesting of parentheses and NOT */
#define QR_STACK_MAX 32u                /* stack depth of a WHERE or HAVING program */
#define QR_NODES_MAX 1024u              /* syntax tree nodes in one query */
#define QR_OUTPUT_MAX 32u               /* items in the SELECT list */
#define QR_ORDER_MAX 32u                /* keys in ORDER BY */
#define QR_DECIMAL_SCALE_MAX 18u        /* fractional digits of a DECIMAL */
#define QR_PLAN_MAX 16384u              /* a serialized Plan: what a token accepts */
#define QR_SCHEMA_COLUMNS_MAX 32u       /* columns of a table schema in a plan */
#define QR_RESULT_TABLE_MAX (64u << 20) /* a serialized ResultTable */
#define QR_LIMIT_MAX 4294967296ull      /* LIMIT n: 0 <= n <= 2^32 */
#define QR_SIZE_MAX 1000000000ull       /* SIZE n: 1 <= n <= 10^9 */
#define QR_DEADLINE_MAX 31536000ll      /* DEADLINE n: at most a year, in seconds */
#define QR_TUPLES_MAX 64u               /* tuples_per_participant */
#define QR_DEFAULT_GROUPS_CAP 4096u     /* default max_groups when GROUP BY is given */
#define QR_DEFAULT_TUPLES_GROUPED 8u    /* default tuples_per_participant, per-row groups */
#define QR_DEFAULT_MIN_PARTICIPANTS 10u
#define QR_DEFAULT_MIN_GROUP_SIZE 5u
/* Differential privacy (token/tk_noise.c has the mechanism). */
#define QR_DP_MAX_ROWS_MAX 1000000u   /* max_rows: TK_DP_MAX_ROWS */
#define QR_BUCKETS_MAX 4096u          /* buckets: TK_MAX_BUCKETS */
#define QR_FAKES_MAX 256u             /* fakes: TK_MAX_FAKES */
#define QR_ROUNDS_MAX 8u              /* rounds: TK_MAX_ROUNDS */
#define QR_C_NOISE_EMIT_MAX 4096u     /* c_noise: buckets x tuples, TK_MAX_EMIT */
#define QR_DP_DEFAULT_MAX_ROWS 1u     /* max_rows when epsilon is given without it */
#define QR_DP_DEFAULT_DELTA 1e-6      /* the default min_group_size keeps delta below this */
#define QR_DP_SCALE_MAX 1e15          /* a quantity's noise scale: TK_DP_SCALE_MAX */
#define QR_DP_SENSITIVITY_MAX 9e15    /* a quantity's sensitivity: TK_DP_SENSITIVITY_MAX */
#define QR_DP_GROUP_SIZE_MAX 1000000u /* the default min_group_size stops growing here */
#define QR_DEFAULT_COLLECT_SECONDS 3600
#define QR_DEFAULT_VALID_SECONDS 86400
#define QR_PLAN_VERSION 1u
#define QR_NONCE_LEN 16u

/* --------------------------------------------------------- syntax tree */

enum qr_node_kind {
    QR_N_COLUMN,  /* name */
    QR_N_CONST,   /* lit and its value */
    QR_N_AGG,     /* agg over name ("" for COUNT(*), COUNT(DISTINCT participant)) */
    QR_N_CMP,     /* a cmp b */
    QR_N_AND,     /* a AND b */
    QR_N_OR,      /* a OR b */
    QR_N_NOT,     /* NOT a */
    QR_N_IS_NULL, /* a IS [NOT] NULL */
    QR_N_BETWEEN, /* a [NOT] BETWEEN b AND c */
    QR_N_IN,      /* a [NOT] IN (list) */
    QR_N_LIKE,    /* a [NOT] LIKE 's%': s holds the prefix */
    QR_N_OPERAND, /* a used on its own as a condition */
};

enum qr_cmp { QR_CMP_EQ, QR_CMP_NE, QR_CMP_LT, QR_CMP_LE, QR_CMP_GT, QR_CMP_GE };

/* The same numbers as proto's AggFunc. */
enum qr_agg {
    QR_AGG_COUNT_STAR = 0,
    QR_AGG_COUNT = 1,
    QR_AGG_SUM = 2,
    QR_AGG_AVG = 3,
    QR_AGG_MIN = 4,
    QR_AGG_MAX = 5,
    QR_AGG_COUNT_PARTICIPANTS = 6,
};

enum qr_lit {
    QR_LIT_INT,     /* i */
    QR_LIT_DECIMAL, /* i scaled by 10^scale, scale >= 1 fractional digits as written */
    QR_LIT_STRING,  /* s, s_len */
    QR_LIT_BOOL,    /* i: 0 or 1 */
    QR_LIT_NULL,
    QR_LIT_DATE,      /* i: days since 1970-01-01 (DATE '...') */
    QR_LIT_TIMESTAMP, /* i: Unix seconds (TIMESTAMP '...') */
};

struct qr_node {
    enum qr_node_kind kind;
    size_t pos, len; /* the source span of the node's leading token */
    int negated;     /* NOT BETWEEN, NOT IN, NOT LIKE, IS NOT NULL */
    enum qr_cmp cmp;
    enum qr_agg agg;
    size_t arg_pos; /* QR_N_AGG: where its argument is */
    char name[QR_NAME_MAX + 1];
    enum qr_lit lit;
    int64_t i;
    unsigned scale;
    char s[QR_TEXT_MAX + 1];
    size_t s_len;
    struct qr_node *a, *b, *c;
    struct qr_node *list; /* QR_N_IN: constants linked through next */
    size_t n_list;
    struct qr_node *next;
};

struct qr_item {
    struct qr_node *expr; /* QR_N_COLUMN or QR_N_AGG */
    int has_alias;
    size_t alias_pos;
    char alias[QR_NAME_MAX + 1];
};

struct qr_order_item {
    struct qr_node *expr; /* a column or alias, an aggregate, or an integer */
    int desc;
};

/* WITH options, each with whether it was given and where its name is. */
struct qr_options {
    int has_min_participants, has_min_group_size, has_epsilon, has_contribution_bound;
    int has_tuples, has_max_groups, has_protocol, has_max_rows;
    int has_buckets, has_fakes, has_rounds, has_batch_min, has_participants;
    uint32_t buckets, fakes, rounds, batch_min;
    uint64_t participants;
    uint32_t min_participants, min_group_size;
    double epsilon;
    int64_t contribution_bound;
    uint32_t tuples_per_participant, max_groups;
    uint32_t max_rows;
    char protocol[QR_NAME_MAX + 1];
    size_t epsilon_pos, contribution_bound_pos, max_rows_pos, protocol_pos;
};

struct qr_query {
    const char *sql; /* borrowed: the text being compiled */
    size_t sql_len;
    struct qr_item items[QR_OUTPUT_MAX];
    size_t n_items;
    char table[QR_NAME_MAX + 1];
    size_t table_pos;
    struct qr_node *where;
    struct qr_node *group[QR_GROUP_COLUMNS_MAX];
    size_t n_group;
    struct qr_node *having;
    struct qr_order_item order[QR_ORDER_MAX];
    size_t n_order;
    int has_limit, has_size, has_deadline;
    uint64_t limit, size;
    int64_t deadline_seconds;
    struct qr_options opt;
    struct qr_node nodes[QR_NODES_MAX];
    size_t n_nodes;
};

/* ------------------------------------------------------------ functions */

/*
 * Parse sql[0..len) into q (caller-allocated; it is large, allocate it on the
 * heap). Returns 0 or QR_ERR_SQL with err filled in. q borrows sql.
 */
int qr_sql_parse(struct qr_query *q, const char *sql, size_t len, struct qr_sql_error *err);

/*
 * Check a parsed query against the catalog and lower it to a serialized Plan
 * (malloc'd into *plan; nothing is allocated on failure).
 */
int qr_plan_build(uint8_t **plan, size_t *plan_len, const struct qr_query *q,
                  const struct qr_compile_opts *opts, struct qr_sql_error *err);

/*
 * qr_sql_compile for text of a known length, which may hold NUL bytes (they
 * are errors): the entry point of the fuzz harness.
 */
int qr_sql_compile_len(uint8_t **plan, size_t *plan_len, const char *sql, size_t len,
                       const struct qr_compile_opts *opts, struct qr_sql_error *err);

/* Fill err for position pos of sql[0..len): line and column come from pos. */
void qr_sql_error_at(struct qr_sql_error *err, const char *sql, size_t len, size_t pos,
                     const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/*
 * Calendar helpers (proleptic Gregorian, UTC). The parsers return 0 or -1
 * and accept only real calendar dates of years 1 to 9999:
 * qr_date_parse reads 'YYYY-MM-DD'; qr_timestamp_parse reads
 * 'YYYY-MM-DD HH:MM:SS', or a bare date as its midnight. qr_date_civil is
 * exact for |days| <= QR_DAYS_ABS_MAX and clamps beyond.
 */
#define QR_DAYS_ABS_MAX (1ll << 40)
int qr_date_parse(int64_t *days, const char *s, size_t len);
int qr_timestamp_parse(int64_t *secs, const char *s, size_t len);
void qr_date_civil(int64_t days, int64_t *y, unsigned *m, unsigned *d);

#endif
