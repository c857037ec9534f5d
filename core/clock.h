/* clock: the one monotonic clock of the project (deadlines, latencies,
 * benchmark timings). CLOCK_MONOTONIC: what pthread condition variables set
 * to it (pool.c) and every deadline compare against. */
#ifndef BERT_CLOCK_H
#define BERT_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Nanoseconds on CLOCK_MONOTONIC. */
static inline int64_t clock_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The CLOCK_MONOTONIC time ns from now, as pthread_cond_timedwait takes it. */
static inline struct timespec clock_after_ns(int64_t ns) {
    int64_t t = clock_now_ns() + ns;
    struct timespec ts = {.tv_sec = (time_t)(t / 1000000000LL),
                          .tv_nsec = (long)(t % 1000000000LL)};
    return ts;
}

#endif
