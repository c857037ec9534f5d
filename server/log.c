/* log: JSON lines on stderr. See log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int g_level = LOG_INFO;

void log_set_level(cfg_log_level level) {
    atomic_store(&g_level, (int)level);
}

int log_enabled(cfg_log_level level) {
    return (int)level >= atomic_load(&g_level);
}

static void format_ts(char *buf, size_t len) {
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, len - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

static void write_all(const char *s, size_t n) {
    while (n) {
        ssize_t w = write(STDERR_FILENO, s, n);
        if (w <= 0) return; /* stderr gone: nothing sensible left to do */
        s += w;
        n -= (size_t)w;
    }
}

void log_json(cfg_log_level level, const char *msg, json_t *fields) {
    if (!log_enabled(level)) {
        json_decref(fields);
        return;
    }
    log_json_always(level, msg, fields);
}

void log_json_always(cfg_log_level level, const char *msg, json_t *fields) {
    char ts[40];
    format_ts(ts, sizeof(ts));
    /* ts, level and msg first so lines read well in a terminal too. */
    json_t *line = json_object();
    json_object_set_new(line, "ts", json_string(ts));
    json_object_set_new(line, "level", json_string(cfg_log_level_name(level)));
    if (msg) json_object_set_new(line, "msg", json_string(msg));
    if (fields) json_object_update(line, fields);
    json_decref(fields);
    char *s = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    json_decref(line);
    if (!s) return;
    size_t n = strlen(s);
    s[n] = '\n'; /* overwrite NUL: written by length below */
    write_all(s, n + 1);
    free(s);
}

void log_msg(cfg_log_level level, const char *fmt, ...) {
    if (!log_enabled(level)) return;
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    log_json(level, buf, NULL);
}
