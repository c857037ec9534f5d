/* tokenizer: BERT WordPiece tokenization, byte-for-byte what Hugging Face's
 * BertTokenizerFast produces for the same vocab and normalizer settings.
 *
 * Owns: the vocabulary (token <-> id), the normalizer options and the special
 * token ids. A loaded tok_tokenizer is immutable and may be shared by any
 * number of threads. Every output buffer belongs to the caller (tok_sequence,
 * strings returned by tok_decode).
 *
 * Contract: input text must be valid UTF-8 (TOK_ERR_UTF8 otherwise). Offsets
 * are byte offsets into the caller's original text. Special tokens written in
 * the text ("[MASK]", "[SEP]", ...) are kept whole, matched on the raw text
 * exactly as the fast tokenizer's added-token splitter does.
 *
 * vocab.txt is read as tokenizers reads it: one token per line, CRLF
 * accepted, trailing whitespace trimmed, ids numbered by line. A duplicate
 * line takes the token over (its text looks up to the later id); the earlier
 * id keeps its text for tok_id_to_token but decodes to nothing, as in
 * tokenizers. All five special tokens must be present. Special and added
 * tokens are what tok_load_dir reads (tok_load_vocab: BERT's five). */
#ifndef BERT_TOKENIZER_H
#define BERT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    TOK_OK = 0,
    TOK_ERR_IO = 1,       /* file missing or unreadable */
    TOK_ERR_FORMAT = 2,   /* vocab.txt / tokenizer_config.json malformed */
    TOK_ERR_UTF8 = 3,     /* input is not valid UTF-8 */
    TOK_ERR_TOO_LONG = 4, /* sequence exceeds max_len and truncation is off */
    TOK_ERR_NOMEM = 5,
    TOK_ERR_ARG = 6,
} tok_status;

/* Average bytes per vocab.txt line allowed when the token count is known:
 * bert-base-uncased averages 7.6, multilingual vocabularies under 10. */
#define TOK_VOCAB_LINE_BYTES 64
/* Any vocab.txt, count known or not. */
#define TOK_MAX_VOCAB_BYTES ((size_t)256 << 20)
/* tokenizer.json (its normalizer settings are read) */
#define TOK_MAX_TOKENIZER_JSON_BYTES ((size_t)64 << 20)

typedef struct tok_options {
    int lowercase;        /* do_lower_case */
    int strip_accents;    /* -1: follow lowercase (HF's null), 0: no, 1: yes */
    int tokenize_chinese; /* tokenize_chinese_chars */
    int max_input_chars;  /* WordPiece: longer words become [UNK]; HF uses 100 */
    /* tokenizer_config.json's clean_up_tokenization_spaces (missing or null:
     * false, as transformers): not used by tok_decode itself, whose caller
     * passes it as cleanup_spaces. */
    int cleanup_spaces;
} tok_options;

void tok_options_default(tok_options *opt); /* bert-base-uncased defaults */

typedef struct tok_special_ids {
    int32_t pad, unk, cls, sep, mask;
} tok_special_ids;

typedef struct tok_tokenizer tok_tokenizer;

/* Loads a checkpoint's tokenizer: the vocab from <dir>/vocab.txt, else the
 * WordPiece model of <dir>/tokenizer.json (its vocab, unk_token,
 * max_input_chars_per_word); do_lower_case, strip_accents and
 * tokenize_chinese_chars from tokenizer_config.json, falling back to
 * tokenizer.json's BertNormalizer; the five special token strings from
 * special_tokens_map.json over tokenizer_config.json (defaults "[PAD]",
 * "[UNK]", "[CLS]", "[SEP]", "[MASK]"); added tokens from tokenizer.json's
 * added_tokens (else tokenizer_config.json's added_tokens_decoder), matched
 * whole in the raw text, longest first; those past the vocab's end take ids
 * from it on. Added tokens that strip, match single words or match after
 * normalization are refused. Errors name the file and the key or token. */
int tok_load_dir(const char *dir, tok_tokenizer **out, char *err, size_t errlen);
/* Same, with vocab.txt bounded by what config.json implies: max_tokens > 0
 * (its vocab_size) caps the file at max_tokens * TOK_VOCAB_LINE_BYTES + 1 MiB.
 * Every file must be a regular file (a FIFO, device or directory is refused
 * by name, never waited on or read forever); tokenizer_config.json is capped
 * at FIO_MAX_CONFIG_BYTES and tokenizer.json at TOK_MAX_TOKENIZER_JSON_BYTES. */
