/* errcode: the API's error codes and the HTTP status each is answered with.
 *
 * Owns: the one table from code to status (errcode.c). Call sites name a
 * code; the status follows from it, so a code always means the same status
 * and openapi.yaml's error enums list the same names. */
#ifndef BERT_SERVER_ERRCODE_H
#define BERT_SERVER_ERRCODE_H

typedef enum {
    ERR_INVALID_JSON = 0,
    ERR_INVALID_UTF8,
    ERR_INVALID_REQUEST,
    ERR_BAD_REQUEST,
    ERR_BAD_FRAMING,
    ERR_UNAUTHORIZED,
    ERR_NOT_FOUND,
    ERR_METHOD_NOT_ALLOWED,
    ERR_PAYLOAD_TOO_LARGE,
    ERR_ANSWER_TOO_LARGE,
    ERR_URI_TOO_LONG,
    ERR_UNSUPPORTED_MEDIA_TYPE,
    ERR_HEAD_UNAVAILABLE,
    ERR_INPUT_TOO_LONG,
    ERR_INVALID_INPUT,
    ERR_INVALID_LABELS,
    ERR_INVALID_TOP_K,
    ERR_NO_INPUTS,
    ERR_NO_MASK,
    ERR_TOO_MANY_INPUTS,
    ERR_TOO_MANY_MASKS,
    ERR_TOO_MANY_PREDICTIONS,
    ERR_TOO_MANY_TARGETS,
    ERR_TOO_MANY_TOKENS,
    ERR_UNKNOWN_TARGET,
    ERR_HEADER_TOO_LARGE,
    ERR_CLIENT_CLOSED,
    ERR_INTERNAL,
    ERR_UNSUPPORTED_TRANSFER_ENCODING,
    ERR_DRAINING,
    ERR_LOADING,
    ERR_OVERLOADED,
    ERR_SHUTTING_DOWN,
    ERR_TIMEOUT,
    ERR_HTTP_VERSION_NOT_SUPPORTED,
    ERR_COUNT
} errcode;

/* The code's name as sent in {"error": {"code": ...}}. */
const char *errcode_name(errcode c);
/* The HTTP status a response carrying the code has. */
int errcode_status(errcode c);

#endif
