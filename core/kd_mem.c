/*
 * kd_mem.c — aligned allocation and the arena (see kd_mem.h).
 */
#include "core/kd_mem.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void *kd_alloc(size_t bytes, kd_err *err) {
    void *p = NULL;
    size_t n = (bytes + KD_ALIGN - 1) & ~(size_t)(KD_ALIGN - 1);
    if (n == 0) n = KD_ALIGN;
    if (n < bytes || posix_memalign(&p, KD_ALIGN, n) != 0) {
        kd_errf(err, "out of memory allocating %zu bytes", bytes);
        return NULL;
    }
    return p;
}

void *kd_calloc(size_t bytes, kd_err *err) {
    void *p = kd_alloc(bytes, err);
    if (p) memset(p, 0, bytes);
    return p;
}

void kd_free(void *p) { free(p); }

struct kd_arena_block {
    kd_arena_block *next;
    size_t size;     /* usable bytes in data */
    size_t used;
    char *data;
};

static kd_arena_block *block_new(size_t size, kd_err *err) {
    kd_arena_block *b = malloc(sizeof *b);
    if (!b) {
        kd_errf(err, "out of memory allocating an arena block header");
        return NULL;
    }
    b->data = kd_alloc(size, err);
    if (!b->data) {
        free(b);
        return NULL;
    }
    b->next = NULL;
    b->size = size;
    b->used = 0;
    return b;
}

int kd_arena_init(kd_arena *a, size_t initial_bytes, kd_err *err) {
    memset(a, 0, sizeof *a);
    if (initial_bytes == 0) return 0;
    a->head = block_new(initial_bytes, err);
    if (!a->head) return -1;
    a->capacity = initial_bytes;
    return 0;
}

void kd_arena_free(kd_arena *a) {
    kd_arena_block *b = a->head;
    while (b) {
        kd_arena_block *next = b->next;
        kd_free(b->data);
        free(b);
        b = next;
    }
    memset(a, 0, sizeof *a);
}

void *kd_arena_alloc(kd_arena *a, size_t bytes, kd_err *err) {
    size_t n = (bytes + KD_ALIGN - 1) & ~(size_t)(KD_ALIGN - 1);
    if (n == 0) n = KD_ALIGN;
    kd_arena_block *b = a->head;
    if (!b || b->size - b->used < n) {
        size_t size = a->capacity > n ? a->capacity : n;   /* at least double */
        if (size < ((size_t)1 << 20)) size = (size_t)1 << 20;
        kd_arena_block *nb = block_new(size, err);
        if (!nb) return NULL;
        nb->next = b;
        a->head = b = nb;
        a->capacity += size;
    }
    void *p = b->data + b->used;
    b->used += n;
    a->used += n;
    if (a->used > a->peak) a->peak = a->used;
    return p;
}

void *kd_arena_calloc(kd_arena *a, size_t bytes, kd_err *err) {
    void *p = kd_arena_alloc(a, bytes, err);
    if (p) memset(p, 0, bytes);
    return p;
}

void kd_arena_reset(kd_arena *a) {
    if (a->head && a->head->next) {
        /* Grew during the last step: replace all blocks by one of the peak size. */
        size_t want = a->peak;
        kd_arena_free(a);
        kd_arena_block *b = block_new(want, NULL);
        if (b) {
            a->head = b;
            a->capacity = want;
        }
        a->peak = want;
    }
    if (a->head) a->head->used = 0;
    a->used = 0;
}
