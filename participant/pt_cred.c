/*
 * App credentials, the agent's side (pt_doc.h): issue, check, revoke and
 * list, each one token request (a list, a page at a time).
 *
 * The token decides everything: whether the caller may issue (the owner,
 * or an app delegating a subset of its own rules), whether a credential
 * authenticates, who may revoke what. The agent only converts. A new
 * credential's secret passes through the agent once, from the token's
 * answer to the caller's struct pt_cred; the decoded answer is wiped
 * before it is freed.
 */
#include <stdlib.h>
#include <string.h>

#include "participant/pt_doc_int.h"

#define CRED_PAGE_MAX 64u

static void request(Cohort__TokenRequest *req, Cohort__TokenRequest__BodyCase body)
{
    cohort__token_request__init(req);
    req->body_case = body;
}

static int info_from_pb(struct pt_cred_info *out, const Cohort__CredInfo *pb)
{
    memset(out, 0, sizeof *out);
    if (pb == NULL || pb->id.len != 16 || (pb->parent.len != 0 && pb->parent.len != 16) ||
        pb->name == NULL || strlen(pb->name) > PT_CRED_NAME_MAX || pb->n_rules > PT_RULES_MAX)
        return PT_ERR_LINK;
    memcpy(out->id, pb->id.data, 16);
    if (pb->parent.len == 16) {
        out->has_parent = true;
        memcpy(out->parent, pb->parent.data, 16);
    }
    strcpy(out->name, pb->name);
    for (size_t i = 0; i < pb->n_rules; i++)
        if (pt_rule_from_pb(&out->rules[i], pb->rules[i]) != 0)
            return PT_ERR_LINK;
    out->n_rules = (uint32_t)pb->n_rules;
    out->expires = pb->expires;
    out->created = pb->created;
    out->owner = pb->owner;
    out->revoked = pb->revoked;
    return 0;
}

int pt_cred_issue(struct pt_link *link, int64_t now, const struct pt_cred *who, const char *name,
                  const struct pt_rule *rules, uint32_t n_rules, int64_t expires, bool owner,
                  struct pt_cred *secret, struct pt_cred_info *info, struct pt_status *st)
{
    Cohort__TokenRequest req;
    Cohort__CredIssue ci = COHORT__CRED_ISSUE__INIT;
    Cohort__PermRule pb_rules[PT_RULES_MAX], *rule_ptrs[PT_RULES_MAX];
    Cohort__TokenResponse *r;
    const Cohort__CredIssued *issued;
    struct pt_cred_info got;
    char *vals[PT_RULES_MAX][PT_VALUES_MAX];
    int rc;

    pt_status_clear(st);
    if (name == NULL || secret == NULL || n_rules > PT_RULES_MAX || (n_rules > 0 && rules == NULL))
        return PT_ERR_INPUT;
    for (uint32_t i = 0; i < n_rules; i++) {
        if ((rc = pt_rule_to_pb(&pb_rules[i], vals[i], &rules[i])) != 0)
            return rc;
        rule_ptrs[i] = &pb_rules[i];
    }
    ci.name = (char *)name;
    ci.n_rules = n_rules;
    ci.rules = n_rules > 0 ? rule_ptrs : NULL;
    ci.expires = expires;
    ci.owner = owner;
    request(&req, COHORT__TOKEN_REQUEST__BODY_CRED_ISSUE);
    req.cred_issue = &ci;
    rc = pt_tk_call(link, now, who, &req, COHORT__TOKEN_RESPONSE__BODY_CRED_ISSUED, &r, st);
    if (rc != 0)
        return rc;
    issued = r->cred_issued;
    rc = info_from_pb(&got, issued->info);
    if (rc == 0 && issued->secret.len != sizeof secret->secret)
        rc = PT_ERR_LINK;
    if (rc == 0) {
        memcpy(secret->id, got.id, sizeof secret->id);
        memcpy(secret->secret, issued->secret.data, sizeof secret->secret);
        if (info != NULL)
            *info = got;
    }
    if (issued->secret.data != NULL)
        sodium_memzero(issued->secret.data, issued->secret.len);
    cohort__token_response__free_unpacked(r, NULL);
    return rc;
}

