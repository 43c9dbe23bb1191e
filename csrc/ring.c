#include "ring.h"

#include <errno.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define WRAP 0xFFFFFFFFu
#define ALIGN8(x) (((x) + 7u) & ~(uint64_t)7u)

static inline uint64_t load_acq(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void store_rel(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

uint64_t je_ring_format(void *mem, size_t total) {
    if (total < JE_RING_HEADER + 4096) return 0;
    uint64_t cap = 1;
    while (cap * 2 <= total - JE_RING_HEADER) cap *= 2;
    je_ring_shared *s = (je_ring_shared *)mem;
    memset(s, 0, sizeof(*s));
    s->capacity = cap;
    __atomic_store_n(&s->magic, JE_RING_MAGIC, __ATOMIC_RELEASE);
    return cap;
}

int je_ring_attach(je_ring *r, void *mem, size_t total, uint32_t *park) {
    je_ring_shared *s = (je_ring_shared *)mem;
    if (total < JE_RING_HEADER || __atomic_load_n(&s->magic, __ATOMIC_ACQUIRE) != JE_RING_MAGIC)
        return -1;
    if (s->capacity == 0 || (s->capacity & (s->capacity - 1)) || s->capacity > total - JE_RING_HEADER)
        return -1;
    memset(r, 0, sizeof(*r));
    r->s = s;
    r->data = (unsigned char *)mem + JE_RING_HEADER;
    r->park = park ? park : &s->parked;
    r->cap = s->capacity;
    r->mask = s->capacity - 1;
    r->local_tail = r->cached_tail = load_acq(&s->tail);
    r->local_head = r->cached_head = load_acq(&s->head);
    return 0;
}

int je_ring_write(je_ring *r, uint32_t tag, uint64_t a, uint64_t b, const void *p, uint32_t len) {
    if ((uint64_t)len > je_ring_max_payload(r)) return -2;
    uint64_t need = ALIGN8(JE_RING_RECORD_HEADER + (uint64_t)len);
    uint64_t t = r->local_tail;
    uint64_t off = t & r->mask;
    uint64_t contig = r->cap - off;
    uint64_t total = need + (contig < need ? contig : 0);
    if (t + total - r->cached_head > r->cap) {
        r->cached_head = load_acq(&r->s->head);
        if (t + total - r->cached_head > r->cap) return -1;
    }
    if (contig < need) {
        /* Records are 8-aligned, so at least 8 bytes remain for the marker. */
        *(uint32_t *)(r->data + off) = WRAP;
        t += contig;
        off = 0;
    }
    unsigned char *d = r->data + off;
    *(uint32_t *)d = len;
    *(uint32_t *)(d + 4) = tag;
    *(uint64_t *)(d + 8) = a;
    *(uint64_t *)(d + 16) = b;
    if (len) memcpy(d + JE_RING_RECORD_HEADER, p, len);
    r->local_tail = t + need;
    return 0;
}

int je_unpark(uint32_t *park) {
    /* Dekker with the consumer: it stores park=1, fences, re-reads the ring; we have
     * stored the tail and fence here before reading park, so one of us sees the other. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(park, __ATOMIC_RELAXED) == 0) return 0;
    if (__atomic_exchange_n(park, 0, __ATOMIC_SEQ_CST) == 0) return 0;
    syscall(SYS_futex, park, FUTEX_WAKE, 1, NULL, NULL, 0);
    return 1;
}

int je_ring_publish(je_ring *r) {
    if (r->local_tail == load_acq(&r->s->tail)) return 0;
    store_rel(&r->s->tail, r->local_tail);
    return je_unpark(r->park);
}

uint64_t je_ring_free(je_ring *r) {
    r->cached_head = load_acq(&r->s->head);
    return r->cap - (r->local_tail - r->cached_head);
}

int je_ring_empty(je_ring *r) {
    if (r->local_head != r->cached_tail) return 0;
    r->cached_tail = load_acq(&r->s->tail);
    return r->local_head == r->cached_tail;
}

int je_ring_read(je_ring *r, uint32_t *tag, uint64_t *a, uint64_t *b,
                 const unsigned char **p, uint32_t *len) {
    for (;;) {
        uint64_t h = r->local_head;
        if (h == r->cached_tail) {
            r->cached_tail = load_acq(&r->s->tail);
            if (h == r->cached_tail) return 0;
        }
        uint64_t off = h & r->mask;
        const unsigned char *d = r->data + off;
        uint32_t l = *(const uint32_t *)d;
        if (l == WRAP) {
            r->local_head = h + (r->cap - off);
            continue;
        }
        *len = l;
        *tag = *(const uint32_t *)(d + 4);
        *a = *(const uint64_t *)(d + 8);
        *b = *(const uint64_t *)(d + 16);
        *p = d + JE_RING_RECORD_HEADER;
        r->local_head = h + ALIGN8(JE_RING_RECORD_HEADER + (uint64_t)l);
        return 1;
    }
}

void je_ring_release(je_ring *r) { store_rel(&r->s->head, r->local_head); }

int je_park(uint32_t *park, int (*ready)(void *), void *arg, int64_t spin_ns, int64_t timeout_ns) {
    int64_t start = mono_ns();
    if (ready(arg)) return 1;
    if (spin_ns > 0) {
        int64_t until = start + spin_ns;
        do {
            for (int i = 0; i < 64; i++) cpu_relax();
            if (ready(arg)) return 1;
        } while (mono_ns() < until);
    }
    for (;;) {
        __atomic_store_n(park, 1, __ATOMIC_SEQ_CST);
        if (ready(arg)) {
            __atomic_store_n(park, 0, __ATOMIC_RELAXED);
            return 1;
        }
        struct timespec ts, *tsp = NULL;
        if (timeout_ns >= 0) {
            int64_t left = start + timeout_ns - mono_ns();
            if (left <= 0) {
                __atomic_store_n(park, 0, __ATOMIC_RELAXED);
                return ready(arg);
            }
            ts.tv_sec = left / 1000000000;
            ts.tv_nsec = left % 1000000000;
            tsp = &ts;
        }
        /* Returns at once (EAGAIN) if a producer already cleared the word. */
        syscall(SYS_futex, park, FUTEX_WAIT, 1, tsp, NULL, 0);
        __atomic_store_n(park, 0, __ATOMIC_RELAXED);
        if (ready(arg)) return 1;
        if (timeout_ns >= 0 && mono_ns() - start >= timeout_ns) return 0;
    }
}
