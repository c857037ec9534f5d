/* bert-cli: command-line front end of core/. Dispatches to the subcommands
 * declared in cli.h. */
#include "blas_cpu.h"
#include "cli.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} cli_commands[] = {
    {"bench", cli_bench, "time the forward pass in-process (latency, GFLOP/s)"},
    {"check", cli_check, "load a checkpoint directory and print its summary"},
    {"fill", cli_fill, "fill [MASK] tokens of each stdin line"},
    {"mask", cli_mask, "apply BERT's MLM masking rule to JSON-lines id lists"},
    {"forward", cli_forward, "JSON-lines batches in, MLM/NSP logits and losses out"},
    {"tokenize", cli_tokenize, "JSON-lines texts in, token ids and offsets out"},
};

int cli_compute_env(bert_compute *out) {
    const char *env = getenv("BERT_COMPUTE");
    if (!env) return 1;
    int mode = bert_compute_parse(env);
    if (mode < 0) {
        fprintf(stderr, "bert-cli: BERT_COMPUTE must be fp32 or int8, got '%s'\n", env);
        return 0;
    }
    *out = (bert_compute)mode;
    return 1;
}

static void cli_usage(FILE *fp) {
    fprintf(fp, "usage: bert-cli COMMAND [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(cli_commands) / sizeof(cli_commands[0]); i++)
        fprintf(fp, "  %-10s %s\n", cli_commands[i].name, cli_commands[i].help);
}

int main(int argc, char **argv) {
    blas_cpu_fix(argv);
    /* The forward pass splits work across its own threads (BERT_THREADS,
     * --threads), each calling single-threaded OpenBLAS, as the server does;
     * an explicit OPENBLAS_NUM_THREADS still wins. */
    if (!getenv("OPENBLAS_NUM_THREADS")) openblas_set_num_threads(1);
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        cli_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof(cli_commands) / sizeof(cli_commands[0]); i++)
        if (strcmp(argv[1], cli_commands[i].name) == 0)
            return cli_commands[i].run(argc - 2, argv + 2);
    fprintf(stderr, "bert-cli: unknown command '%s'\n", argv[1]);
    cli_usage(stderr);
    return 2;
}