int pt_cred_check(struct pt_link *link, int64_t now, const struct pt_cred *who,
                  struct pt_cred_info *info, struct pt_status *st)
{
    Cohort__TokenRequest req;
    Cohort__CredCheck cc = COHORT__CRED_CHECK__INIT;
    Cohort__TokenResponse *r;
    struct pt_cred_info got;
    int rc;

    request(&req, COHORT__TOKEN_REQUEST__BODY_CRED_CHECK);
    req.cred_check = &cc;
    rc = pt_tk_call(link, now, who, &req, COHORT__TOKEN_RESPONSE__BODY_CRED_INFO, &r, st);
    if (rc != 0)
        return rc;
    rc = info_from_pb(&got, r->cred_info);
    cohort__token_response__free_unpacked(r, NULL);
    if (rc == 0 && info != NULL)
        *info = got;
    return rc;
}

int pt_cred_revoke(struct pt_link *link, int64_t now, const struct pt_cred *who,
                   const uint8_t id[16], struct pt_status *st)
{
    Cohort__TokenRequest req;
    Cohort__CredRevoke cr = COHORT__CRED_REVOKE__INIT;
    Cohort__TokenResponse *r;
    int rc;

    pt_status_clear(st);
    if (id == NULL)
        return PT_ERR_INPUT;
    cr.id = (ProtobufCBinaryData){16, (uint8_t *)id};
    request(&req, COHORT__TOKEN_REQUEST__BODY_CRED_REVOKE);
    req.cred_revoke = &cr;
    rc = pt_tk_call(link, now, who, &req, COHORT__TOKEN_RESPONSE__BODY_CRED_INFO, &r, st);
    if (rc != 0)
        return rc;
    if (r->cred_info == NULL || r->cred_info->id.len != 16 ||
        memcmp(r->cred_info->id.data, id, 16) != 0)
        rc = PT_ERR_LINK;
    cohort__token_response__free_unpacked(r, NULL);
    return rc;
}

int pt_cred_list(struct pt_link *link, int64_t now, const struct pt_cred *who,
                 struct pt_cred_info *out, uint32_t max, uint32_t *n, struct pt_status *st)
{
    Cohort__TokenRequest req;
    Cohort__CredList cl = COHORT__CRED_LIST__INIT;
    Cohort__TokenResponse *r;
    uint64_t after = 0;
    uint32_t count = 0;
    bool more = true;
    int rc = 0;

    pt_status_clear(st);
    *n = 0;
    if (out == NULL && max > 0)
        return PT_ERR_INPUT;
    while (more && count < max) {
        const Cohort__CredPage *p;
        uint32_t want = max - count < CRED_PAGE_MAX ? max - count : CRED_PAGE_MAX;
        cl.after = after;
        cl.max = want;
        request(&req, COHORT__TOKEN_REQUEST__BODY_CRED_LIST);
        req.cred_list = &cl;
        rc = pt_tk_call(link, now, who, &req, COHORT__TOKEN_RESPONSE__BODY_CRED_PAGE, &r, st);
        if (rc != 0)
            return rc;
        p = r->cred_page;
        /* A page that would not move the cursor would loop for ever. */
        if (p->n_creds > want || (p->more && p->next <= after)) {
            cohort__token_response__free_unpacked(r, NULL);
            return PT_ERR_LINK;
        }
        for (size_t i = 0; i < p->n_creds && rc == 0; i++)
            rc = info_from_pb(&out[count + i], p->creds[i]);
        if (rc != 0) {
            cohort__token_response__free_unpacked(r, NULL);
            return rc;
        }
        count += (uint32_t)p->n_creds;
        more = p->more;
        after = p->next;
        cohort__token_response__free_unpacked(r, NULL);
    }
    *n = count;
    return 0;
}
