/*
 * sh_args.c: the command-line words the programs share: an option with its
 * value, and numbers.
 *
 * A number on a command line is decimal digits within bounds the caller
 * names: no sign, no space, no exponent, no hex, no inf or nan, and never
 * a silent wrap-around. These functions only say yes or no; each program
 * words its own message and chooses its own exit status.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "shell/shell.h"

int sh_opt(int argc, char **argv, int *i, const char *name, const char **value)
{
    size_t n = strlen(name);
    const char *a = argv[*i];

    if (strncmp(a, name, n) != 0)
        return 0;
    if (a[n] == '=') {
        *value = a + n + 1;
        return 1;
    }
    if (a[n] != '\0')
        return 0;
    if (*i + 1 >= argc)
        return -1;
    *i += 1;
    *value = argv[*i];
    return 1;
}

int sh_parse_u64(const char *text, uint64_t min, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    size_t n = strlen(text);

    if (n == 0 || n > SH_U64_DIGITS)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned d;
        if (text[i] < '0' || text[i] > '9')
            return -1;
        d = (unsigned)(text[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    if (v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int sh_parse_double(const char *text, double min, double max, double *out)
{
    char *end = NULL;
    double v;
    size_t n = strlen(text);

    /* Digits and at most one point: no sign, exponent, hex, inf or nan. */
    if (n == 0 || n > SH_DOUBLE_CHARS || strspn(text, "0123456789.") != n ||
        strchr(text, '.') != strrchr(text, '.') || strcmp(text, ".") == 0)
        return -1;
    errno = 0;
    v = strtod(text, &end);
    if (errno != 0 || end != text + n || !isfinite(v) || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}
