/*
 * sh_log.c: the programs' log lines, and their clocks.
 *
 * A log line is "2026-11-22T10:00:00Z PROG[PID]: message", the time in
 * UTC to the second. Each line is formatted whole into one buffer and
 * written with one write(2), so lines from several threads or processes
 * sharing stderr do not interleave. Control characters in a message (a
 * name from a peer, say) are written as '?': a log line stays one line
 * and cannot move a terminal's cursor. Lines longer than SH_LOG_LINE_MAX
 * bytes are cut.
 *
 * Nothing here knows what a secret is: callers pass ids and counts, never
 * keys (shell.h).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shell/shell.h"

#define SH_LOG_LINE_MAX 2048u
#define SH_PROG_MAX 63u

static char log_prog[SH_PROG_MAX + 1] = "cohort";
static bool log_quiet;

void sh_log_init(const char *prog, bool quiet)
{
    size_t n = prog != NULL ? strlen(prog) : 0;

    if (n > SH_PROG_MAX)
        n = SH_PROG_MAX;
    if (n > 0) {
        memcpy(log_prog, prog, n);
        log_prog[n] = '\0';
    }
    log_quiet = quiet;
}

void sh_log(const char *fmt, ...)
{
    char line[SH_LOG_LINE_MAX];
    struct tm tm;
    time_t now = time(NULL);
    size_t n, head, done = 0;
    va_list ap;
    int k;

    if (log_quiet || fmt == NULL)
        return;
    if (gmtime_r(&now, &tm) == NULL)
        memset(&tm, 0, sizeof tm);
    n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%SZ", &tm);
    k = snprintf(line + n, sizeof line - n, " %s[%ld]: ", log_prog, (long)getpid());
    if (k < 0)
        return;
    n += (size_t)k < sizeof line - n ? (size_t)k : sizeof line - n - 1;
    head = n;
    va_start(ap, fmt);
    k = vsnprintf(line + n, sizeof line - n, fmt, ap);
    va_end(ap);
    if (k < 0)
        return;
    n += (size_t)k < sizeof line - n ? (size_t)k : sizeof line - n - 1;
    while (n > head && line[n - 1] == '\n')
        n--;
    for (size_t i = head; i < n; i++)
        if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
            line[i] = '?';
    if (n >= sizeof line - 1)
        n = sizeof line - 2;
    line[n++] = '\n';
    while (done < n) {
        ssize_t w = write(STDERR_FILENO, line + done, n - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        done += (size_t)w;
    }
}

/* -------------------------------------------------------------- clocks */

static int64_t clock_ms(clockid_t id)
{
    struct timespec ts;
    if (clock_gettime(id, &ts) != 0)
        return 0;
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t sh_now_ms(void)
{
    return clock_ms(CLOCK_REALTIME);
}

int64_t sh_mono_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}
