/*
 * Backup and recovery: not written yet.
 */
#include "token/tk_int.h"

size_t tk_backup_extent(const struct tk_token *tk, const uint8_t *arena, size_t arena_len)
{
    (void)tk;
    (void)arena;
    (void)arena_len;
    return 0;
}

void tk_backup_wipe(uint8_t *arena, size_t arena_len)
{
    (void)arena;
    (void)arena_len;
}

int tk_do_backup_begin(struct tk_call *c, const Cohort__BackupBegin *req)
{
    (void)c;
    (void)req;
    return TK_ERR_UNSUPPORTED;
}

int tk_do_backup_next(struct tk_call *c, const Cohort__BackupNext *req)
{
    (void)c;
    (void)req;
    return TK_ERR_UNSUPPORTED;
}

int tk_do_restore_begin(struct tk_call *c, const Cohort__RestoreBegin *req)
{
    (void)c;
    (void)req;
    return TK_ERR_UNSUPPORTED;
}

int tk_do_restore_feed(struct tk_call *c, const uint8_t *body, size_t len)
{
    (void)c;
    (void)body;
    (void)len;
    return TK_ERR_UNSUPPORTED;
}
