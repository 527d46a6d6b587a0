/*
 * Private declarations of libcohort_participant, shared by its files and
 * its tests.
 */
#ifndef COHORT_PT_INT_H
#define COHORT_PT_INT_H

#include <stddef.h>
#include <stdint.h>

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

#endif
