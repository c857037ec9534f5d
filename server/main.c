/* bert-server: start-up, signal handling and graceful shutdown.
 *
 * Order: settings (exit 2 on a bad one), listen (health routes answer at once,
 * /readyz says "loading"), load the model once (exit 1 with the loader's
 * message), start the workers, open the /v1 routes and log the URL.
 *
 * SIGTERM or SIGINT while loading ends start-up at once (exit 0). Once ready,
 * the first one starts draining: /readyz and new work answer 503, accepted
 * requests finish, and the process exits within shutdown.grace_period_s of
 * the signal whatever is still running: 0 when every accepted request was
 * answered, 3 when the deadline passed with work unfinished (those
 * connections are closed unanswered). A second signal cuts the grace period
 * to about a second. SIGHUP re-reads server.auth_token_file (auth.h; a file
 * that fails to parse keeps the tokens in use, and the log says why).
 * SIGUSR1, SIGUSR2 and SIGALRM are logged and otherwise ignored (the log is
 * stderr: there is nothing to reopen). */
#include <cblas.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "assets.h"
#include "auth.h"
#include "bert.h"
#include "blas_cpu.h"
#include "config.h"
#include "http.h"
#include "infer.h"
#include "log.h"
#include "metrics.h"
#include "pool.h"

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* CPUs this process may use: the affinity mask (taskset, cpusets), capped by a
 * cgroup CPU quota (a Kubernetes CPU limit: cgroup v2 cpu.max "QUOTA PERIOD",
 * or v1 cfs_quota_us / cfs_period_us), rounded up; at least 1. */
