# Spark VTuber: one command for the main job (`make live`), one for the tests (`make test`).
# Everything installs into .venv inside the repo; `make setup` is idempotent and the other
# targets run it when needed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.setup-done
ENGINES := engines/cpu/manifest.json
# Portable x86-64-v3 build of llama.cpp (a wheel cached on one CPU must run on the next).
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
PYTEST_ARGS ?=
LIVE_ARGS ?=

.PHONY: setup engines serve live test test-unit lint system-deps perf clean help

help:
	@echo "make live    set up, build CPU engines, start tritonserver, chat with the persona (Ctrl-C stops)"
	@echo "make serve   tritonserver on model_repository with the CPU engines (foreground)"
	@echo "make test    the whole test suite (unit + real tritonserver + end to end)"
	@echo "make lint    ruff check + format check"
	@echo "make setup   create .venv and install everything (idempotent)"
	@echo "make engines python -m build_engines cpu -> engines/cpu/"
	@echo "make perf    latency report under perf/reports/"

setup: $(STAMP)

$(STAMP): requirements/base.txt requirements/nodeps.txt requirements/llama.txt client/pyproject.toml pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements/base.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements/nodeps.txt
	@echo "llama-cpp-python: compiling llama.cpp if no wheel is cached (about 5 minutes on 2 cores)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install -q --disable-pip-version-check -r requirements/llama.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e client -e .
	@touch $@

engines: $(ENGINES)

$(ENGINES): $(STAMP)
	$(PY) -m build_engines cpu

serve: $(ENGINES)
	$(PY) -m spark_runtime.serve

live: $(ENGINES)
	$(PY) -m spark_runtime.serve --then $(BIN)/spark-client live $(LIVE_ARGS)

# Debian packages some tests use as real peers (an IRC server, ...). Installed when missing and
# when we can (root with apt); otherwise those tests skip and say why.
system-deps:
	@missing=""; for p in $$(grep -hv '^#' requirements/apt-*.txt 2>/dev/null); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "warning: could not install$$missing; the tests that need them will skip"; \
	  else echo "note: missing Debian packages$$missing (need root); the tests that need them will skip"; fi; \
	fi

LINT_PATHS := client spark_runtime build_engines model_repository perf tests

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

test: $(ENGINES) system-deps lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

clean:
	rm -rf engines/cpu .cache .pytest_cache
