/*
 * kd_rng.h — a small, fast, reproducible random number generator.
 *
 * xoshiro256** seeded through splitmix64. The whole state is 32 bytes and
 * plain data, so a checkpoint can save it and a resumed run continues the
 * same stream bit for bit.
 */
#ifndef KD_RNG_H
#define KD_RNG_H

#include <stdint.h>

typedef struct kd_rng {
    uint64_t s[4];
} kd_rng;

void kd_rng_seed(kd_rng *r, uint64_t seed);
uint64_t kd_rng_u64(kd_rng *r);
float kd_rng_uniform(kd_rng *r);                   /* [0, 1) */
float kd_rng_normal(kd_rng *r);                    /* standard normal */
uint64_t kd_rng_below(kd_rng *r, uint64_t n);      /* uniform in [0, n), n > 0 */

#endif
