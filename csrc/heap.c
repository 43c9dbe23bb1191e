#include "heap.h"

#include <stdlib.h>
#include <string.h>

#define ARITY 4
#define LINE 64
/* Children of i are 4i+1 .. 4i+4; with the array offset by 3 entries from a line
 * boundary, a[4i+1] sits at 64(i+1) bytes past it: every sibling group is one line. */
#define OFFSET_ENTRIES 3

static int grow_entries(je_heap *h, size_t need) {
    if (need <= h->cap) return 0;
    size_t cap = h->cap ? h->cap : 64;
    while (cap < need) cap *= 2;
    if (cap > ((size_t)JE_NOPOS)) return -1;
    void *raw = NULL;
    if (posix_memalign(&raw, LINE, (cap + OFFSET_ENTRIES) * sizeof(je_entry)) != 0) return -1;
    je_entry *a = (je_entry *)raw + OFFSET_ENTRIES;
    if (h->n) memcpy(a, h->a, h->n * sizeof(je_entry));
    free(h->raw);
    h->raw = raw;
    h->a = a;
    h->cap = cap;
    return 0;
}

int je_heap_init(je_heap *h, size_t cap) {
    memset(h, 0, sizeof(*h));
    return grow_entries(h, cap ? cap : 64);
}

void je_heap_free(je_heap *h) {
    free(h->raw);
    free(h->pos);
    memset(h, 0, sizeof(*h));
}

int je_heap_reserve(je_heap *h, size_t extra) { return grow_entries(h, h->n + extra); }

int je_heap_reserve_slots(je_heap *h, size_t nslots) {
    if (nslots <= h->nslots) return 0;
    size_t cap = h->nslots ? h->nslots : 64;
    while (cap < nslots) cap *= 2;
    uint32_t *pos = realloc(h->pos, cap * sizeof(uint32_t));
    if (!pos) return -1;
    memset(pos + h->nslots, 0xff, (cap - h->nslots) * sizeof(uint32_t));
    h->pos = pos;
    h->nslots = cap;
    return 0;
}

static inline size_t min_child(const je_entry *a, size_t c, size_t n) {
    if (c + ARITY <= n) {
        /* Full sibling group (one cache line): a branch-free tournament that carries the
         * keys in registers compiles to conditional moves; random keys would make
         * branches mispredict, and reloading a[best].key would add a load per round. */
        uint64_t k0 = a[c].key, k1 = a[c + 1].key, k2 = a[c + 2].key, k3 = a[c + 3].key;
        size_t i01 = k1 < k0 ? c + 1 : c;
        uint64_t m01 = k1 < k0 ? k1 : k0;
        size_t i23 = k3 < k2 ? c + 3 : c + 2;
        uint64_t m23 = k3 < k2 ? k3 : k2;
        return m23 < m01 ? i23 : i01;
    }
    size_t best = c;
    for (size_t j = c + 1; j < n; j++)
        if (a[j].key < a[best].key) best = j;
    return best;
}

static inline void sift_up(je_heap *h, size_t i, je_entry e) {
    je_entry *a = h->a;
    uint32_t *pos = h->pos;
    while (i > 0) {
        size_t p = (i - 1) / ARITY;
        if (a[p].key <= e.key) break;
        a[i] = a[p];
        pos[a[i].slot] = (uint32_t)i;
        i = p;
    }
    a[i] = e;
    pos[e.slot] = (uint32_t)i;
}

static inline void sift_down(je_heap *h, size_t i, je_entry e) {
    je_entry *a = h->a;
    uint32_t *pos = h->pos;
    size_t n = h->n;
    for (;;) {
        size_t c = ARITY * i + 1;
        if (c >= n) break;
        size_t best = min_child(a, c, n);
        uint64_t bk = a[best].key;
        if (e.key <= bk) break;
        a[i] = a[best];
        pos[a[i].slot] = (uint32_t)i;
        i = best;
    }
    a[i] = e;
    pos[e.slot] = (uint32_t)i;
}

void je_heap_push(je_heap *h, uint64_t key, uint32_t slot) {
    je_entry e = {key, slot, 0};
    sift_up(h, h->n++, e);
}

