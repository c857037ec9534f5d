/* assets: files compiled into the binary. See assets.h. */
#include "assets.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/* Where the asset files are found at build time, relative to the compiler's
 * working directory (the repository root for the top Makefile; fuzz/Makefile
 * passes its absolute path). */
#ifndef ASSETS_ROOT
#define ASSETS_ROOT "."
#endif

/* Each file between a start and an end symbol in .rodata, with a NUL after
 * it so the text can also be used as a C string. .incbin keeps the bytes
 * exactly as in the file and needs no generator at build time. */
#define EMBED(sym, path)                                                                           \
    __asm__(".section .rodata\n"                                                                   \
            ".balign 16\n"                                                                         \
            ".global " #sym "_start\n" #sym "_start:\n"                                            \
            ".incbin \"" ASSETS_ROOT "/" path "\"\n"                                               \
            ".global " #sym "_end\n" #sym "_end:\n"                                                \
            ".byte 0\n"                                                                            \
            ".previous\n");                                                                        \
    extern const char sym##_start[], sym##_end[]

EMBED(bert_asset_openapi, "openapi.yaml");
EMBED(bert_asset_playground, "server/static/index.html");
EMBED(bert_asset_docs, "server/static/docs.html");

static char *openapi_json;
static size_t openapi_json_len;

/* ---- YAML -> JSON ---- */

static int plain_is(const char *s, const char *const *words) {
    for (; *words; words++)
        if (strcmp(s, *words) == 0) return 1;
    return 0;
}

/* A plain scalar as the YAML 1.2 core schema types it. */
static json_t *plain_scalar(const char *s) {
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
    static const char *const trues[] = {"true", "True", "TRUE", NULL};
    static const char *const falses[] = {"false", "False", "FALSE", NULL};
    if (plain_is(s, nulls)) return json_null();
    if (plain_is(s, trues)) return json_true();
    if (plain_is(s, falses)) return json_false();
    const char *p = s;
    if (*p == '-' || *p == '+') p++;
    if (*p >= '0' && *p <= '9') {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (*end == 0 && errno == 0) return json_integer(v);
        errno = 0;
        double d = strtod(s, &end);
        if (*end == 0 && errno == 0 && isfinite(d)) return json_real(d);
    }
    return json_string(s);
}

static json_t *node_to_json(yaml_document_t *doc, yaml_node_t *node, int depth, char *err,
                            size_t errlen) {
    if (!node) {
        snprintf(err, errlen, "openapi.yaml: dangling node");
        return NULL;
    }
    if (depth > 64) {
        snprintf(err, errlen, "openapi.yaml: nested deeper than 64 levels");
        return NULL;
    }
    switch (node->type) {
    case YAML_SCALAR_NODE: {
        const char *s = (const char *)node->data.scalar.value;
        json_t *v = node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE
                        ? plain_scalar(s)
                        : json_stringn(s, node->data.scalar.length);
        if (!v)
            snprintf(err, errlen, "openapi.yaml line %zu: scalar is not UTF-8",
                     node->start_mark.line + 1);
        return v;
    }
    case YAML_SEQUENCE_NODE: {
        json_t *arr = json_array();
        for (yaml_node_item_t *it = node->data.sequence.items.start;
             arr && it < node->data.sequence.items.top; it++) {
            json_t *v = node_to_json(doc, yaml_document_get_node(doc, *it), depth + 1, err, errlen);
            if (!v || json_array_append_new(arr, v)) {
                json_decref(arr);
                return NULL;
            }
        }
        return arr;
    }
    case YAML_MAPPING_NODE: {
        json_t *obj = json_object();
        for (yaml_node_pair_t *pr = node->data.mapping.pairs.start;
             obj && pr < node->data.mapping.pairs.top; pr++) {
            yaml_node_t *k = yaml_document_get_node(doc, pr->key);
            if (!k || k->type != YAML_SCALAR_NODE) {
                snprintf(err, errlen, "openapi.yaml line %zu: mapping key is not a scalar",
                         node->start_mark.line + 1);
                json_decref(obj);
                return NULL;
            }
            json_t *v =
                node_to_json(doc, yaml_document_get_node(doc, pr->value), depth + 1, err, errlen);
            if (!v || json_object_setn_new(obj, (const char *)k->data.scalar.value,
                                           k->data.scalar.length, v)) {
                json_decref(obj);
                return NULL;
            }
        }
        return obj;
    }
    default:
        snprintf(err, errlen, "openapi.yaml: empty node");
        return NULL;
    }
}

char *assets_yaml_to_json(const char *yaml, size_t len, size_t *out_len, char *err, size_t errlen) {
    yaml_parser_t parser;
    yaml_document_t doc;
    char *out = NULL;
    json_t *root = NULL;
    int have_doc = 0;

    if (!yaml_parser_initialize(&parser)) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
    if (!yaml_parser_load(&parser, &doc)) {
        snprintf(err, errlen, "openapi.yaml line %zu: %s", parser.problem_mark.line + 1,
                 parser.problem ? parser.problem : "YAML error");
        goto cleanup;
    }
    have_doc = 1;
    yaml_node_t *top = yaml_document_get_root_node(&doc);
    if (!top) {
        snprintf(err, errlen, "openapi.yaml: empty document");
        goto cleanup;
    }
    root = node_to_json(&doc, top, 0, err, errlen);
    if (!root) goto cleanup;
    out = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!out) {
        snprintf(err, errlen, "out of memory");
        goto cleanup;
    }
    *out_len = strlen(out);

cleanup:
    json_decref(root);
    if (have_doc) yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return out;
}

/* ---- the table ---- */

int assets_init(char *err, size_t errlen) {
    if (openapi_json) return 0;
    size_t len = (size_t)(bert_asset_openapi_end - bert_asset_openapi_start);
    openapi_json =
        assets_yaml_to_json(bert_asset_openapi_start, len, &openapi_json_len, err, errlen);
    return openapi_json ? 0 : -1;
}

void assets_free(void) {
    free(openapi_json);
    openapi_json = NULL;
    openapi_json_len = 0;
}

asset assets_get(asset_id id) {
    asset a = {NULL, 0, "application/octet-stream"};
    switch (id) {
    case ASSET_OPENAPI_YAML:
        a.body = bert_asset_openapi_start;
        a.len = (size_t)(bert_asset_openapi_end - bert_asset_openapi_start);
        a.content_type = "application/yaml; charset=utf-8";
        break;
    case ASSET_OPENAPI_JSON:
        a.body = openapi_json;
        a.len = openapi_json_len;
        a.content_type = "application/json";
        break;
    case ASSET_PAGE_PLAYGROUND:
        a.body = bert_asset_playground_start;
        a.len = (size_t)(bert_asset_playground_end - bert_asset_playground_start);
        a.content_type = "text/html; charset=utf-8";
        break;
    case ASSET_PAGE_DOCS:
        a.body = bert_asset_docs_start;
        a.len = (size_t)(bert_asset_docs_end - bert_asset_docs_start);
        a.content_type = "text/html; charset=utf-8";
        break;
    default:
        break;
    }
    return a;
}
