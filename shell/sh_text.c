/*
 * sh_text.c: names the programs accept, and text they print from files.
 *
 * A certificate names its subject in text that the token, the service and
 * the owner's tools show to people; a request or a bundle comes from
 * someone else. Names are accepted only as valid UTF-8 without control
 * characters, and whatever a file holds is escaped before it is printed,
 * so that no file can put a control sequence on a terminal.
 */
#include <string.h>

#include "shell/shell.h"

/* The length of the valid UTF-8 character at s (at most n bytes), or 0. */
static size_t utf8_char(const unsigned char *s, size_t n)
{
    uint32_t c;
    size_t len, i;

    if (n == 0)
        return 0;
    if (s[0] < 0x80)
        return s[0] != 0;
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        len = 2;
        c = s[0] & 0x1f;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        len = 3;
        c = s[0] & 0x0f;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        len = 4;
        c = s[0] & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = c << 6 | (s[i] & 0x3f);
    }
    /* Overlong forms, UTF-16 surrogates, and past U+10FFFF. */
    if ((len == 3 && c < 0x800) || (len == 4 && c < 0x10000) || c > 0x10ffff ||
        (c >= 0xd800 && c <= 0xdfff))
        return 0;
    return len;
}

bool sh_name_ok(const char *s, size_t max)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n, i = 0;

    if (s == NULL)
        return false;
    n = strlen(s);
    if (n == 0 || n > max)
        return false;
    while (i < n) {
        size_t k = utf8_char(p + i, n - i);
        if (k == 0 || (k == 1 && (p[i] < 0x20 || p[i] == 0x7f)))
            return false;
        /* C1 controls, U+0080 to U+009F. */
        if (k == 2 && p[i] == 0xc2 && p[i + 1] < 0xa0)
            return false;
        i += k;
    }
    return true;
}

void sh_put(FILE *f, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = s != NULL ? strlen(s) : 0, i = 0;

    while (i < n) {
        size_t k = utf8_char(p + i, n - i);
        if (k == 1 && p[i] == '\\') {
            fputs("\\\\", f);
        } else if (k == 0 || (k == 1 && (p[i] < 0x20 || p[i] == 0x7f)) ||
                   (k == 2 && p[i] == 0xc2 && p[i + 1] < 0xa0)) {
            k = k == 0 ? 1 : k;
            for (size_t j = 0; j < k; j++)
                fprintf(f, "\\x%02x", p[i + j]);
        } else {
            fwrite(p + i, 1, k, f);
        }
        i += k;
    }
}
