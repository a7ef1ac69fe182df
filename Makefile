# The two commands a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTHON310 ?= $(shell scripts/find_python310.sh)
DEMO_OUT ?= outputs/demo
PYTEST_ARGS ?=
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONUNBUFFERED := 1

.PHONY: venv demo test test-fast lock clean corpus

venv: $(STAMP)

$(STAMP): requirements.lock requirements-test.lock setup.py
	@test -n "$(PYTHON310)" || { scripts/find_python310.sh >/dev/null; exit 1; }
	@test -x $(PY) || $(PYTHON310) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip==24.2"
	$(PY) -m pip install -q --no-deps -r requirements.lock
	$(PY) -m pip install -q --no-deps -r requirements-test.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)

demo: venv
	$(VENV)/bin/moonshine-tfx run --preset demo --output-dir $(DEMO_OUT)

test: venv
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-fast: venv
	$(PY) -m pytest tests -m "not slow" $(PYTEST_ARGS)

# Re-resolve requirements.in into requirements.lock (needs network and uv).
lock:
	uv pip compile requirements.in -o requirements.lock --python-version 3.10 \
	  --python-platform x86_64-manylinux_2_31 --no-header
	sed -i '1i # Every version pinned: generated from requirements.in by `make lock` (uv pip compile, Python 3.10).' requirements.lock

# Regenerate the embedded corpus (needs `apt-get install espeak-ng`).
corpus: venv
	$(PY) scripts/make_corpus.py --out data/embedded-corpus

clean:
	rm -rf outputs .pytest_cache
