# Spark VTuber: one command for the main job (`make live`), one for the tests (`make test`).
# Everything installs into .venv inside the repo; `make setup` is idempotent and the other
# targets run it when needed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.setup-done
ENGINES := engines/cpu/manifest.json
# llama.cpp is compiled for this CPU's vector instructions (AVX2; AVX-512 and VNNI where it has them;
# spark_runtime/llama_build.py). The wheel is kept per instruction set and pin under
# .cache/llama-wheels/, and the .venv's llama stamp is named after it: carried to another CPU, the
# .venv gets the build for that one. LLAMA_CMAKE_ARGS=... on the command line builds your own.
ifeq ($(origin LLAMA_CMAKE_ARGS),undefined)
LLAMA_CMAKE_ARGS := $(shell $(PYTHON) spark_runtime/llama_build.py cmake-args)
endif
LLAMA_KEY := $(shell $(PYTHON) spark_runtime/llama_build.py key requirements/llama.txt $(LLAMA_CMAKE_ARGS))
LLAMA_WHEELS := .cache/llama-wheels/$(LLAMA_KEY)
LLAMA_STAMP := $(VENV)/.llama-$(LLAMA_KEY)
PYTEST_ARGS ?=
LIVE_ARGS ?=
# Bring your own model: `make engines LLM_GGUF=/path/model.gguf` (then `make live`) serves any local
# GGUF with its own chat template instead of the packaged SmolLM2-135M.
LLM_GGUF ?=
ENGINE_ARGS := $(if $(LLM_GGUF),--llm-gguf $(LLM_GGUF))
# With LLM_GGUF set, the engines are rebuilt (cheap: files are hard links) before serving.
SERVED := $(if $(LLM_GGUF),engines,$(ENGINES))
PERF_ARGS ?=
# Game mode's Node sidecar (mineflayer) and the local flying-squid server, from its lockfile.
SIDECAR := client/minecraft_sidecar
SIDECAR_STAMP := $(SIDECAR)/node_modules/.installed
# NeMo's own virtualenv (numpy >= 2), used only to export NeMo TTS checkpoints to ONNX
# (python -m build_engines gb10 --tts nemo:...); the tests export a tiny one through it.
NEMO_ENV_STAMP := engines/.build-env/nemo-tts/.ready

# pip install with two more tries for the downloads: a wheel cut short or corrupted on the way fails
# its hash check, and pip itself does not try again. Retries skip pip's cache, which may hold the
# bad copy.
# $(1): the pip command and its arguments ("install -r requirements/base.txt").
pip_retried = for try in 1 2 3; do \
	  if [ $$try = 1 ]; then cache=; else cache=--no-cache-dir; fi; \
	  $(PY) -m pip $(1) -q --disable-pip-version-check $$cache && break; \
	  if [ $$try = 3 ]; then exit 1; fi; \
	  echo "pip $(1) failed (try $$try of 3); trying again in 10 s"; sleep 10; \
	done

.PHONY: minecraft-server setup engines nemo-env serve live test test-unit lint system-deps perf clean help

help:
	@echo "make live    set up, build CPU engines, start tritonserver, chat with the persona (Ctrl-C stops)"
	@echo "make serve   tritonserver on model_repository with the CPU engines (foreground)"
	@echo "make test    the whole test suite (unit + real tritonserver + end to end)"
	@echo "make lint    ruff check + format check"
	@echo "make setup   create .venv and install everything, the game sidecar's npm packages too (idempotent)"
	@echo "make minecraft-server  a local Minecraft server (flying-squid, offline mode) on 127.0.0.1:$(MC_PORT)"
	@echo "make engines python -m build_engines cpu -> engines/cpu/ (LLM_GGUF=model.gguf: your own LLM)"
	@echo "make nemo-env  NeMo's build environment (exports NeMo TTS checkpoints for the GB10 target)"
	@echo "make perf    latency report under perf/reports/ (starts tritonserver if none is ready; PERF_ARGS=...)"

setup: $(STAMP) $(LLAMA_STAMP) $(SIDECAR_STAMP)

