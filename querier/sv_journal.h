/*
 * sv_journal.h: the querier service's journal, an append-only file of
 * records (the JournalRecord messages of qr_service_handle).
 *
 * File: the 8 bytes "COHORTJ1", then records, each framed as
 *   [u32 length, little-endian][16-byte BLAKE2b of (length || payload),
 *    keyed with nothing][payload]
 * The service appends a record and calls sv_journal_sync (fdatasync) before
 * it sends the reply that acknowledges what the record holds. Several
 * appends may share one sync (group commit).
 *
 * Reading back (sv_journal_open) checks every record. A record that runs
 * past the end of the file, or the very last record whose checksum fails,
 * is a write the service did not finish: it was never acknowledged, so it
 * is cut off (and counted in dropped_bytes). A bad record followed by more
 * data is corruption: the open fails and says at which offset, and the file
 * is left as it is.
 *
 * The file is locked (flock) for as long as it is open: a second service
 * on the same journal fails to start ("in use").
 */
#ifndef COHORT_SV_JOURNAL_H
#define COHORT_SV_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#define SV_JOURNAL_RECORD_MAX ((16u << 20) + 4096u) /* one record's payload */

struct sv_journal;

struct sv_journal_stats {
    uint64_t records;       /* records read back at open */
    uint64_t bytes;         /* file size after open */
    uint64_t dropped_bytes; /* an unfinished tail cut off at open */
};

/*
 * Open (creating with mode 0600 when missing) and read back: each record's
 * payload is passed to replay in order, borrowed for the call only (it may
 * return non-zero to stop the open with that error: "record N: ...", N
 * counting from 1). Then the journal is ready to append. Returns 0 or -1
 * with a sentence in err.
 */
int sv_journal_open(struct sv_journal **out, const char *path,
                    int (*replay)(void *ctx, const uint8_t *rec, size_t len), void *ctx,
                    struct sv_journal_stats *st, char *err, size_t err_len);

/* Append one record (written to the file, not yet synced). 0 or -1. */
int sv_journal_append(struct sv_journal *j, const uint8_t *rec, size_t len, char *err,
                      size_t err_len);

/* Make every record appended so far durable (fdatasync). 0 or -1. */
int sv_journal_sync(struct sv_journal *j, char *err, size_t err_len);

/* Bytes appended so far, and bytes known durable, as offsets in the file:
 * both start at its size after open (st->bytes). */
uint64_t sv_journal_written(const struct sv_journal *j);
uint64_t sv_journal_synced(const struct sv_journal *j);

void sv_journal_close(struct sv_journal *j); /* NULL is fine */

#endif
