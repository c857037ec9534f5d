/* errcode: error code -> name and HTTP status. See errcode.h. */
#include "errcode.h"

static const struct {
    const char *name;
    int status;
} ERRCODES[ERR_COUNT] = {
    [ERR_INVALID_JSON] = {"invalid_json", 400},
    [ERR_INVALID_UTF8] = {"invalid_utf8", 400},
    [ERR_INVALID_REQUEST] = {"invalid_request", 400},
    [ERR_BAD_REQUEST] = {"bad_request", 400},
    [ERR_BAD_FRAMING] = {"bad_framing", 400},
    [ERR_UNAUTHORIZED] = {"unauthorized", 401},
    [ERR_NOT_FOUND] = {"not_found", 404},
    [ERR_METHOD_NOT_ALLOWED] = {"method_not_allowed", 405},
    [ERR_PAYLOAD_TOO_LARGE] = {"payload_too_large", 413},
    [ERR_ANSWER_TOO_LARGE] = {"answer_too_large", 413},
    [ERR_URI_TOO_LONG] = {"uri_too_long", 414},
    [ERR_UNSUPPORTED_MEDIA_TYPE] = {"unsupported_media_type", 415},
    [ERR_HEAD_UNAVAILABLE] = {"head_unavailable", 422},
    [ERR_INPUT_TOO_LONG] = {"input_too_long", 422},
    [ERR_INVALID_INPUT] = {"invalid_input", 422},
    [ERR_INVALID_LABELS] = {"invalid_labels", 422},
    [ERR_INVALID_TOP_K] = {"invalid_top_k", 422},
    [ERR_NO_INPUTS] = {"no_inputs", 422},
    [ERR_NO_MASK] = {"no_mask", 422},
    [ERR_TOO_MANY_INPUTS] = {"too_many_inputs", 422},
    [ERR_TOO_MANY_MASKS] = {"too_many_masks", 422},
    [ERR_TOO_MANY_PREDICTIONS] = {"too_many_predictions", 422},
    [ERR_TOO_MANY_TARGETS] = {"too_many_targets", 422},
    [ERR_TOO_MANY_TOKENS] = {"too_many_tokens", 422},
    [ERR_UNKNOWN_TARGET] = {"unknown_target", 422},
    [ERR_HEADER_TOO_LARGE] = {"header_too_large", 431},
    /* nginx's status for a client that closed the connection first: logged
     * and counted, never sent. */
    [ERR_CLIENT_CLOSED] = {"client_closed", 499},
    [ERR_INTERNAL] = {"internal", 500},
    [ERR_UNSUPPORTED_TRANSFER_ENCODING] = {"unsupported_transfer_encoding", 501},
    [ERR_DRAINING] = {"draining", 503},
    [ERR_LOADING] = {"loading", 503},
    [ERR_OVERLOADED] = {"overloaded", 503},
    [ERR_SHUTTING_DOWN] = {"shutting_down", 503},
    [ERR_TIMEOUT] = {"timeout", 504},
    [ERR_HTTP_VERSION_NOT_SUPPORTED] = {"http_version_not_supported", 505},
};

const char *errcode_name(errcode c) {
    return c >= 0 && c < ERR_COUNT ? ERRCODES[c].name : "internal";
}

int errcode_status(errcode c) {
    return c >= 0 && c < ERR_COUNT ? ERRCODES[c].status : 500;
}