# Needs Node.js and npm (Debian: nodejs, in requirements/apt-test.txt); without them game mode says
# what is missing and the rest of the product runs.
$(SIDECAR_STAMP): $(SIDECAR)/package.json $(SIDECAR)/package-lock.json
	@if command -v npm >/dev/null; then \
	  echo "game sidecar: npm ci in $(SIDECAR)"; \
	  npm ci --prefix $(SIDECAR) --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "note: npm not found; game mode (--minecraft) needs Node.js: apt install nodejs npm"; fi

$(STAMP): requirements/base.txt requirements/nodeps.txt client/pyproject.toml pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(call pip_retried,install -r requirements/base.txt)
	$(call pip_retried,install --no-deps -r requirements/nodeps.txt)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e client -e .
	@touch $@

# Compiled once per CPU instruction set and pin, without pip's cache (its key ignores CMAKE_ARGS, so
# it would hand over a wheel built for another CPU); installed without touching the pinned packages.
$(LLAMA_STAMP): | $(STAMP)
	@if ! ls $(LLAMA_WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1; then \
	  echo "llama-cpp-python: compiling llama.cpp for this CPU ($(LLAMA_KEY); about 5 minutes on 2 cores)"; \
	  rm -rf $(LLAMA_WHEELS).part; export CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)"; \
	  $(call pip_retried,wheel --no-deps --no-binary llama-cpp-python --no-cache-dir -w $(LLAMA_WHEELS).part -r requirements/llama.txt); \
	  rm -rf $(LLAMA_WHEELS); mv $(LLAMA_WHEELS).part $(LLAMA_WHEELS); \
	fi
	whl=$$(ls $(LLAMA_WHEELS)/llama_cpp_python-*.whl | head -n 1); \
	$(PY) -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$$whl" && \
	$(call pip_retried,install "$$whl[server]")
	$(PY) spark_runtime/llama_build.py mark $(LLAMA_CMAKE_ARGS)
	@rm -f $(VENV)/.llama-*; touch $@

engines: $(STAMP) | $(LLAMA_STAMP)
	$(PY) -m build_engines cpu $(ENGINE_ARGS)

# The DGX Spark container (needs Docker): checks the base image's linux/arm64 manifest, then docker build.
# Standard library only, so the Spark's own python3 runs it (no .venv). GB10_IMAGE_ARGS=--stt-cuda etc.
GB10_IMAGE_ARGS ?=
.PHONY: gb10-image
gb10-image:
	$(PYTHON) -m build_engines.gb10_image $(GB10_IMAGE_ARGS)

nemo-env: $(NEMO_ENV_STAMP)

$(NEMO_ENV_STAMP): requirements/nemo-tts.txt $(STAMP)
	$(PY) -m build_engines nemo-env

# Rebuilt when the CPU build changes (cheap: only what changed is rewritten; adapters retrain only for a new model file).
$(ENGINES): $(STAMP) build_engines/cpu.py build_engines/packaged.py | $(LLAMA_STAMP)
	$(PY) -m build_engines cpu $(ENGINE_ARGS)

serve: $(SERVED)
	$(PY) -m spark_runtime.serve

live: $(SERVED) $(SIDECAR_STAMP)
	$(PY) -m spark_runtime.serve --then $(BIN)/spark-client live $(LIVE_ARGS)

# Measures the server at $SPARK_TRITON_URL (default 127.0.0.1:8100) when one is ready there; otherwise
# python -m perf starts its own on free ports and stops it when done (also on Ctrl-C or SIGTERM).
perf: $(ENGINES)
	$(PY) -m perf $(PERF_ARGS)

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

test: $(ENGINES) $(NEMO_ENV_STAMP) system-deps $(SIDECAR_STAMP) lint
	$(PY) -m pytest $(PYTEST_ARGS)

MC_PORT ?= 25565
minecraft-server: $(SIDECAR_STAMP)
	node $(SIDECAR)/server/local_server.js --port $(MC_PORT)

test-unit: $(STAMP) | $(LLAMA_STAMP)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

clean:
	rm -rf engines/cpu .cache .pytest_cache
