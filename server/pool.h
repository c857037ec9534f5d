/* pool: a bounded FIFO of work items served by N worker threads, with
 * batching.
 *
 * Owns: the worker threads, the queue and its lock. Items are intrusive
 * (embed a pool_item) and stay owned by the submitter; the pool only links
 * them. A worker takes the oldest item, then keeps taking queued items while
 * their summed cost stays within batch_max_cost (an item costlier than the
 * budget still runs, alone), waiting up to batch_wait_us for more to arrive,
 * and hands the batch to run(). Each worker has its own state made by init()
 * on its thread and released by fini().
 *
 * Queued costs are upper bounds (the server tokenizes on the workers, so it
 * only knows a byte bound when it queues). With an admit() callback the
 * worker learns each taken item's actual cost before run() and tops the batch
 * up with more queued items while the actual costs leave room, so a batch
 * fills its budget by what it really costs. An item taken to learn its cost
 * that then does not fit goes back to the front of the queue, where the next
 * batch takes it first; admit() may so see an item more than once.
 *
 * pool_submit never blocks: a full queue is POOL_FULL. After pool_close no
 * item is accepted; workers finish every queued item, then exit, and
 * pool_free joins them. */
#ifndef BERT_SERVER_POOL_H
#define BERT_SERVER_POOL_H

#include <stddef.h>

typedef struct pool_item {
    struct pool_item *next;
    long cost;      /* e.g. tokens; compared against batch_max_cost */
    int cost_known; /* the pool's: cost is admit()'s actual cost, not the bound */
} pool_item;

typedef enum {
    POOL_OK = 0,
    POOL_FULL = 1,
    POOL_CLOSED = 2,
    POOL_ERR = 3,
} pool_status;

typedef struct pool_callbacks {
    /* Runs on worker thread idx; returns the worker's state or NULL (err set). */
    void *(*init)(int idx, void *user, char *err, size_t errlen);
    /* items[0..n) in arrival order; the callee completes every item. */
    void (*run)(void *state, pool_item **items, int n, void *user);
    void (*fini)(void *state, void *user);
    /* Optional; runs on the worker for each taken item, in arrival order,
     * before run(): returns the item's actual cost (at most its queued cost),
     * or -1 when admit() completed the item itself, which then stays out of
     * the batch. */
    long (*admit)(void *state, pool_item *item, void *user);
    void *user;
} pool_callbacks;

typedef struct pool_options {
    int workers;
    int queue_depth;
    long batch_max_cost;
    long batch_wait_us;
    int max_batch_items; /* upper bound on n passed to run() */
} pool_options;

typedef struct pool pool;

/* Starts the workers and waits until every init() succeeded. */
int pool_new(const pool_options *opt, const pool_callbacks *cb, pool **out, char *err,
             size_t errlen);
int pool_submit(pool *p, pool_item *item);
int pool_depth(pool *p);  /* items waiting, not yet taken by a worker */
int pool_active(pool *p); /* items taken by workers and not yet returned from run() */
void pool_close(pool *p);
void pool_free(pool *p); /* closes, drains, joins */

#endif
