/*
 * sh_log.c: log lines, hex and clocks for the programs' shells.
 *
 * A log line is built whole in a buffer and written with one write(2), so
 * lines from several threads never interleave. Callers never pass a
 * secret (shell.h); this file only formats what it is given.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shell/shell.h"

#define SH_LOG_LINE_MAX 1024u
#define SH_PROG_MAX 63u

static char log_prog[SH_PROG_MAX + 1] = "cohort";
static bool log_quiet;

void sh_log_init(const char *prog, bool quiet)
{
    snprintf(log_prog, sizeof log_prog, "%s", prog ? prog : "cohort");
    log_quiet = quiet;
}

void sh_log(const char *fmt, ...)
{
    char line[SH_LOG_LINE_MAX];
    struct tm tm;
    time_t t = time(NULL);
    size_t n;
    ssize_t w;
    va_list ap;
    int k;

    if (log_quiet)
        return;
    gmtime_r(&t, &tm);
    n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%SZ ", &tm);
    k = snprintf(line + n, sizeof line - n, "%s[%ld]: ", log_prog, (long)getpid());
    if (k > 0)
        n += (size_t)k < sizeof line - n ? (size_t)k : sizeof line - n - 1;
    va_start(ap, fmt);
    k = vsnprintf(line + n, sizeof line - n, fmt, ap);
    va_end(ap);
    if (k > 0)
        n += (size_t)k < sizeof line - n ? (size_t)k : sizeof line - n - 1;
    if (n + 1 >= sizeof line)
        n = sizeof line - 2;
    line[n++] = '\n';
    w = write(STDERR_FILENO, line, n);
    (void)w;
}

void sh_hex(char *out, const uint8_t *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

int64_t sh_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t sh_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
