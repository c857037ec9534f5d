/* log: structured logging, one JSON object per line on stderr.
 *
 * Owns: the process-wide level threshold. Every line carries "ts" (UTC,
 * RFC 3339 with milliseconds) and "level"; lines are written with a single
 * write(2) so concurrent threads never interleave. Safe from any thread. */
#ifndef BERT_SERVER_LOG_H
#define BERT_SERVER_LOG_H

#include <jansson.h>

#include "config.h"

void log_set_level(cfg_log_level level);
int log_enabled(cfg_log_level level);

/* Writes fields (an object; may be NULL) plus ts/level/msg, then releases the
 * caller's reference to fields. */
void log_json(cfg_log_level level, const char *msg, json_t *fields);

/* Same, whatever the level threshold: for the few lines an operator (or a
 * supervisor script) must always see, such as the URL once ready. */
void log_json_always(cfg_log_level level, const char *msg, json_t *fields);

/* printf-style message without extra fields. */
void log_msg(cfg_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
