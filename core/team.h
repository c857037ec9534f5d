/* team: a fixed group of threads that runs one parallel region at a time
 * (fork-join), for splitting one forward pass across the cores.
 *
 * Why not OpenBLAS's own threads: at the row counts of one request (16-512
 * tokens) OpenBLAS's threading scales poorly, and the work between the
 * products (attention per head, layer norm, GELU) would stay on one core.
 * The forward pass instead gives each thread its own slice (output columns of
 * a product, heads of attention, rows of a layer norm) and each slice calls
 * single-threaded OpenBLAS.
 *
 * Owns: n - 1 helper threads; the caller of team_run is participant 0. A team
 * is used by one thread at a time (the worker that owns the workspace).
 * Waiting: helpers spin for a few microseconds after a region (the next one
 * usually follows at once), then sleep on a condition variable, so an idle
 * server uses no CPU. */
#ifndef BERT_TEAM_H
#define BERT_TEAM_H

typedef struct team team;

/* One participant's share: idx in [0, n). */
typedef void (*team_fn)(void *arg, int idx, int n);

/* Starts a team of n participants (n - 1 threads; n <= 1 starts none).
 * Returns NULL when a thread cannot be started or memory runs out. */
team *team_new(int n);

/* Stops and joins the helpers. NULL is a no-op. */
void team_free(team *t);

/* Participants, caller included (1 for NULL). */
int team_size(const team *t);

/* Calls fn(arg, i, n) once for every i in [0, n), i = 0 on the calling
 * thread, and returns when all have returned. t NULL or of size 1: fn(arg, 0, 1). */
void team_run(team *t, team_fn fn, void *arg);

#endif
