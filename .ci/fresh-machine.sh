#!/usr/bin/env bash
# The README's commands as a stranger runs them: a minimal Debian 12 root (debootstrap
# --variant=minbase) with only `make` and `git` added, a `git clone` of this commit, then
#
#   fresh-machine.sh run    `make run` there; a POST /v1/fill-mask must answer 200
#   fresh-machine.sh test   `make test` there (its pytest summary is the last thing printed)
#   fresh-machine.sh all    both (the default)
#
# Nothing is cached between runs: the root is built anew in a temporary folder and removed at
# the end, so every package and wheel the README's commands need is fetched by them. The mirror
# is the one this machine's apt sources name. Needs root and debootstrap (Debian package).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
what=${1:-all}
port=18089

log() { printf '[fresh-machine %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }

# The first Debian mirror this machine's apt sources name (deb822 or one-line format).
mirror=$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)\/*$/\1/p' /etc/apt/sources.list.d/*.sources \
    2>/dev/null | head -n 1)
if [ -z "$mirror" ]; then
    mirror=$(awk '$1 == "deb" && $2 ~ /\/debian\/?$/ { print $2; exit }' /etc/apt/sources.list \
        2>/dev/null || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}

root=$(mktemp -d /var/tmp/fresh-debian.XXXXXX)
chmod 755 "$root" # apt inside drops to user _apt for downloads
mounted=()

# Processes whose root is the fresh root, optionally only those named $1.
pids_in_root() {
    local dir pid
    for dir in /proc/[0-9]*; do
        pid=${dir#/proc/}
        [ "$(readlink "$dir/root" 2>/dev/null)" = "$root" ] || continue
        [ -z "${1:-}" ] || [ "$(cat "$dir/comm" 2>/dev/null)" = "$1" ] || continue
        echo "$pid"
    done
}

cleanup() {
    # Any process still running inside the root holds its mounts busy.
    for pid in $(pids_in_root); do kill -9 "$pid" 2>/dev/null || true; done
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
    rm -rf --one-file-system "$root"
}
trap cleanup EXIT

log "debootstrap --variant=minbase bookworm $root from $mirror"
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.debootstrap.log" 2>&1 ||
    { tail -n 30 "$root.debootstrap.log"; exit 1; }
rm -f "$root.debootstrap.log"

# The same suites this machine uses (security updates included), and its DNS.
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/debian.sources"
    rm -f "$root/etc/apt/sources.list"
fi
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
# This machine's network may re-sign TLS with its own CA (its pip is told so in /etc/pip.conf):
# that trust belongs to the machine, not to the project, so the root gets the same.
# The bundle goes where update-ca-certificates keeps local CAs too, so it survives the
# ca-certificates package regenerating the bundle when a later install pulls it in.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$root/etc/ssl/certs" "$root/usr/local/share/ca-certificates"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    cp /etc/ssl/certs/ca-certificates.crt "$root/usr/local/share/ca-certificates/this-machine.crt"
fi
if [ -f /etc/pip.conf ]; then cp /etc/pip.conf "$root/etc/pip.conf"; fi

for m in proc sys dev dev/pts; do
    mkdir -p "$root/$m"
    case $m in
    proc) mount -t proc proc "$root/proc" ;;
    sys) mount -t sysfs sys "$root/sys" ;;
    dev) mount --bind /dev "$root/dev" ;;
    dev/pts) mount --bind /dev/pts "$root/dev/pts" ;;
    esac
    mounted+=("$root/$m")
done
mkdir -p "$root/dev/shm" && mount -t tmpfs shm "$root/dev/shm" && mounted+=("$root/dev/shm")

# A stranger's shell: none of this machine's environment (no pyenv, no pip settings).
in_root() {
    chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        DEBIAN_FRONTEND=noninteractive bash -c "$1"
}

log "what the README says must exist first: apt-get install -y make git"
in_root 'apt-get update -qq && apt-get install -y -qq make git >/dev/null'

# The clone, and ../shared beside it as CI lays it out.
git clone -q "$repo" "$root/root/bert-serve"
if [ -d "$repo/../shared" ]; then
    cp -rL "$repo/../shared" "$root/root/shared" # -L: a symlinked ../shared is copied, not linked
fi

if [ "$what" = run ] || [ "$what" = all ]; then
    log "make run PORT=$port"
    in_root "cd /root/bert-serve && exec make run PORT=$port" >"$root/make-run.log" 2>&1 &
    runner=$!
    ready=0
    for _ in $(seq 1 600); do
        if ! kill -0 "$runner" 2>/dev/null; then break; fi
        # The root shares this machine's network, so the probe is this machine's curl: the
        # fresh root has only what the README's command installed.
        if curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null; then
            ready=1
            break
        fi
        # Polling interval while packages install and the build runs, not synchronisation
        # of a result: readiness itself is read from /readyz.
        sleep 1
    done
    if [ "$ready" != 1 ]; then
        log "make run did not become ready"
        tail -n 40 "$root/make-run.log"
        exit 1
    fi
    status=$(curl -s -o "$root/fill.json" -w '%{http_code}' "http://127.0.0.1:$port/v1/fill-mask" \
        -H 'Content-Type: application/json' -d '{"inputs": "The capital of France is [MASK]."}')
    cat "$root/fill.json"
    echo
    # Stop the server as a user would (SIGTERM), found as the bert-server inside this root.
    for pid in $(pids_in_root bert-server); do kill -TERM "$pid"; done
    wait "$runner" || true
    if [ "$status" != 200 ]; then
        log "POST /v1/fill-mask answered $status, not 200"
        tail -n 40 "$root/make-run.log"
        exit 1
    fi
    log "make run: POST /v1/fill-mask answered 200"
fi

if [ "$what" = test ] || [ "$what" = all ]; then
    log "make test"
    in_root 'cd /root/bert-serve && make test PYTEST_ARGS="-p no:cacheprovider -ra"'
fi
