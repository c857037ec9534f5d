/* team: fork-join threads. See team.h. */
#include "team.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

/* Polls before sleeping: a forward pass runs ~10 regions per layer back to
 * back, and a futex wake-up costs tens of microseconds, more than many of the
 * regions at 16 tokens. ~20-40 us of polling covers the gap between regions
 * without burning a shared core when the server is idle. */
#define TEAM_SPIN 2000

struct team {
    int n;
    pthread_t *threads;
    int n_started;
    pthread_mutex_t mu;
    pthread_cond_t start_cv, done_cv;
    atomic_uint gen;      /* bumped once per region */
    atomic_int remaining; /* helpers still inside the current region */
    atomic_int quit;
    team_fn fn; /* written before gen is bumped, read after */
    void *arg;
};

typedef struct team_helper {
    team *t;
    int idx;
} team_helper;

static inline void team_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void *team_main(void *p) {
    team_helper h = *(team_helper *)p;
    free(p);
    team *t = h.t;
    unsigned seen = 0; /* gen at team_new: a region may start before this thread runs */
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&t->gen, memory_order_acquire)) == seen &&
               !atomic_load(&t->quit) && spins < TEAM_SPIN) {
            team_relax();
            spins++;
        }
        if (g == seen && !atomic_load(&t->quit)) {
            pthread_mutex_lock(&t->mu);
            while ((g = atomic_load(&t->gen)) == seen && !atomic_load(&t->quit))
                pthread_cond_wait(&t->start_cv, &t->mu);
            pthread_mutex_unlock(&t->mu);
        }
        if (atomic_load(&t->quit)) break;
        seen = g;
        t->fn(t->arg, h.idx, t->n);
        if (atomic_fetch_sub_explicit(&t->remaining, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&t->mu);
            pthread_cond_signal(&t->done_cv);
            pthread_mutex_unlock(&t->mu);
        }
    }
    return NULL;
}

team *team_new(int n) {
    team *t = calloc(1, sizeof(*t));
    if (!t) return NULL;
    t->n = n < 1 ? 1 : n;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->start_cv, NULL);
    pthread_cond_init(&t->done_cv, NULL);
    atomic_init(&t->gen, 0);
    atomic_init(&t->remaining, 0);
    atomic_init(&t->quit, 0);
    if (t->n > 1) {
        t->threads = calloc((size_t)t->n - 1, sizeof(*t->threads));
        if (!t->threads) goto fail;
        for (int i = 1; i < t->n; i++) {
            team_helper *h = malloc(sizeof(*h));
            if (!h) goto fail;
            h->t = t;
            h->idx = i;
            if (pthread_create(&t->threads[i - 1], NULL, team_main, h) != 0) {
                free(h);
                goto fail;
            }
            t->n_started++;
        }
    }
    return t;
fail:
    team_free(t);
    return NULL;
}

void team_free(team *t) {
    if (!t) return;
    pthread_mutex_lock(&t->mu);
    atomic_store(&t->quit, 1);
    pthread_cond_broadcast(&t->start_cv);
    pthread_mutex_unlock(&t->mu);
    for (int i = 0; i < t->n_started; i++)
        pthread_join(t->threads[i], NULL);
    free(t->threads);
    pthread_cond_destroy(&t->start_cv);
    pthread_cond_destroy(&t->done_cv);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

int team_size(const team *t) {
    return t ? t->n : 1;
}

void team_run(team *t, team_fn fn, void *arg) {
    if (!t || t->n <= 1) {
        fn(arg, 0, 1);
        return;
    }
    t->fn = fn;
    t->arg = arg;
    atomic_store_explicit(&t->remaining, t->n - 1, memory_order_relaxed);
    /* The bump publishes fn/arg (release); a helper that checked gen under the
     * lock before it and went to sleep is woken by the broadcast after it. */
    atomic_fetch_add_explicit(&t->gen, 1, memory_order_release);
    pthread_mutex_lock(&t->mu);
    pthread_cond_broadcast(&t->start_cv);
    pthread_mutex_unlock(&t->mu);
    fn(arg, 0, t->n);
    for (int spins = 0;
         atomic_load_explicit(&t->remaining, memory_order_acquire) > 0 && spins < TEAM_SPIN;
         spins++)
        team_relax();
    if (atomic_load_explicit(&t->remaining, memory_order_acquire) > 0) {
        pthread_mutex_lock(&t->mu);
        while (atomic_load(&t->remaining) > 0)
            pthread_cond_wait(&t->done_cv, &t->mu);
        pthread_mutex_unlock(&t->mu);
    }
}
