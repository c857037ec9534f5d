#!/usr/bin/env bash
# Wait until a bert-serve instance answers 200 on /readyz (model loaded, not draining).
#
#   deploy/scripts/wait-ready.sh [BASE_URL] [TIMEOUT_SECONDS]
#
# BASE_URL defaults to $BERT_URL, then http://127.0.0.1:8080; TIMEOUT_SECONDS to 60.
# Exit 0 once ready, 1 when the deadline passes (printing the last status seen), 2 on bad usage.
# Readiness needs no token, so this works before any Secret exists.
set -euo pipefail

base_url="${1:-${BERT_URL:-http://127.0.0.1:8080}}"
timeout_s="${2:-60}"
base_url="${base_url%/}"

if ! [[ "$timeout_s" =~ ^[0-9]+$ ]]; then
    echo "wait-ready: TIMEOUT_SECONDS must be a whole number, got '$timeout_s'" >&2
    exit 2
fi
command -v curl >/dev/null || {
    echo "wait-ready: curl not found" >&2
    exit 2
}

# Milliseconds from bash's microsecond clock; $SECONDS would round the deadline to a tick.
now_ms() {
    local us=${EPOCHREALTIME/[.,]/}
    echo $((us / 1000))
}
deadline=$(($(now_ms) + timeout_s * 1000))
last="no answer"
while :; do
    # A connection refused / timeout prints 000; keep polling through it while the server starts.
    code=$(curl --silent --output /dev/null --write-out '%{http_code}' --max-time 2 \
        "$base_url/readyz" || true)
    if [[ "$code" == "200" ]]; then
        echo "wait-ready: $base_url ready"
        exit 0
    fi
    [[ "$code" != "000" ]] && last="HTTP $code"
    if (($(now_ms) >= deadline)); then
        echo "wait-ready: $base_url not ready after ${timeout_s}s (last: $last)" >&2
        exit 1
    fi
    # Poll interval, not synchronisation: the loop ends on the answer or the deadline.
    sleep 0.2
done
