/* assets: the files the server serves as they are, compiled into the binary.
 *
 * Owns: the OpenAPI contract (openapi.yaml at the repository root, the same
 * file the tests check), its JSON rendering, the playground page served at "/"
 * and the API reference page served at "/docs". Embedding them means a
 * container or a copied binary serves the contract it was built with, and the
 * pages need nothing from the network: they load no external script, style
 * or font.
 *
 * Immutable after assets_init; any thread may read. Knows no HTTP. */
#ifndef BERT_ASSETS_H
#define BERT_ASSETS_H

#include <stddef.h>

typedef enum {
    ASSET_OPENAPI_YAML = 0,
    ASSET_OPENAPI_JSON,
    ASSET_PAGE_PLAYGROUND, /* "/" */
    ASSET_PAGE_DOCS,       /* "/docs" */
    ASSET_COUNT
} asset_id;

typedef struct asset {
    const char *body;
    size_t len;
    const char *content_type;
} asset;

/* Renders the embedded openapi.yaml as JSON (once, at start-up). Fails only
 * when the embedded YAML is malformed (a build defect) or memory runs out;
 * err then says which. */
int assets_init(char *err, size_t errlen);
void assets_free(void);

/* The asset, or one with body NULL before assets_init succeeded. */
asset assets_get(asset_id id);

/* Converts one YAML document (libyaml) to compact JSON, following the YAML 1.2
 * core schema for plain scalars: null/~, true/false, integers and floats
 * become JSON literals, everything else (and every quoted scalar) a string.
 * Returns a malloc'd NUL-terminated string (caller frees) or NULL with err
 * set. Exposed for the fuzzer. */
char *assets_yaml_to_json(const char *yaml, size_t len, size_t *out_len, char *err, size_t errlen);

#endif