int tok_load_dir_capped(const char *dir, int max_tokens, tok_tokenizer **out, char *err,
                        size_t errlen);
/* Loads one vocab.txt with explicit options (used by tests and fuzzers). */
int tok_load_vocab(const char *vocab_path, const tok_options *opt, tok_tokenizer **out, char *err,
                   size_t errlen);
/* Same from an in-memory vocab.txt image. */
int tok_load_vocab_buffer(const char *data, size_t len, const tok_options *opt, tok_tokenizer **out,
                          char *err, size_t errlen);
void tok_free(tok_tokenizer *tok);

int tok_vocab_size(const tok_tokenizer *tok); /* lines in vocab.txt: ids are 0 .. size-1 */
const tok_options *tok_get_options(const tok_tokenizer *tok);
const tok_special_ids *tok_specials(const tok_tokenizer *tok);
const char *tok_id_to_token(const tok_tokenizer *tok, int32_t id); /* NULL if out of range */
int32_t tok_token_to_id(const tok_tokenizer *tok, const char *s, size_t len); /* -1 if absent */
int tok_is_special(const tok_tokenizer *tok, int32_t id);

/* A tokenized model input: [CLS] a [SEP] (b [SEP]). Arrays have cap slots. */
typedef struct tok_sequence {
    int32_t *ids;
    int32_t *type_ids;
    int32_t *start, *end; /* byte offsets into the source text; 0,0 for specials */
    int8_t *source;       /* 0: text, 1: text_pair, -1: special token */
    int len, cap;
} tok_sequence;

typedef enum {
    TOK_TRUNC_NONE = 0,          /* over max_len is TOK_ERR_TOO_LONG */
    TOK_TRUNC_LONGEST_FIRST = 1, /* HF default for pairs: drop from the longer one */
    TOK_TRUNC_ONLY_FIRST = 2,
    TOK_TRUNC_ONLY_SECOND = 3,
} tok_truncation;

typedef enum { TOK_SIDE_RIGHT = 0, TOK_SIDE_LEFT = 1 } tok_side;

/* Tokenizes text a (and optional pair b; b == NULL for a single text) into
 * out, adding special tokens. max_len counts special tokens; max_len <= 0
 * means unlimited. Grows out's arrays as needed. Truncation follows
 * tokenizers: TOK_ERR_TOO_LONG when only_first/only_second would have to
 * empty their text; TOK_ERR_ARG when max_len cannot even hold the special
 * tokens, or only_second is asked to shorten a single text. */
int tok_encode(const tok_tokenizer *tok, const char *a, size_t alen, const char *b, size_t blen,
               int max_len, tok_truncation trunc, tok_side side, tok_sequence *out, char *err,
               size_t errlen);
/* Word pieces of one text without special tokens (ids appended to out, with
 * type 0 and source 0). */
int tok_encode_plain(const tok_tokenizer *tok, const char *text, size_t len, tok_sequence *out,
                     char *err, size_t errlen);
void tok_sequence_free(tok_sequence *seq);

/* The text after the normalizer alone (BertNormalizer.normalize_str: no
 * special-token splitting), malloc'd, NUL-terminated, length in *out_len;
 * NULL with err filled on invalid UTF-8 or OOM. For tests and debugging. */
char *tok_normalize_text(const tok_tokenizer *tok, const char *text, size_t len, size_t *out_len,
                         char *err, size_t errlen);

/* HF decode: tokens joined by spaces, "##" continuations glued, optional
 * skipping of special tokens and clean_up_tokenization_spaces. Returns a
 * malloc'd NUL-terminated string the caller frees, or NULL on OOM.
 * cleanup_spaces = 0 is transformers' decode(clean_up_tokenization_spaces=
 * False): the WordPiece decoder's own per-token cleanup (" ." -> "." ...)
 * still applies, as it does there. */
char *tok_decode(const tok_tokenizer *tok, const int32_t *ids, int n, int skip_special,
                 int cleanup_spaces);

#endif
