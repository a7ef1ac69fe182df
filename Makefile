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

# TensorFlow's C++ log at the CLI's own default (fatal only): a machine
# without a GPU otherwise prints CUDA-plugin registration errors per process.
demo: venv
	TF_CPP_MIN_LOG_LEVEL=3 $(VENV)/bin/moonshine-tfx run --preset demo --output-dir $(DEMO_OUT)

test: venv
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-fast: venv
	$(PY) -m pytest tests -m "not slow" $(PYTEST_ARGS)

# Re-resolve requirements.in into requirements.lock, the runtime (the image
# installs it), and requirements-test.in on top of it (needs network and uv);
# the never-resolved tail of requirements-test.lock is kept as it is.
lock:
	uv pip compile requirements.in -o requirements.lock --python-version 3.10 \
	  --python-platform x86_64-manylinux_2_31 --no-header
	sed -i '1i # Every version pinned: generated from requirements.in by `make lock` (uv pip compile, Python 3.10).' requirements.lock
	uv pip compile requirements-test.in -o /tmp/requirements-test.resolved \
	  --python-version 3.10 --python-platform x86_64-manylinux_2_31 --no-header
	{ sed -n '1,3p' requirements-test.lock; \
	  grep -v -F -x -f <(grep -E '^[A-Za-z0-9]' requirements.lock) /tmp/requirements-test.resolved; \
	  sed -n '/^# Test-only packages installed the same way/,$$p' requirements-test.lock; \
	} > requirements-test.lock.new && mv requirements-test.lock.new requirements-test.lock

# Regenerate the embedded corpus: needs the Debian speech engines (the line
# below) and the pinned Piper runtime of requirements-corpus.txt, which this
# installs into the venv (--no-deps: nothing the venv has is changed).
CORPUS_APT := espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
corpus: venv
	@missing=""; for e in espeak-ng flite festival text2wave; do \
	  command -v $$e >/dev/null || missing="$$missing $$e"; done; \
	for v in kal_diphone ked_diphone; do \
	  test -d /usr/share/festival/voices/english/$$v || missing="$$missing festival:$$v"; done; \
	test -d /usr/share/festival/voices/us/cmu_us_slt_arctic_hts || missing="$$missing festival:cmu_us_slt_arctic_hts"; \
	if [ -n "$$missing" ]; then echo "make corpus: missing$$missing; run:"; \
	  echo "  apt-get install $(CORPUS_APT)"; exit 1; fi
	$(PY) -m pip install -q --no-deps -r requirements-corpus.txt
	nice -n 10 $(PY) scripts/make_corpus.py --out data/embedded-corpus

clean:
	rm -rf outputs .pytest_cache
