/* infer: what a worker thread does with a batch of api_jobs.
 *
 * Owns: each worker's bert_workspace and scratch buffers (one set per worker
 * thread, created on that thread), batching jobs into one forward pass, and
 * the numbers of each answer (top-k per [MASK], losses, NSP logits, written
 * into the job's api_inputs); answer.c renders them. Under model.compute
 * int8-checked (api_ctx.reference set) an input whose two best int8 logits are
 * closer than model.recheck_logit_gap is run again through the float32 model
 * and answered with its numbers; its job is answered after the rest of the
 * batch.
 * Every job handed to infer_run is completed exactly once (job->complete),
 * with an answer, its parse's refusal (api_prepare), 504 when its deadline
 * passed before work began, 503 when the server is aborting, 413 when the
 * answer would pass limits.max_answer_bytes, 499 client_closed when
 * job->gone() says its client has gone (checked when a worker takes it,
 * between encoder layers, where the whole batch is abandoned, and between
 * inputs while the answer is computed and rendered), or 500 when the forward
 * pass fails. */
#ifndef BERT_SERVER_INFER_H
#define BERT_SERVER_INFER_H

#include <stdatomic.h>

#include "api.h"
#include "pool.h"

typedef struct infer_ctx {
    const api_ctx *api;
    int threads;         /* compute threads of each worker's forward pass (>= 1) */
    atomic_int aborting; /* set when the grace period is over: queued jobs answer 503 */
} infer_ctx;

/* Callbacks for pool_new with user = ctx. */
pool_callbacks infer_pool_callbacks(infer_ctx *ctx);

/* clock_now_ns (clock.h), the clock of api_job.deadline_ns; kept under this
 * name for main.c. */
int64_t infer_now_ns(void);

#endif
