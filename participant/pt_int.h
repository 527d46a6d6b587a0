/*
 * Private declarations of libcohort_participant, shared by its files and
 * its tests.
 */
#ifndef COHORT_PT_INT_H
#define COHORT_PT_INT_H

#include <stddef.h>
#include <stdint.h>

#include "participant/pt_owner.h"
#include "proto/cohort.pb-c.h"

/*
 * Test hook of the file layer (pt_flash.c, pt_soft.c): every byte they
 * write goes through pt_write_all, which counts it in pt_bytes_written.
 * When pt_crash_after_bytes is not 0 and a write would reach it, only the
 * bytes up to it are written and the process kills itself with SIGKILL: a
 * crash at an exact point of a write, for the crash tests. Never set
 * outside tests.
 */
extern uint64_t pt_crash_after_bytes;
extern uint64_t pt_bytes_written;

/* write() all n bytes (retrying short writes); 0 or -1 (errno set). */
int pt_write_all(int fd, const uint8_t *p, size_t n);

/*
 * The owner's consent policy between our struct and the wire (pt_owner.c).
 * pt_policy_to_pb fills pb->cp with pointers into p and pb, which must
 * outlive it (PT_ERR_INPUT if p's lists exceed their limits);
 * pt_policy_from_pb checks counts (PT_ERR_TOO_LARGE) and key lengths
 * (PT_ERR_MALFORMED) and cuts overlong names.
 */
struct pt_policy_pb {
    Cohort__ConsentPolicy cp;
    ProtobufCBinaryData auth[PT_POLICY_KEYS_MAX], res[PT_POLICY_KEYS_MAX];
    char *studies[PT_POLICY_NAMES_MAX], *tables[PT_POLICY_NAMES_MAX];
};
int pt_policy_to_pb(struct pt_policy_pb *pb, const struct pt_policy *p);
int pt_policy_from_pb(struct pt_policy *out, const Cohort__ConsentPolicy *pb);

#endif
