/* 4-ary indexed min-heap on 64-bit keys.
 *
 * Entries are 16-byte structs (key, slot) so one integer compare orders them and the
 * four children of a node share one 64-byte cache line (the entry array is offset so
 * that every sibling group starts on a line boundary).  The caller owns slot numbers;
 * `pos[slot]` is the entry's index in the heap, which makes remove/update O(log n).
 *
 * Not thread-safe: callers serialise access (the Cython wrappers guard with a busy flag
 * whenever they release the GIL).
 */
#ifndef JE_HEAP_H
#define JE_HEAP_H

#include <stddef.h>
#include <stdint.h>

#define JE_NOPOS UINT32_MAX

typedef struct {
    uint64_t key;
    uint32_t slot;
    uint32_t aux; /* padding to 16 bytes: four siblings fill one cache line */
} je_entry;

typedef struct {
    je_entry *a;      /* aligned view: a[0] is the root */
    void *raw;        /* what malloc returned */
    size_t n, cap;
    uint32_t *pos;    /* slot -> index in a[], JE_NOPOS when absent */
    size_t nslots;    /* pos[] covers slots < nslots */
} je_heap;

int je_heap_init(je_heap *h, size_t cap);
void je_heap_free(je_heap *h);
/* Make pos[] cover every slot < nslots; 0 on success, -1 on allocation failure. */
int je_heap_reserve_slots(je_heap *h, size_t nslots);
/* Make room for n more entries; 0 or -1. */
int je_heap_reserve(je_heap *h, size_t extra);

static inline int je_heap_contains(const je_heap *h, uint64_t slot) {
    return slot < h->nslots && h->pos[slot] != JE_NOPOS;
}

/* Preconditions (checked by the callers, not here): slot reserved and absent;
 * room reserved; for pop, n > 0; for remove/update, slot present. */
void je_heap_push(je_heap *h, uint64_t key, uint32_t slot);
void je_heap_pop(je_heap *h, uint64_t *key, uint32_t *slot);
void je_heap_remove(je_heap *h, uint32_t slot);
void je_heap_update(je_heap *h, uint32_t slot, uint64_t key);
/* Pop the min(k, n) smallest entries in ascending order into keys[]/slots[]. */
int je_heap_pop_many(je_heap *h, size_t k, uint64_t *keys, uint32_t *slots);
int je_heap_check(const je_heap *h); /* 1 when the heap invariant and pos[] agree */

#endif
