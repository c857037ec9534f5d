#!/usr/bin/env bash
# One curl per bert-serve route, to copy from. Run it to see each command and its answer:
#
#   deploy/scripts/examples.sh [BASE_URL]
#
# BASE_URL defaults to $BERT_URL, then http://127.0.0.1:8080. With BERT_AUTH_TOKEN set, the /v1
# calls send it as a bearer token (health and metrics routes never need one).
# Exits non-zero if a call fails at the HTTP level (curl --fail-with-body).
set -euo pipefail

URL="${1:-${BERT_URL:-http://127.0.0.1:8080}}"
URL="${URL%/}"
AUTH=()
if [[ -n "${BERT_AUTH_TOKEN:-}" ]]; then
    AUTH=(-H "Authorization: Bearer $BERT_AUTH_TOKEN")
fi
PRETTY=(cat)
command -v jq >/dev/null && PRETTY=(jq .)

show() {
    printf '\n$ %s\n' "$1"
}

# Liveness: 200 while the process serves HTTP.
show "curl -sS $URL/healthz"
curl -sS --fail-with-body "$URL/healthz" | "${PRETTY[@]}"

# Readiness: 200 once the model is loaded; 503 while loading or draining.
show "curl -sS $URL/readyz"
curl -sS --fail-with-body "$URL/readyz" | "${PRETTY[@]}"

# Prometheus metrics (text exposition format); first lines only here (sed, not head, reads to
# the end so curl never sees a closed pipe).
show "curl -sS $URL/metrics"
curl -sS --fail-with-body "$URL/metrics" | sed -n 1,12p

# The loaded checkpoint: heads, sizes, dtype.
show "curl -sS $URL/v1/models"
curl -sS --fail-with-body "${AUTH[@]}" "$URL/v1/models" | "${PRETTY[@]}"

# Masked-LM: top-k candidates for the [MASK], like transformers' fill-mask pipeline.
show "curl -sS $URL/v1/fill-mask -H 'Content-Type: application/json' -d '{\"inputs\": \"The capital of France is [MASK].\", \"parameters\": {\"top_k\": 3}}'"
curl -sS --fail-with-body "${AUTH[@]}" "$URL/v1/fill-mask" -H 'Content-Type: application/json' \
    -d '{"inputs": "The capital of France is [MASK].", "parameters": {"top_k": 3}}' | "${PRETTY[@]}"

# Next-sentence prediction: does text_pair follow text?
show "curl -sS $URL/v1/next-sentence -H 'Content-Type: application/json' -d '{\"inputs\": {\"text\": \"I went to the store.\", \"text_pair\": \"I bought some milk.\"}}'"
curl -sS --fail-with-body "${AUTH[@]}" "$URL/v1/next-sentence" -H 'Content-Type: application/json' \
    -d '{"inputs": {"text": "I went to the store.", "text_pair": "I bought some milk."}}' |
    "${PRETTY[@]}"

# Tokenization exactly as the model sees it: tokens, ids, token types, character offsets.
show "curl -sS $URL/v1/tokenize -H 'Content-Type: application/json' -d '{\"inputs\": \"Hello, world!\"}'"
curl -sS --fail-with-body "${AUTH[@]}" "$URL/v1/tokenize" -H 'Content-Type: application/json' \
    -d '{"inputs": "Hello, world!"}' | "${PRETTY[@]}"
