/*
 * The owner's consent policy and the audit log: SetPolicy, GetPolicy,
 * ReadAudit.
 *
 * Stubs only: replaced by the policy module. Until then the token answers
 * TK_ERR_UNSUPPORTED to all three, and Collect checks no policy.
 *
 * For the policy module: a policy is a StoreRecord { policy } appended with
 * tk_log_append and committed with tk_log_commit before the request
 * answers; the latest one in the log is in force (Compact keeps only it).
 * An audit line is a StoreRecord { audit } (tk->audit_seq numbers them),
 * appended and committed the same way; Compact keeps them all. Changes of
 * the token's own state alone (tk->epsilon_spent) are committed with
 * tk_state_commit. tk_log_scan and tk_record_body read them back.
 */
#include "token/tk_int.h"

int tk_do_set_policy(struct tk_call *c, const Cohort__SetPolicy *req)
{
    (void)c;
    (void)req;
    return TK_ERR_UNSUPPORTED; /* replaced by the policy module */
}

int tk_do_get_policy(struct tk_call *c, const Cohort__GetPolicy *req)
{
    (void)c;
    (void)req;
    return TK_ERR_UNSUPPORTED; /* replaced by the policy module */
}

int tk_do_read_audit(struct tk_call *c, const Cohort__ReadAudit *req)
{
    (void)c;
    (void)req;
    return TK_ERR_UNSUPPORTED; /* replaced by the policy module */
}
