/* pool: bounded queue + worker threads with cost-budgeted batching. */
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"

typedef struct worker {
    pool *p;
    int idx;
    pthread_t thread;
    int started;
} worker;

struct pool {
    pool_options opt;
    pool_callbacks cb;
    pthread_mutex_t mu;
    pthread_cond_t not_empty;
    pthread_cond_t init_done;
    pool_item *head, *tail;
    int depth;
    int active;
    int closed;
    int n_init_ok, n_init_failed;
    char init_err[256];
    worker *workers;
    int n_workers;
};

static pool_item *pop_locked(pool *p) {
    pool_item *it = p->head;
    p->head = it->next;
    if (!p->head) p->tail = NULL;
    it->next = NULL;
    p->depth--;
    return it;
}

/* Pops queued items, oldest first, while their summed cost stays within
 * budget (and n within max_items); returns how many. Holds p->mu. */
static int take_fitting_locked(pool *p, pool_item **items, int max_items, long budget) {
    int n = 0;
    while (n < max_items && p->head && p->head->cost <= budget) {
        budget -= p->head->cost;
        items[n++] = pop_locked(p);
    }
    return n;
}

/* Takes the first item (blocking) and as many followers as fit the budget.
 * Returns 0 when the pool is closed and empty. */
static int take_batch(pool *p, pool_item **items, int max_items) {
    int n = 0;
    long cost = 0;
    pthread_mutex_lock(&p->mu);
    while (!p->head && !p->closed)
        pthread_cond_wait(&p->not_empty, &p->mu);
    if (!p->head) {
        pthread_mutex_unlock(&p->mu);
        return 0;
    }
    items[n++] = pop_locked(p);
    cost = items[0]->cost;
    struct timespec until;
    int have_deadline = 0;
    while (n < max_items) {
        if (p->head) {
            int got =
                take_fitting_locked(p, items + n, max_items - n, p->opt.batch_max_cost - cost);
            if (got == 0) break;
            for (int i = n; i < n + got; i++)
                cost += items[i]->cost;
            n += got;
            continue;
        }
        if (p->opt.batch_wait_us <= 0 || p->closed) break;
        if (!have_deadline) {
            until = clock_after_ns((int64_t)p->opt.batch_wait_us * 1000);
            have_deadline = 1;
        }
        if (pthread_cond_timedwait(&p->not_empty, &p->mu, &until) == ETIMEDOUT && !p->head) break;
    }
    p->active += n;
    pthread_mutex_unlock(&p->mu);
    return n;
}

/* Runs admit() on items[from..n), compacting the kept ones to the front of
 * that range and recording their actual costs; adds those to *cost; returns
 * the new n. */
static int admit_range(pool *p, void *state, pool_item **items, int from, int n, long *cost) {
    int kept = from;
    for (int i = from; i < n; i++) {
        long c = p->cb.admit(state, items[i], p->cb.user);
        if (c < 0) continue; /* completed by admit: not ours to touch again */
        items[i]->cost = c;
        items[i]->cost_known = 1;
        *cost += c;
        items[kept++] = items[i];
    }
    return kept;
}

/* Puts an item taken from the front back there. */
static void requeue_front(pool *p, pool_item *it) {
    pthread_mutex_lock(&p->mu);
    it->next = p->head;
    p->head = it;
    if (!p->tail) p->tail = it;
    p->depth++;
    p->active--;
    pthread_cond_signal(&p->not_empty);
    pthread_mutex_unlock(&p->mu);
}

/* The batch's admitted items, topped up without waiting from the queue while
 * their actual costs leave room in the budget: queued items whose cost fits
 * are taken; when the next one's cost is only a bound that does not fit, it
 * is taken to learn its actual cost, and put back if that does not fit
 * either. *taken counts the items taken and not put back, for the active
 * count. Returns the batch's size. */
static int admit_batch(pool *p, void *state, pool_item **items, int n, int *taken) {
    const long budget = p->opt.batch_max_cost;
    const int max_items = p->opt.max_batch_items;
    long cost = 0;
    n = admit_range(p, state, items, 0, n, &cost);
    while (n > 0 && n < max_items && cost < budget) {
        pthread_mutex_lock(&p->mu);
        int got = take_fitting_locked(p, items + n, max_items - n, budget - cost);
        int probe = got == 0 && p->head && !p->head->cost_known;
        if (probe) items[n + got++] = pop_locked(p);
        p->active += got;
        pthread_mutex_unlock(&p->mu);
        if (got == 0) break;
        *taken += got;
        long before = cost;
        int kept = admit_range(p, state, items, n, n + got, &cost);
        if (probe && kept > n && cost > budget) {
            requeue_front(p, items[n]);
            (*taken)--;
            cost = before;
            break;
        }
        n = kept;
    }
    return n;
}

