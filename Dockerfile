# bert-serve container image.
#
#   docker build -t bert-serve .
#   docker run --rm -p 8080:8080 bert-serve
#
# Another checkpoint / config (see docs/DEPLOY.md):
#   docker run --rm -p 8080:8080 -v "$PWD/my-bert:/models/my-bert:ro" bert-serve \
#       --config /config/bert-serve.yaml --model /models/my-bert
#   docker run --rm -p 8080:8080 -v "$PWD/my-config:/config:ro" bert-serve
#
# tests/test_deploy.py lints this file with hadolint and runs its ENTRYPOINT/CMD/ENV against the
# repo's build outside Docker, so keep the instructions in plain exec form.

# Base images are pinned to dated Debian snapshots so two builds of one commit start from the same
# bytes; bump both tags together.
FROM debian:bookworm-20251229 AS build

WORKDIR /src

# The same two commands a developer runs from the README. The Makefile is copied alone first so the
# package layer stays cached across source edits.
COPY Makefile ./
RUN make deps-system

COPY core/ core/
COPY server/ server/
COPY tools/ tools/
COPY openapi.yaml ./
RUN make -j"$(nproc)"

# The model and config pass through this stage only to get sane modes: a checkpoint saved under a
# 0077 umask (safetensors files often are) would be unreadable to the runtime user otherwise, and
# RUN chmod in the runtime stage would store the weights twice.
COPY models/default/ image/models/default/
COPY deploy/container.yaml image/config/bert-serve.yaml
RUN chmod -R u=rwX,go=rX image

FROM debian:bookworm-20251229-slim

# Versions are deliberately not pinned (DL3008): the dated base fixes the release, and an exact
# Debian revision disappears from the mirror at the next security update, which would break builds.
# curl exists only for HEALTHCHECK.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        curl \
        libjansson4 \
        libmicrohttpd12 \
        libdnnl2 \
        libopenblas0-pthread \
        libutf8proc2 \
        libyaml-0-2 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 bert \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin bert

# Binaries, model and config stay root-owned: the service only reads them, so a compromised process
# cannot rewrite its own weights or settings.
COPY --from=build /src/build/bert-server /usr/local/bin/bert-server
COPY --from=build /src/build/bert-cli /usr/local/bin/bert-cli
COPY --from=build /src/image/models/default/ /models/default/
COPY --from=build /src/image/config/bert-serve.yaml /config/bert-serve.yaml

# The worker splits each forward pass across its own threads (workers.threads, auto = the CPUs the
# container may use), each calling OpenBLAS; OpenBLAS threads on top would oversubscribe the CPUs.
ENV OPENBLAS_NUM_THREADS=1

# Numeric uid so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001

EXPOSE 8080

# Kubernetes ignores HEALTHCHECK (the manifests use httpGet probes); this serves docker/compose.
# Exec form has no shell to expand $BERT_PORT, so a run that moves the port must also pass
# --health-cmd.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["curl", "--fail", "--silent", "--show-error", "--max-time", "2", "--output", "/dev/null", \
         "http://127.0.0.1:8080/healthz"]

# Exec form, no shell in between: SIGTERM from `docker stop` / the kubelet reaches bert-server, which
# drains in-flight requests for shutdown.grace_period_s and exits 0. The server never forks, so it
# can be PID 1 without an init to reap zombies.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/bert-server"]
CMD ["--config", "/config/bert-serve.yaml"]
