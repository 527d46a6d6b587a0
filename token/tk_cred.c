/*
 * App credentials and their permission rules: not written yet. Until then
 * only the host link (the owner's) may use documents.
 */
#include "token/tk_int.h"

int tk_cred_allow(struct tk_call *c, uint32_t verb, const uint8_t *meta, size_t meta_len)
{
    (void)verb;
    (void)meta;
    (void)meta_len;
    return c->auth == NULL ? TK_OK : TK_ERR_AUTH;
}

int tk_cred_owner(struct tk_call *c)
{
    return c->auth == NULL ? TK_OK : TK_ERR_AUTH;
}

int tk_do_cred_issue(struct tk_call *c, const Cohort__CredIssue *req)
{
    (void)c;
    (void)req;
    return TK_ERR_UNSUPPORTED;
}

int tk_do_cred_list(struct tk_call *c, const Cohort__CredList *req)
{
    (void)c;
    (void)req;
    return TK_ERR_UNSUPPORTED;
}

int tk_do_cred_revoke(struct tk_call *c, const Cohort__CredRevoke *req)
{
    (void)c;
    (void)req;
    return TK_ERR_UNSUPPORTED;
}

int tk_do_cred_check(struct tk_call *c, const Cohort__CredCheck *req)
{
    (void)c;
    (void)req;
    return TK_ERR_UNSUPPORTED;
}
