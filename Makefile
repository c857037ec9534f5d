# bert-serve: BERT fill-mask / next-sentence inference service in C.
#
#   make            build everything (build/)
#   make run        install system packages if missing, build, serve models/default
#   make test       install test dependencies if missing, build, run the whole test suite
#   make test-san   the whole test suite against an ASan+UBSan build (build-san/)
#   make format     clang-format in place;  make format-check  fails on any diff
#   make warnings   build with both gcc and clang, -Werror
#   make pretrain   retrain models/default (train/)
#   make bench      benchmarks (bench/)
#   make fuzz       libFuzzer harnesses, long runs (fuzz/)

CC        ?= cc
BUILD     ?= build
PORT      ?=
MODEL     ?=
CONFIG    ?= config/default.yaml
SAN       ?= 0

# Python tooling (test oracle, benchmarks, pretraining) lives in a project-local virtual
# environment: Debian 12's own python3 refuses `pip install` (PEP 668). The venv sees the
# system's site-packages, so whatever a machine already has is reused and pip adds the rest.
VENV      ?= .venv
PYTHON    ?= $(abspath $(VENV))/bin/python
BASE_PYTHON ?= python3

PKGS      := libmicrohttpd jansson yaml-0.1 libutf8proc openblas
# Recursive (=), not simple (:=): on a fresh machine the libraries are installed by
# deps-system during this very make, after the Makefile was parsed.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CFLAGS    ?= -O3 -g
# Neither flag changes any IEEE result; together they let elementwise loops
# (GELU, softmax) vectorise instead of calling libm per element.
CFLAGS    += -fno-math-errno -fno-trapping-math
CFLAGS    += -std=c17 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wformat=2 -pthread \
             -fno-strict-aliasing -Icore -Iserver -Itools $(PKG_CFLAGS)
# The elementwise passes (GELU, softmax, layer norm, int8 (de)quantization)
# may fuse a multiply and an add into one FMA (ISO C's default forbids it):
# one rounding instead of two, within the 1e-4 parity with transformers, and
# GELU's polynomials in half the instructions.
%/core/ops.o %/core/dnnl_linear.o: CFLAGS += -ffp-contract=fast
# oneDNN (int8 products, core/qlinear.c) ships no pkg-config file in Debian 12.
LDLIBS    += $(PKG_LIBS) -ldnnl -lm -pthread

ifeq ($(SAN),1)
CFLAGS    += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS   += -fsanitize=address,undefined
endif

CORE_SRC   := $(wildcard core/*.c)
SERVER_SRC := $(filter-out server/main.c,$(wildcard server/*.c))
CORE_OBJ   := $(CORE_SRC:%.c=$(BUILD)/%.o)
SERVER_OBJ := $(SERVER_SRC:%.c=$(BUILD)/%.o)
TOOLS_OBJ  := $(patsubst %.c,$(BUILD)/%.o,$(wildcard tools/*.c))
HEADERS    := $(wildcard core/*.h server/*.h tools/*.h)

BINS := $(BUILD)/bert-cli
ifneq ($(wildcard server/main.c),)
BINS += $(BUILD)/bert-server
endif

.PHONY: all run test test-san format format-check warnings deps deps-system deps-test-system deps-python \
        pretrain bench fuzz clean

all: $(BINS)

$(BUILD)/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# Files compiled into the server with .incbin (server/assets.c).
ASSETS := openapi.yaml $(wildcard server/static/*)
$(BUILD)/server/assets.o: $(ASSETS)

$(BUILD)/libbertcore.a: $(CORE_OBJ)
	ar rcs $@ $^

$(BUILD)/bert-cli: $(TOOLS_OBJ) $(BUILD)/libbertcore.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/bert-server: $(BUILD)/server/main.o $(SERVER_OBJ) $(BUILD)/libbertcore.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# ---- dependencies (Debian 12 as root; idempotent, skipped when present) ----
# What building and serving need (make run, the Dockerfile's build stage) ...
BUILD_PACKAGES := build-essential pkg-config libmicrohttpd-dev libjansson-dev libyaml-dev \
                  libutf8proc-dev libopenblas-dev libdnnl-dev
# ... and what the tests, sanitizer builds, fuzzing and benchmarks add.
TEST_PACKAGES  := clang clang-format libclang-rt-14-dev curl jq wrk valgrind shellcheck strace \
                  python3 python3-venv python3-pip chromium chromium-driver openssl

define apt_install_missing
	@missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
endef

deps: deps-system deps-test-system deps-python

deps-system:
	$(call apt_install_missing,$(BUILD_PACKAGES))

deps-test-system:
	$(call apt_install_missing,$(TEST_PACKAGES))
	@# kubectl renders the kustomize manifests in tests; any installed kubectl will do, and
	@# Debian's kubernetes-client would conflict with another package's /usr/bin/kubectl.
	@command -v kubectl >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client; }

# pip itself decides what is missing (a few seconds when everything is there), so a new
# line in either requirements file is installed without touching this rule.
deps-python: $(VENV)/.created
	$(PYTHON) -m pip install -q -r tests/requirements.txt -r bench/requirements.txt
	$(PYTHON) -m pip install -q --no-deps -r bench/requirements-nodeps.txt

$(VENV)/.created:
	$(BASE_PYTHON) -m venv --system-site-packages $(VENV)
	@touch $@

# ---- run ----
# Each step is its own make so that the build is parsed after deps-system has installed
# the libraries pkg-config reports (see PKG_CFLAGS).
run:
	@$(MAKE) --no-print-directory deps-system
	@$(MAKE) --no-print-directory all
	exec $(BUILD)/bert-server --config $(CONFIG) $(if $(PORT),--port $(PORT)) $(if $(MODEL),--model $(MODEL))

# ---- tests ----
PYTEST_ARGS ?=
test:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory all
	PATH=$(abspath $(VENV))/bin:$$PATH BERT_BUILD_DIR=$(abspath $(BUILD)) $(PYTHON) -m pytest -q tests $(PYTEST_ARGS)

# Tests that measure memory or run the server under valgrind/strace use the plain build
# (BERT_PLAIN_BUILD_DIR): those figures are about the binary users run.
test-san:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory all
	$(MAKE) SAN=1 BUILD=build-san CC=clang all
	PATH=$(abspath $(VENV))/bin:$$PATH ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  BERT_BUILD_DIR=$(abspath build-san) BERT_PLAIN_BUILD_DIR=$(abspath $(BUILD)) \
	  BERT_SANITIZED=1 $(PYTHON) -m pytest -q tests $(PYTEST_ARGS)

# ---- code quality ----
C_FILES := $(wildcard core/*.[ch] server/*.[ch] tools/*.[ch] fuzz/*.[ch] bench/*.[ch])

format:
	clang-format -i $(C_FILES)

format-check:
	clang-format --dry-run --Werror $(C_FILES)

warnings: deps-system
	$(MAKE) BUILD=build-gcc CC=gcc all
	$(MAKE) BUILD=build-clang CC=clang all

# ---- model, benchmarks, fuzzing ----
pretrain: deps-python
	$(MAKE) -C train PYTHON=$(PYTHON)

bench:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory all
	$(MAKE) -C bench PYTHON=$(PYTHON)

fuzz:
	$(MAKE) -C fuzz

clean:
	rm -rf build build-san build-gcc build-clang
