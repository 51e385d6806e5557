/*
 * kd_time.h — the monotonic clock, in seconds, for timings and progress rates.
 */
#ifndef KD_TIME_H
#define KD_TIME_H

#include <time.h>

/* Seconds on CLOCK_MONOTONIC (an arbitrary origin: only differences mean anything). */
static inline double kd_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif
