#!/usr/bin/env bash
# Smoke test of a running bert-serve: calls every route and checks status codes and answer shapes
# with jq. Meant for after a deploy (port-forward or in-cluster) and for CI.
#
#   deploy/scripts/smoke.sh [BASE_URL]
#
# BASE_URL defaults to $BERT_URL, then http://127.0.0.1:8080. When $BERT_AUTH_TOKEN is set it is
# sent as a bearer token, and the script also checks that /v1 refuses a request without it.
# SMOKE_MAX_TIME (default 30) caps each request in seconds.
# Exit 0 when every check passes, 1 when any fails (each failure is printed), 2 on bad usage.
# The checks hold for any BERT checkpoint: they test the contract, not one model's predictions.
set -euo pipefail

base_url="${1:-${BERT_URL:-http://127.0.0.1:8080}}"
base_url="${base_url%/}"
token="${BERT_AUTH_TOKEN:-}"
max_time="${SMOKE_MAX_TIME:-30}"

for tool in curl jq; do
    command -v "$tool" >/dev/null || {
        echo "smoke: $tool not found" >&2
        exit 2
    }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
body="$tmp/body"
# The token goes to curl through a file so it never shows up in `ps`.
auth_header="$tmp/auth"
umask 077
if [[ -n "$token" ]]; then
    printf 'Authorization: Bearer %s\n' "$token" >"$auth_header"
else
    : >"$auth_header"
fi

status=000
failures=0
checks=0

