/*
 * qr_print.c: a result as the researcher reads it: an aligned table (with
 * the differential-privacy footnote), CSV (RFC 4180) or JSON. Shared by
 * cohort-querier run and cohort-sim so that both print the same thing.
 */
#include <stdio.h>
#include <string.h>

#include "querier/querier.h"

void qr_print_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

void qr_print_json_value(FILE *f, const struct qr_value *v)
{
    char buf[96];
    switch (v->type) {
    case QR_NULL:
        fputs("null", f);
        break;
    case QR_INT:
        fprintf(f, "%lld", (long long)v->i);
        break;
    case QR_DOUBLE:
        fprintf(f, "%.17g", v->d);
        break;
    case QR_BOOL:
        fputs(v->i ? "true" : "false", f);
        break;
    case QR_DECIMAL:
        qr_value_format(buf, sizeof buf, v);
        fputs(buf, f);
        break;
    default:
        qr_value_format(buf, sizeof buf, v);
        qr_print_json_string(f, buf);
        break;
    }
}

void qr_print_table(FILE *f, const struct qr_result *r)
{
    size_t w[QR_GROUP_COLUMNS_MAX + QR_AGGREGATES_MAX] = {0}, c, k;
    size_t n = r->n_columns < sizeof w / sizeof w[0] ? r->n_columns : sizeof w / sizeof w[0];
    char buf[96], note[1024];

    for (c = 0; c < n; c++) {
        w[c] = strlen(r->labels[c]);
        for (k = 0; k < r->n_rows; k++) {
            qr_value_format(buf, sizeof buf, &r->cells[k * r->n_columns + c]);
            if (strlen(buf) > w[c])
                w[c] = strlen(buf);
        }
    }
    for (c = 0; c < n; c++)
        fprintf(f, "%s%-*s", c ? "  " : "", (int)w[c], r->labels[c]);
    fputc('\n', f);
    for (c = 0; c < n; c++) {
        fputs(c ? "  " : "", f);
        for (k = 0; k < w[c]; k++)
            fputc('-', f);
    }
    fputc('\n', f);
    for (k = 0; k < r->n_rows; k++) {
        for (c = 0; c < n; c++) {
            const struct qr_value *v = &r->cells[k * r->n_columns + c];
            int right = v->type == QR_INT || v->type == QR_DECIMAL || v->type == QR_DOUBLE;
            qr_value_format(buf, sizeof buf, v);
            fprintf(f, "%s%*s", c ? "  " : "", right ? (int)w[c] : -(int)w[c], buf);
        }
        fputc('\n', f);
    }
    fprintf(f, "(%zu row%s)\n", r->n_rows, r->n_rows == 1 ? "" : "s");
    qr_result_footnote(note, sizeof note, r);
    fputs(note, f);
}

static void csv_field(FILE *f, const char *s)
{
    if (strpbrk(s, ",\"\r\n") == NULL) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

void qr_print_csv(FILE *f, const struct qr_result *r)
{
    char buf[96];

    for (size_t c = 0; c < r->n_columns; c++) {
        fputs(c ? "," : "", f);
        csv_field(f, r->labels[c]);
    }
    fputs("\r\n", f);
    for (size_t k = 0; k < r->n_rows; k++) {
        for (size_t c = 0; c < r->n_columns; c++) {
            const struct qr_value *v = &r->cells[k * r->n_columns + c];
            fputs(c ? "," : "", f);
            if (v->type == QR_NULL)
                continue;
            qr_value_format(buf, sizeof buf, v);
            csv_field(f, buf);
        }
        fputs("\r\n", f);
    }
}

void qr_print_json(FILE *f, const struct qr_result *r)
{
    fputs("{\"columns\":[", f);
    for (size_t c = 0; c < r->n_columns; c++) {
        fputs(c ? "," : "", f);
        qr_print_json_string(f, r->labels[c]);
    }
    fputs("],\"rows\":[", f);
    for (size_t k = 0; k < r->n_rows; k++) {
        fputs(k ? ",[" : "[", f);
        for (size_t c = 0; c < r->n_columns; c++) {
            fputs(c ? "," : "", f);
            qr_print_json_value(f, &r->cells[k * r->n_columns + c]);
        }
        fputc(']', f);
    }
    fprintf(f, "],\"participants\":%llu,\"groups_suppressed\":%llu",
            (unsigned long long)r->participants, (unsigned long long)r->groups_suppressed);
    if (r->epsilon > 0) {
        fprintf(f, ",\"dp\":{\"epsilon\":%.17g,\"mechanism\":", r->epsilon);
        qr_print_json_string(f, r->mechanism);
        fprintf(f, ",\"confidence\":%.17g,\"error_bound\":[", r->error_confidence);
        for (size_t c = 0; c < r->n_columns; c++)
            fprintf(f, "%s%.17g", c ? "," : "", r->error_bound[c]);
        fputs("]}", f);
    }
    fputs("}\n", f);
}