static int cpu_budget(void) {
    int n = 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) n = CPU_COUNT(&set);
    if (n < 1) n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    long quota = -1, period = 0;
    FILE *f = fopen("/sys/fs/cgroup/cpu.max", "r");
    if (f) {
        char q[32] = "";
        if (fscanf(f, "%31s %ld", q, &period) == 2 && strcmp(q, "max") != 0) quota = atol(q);
        fclose(f);
    } else if ((f = fopen("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "r"))) {
        if (fscanf(f, "%ld", &quota) != 1) quota = -1;
        fclose(f);
        if ((f = fopen("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "r"))) {
            if (fscanf(f, "%ld", &period) != 1) period = 0;
            fclose(f);
        }
    }
    if (quota > 0 && period > 0) {
        long q = (quota + period - 1) / period;
        if (q < n) n = (int)q;
    }
    return n;
}

/* Each worker splits its forward pass across its own threads (core's
 * bert_workspace_new_threads), and every slice calls OpenBLAS: OpenBLAS's own
 * threads on top would oversubscribe the cores, so it runs single-threaded.
 * An explicit OPENBLAS_NUM_THREADS still wins. Returns the count in use. */
static int set_blas_threads(void) {
    if (!getenv("OPENBLAS_NUM_THREADS")) openblas_set_num_threads(1);
    return openblas_get_num_threads();
}

/* SIGTERM/SIGINT reach this process through a handler that writes the signal
 * number to a pipe, not through sigwait with the signals blocked: OpenBLAS
 * starts its thread pool when the library loads, before main can block
 * anything, and a process-directed signal landing on one of those threads
 * would otherwise take the default action and kill the server mid-drain. */
static int sig_pipe[2] = {-1, -1};

static void on_signal(int sig) {
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    ssize_t n = write(sig_pipe[1], &b, 1); /* full pipe: a signal is already pending */
    (void)n;
    errno = saved;
}

/* Signals the server takes; the others keep their default action. */
static const int HANDLED[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2, SIGALRM};
#define N_HANDLED (sizeof(HANDLED) / sizeof(HANDLED[0]))

/* Written to sig_pipe by the loader thread when it is done: not a signal. */
#define EVENT_LOADED 0

static int signals_install(char *err, size_t errlen) {
    if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        snprintf(err, errlen, "cannot create the signal pipe: %s", strerror(errno));
        return -1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < N_HANDLED; i++) {
        if (sigaction(HANDLED[i], &sa, NULL) != 0) {
            snprintf(err, errlen, "cannot install signal handlers: %s", strerror(errno));
            return -1;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

static const char *signal_name(int sig) {
    switch (sig) {
    case SIGTERM:
        return "SIGTERM";
    case SIGINT:
        return "SIGINT";
    case SIGHUP:
        return "SIGHUP";
    case SIGUSR1:
        return "SIGUSR1";
    case SIGUSR2:
        return "SIGUSR2";
    case SIGALRM:
        return "SIGALRM";
    default:
        return "?";
    }
}

/* SIGHUP: the token file is re-read here, on whichever thread waits for
 * signals; requests keep being checked against the old set until the new
 * one is complete. */
static void reload_tokens(void) {
    char err[1024] = "";
    int before = auth_count(), now = 0;
    int rc = auth_reload(&now, err, sizeof(err));
    if (rc == AUTH_OK)
        log_json_always(
            LOG_INFO, "auth tokens reloaded",
            json_pack("{s:s,s:i,s:i}", "signal", "SIGHUP", "tokens", now, "tokens_before", before));
    else
        log_json_always(
            LOG_WARN,
            rc == AUTH_ERR_NO_FILE ? "SIGHUP: nothing to reload"
                                   : "auth tokens not reloaded: keeping the old ones",
            json_pack("{s:s,s:s,s:i}", "signal", "SIGHUP", "reason", err, "tokens", now));
}

/* Waits until deadline_ns (-1: forever) for SIGTERM/SIGINT or, when
 * want_loaded, the loader's EVENT_LOADED; returns it, or -1 at the deadline.
 * SIGHUP reloads the tokens; the other handled signals are logged and
 * waited through. */
static int next_event(int64_t deadline_ns, int want_loaded) {
    struct pollfd p = {.fd = sig_pipe[0], .events = POLLIN};
    for (;;) {
        int timeout_ms = -1;
        if (deadline_ns >= 0) {
            int64_t left = deadline_ns - infer_now_ns();
            if (left <= 0) return -1;
            timeout_ms = (int)((left + 999999) / 1000000);
        }
        int r = poll(&p, 1, timeout_ms);
        if (r < 0 && errno != EINTR) return -1;
        if (r <= 0) continue;
        unsigned char b;
        if (read(sig_pipe[0], &b, 1) != 1) continue;
        if (b == SIGTERM || b == SIGINT || (b == EVENT_LOADED && want_loaded)) return b;
        if (b == SIGHUP)
            reload_tokens();
        else if (b != EVENT_LOADED)
            log_json_always(LOG_WARN, "signal ignored",
                            json_pack("{s:s}", "signal", signal_name(b)));
    }
}

/* While the model loads (on the main thread: its allocations then live in
 * the main malloc arena, as before), this thread answers SIGTERM/SIGINT: a
 * load can take long (a slow volume, a big checkpoint), and the
 * orchestrator's stop must not wait for it. Nothing has been accepted yet
 * (every /v1 request is answered 503 loading), so it stops listening and
 * ends the process; main sends EVENT_LOADED when loading is over. */
typedef struct load_watch {
    http_server *srv;
    int64_t t0;
} load_watch;

static void *watch_loading(void *arg) {
    load_watch *w = arg;
    int ev = next_event(-1, 1);
    if (ev == EVENT_LOADED) return NULL;
    log_json_always(LOG_INFO, "stopped during start-up",
                    json_pack("{s:s,s:f}", "signal", signal_name(ev), "load_ms",
                              (double)(infer_now_ns() - w->t0) / 1e6));
    http_quiesce(w->srv);
    _exit(0);
}

static void end_watch(pthread_t watcher) {
    unsigned char b = EVENT_LOADED;
    while (write(sig_pipe[1], &b, 1) != 1 && errno == EAGAIN)
        sleep_ms(1); /* the watcher is reading: room comes */
    pthread_join(watcher, NULL);
}

/* Waits for accepted work to finish, a second signal, or the deadline.
 * Returns 1 when a second signal cut it short. */
static int drain(http_server *srv, int64_t deadline_ns) {
    while (http_accepted(srv) > 0 && infer_now_ns() < deadline_ns) {
        int64_t tick = infer_now_ns() + 20000000LL;
        if (next_event(tick < deadline_ns ? tick : deadline_ns, 0) > 0) {
            log_msg(LOG_WARN, "second signal: ending the grace period now");
            return 1;
        }
    }
    return 0;
}

/* Ends the process from anywhere, without running exit handlers or joining
 * threads that may still be busy (a worker in a forward pass). */
static _Noreturn void exit_now(int code) {
    _exit(code);
}

/* Settings that look like auth but do not turn it on or off, said loudly:
 * an empty BERT_AUTH_TOKEN (an optional Secret that is absent) is ignored. */
static void warn_about_auth(const cfg *c) {
    static const char *const TOKEN_ENV[] = {"BERT_AUTH_TOKEN", "BERT_SERVER_AUTH_TOKEN"};
    for (size_t i = 0; i < sizeof(TOKEN_ENV) / sizeof(TOKEN_ENV[0]); i++) {
        const char *env_token = getenv(TOKEN_ENV[i]);
        if (env_token && !*env_token) {
            char msg[64];
            snprintf(msg, sizeof(msg), "%s is set but empty: ignored", TOKEN_ENV[i]);
            log_json_always(LOG_WARN, msg,
                            json_pack("{s:s}", "auth", auth_enabled() ? "bearer token" : "off"));
        }
    }
    if (c->auth_token_file[0] && c->auth_token[0])
        log_json_always(LOG_WARN, "server.auth_token is ignored: server.auth_token_file is set",
                        json_pack("{s:s}", "auth_token_file", c->auth_token_file));
}

/* The model of c's model.dir as model.compute asks: int8-checked loads it
 * twice, int8 as *model and float32 as *reference (else NULL). Returns 0, or
 * nonzero with err naming the file, key or tensor at fault. */
static int load_models(const cfg *c, bert_model **model, bert_model **reference, char *err,
                       size_t errlen) {
    const bert_load_options lo = {.compute = c->compute == CFG_COMPUTE_FP32 ? BERT_COMPUTE_FP32
                                                                            : BERT_COMPUTE_INT8};
    if (bert_model_load_opts(c->model_dir, &lo, model, err, errlen) != BERT_OK) return 1;
    if (c->compute != CFG_COMPUTE_INT8_CHECKED) return 0;
    const bert_load_options fp32 = {.compute = BERT_COMPUTE_FP32};
    return bert_model_load_opts(c->model_dir, &fp32, reference, err, errlen) != BERT_OK;
}

/* What /metrics says about the loaded model. */
static metrics_model_info model_info(const api_ctx *api) {
    const bert_model *model = api->model;
    const int max_len = api->max_len;
    const bert_config *bc = bert_model_config(model);
    return (metrics_model_info){
        .name = bert_model_name(model),
        .dtype = bert_model_dtype(model),
        .hidden_act = bc->hidden_act_name,
        .vocab_size = bc->vocab_size,
        .hidden_size = bc->hidden_size,
        .layers = bc->num_hidden_layers,
        .heads = bc->num_attention_heads,
        .max_sequence_length = max_len,
        .has_mlm = bert_model_has_mlm(model),
        .has_nsp = bert_model_has_nsp(model),
        .params = bert_model_param_count(model),
        .weight_bytes = api_weight_bytes(api),
        .compute = cfg_compute_name(api->cfg->compute),
        .kernel = api->kernel,
    };
}

/* Shutdown timing (docs/DEPLOY.md, "Shutdown timing"). */
#define NS_PER_S         1000000000LL
#define FLUSH_MAX_NS     NS_PER_S /* at most this of the grace period is kept for answers in flight */
#define SECOND_SIGNAL_NS NS_PER_S /* what is left of the grace period after a second signal */
#define REFUSALS_FLUSH_NS                                                                          \
    NS_PER_S /* time for 503 draining answers to leave before sockets close                        \
              */
#define SHUTDOWN_POLL_MS 5

/* The shutdown sequence after the first SIGTERM/SIGINT: stop taking work,
 * let accepted work finish within the grace period (a second signal cuts it
 * to SECOND_SIGNAL_NS), answer what is still queued with 503, give answers
 * in flight the last tenth of the period (at most FLUSH_MAX_NS), then stop.
 * Returns 0 after a clean stop (srv is stopped); when the grace period ends
 * with work unanswered the process exits at once with status 3. */
static int shut_down(http_server *srv, pool *workers, infer_ctx *ictx, int grace_period_s,
                     int sig) {
    int64_t t_sig = infer_now_ns();
    int64_t grace_ns = (int64_t)grace_period_s * NS_PER_S;
    /* All waiting before work_end is bounded; the process is gone by hard_end
     * in every case. */
    int64_t flush_ns = grace_ns / 10 < FLUSH_MAX_NS ? grace_ns / 10 : FLUSH_MAX_NS;
    int64_t hard_end = t_sig + grace_ns;
    int64_t work_end = hard_end - flush_ns;
    log_json_always(LOG_INFO, "draining",
                    json_pack("{s:s,s:i,s:i}", "signal", signal_name(sig), "in_flight",
                              http_accepted(srv), "grace_period_s", grace_period_s));
    http_begin_drain(srv);
    if (drain(srv, work_end)) {
        int64_t soon = infer_now_ns() + SECOND_SIGNAL_NS;
        if (soon < hard_end) hard_end = soon;
        work_end = hard_end - flush_ns / 2;
    }

    /* Whatever is still queued now is answered 503 by the workers; a batch
     * being computed may finish before work_end, or is abandoned. Every
     * suspended connection must be resumed before the daemon stops, as
     * libmicrohttpd requires, so with work abandoned the process exits
     * without stopping it. */
    atomic_store(&ictx->aborting, 1);
    pool_close(workers);
    while ((pool_depth(workers) > 0 || pool_active(workers) > 0 || http_accepted(srv) > 0) &&
           infer_now_ns() < work_end)
        sleep_ms(SHUTDOWN_POLL_MS);
    int left = http_accepted(srv);
    int running = pool_depth(workers) + pool_active(workers);
    /* Refusals queued during the drain (503 draining) are still on their way
     * out: stop accepting, then give them a moment before closing sockets. */
    http_quiesce(srv);
    int64_t flush_end = infer_now_ns() + REFUSALS_FLUSH_NS;
    if (flush_end > hard_end) flush_end = hard_end;
    while (http_open_connections(srv) > left && infer_now_ns() < flush_end)
        sleep_ms(SHUTDOWN_POLL_MS);
    int cut = http_open_connections(srv);
    if (left > 0 || running > 0) {
        log_json_always(LOG_WARN, "stopped",
                        json_pack("{s:i,s:i,s:i,s:s}", "unanswered", left, "connections_cut", cut,
                                  "abandoned", running, "reason",
                                  "the grace period ended before the work did"));
        exit_now(3);
    }
    http_stop(srv);
    log_json_always(LOG_INFO, "stopped",
                    json_pack("{s:i,s:i}", "unanswered", left, "connections_cut", cut));
    return 0;
}

int main(int argc, char **argv) {
    blas_cpu_fix(argv); /* may execute the program again, with the kernels the CPU deserves */
    cfg c;
    char err[2048] = "";
    int rc = cfg_from_args(&c, argc, argv, err, sizeof(err));
    if (rc == CFG_HELP) return 0;
    if (rc) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    log_set_level(c.log_level);
    if (auth_init(&c, err, sizeof(err))) {
        fprintf(stderr, "bert-server: key 'server.auth_token_file': %s\n", err);
        return 2;
    }
    warn_about_auth(&c);

    if (signals_install(err, sizeof(err)) != 0) {
        fprintf(stderr, "bert-server: %s\n", err);
        return 1;
    }
    metrics_init();

    int exit_code = 1;
    http_server *srv = NULL;
    bert_model *model = NULL;
    bert_model *reference = NULL; /* int8-checked: the float32 model of near-ties */
    pool *workers = NULL;
    api_ctx api;
    infer_ctx ictx;
    memset(&ictx, 0, sizeof(ictx));
    metrics_model_info mi;

    if (assets_init(err, sizeof(err))) {
        fprintf(stderr, "bert-server: embedded %s\n", err);
        goto cleanup;
    }
    if (http_start(&c, &srv, err, sizeof(err))) {
        fprintf(stderr, "bert-server: %s\n", err);
        goto cleanup;
    }
    char resolved[PATH_MAX];
    const char *model_path = realpath(c.model_dir, resolved) ? resolved : c.model_dir;
    log_json(LOG_INFO, "loading model",
             json_pack("{s:s,s:i}", "model_dir", model_path, "port", http_port(srv)));
    int64_t t0 = infer_now_ns();
    load_watch lw = {.srv = srv, .t0 = t0};
    pthread_t watcher;
    if (pthread_create(&watcher, NULL, watch_loading, &lw) != 0) {
        fprintf(stderr, "bert-server: cannot start the signal watcher thread\n");
        goto cleanup;
    }
    int load_failed = load_models(&c, &model, &reference, err, sizeof(err)) ||
                      api_ctx_init(&api, model, c.model_dir, &c, err, sizeof(err));
    if (!load_failed && reference) api_ctx_set_reference(&api, reference);
    end_watch(watcher);
    if (load_failed) {
        fprintf(stderr, "bert-server: cannot load model from %s: %s\n", c.model_dir, err);
        goto cleanup;
    }
    const bert_config *bc = bert_model_config(model);
    if (c.max_sequence_length > bc->max_position_embeddings)
        log_json(LOG_INFO, "model.max_sequence_length capped by the model's position table",
                 json_pack("{s:i,s:i}", "configured", c.max_sequence_length, "using",
                           bc->max_position_embeddings));
    mi = model_info(&api);
    ictx.api = &api;
    /* One worker using every core serves a lone request fastest, and under load
     * it batches queued requests (up to workers.batch_max_tokens) into one
     * forward, which uses the cores as well as more workers would
     * (bench/README.md). */
    int cpus = cpu_budget();
    ictx.threads = c.threads > 0 ? c.threads : (cpus / c.workers > 0 ? cpus / c.workers : 1);
    int blas_threads = set_blas_threads();
    pool_options po = {
        .workers = c.workers,
        .queue_depth = c.queue_depth,
        .batch_max_cost = c.batch_max_tokens,
        .batch_wait_us = c.batch_wait_us,
        .max_batch_items = c.queue_depth < 256 ? c.queue_depth : 256,
    };
    pool_callbacks cb = infer_pool_callbacks(&ictx);
    if (pool_new(&po, &cb, &workers, err, sizeof(err)) != POOL_OK) {
        fprintf(stderr, "bert-server: cannot start workers: %s\n", err);
        goto cleanup;
    }
    http_set_ready(srv, &api, workers, &mi);
    char url[128];
    snprintf(url, sizeof(url), strchr(c.listen, ':') ? "%s://[%s]:%d" : "%s://%s:%d",
             c.tls_cert_file[0] ? "https" : "http", c.listen, http_port(srv));
    const char *blas_how, *blas_was;
    const char *blas_core = blas_cpu_core(&blas_how, &blas_was);
    if (*blas_was)
        log_json(LOG_INFO, "OpenBLAS kernels corrected",
                 json_pack("{s:s,s:s}", "detected", blas_was, "using", blas_core));
    log_json_always(
        LOG_INFO, "ready",
        json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:i,s:i,s:i,s:i,s:s,s:i,s:I,s:f}", "url", url, "auth",
                  auth_enabled() ? "bearer token" : "off", "model", mi.name, "dtype", mi.dtype,
                  "compute", mi.compute, "kernel", mi.kernel, "workers", c.workers, "threads",
                  ictx.threads, "cpus", cpus, "blas_threads", blas_threads, "blas_core", blas_core,
                  "max_sequence_length", api.max_len, "weight_bytes", (json_int_t)mi.weight_bytes,
                  "load_ms", (double)(infer_now_ns() - t0) / 1e6));

    int sig = next_event(-1, 0);
    exit_code = shut_down(srv, workers, &ictx, c.grace_period_s, sig);
    srv = NULL;

cleanup:
    http_stop(srv);
    pool_free(workers);
    bert_model_free(model);
    bert_model_free(reference);
    assets_free();
    auth_free();
    return exit_code;
}