# request METHOD PATH [JSON_BODY [CONTENT_TYPE]]: sets $status, leaves the body in $body.
request() {
    local method=$1 path=$2
    local args=(--silent --max-time "$max_time" --output "$body" --write-out '%{http_code}'
        --request "$method" --header "@$auth_header")
    if (($# >= 3)); then
        args+=(--header "Content-Type: ${4:-application/json}" --data-binary "$3")
    fi
    : >"$body"
    status=$(curl "${args[@]}" "$base_url$path") || status=000
}

# expect WHAT STATUS [JQ_FILTER]: the last answer had STATUS and FILTER is true of its body.
expect() {
    local what=$1 want=$2 filter=${3:-}
    checks=$((checks + 1))
    if [[ "$status" != "$want" ]]; then
        echo "FAIL $what: HTTP $status, expected $want: $(head -c 400 "$body")"
        failures=$((failures + 1))
    elif [[ -n "$filter" ]] && ! jq -e "$filter" "$body" >/dev/null 2>&1; then
        echo "FAIL $what: answer does not satisfy $filter: $(head -c 400 "$body")"
        failures=$((failures + 1))
    else
        echo "ok   $what"
    fi
}

# Shape of one fill-mask candidate list: K candidates, best first, probabilities.
candidates() {
    local k=$1
    printf '%s' "type == \"array\" and length == $k
        and all(.[]; (.token_str | type) == \"string\" and (.sequence | type) == \"string\"
                     and (.token | type) == \"number\" and .token >= 0
                     and .score >= 0 and .score <= 1)
        and ([.[].score] | . == (sort | reverse))
        and ([.[].score] | add) <= 1.0001"
}

error_shape='(.error.code | type) == "string" and (.error.message | type) == "string"'

echo "smoke: $base_url"

# --- health and metadata -------------------------------------------------------------------
request GET /healthz
expect "GET /healthz" 200 '.status == "ok"'
request GET /readyz
expect "GET /readyz" 200 '.status == "ready"'
request GET /v1/models
expect "GET /v1/models" 200 '.object == "list" and (.data | length) >= 1
    and (.data[0].id | type) == "string" and (.data[0].vocab_size | type) == "number"
    and (.data[0].heads.masked_lm | type) == "boolean"
    and (.data[0].heads.next_sentence | type) == "boolean"'
has_mlm=$(jq -r '.data[0].heads.masked_lm' "$body" 2>/dev/null || echo false)
has_nsp=$(jq -r '.data[0].heads.next_sentence' "$body" 2>/dev/null || echo false)

# --- tokenize ------------------------------------------------------------------------------
request POST /v1/tokenize '{"inputs": "Hello world, this is a test."}'
expect "POST /v1/tokenize" 200 '(.tokens | length) >= 3
    and (.tokens | length) == (.ids | length)
    and (.ids | length) == (.token_type_ids | length)
    and (.ids | length) == (.offsets | length)
    and all(.tokens[]; type == "string") and all(.ids[]; type == "number")'
request POST /v1/tokenize '{"inputs": {"text": "First sentence.", "text_pair": "Second one."}}'
expect "POST /v1/tokenize (pair)" 200 '(.token_type_ids | max) == 1 and (.token_type_ids | min) == 0'

# --- fill-mask -----------------------------------------------------------------------------
if [[ "$has_mlm" == "true" ]]; then
    request POST /v1/fill-mask \
        '{"inputs": "The capital of France is [MASK].", "parameters": {"top_k": 5}}'
    expect "POST /v1/fill-mask top_k=5" 200 "$(candidates 5)"
    request POST /v1/fill-mask \
        '{"inputs": "Paris is the [MASK] of [MASK].", "parameters": {"top_k": 5}}'
    expect "POST /v1/fill-mask two masks" 200 \
        "length == 2 and all(.[]; $(candidates 5))"
    request POST /v1/fill-mask \
        '{"inputs": ["A [MASK] day.", "The [MASK] is blue."], "parameters": {"top_k": 3}}'
    expect "POST /v1/fill-mask batch of 2" 200 "length == 2 and all(.[]; $(candidates 3))"
    request POST /v1/fill-mask '{"inputs": "No mask token here."}'
    expect "POST /v1/fill-mask without [MASK] -> 422" 422 "$error_shape"
else
    request POST /v1/fill-mask '{"inputs": "The capital of France is [MASK]."}'
    expect "POST /v1/fill-mask, checkpoint without MLM head -> 422" 422 "$error_shape"
fi

# --- next-sentence -------------------------------------------------------------------------
if [[ "$has_nsp" == "true" ]]; then
    request POST /v1/next-sentence \
        '{"inputs": {"text": "I went to the store.", "text_pair": "I bought some milk."}}'
    expect "POST /v1/next-sentence" 200 '.is_next_probability >= 0 and .is_next_probability <= 1
        and .not_next_probability >= 0 and .not_next_probability <= 1
        and ((.is_next_probability + .not_next_probability) - 1 | fabs) < 0.0001
        and (.label == "is_next") == (.is_next_probability >= .not_next_probability)
        and (.logits | length) == 2'
else
    request POST /v1/next-sentence '{"inputs": {"text": "a", "text_pair": "b"}}'
    expect "POST /v1/next-sentence, checkpoint without NSP head -> 422" 422 "$error_shape"
fi

# --- errors --------------------------------------------------------------------------------
request POST /v1/fill-mask '{"inputs": '
expect "malformed JSON -> 400" 400 "$error_shape"
request POST /v1/tokenize '{"inputs": "x"}' text/plain
expect "wrong Content-Type -> 415" 415 "$error_shape"
request GET /v1/fill-mask
expect "GET on a POST route -> 405" 405 "$error_shape"
request GET /no-such-route
expect "unknown route -> 404" 404 "$error_shape"
if [[ -n "$token" ]]; then
    : >"$auth_header"
    request POST /v1/tokenize '{"inputs": "x"}'
    expect "no token -> 401" 401 "$error_shape"
    printf 'Authorization: Bearer %s\n' "$token" >"$auth_header"
fi

# --- metrics (last, so the calls above are counted) ----------------------------------------
request GET /metrics
checks=$((checks + 1))
if [[ "$status" != 200 ]]; then
    echo "FAIL GET /metrics: HTTP $status"
    failures=$((failures + 1))
elif ! grep -q '^bert_ready 1$' "$body" ||
    ! grep -Eq '^bert_requests_total\{route="/v1/tokenize",status="200"\} [1-9]' "$body"; then
    echo "FAIL GET /metrics: no 'bert_ready 1' or no counted /v1/tokenize request"
    failures=$((failures + 1))
else
    echo "ok   GET /metrics"
fi

if ((failures > 0)); then
    echo "smoke: $failures of $checks checks failed" >&2
    exit 1
fi
echo "smoke: all $checks checks passed"