static void *worker_main(void *arg) {
    worker *w = arg;
    pool *p = w->p;
    char err[256] = "";
    void *state = p->cb.init ? p->cb.init(w->idx, p->cb.user, err, sizeof(err)) : NULL;
    int ok = !p->cb.init || state != NULL;
    pthread_mutex_lock(&p->mu);
    if (ok) {
        p->n_init_ok++;
    } else {
        p->n_init_failed++;
        snprintf(p->init_err, sizeof(p->init_err), "worker %d: %s", w->idx, err);
    }
    pthread_cond_broadcast(&p->init_done);
    pthread_mutex_unlock(&p->mu);
    if (!ok) return NULL;

    pool_item **items = calloc((size_t)p->opt.max_batch_items, sizeof(*items));
    if (!items) goto cleanup;
    for (;;) {
        int taken = take_batch(p, items, p->opt.max_batch_items);
        if (taken == 0) break;
        int n = p->cb.admit ? admit_batch(p, state, items, taken, &taken) : taken;
        if (n > 0) p->cb.run(state, items, n, p->cb.user);
        pthread_mutex_lock(&p->mu);
        p->active -= taken;
        pthread_mutex_unlock(&p->mu);
    }
cleanup:
    free(items);
    if (p->cb.fini) p->cb.fini(state, p->cb.user);
    return NULL;
}

int pool_new(const pool_options *opt, const pool_callbacks *cb, pool **out, char *err,
             size_t errlen) {
    *out = NULL;
    pool *p = calloc(1, sizeof(*p));
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return POOL_ERR;
    }
    p->opt = *opt;
    if (p->opt.max_batch_items < 1) p->opt.max_batch_items = 1;
    if (p->opt.workers < 1) p->opt.workers = 1;
    p->cb = *cb;
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->not_empty, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&p->init_done, NULL);
    p->workers = calloc((size_t)p->opt.workers, sizeof(*p->workers));
    if (!p->workers) {
        snprintf(err, errlen, "out of memory");
        pool_free(p);
        return POOL_ERR;
    }
    for (int i = 0; i < p->opt.workers; i++) {
        worker *w = &p->workers[i];
        w->p = p;
        w->idx = i;
        int e = pthread_create(&w->thread, NULL, worker_main, w);
        if (e) {
            snprintf(err, errlen, "cannot start worker thread %d: %s", i, strerror(e));
            pool_free(p);
            return POOL_ERR;
        }
        w->started = 1;
        p->n_workers++;
    }
    pthread_mutex_lock(&p->mu);
    while (p->n_init_ok + p->n_init_failed < p->n_workers)
        pthread_cond_wait(&p->init_done, &p->mu);
    int failed = p->n_init_failed;
    pthread_mutex_unlock(&p->mu);
    if (failed) {
        snprintf(err, errlen, "%s", p->init_err);
        pool_free(p);
        return POOL_ERR;
    }
    *out = p;
    return POOL_OK;
}

int pool_submit(pool *p, pool_item *item) {
    int rc = POOL_OK;
    item->next = NULL;
    item->cost_known = 0;
    pthread_mutex_lock(&p->mu);
    if (p->closed) {
        rc = POOL_CLOSED;
    } else if (p->depth >= p->opt.queue_depth) {
        rc = POOL_FULL;
    } else {
        if (p->tail)
            p->tail->next = item;
        else
            p->head = item;
        p->tail = item;
        p->depth++;
        pthread_cond_signal(&p->not_empty);
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

int pool_depth(pool *p) {
    pthread_mutex_lock(&p->mu);
    int d = p->depth;
    pthread_mutex_unlock(&p->mu);
    return d;
}

int pool_active(pool *p) {
    pthread_mutex_lock(&p->mu);
    int a = p->active;
    pthread_mutex_unlock(&p->mu);
    return a;
}

void pool_close(pool *p) {
    pthread_mutex_lock(&p->mu);
    p->closed = 1;
    pthread_cond_broadcast(&p->not_empty);
    pthread_mutex_unlock(&p->mu);
}

void pool_free(pool *p) {
    if (!p) return;
    pool_close(p);
    for (int i = 0; i < p->opt.workers && p->workers; i++)
        if (p->workers[i].started) pthread_join(p->workers[i].thread, NULL);
    free(p->workers);
    pthread_cond_destroy(&p->not_empty);
    pthread_cond_destroy(&p->init_done);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
