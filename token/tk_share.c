/*
 * Sharing with another person's token: not written yet.
 */
#include "token/tk_int.h"

int tk_share_find_doc(struct tk_call *c, const uint8_t *doc_id, uint64_t rev, bool count_read,
                      struct tk_shared_doc *out)
{
    (void)c;
    (void)doc_id;
    (void)rev;
    (void)count_read;
    (void)out;
    return TK_ERR_NOT_FOUND;
}

int tk_do_share_create(struct tk_call *c, const Cohort__ShareCreate *req)
{
    (void)c;
    (void)req;
    return TK_ERR_UNSUPPORTED;
}

int tk_do_share_sync(struct tk_call *c, const Cohort__ShareSync *req)
{
    (void)c;
    (void)req;
    return TK_ERR_UNSUPPORTED;
}

int tk_do_share_revoke(struct tk_call *c, const Cohort__ShareRevoke *req)
{
    (void)c;
    (void)req;
    return TK_ERR_UNSUPPORTED;
}

int tk_do_share_accept(struct tk_call *c, const Cohort__ShareAccept *req)
{
    (void)c;
    (void)req;
    return TK_ERR_UNSUPPORTED;
}

int tk_do_share_list(struct tk_call *c, const Cohort__ShareList *req)
{
    (void)c;
    (void)req;
    return TK_ERR_UNSUPPORTED;
}
