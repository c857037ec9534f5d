/* cli: subcommands of bert-cli, the command-line front end of core/ used by
 * `make run` before the server existed, by the tests and by scripts. Each
 * subcommand takes argv after its own name and returns a process exit code. */
#ifndef BERT_CLI_H
#define BERT_CLI_H

#include "bert.h"

/* bert-cli tokenize (--model DIR | --vocab FILE [--no-lower] [--strip-accents 0|1]
 *                   [--no-chinese]) [--max-len N --truncate longest_first|only_first|only_second
 *                   [--side left|right]] [--raw | --decode | --normalize]
 * stdin: JSON lines {"text": "...", "text_pair": "..."(optional)}; with --raw each line is
 *        the text itself (the only way to feed invalid UTF-8); with --decode
 *        {"ids": [...], "skip_special": bool, "cleanup": bool}
 * stdout: one JSON line each: {"ids":[..],"type_ids":[..],"offsets":[[s,e],..],"tokens":[..]},
 *         {"text": "..."} (--decode), {"normalized": "..."} (--normalize),
 *         or {"error": "..."} for that line. */
int cli_tokenize(int argc, char **argv);

/* bert-cli forward --model DIR: JSON lines of batches in, logits and losses out
 * ("hidden": true in a line adds the encoder's last hidden states). */
int cli_forward(int argc, char **argv);

/* bert-cli check --model DIR: loads the checkpoint, prints a summary, exit 1 with
 * the loader's message on failure. */
int cli_check(int argc, char **argv);

/* bert-cli fill --model DIR [--top-k K]: fills [MASK] in each stdin line. */
int cli_fill(int argc, char **argv);

/* bert-cli mask --seed S --vocab-size V [--mask-id ID] [--prob P]
 * stdin: JSON lines {"ids": [...], "special": [0/1 per id] (optional)}
 * stdout: {"ids": [...masked...], "labels": [...]} — BERT's 15% / 80-10-10 rule. */
int cli_mask(int argc, char **argv);

/* bert-cli bench --model DIR [--tokens T] [--batch B] [--iters N]: in-process forward
 * latency (p50/p99) and achieved GFLOP/s, one JSON line. */
int cli_bench(int argc, char **argv);
double bench_flops(const bert_config *c, int B, int T);

/* Reads BERT_COMPUTE (fp32 or int8; unset: *out unchanged) for the model
 * commands. Returns 0 after printing a message when the value is bad. */
int cli_compute_env(bert_compute *out);

#endif