void je_heap_pop(je_heap *h, uint64_t *key, uint32_t *slot) {
    je_entry *a = h->a;
    uint32_t *pos = h->pos;
    je_entry top = a[0];
    pos[top.slot] = JE_NOPOS;
    *key = top.key;
    *slot = top.slot;
    size_t n = --h->n;
    if (!n) return;
    /* Floyd's bottom-up pop: walk the hole down to a leaf without comparing against
     * the displaced last entry (it almost always belongs near the bottom), then sift
     * that entry up from there.  Saves a compare per level on the way down. */
    je_entry last = a[n];
    size_t i = 0;
    for (;;) {
        size_t c = ARITY * i + 1;
        if (c >= n) break;
        /* The next level's four sibling groups are contiguous (256 bytes): fetch them
         * while this level is compared, so deep levels of a big heap overlap their misses. */
        size_t gc = ARITY * c + 1;
        if (gc < n) {
            __builtin_prefetch(&a[gc]);
            __builtin_prefetch(&a[gc + 4]);
            __builtin_prefetch(&a[gc + 8]);
            __builtin_prefetch(&a[gc + 12]);
        }
        size_t best = min_child(a, c, n);
        a[i] = a[best];
        pos[a[i].slot] = (uint32_t)i;
        i = best;
    }
    sift_up(h, i, last);
}

static void fix(je_heap *h, size_t i, je_entry e) {
    if (i > 0 && h->a[(i - 1) / ARITY].key > e.key)
        sift_up(h, i, e);
    else
        sift_down(h, i, e);
}

void je_heap_remove(je_heap *h, uint32_t slot) {
    size_t i = h->pos[slot];
    h->pos[slot] = JE_NOPOS;
    size_t n = --h->n;
    if (i != n) fix(h, i, h->a[n]);
}

void je_heap_update(je_heap *h, uint32_t slot, uint64_t key) {
    size_t i = h->pos[slot];
    je_entry e = {key, slot, 0};
    fix(h, i, e);
}

int je_heap_check(const je_heap *h) {
    for (size_t i = 0; i < h->n; i++) {
        if (h->a[i].slot >= h->nslots || h->pos[h->a[i].slot] != i) return 0;
        if (i > 0 && h->a[(i - 1) / ARITY].key > h->a[i].key) return 0;
    }
    return 1;
}

/* LSD radix sort of n entries by key, 8 bits a pass (wider digits were measured slower:
 * more scatter streams than the cache keeps open), skipping passes where every key shares the digit: scheduler keys have long runs
 * of zero bits between priority and sequence.  Stable; tmp holds n entries.  Returns
 * the buffer that ends up holding the sorted entries (a or tmp). */
#define RADIX_BITS 8
#define RADIX_PASSES 8
#define RADIX_SIZE (1u << RADIX_BITS)
static je_entry *radix_sort(je_entry *a, je_entry *tmp, size_t n) {
    static __thread uint32_t count[RADIX_PASSES][RADIX_SIZE];
    memset(count, 0, sizeof(count));
    for (size_t i = 0; i < n; i++) {
        uint64_t k = a[i].key;
        for (int d = 0; d < RADIX_PASSES; d++) count[d][(k >> (RADIX_BITS * d)) & (RADIX_SIZE - 1)]++;
    }
    je_entry *src = a, *dst = tmp;
    for (int d = 0; d < RADIX_PASSES; d++) {
        uint32_t *c = count[d];
        int trivial = 0;
        for (unsigned b = 0; b < RADIX_SIZE; b++)
            if (c[b] == n) trivial = 1;
        if (trivial) continue;
        uint32_t sum = 0;
        for (unsigned b = 0; b < RADIX_SIZE; b++) {
            uint32_t t = c[b];
            c[b] = sum;
            sum += t;
        }
        int shift = RADIX_BITS * d;
        for (size_t i = 0; i < n; i++) dst[c[(src[i].key >> shift) & (RADIX_SIZE - 1)]++] = src[i];
        je_entry *t = src;
        src = dst;
        dst = t;
    }
    return src;
}

int je_heap_pop_many(je_heap *h, size_t k, uint64_t *keys, uint32_t *slots) {
    size_t n = h->n;
    if (k > n) k = n;
    /* Popping a large share of a big heap: sorting everything is O(n) a radix pass
     * and touches memory in order, where k pops cost O(k log n) cache misses.  The
     * sorted remainder is already a valid heap, so it goes straight back. */
    if (n >= 4096 && k >= n / 8) {
        je_entry *tmp = malloc(n * sizeof(je_entry));
        if (tmp) {
            je_entry *sorted = radix_sort(h->a, tmp, n);
            for (size_t i = 0; i < k; i++) {
                keys[i] = sorted[i].key;
                slots[i] = sorted[i].slot;
                h->pos[sorted[i].slot] = JE_NOPOS;
            }
            size_t rest = n - k;
            if (sorted != h->a || k) memmove(h->a, sorted + k, rest * sizeof(je_entry));
            for (size_t i = 0; i < rest; i++) h->pos[h->a[i].slot] = (uint32_t)i;
            h->n = rest;
            free(tmp);
            return 0;
        }
        /* No memory for the scratch buffer: fall back to plain pops. */
    }
    for (size_t i = 0; i < k; i++) je_heap_pop(h, &keys[i], &slots[i]);
    return 0;
}
