/* Single-producer single-consumer ring of variable-length records in shared memory.
 *
 * One ring per direction per worker: the parent writes tasks, the worker writes events.
 * With one writer and one reader no lock is needed, so a process that dies mid-write
 * can wedge nobody: records become visible only when the producer publishes its tail.
 *
 * Layout of the shared mapping: a 256-byte header (tail, head and the park word each on
 * their own 64-byte line, so producer and consumer never write the same line), then
 * `capacity` bytes of records.  Positions are free-running 64-bit byte counts; a record
 * is {u32 len, u32 tag, u64 a, u64 b, payload[len]} padded to 8 bytes, never split: when
 * it does not fit before the end of the buffer a WRAP marker sends the reader to the
 * start.  Each side keeps a private copy of the other's index and re-reads the shared
 * one only when the ring looks full (producer) or empty (consumer).
 *
 * Sleeping: the consumer spins briefly, then sets its park word, fences, re-checks, and
 * FUTEX_WAITs on the word (a shared futex: the mapping is shared between processes).  A
 * producer publishes, fences, and issues FUTEX_WAKE only when the word is set, so under
 * load there is no syscall per record.  The park word may live outside the ring (a
 * doorbell shared by many rings, so one consumer can sleep on all of them).
 */
#ifndef JE_RING_H
#define JE_RING_H

#include <stddef.h>
#include <stdint.h>

#define JE_RING_HEADER 256
#define JE_RING_RECORD_HEADER 24
#define JE_RING_MAGIC 0x6a6f62656e67696eULL /* "jobengin" */

typedef struct {
    uint64_t tail; /* producer's published position */
    char _pad0[56];
    uint64_t head; /* consumer's released position */
    char _pad1[56];
    uint32_t parked; /* consumer sleeps on this word when it has no doorbell */
    uint32_t _pad2;
    uint64_t capacity;
    uint64_t magic;
    char _pad3[104];
} je_ring_shared;

typedef struct {
    je_ring_shared *s;
    unsigned char *data;
    uint32_t *park;       /* the word the consumer sleeps on: &s->parked or a doorbell */
    uint64_t cap, mask;
    uint64_t local_tail;  /* producer: written, maybe not yet published */
    uint64_t cached_head; /* producer: last head it read */
    uint64_t local_head;  /* consumer: read, maybe not yet released */
    uint64_t cached_tail; /* consumer: last tail it read */
} je_ring;

/* Format a fresh ring in `mem` (total bytes, header included).  Capacity is the largest
 * power of two that fits.  Returns the capacity, 0 if mem is too small. */
uint64_t je_ring_format(void *mem, size_t total);
/* Attach to a formatted ring; park may be NULL (use the ring's own word). 0 or -1. */
int je_ring_attach(je_ring *r, void *mem, size_t total, uint32_t *park);

/* Largest payload a record can carry (a quarter of the capacity, so a record always
 * fits once the consumer has caught up, whatever the wrap position). */
static inline uint64_t je_ring_max_payload(const je_ring *r) {
    return r->cap / 4 - JE_RING_RECORD_HEADER;
}

/* Producer.  write: 0 written (not yet visible), -1 full, -2 payload too large. */
int je_ring_write(je_ring *r, uint32_t tag, uint64_t a, uint64_t b, const void *p, uint32_t len);
/* Publish everything written; wake the consumer if it sleeps.  Returns 1 if it woke it. */
int je_ring_publish(je_ring *r);
/* Bytes the producer could still write (a lower bound: records also need padding). */
uint64_t je_ring_free(je_ring *r);

/* Consumer.  read: 1 and the record (pointer valid until release), or 0 when empty. */
int je_ring_read(je_ring *r, uint32_t *tag, uint64_t *a, uint64_t *b,
                 const unsigned char **p, uint32_t *len);
void je_ring_release(je_ring *r);
int je_ring_empty(je_ring *r);

/* Sleep until `ready(arg)` is true or timeout_ns passes (<0: forever).  Spins first for
 * spin_ns, then parks on *park.  Returns ready(arg) at the end. */
int je_park(uint32_t *park, int (*ready)(void *), void *arg, int64_t spin_ns, int64_t timeout_ns);
/* Wake a consumer parked on *park, if any: 1 if a wake was issued. */
int je_unpark(uint32_t *park);

#endif
