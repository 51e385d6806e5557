/*
 * kd_mem.h — aligned allocation and the per-step arena.
 *
 * kd_alloc returns 64-byte aligned memory (one cache line, one AVX-512
 * register) or NULL with a message in err. Free it with kd_free.
 *
 * kd_arena is a bump allocator for per-step activations: allocation is a
 * pointer increment, kd_arena_reset frees everything at once. It grows by
 * adding blocks when full; on reset after growth it merges into a single block
 * sized to the peak, so a training loop reaches a steady state with one block
 * and no malloc per op.
 */
#ifndef KD_MEM_H
#define KD_MEM_H

#include <stddef.h>
#include "core/kd_err.h"

#define KD_ALIGN 64

void *kd_alloc(size_t bytes, kd_err *err);   /* uninitialised, aligned */
void *kd_calloc(size_t bytes, kd_err *err);  /* zeroed, aligned */
void kd_free(void *p);

typedef struct kd_arena_block kd_arena_block;

typedef struct kd_arena {
    kd_arena_block *head;   /* current block (newest first) */
    size_t used;            /* bytes handed out since the last reset (incl. alignment) */
    size_t peak;            /* largest `used` ever seen */
    size_t capacity;        /* total bytes of all blocks */
} kd_arena;

/* Create with an initial capacity (may be 0: the first allocation sizes it). */
int kd_arena_init(kd_arena *a, size_t initial_bytes, kd_err *err);
void kd_arena_free(kd_arena *a);
/* Aligned allocation; NULL (with err) only when the system is out of memory. */
void *kd_arena_alloc(kd_arena *a, size_t bytes, kd_err *err);
void *kd_arena_calloc(kd_arena *a, size_t bytes, kd_err *err);
/* Release everything allocated since init/last reset. */
void kd_arena_reset(kd_arena *a);

#endif
