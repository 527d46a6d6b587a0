/*
 * The synthetic `health` table: each participant's rows, generated from
 * the seed alone, so that the tokens and the ground truth see the same data
 * without the simulator keeping a copy of it (a million participants' rows
 * would dwarf the tokens themselves).
 *
 * Distributions, chosen to look like a wearable's daily summaries:
 * - age: normal around 45 (sd 16), clamped to 18..95, and its age_band;
 * - sex: 'F' 51 %, 'M' 49 %;
 * - region: one of 128, Zipf-like (a few large regions, a long tail);
 * - 3 to 12 days of 2026 per participant (distinct dates);
 * - steps: log-normal around 6,500 a day, lower with age; 2 % missing;
 * - heart_rate: normal around 72 (sd 8), slightly higher with age; 1 % missing;
 * - weight: normal around 68 kg (F) or 80 kg (M), sd 12, in tenths of a
 *   kilogram, steady over a participant's days; 3 % missing.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "sim/sim.h"

#define DAY_2026_01_01 20454

uint64_t sim_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

double sim_uniform(uint64_t *state)
{
    *state = sim_mix(*state);
    return (double)(*state >> 11) * (1.0 / 9007199254740992.0);
}

static double normal(uint64_t *st)
{
    double u1 = sim_uniform(st), u2 = sim_uniform(st);
    if (u1 < 1e-300)
        u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static char region_names[SIM_REGIONS][8];
static double region_cdf[SIM_REGIONS]; /* Zipf(0.9) */
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static void make_tables(void)
{
    double sum = 0;
    unsigned i;
    for (i = 0; i < SIM_REGIONS; i++) {
        snprintf(region_names[i], sizeof region_names[i], "R%03u", i + 1);
        sum += 1.0 / pow(i + 1.0, 0.9);
    }
    for (i = 0; i < SIM_REGIONS; i++)
        region_cdf[i] = (i ? region_cdf[i - 1] : 0) + 1.0 / pow(i + 1.0, 0.9) / sum;
}

const char *sim_region_name(unsigned region)
{
    pthread_once(&tables_once, make_tables);
    return region < SIM_REGIONS ? region_names[region] : "?";
}

const char *sim_age_band(int64_t age)
{
    static const char *const bands[] = {"18-29", "30-39", "40-49", "50-59",
                                        "60-69", "70-79", "80+"};
    if (age < 30)
        return bands[0];
    if (age >= 80)
        return bands[6];
    return bands[(age - 20) / 10];
}

/* Inverse transform on the regions' cumulative distribution. */
static unsigned pick_region(uint64_t *st)
{
    const double *cdf = region_cdf;
    double u = sim_uniform(st);
    unsigned lo = 0, hi = SIM_REGIONS - 1;
    pthread_once(&tables_once, make_tables);
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        if (cdf[mid] < u)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

size_t sim_data_rows(struct sim_row rows[SIM_ROWS_MAX], uint64_t seed, uint64_t i)
{
    uint64_t st = sim_mix(seed ^ sim_mix(i + 1));
    double a = 45 + 16 * normal(&st), w;
    int64_t age = (int64_t)llround(a < 18 ? 18 : a > 95 ? 95 : a);
    char sex = sim_uniform(&st) < 0.51 ? 'F' : 'M';
    unsigned region = pick_region(&st);
    size_t n = 3 + (size_t)(sim_uniform(&st) * 10), k, j;
    int null_weight = sim_uniform(&st) < 0.03;

    w = (sex == 'F' ? 68 : 80) + 12 * normal(&st);
    if (w < 40)
        w = 40;
    if (n > SIM_ROWS_MAX)
        n = SIM_ROWS_MAX;
    memset(rows, 0, n * sizeof *rows);
    for (k = 0; k < n; k++) {
        struct sim_row *r = &rows[k];
        int32_t date;
        int again;
        do {
            date = DAY_2026_01_01 + (int32_t)(sim_uniform(&st) * 365);
            again = 0;
            for (j = 0; j < k; j++)
                again |= rows[j].date == date;
        } while (again);
        r->participant = (int64_t)i + 1;
        r->age = age;
        r->sex = sex;
        r->region = (uint8_t)region;
        r->date = date;
        r->steps =
            (int64_t)llround(exp(log(6500.0 - 25.0 * (double)(age - 45)) + 0.45 * normal(&st)));
        r->heart_rate = (int64_t)llround(72 + 0.08 * (double)(age - 45) + 8 * normal(&st));
        if (r->heart_rate < 40)
            r->heart_rate = 40;
        r->weight = (int64_t)llround(10 * (w + 0.4 * normal(&st)));
        r->null_steps = sim_uniform(&st) < 0.02;
        r->null_heart_rate = sim_uniform(&st) < 0.01;
        r->null_weight = (uint8_t)null_weight;
    }
    return n;
}

void sim_row_cell(struct sim_cell *c, const struct sim_row *r, const char *col)
{
    memset(c, 0, sizeof *c);
    if (strcmp(col, "participant") == 0) {
        c->type = QR_INT;
        c->i = r->participant;
    } else if (strcmp(col, "age") == 0) {
        c->type = QR_INT;
        c->i = r->age;
    } else if (strcmp(col, "age_band") == 0) {
        c->type = QR_TEXT;
        c->s = sim_age_band(r->age);
    } else if (strcmp(col, "sex") == 0) {
        c->type = QR_TEXT;
        c->s = r->sex == 'F' ? "F" : "M";
    } else if (strcmp(col, "region") == 0) {
        c->type = QR_TEXT;
        c->s = sim_region_name(r->region);
    } else if (strcmp(col, "date") == 0) {
        c->type = QR_DATE;
        c->i = r->date;
    } else if (strcmp(col, "steps") == 0 && !r->null_steps) {
        c->type = QR_INT;
        c->i = r->steps;
    } else if (strcmp(col, "heart_rate") == 0 && !r->null_heart_rate) {
        c->type = QR_INT;
        c->i = r->heart_rate;
    } else if (strcmp(col, "weight") == 0 && !r->null_weight) {
        c->type = QR_DECIMAL;
        c->i = r->weight;
        c->scale = 1;
    }
    if (c->s != NULL)
        c->len = strlen(c->s);
}
