# `make demo` and `make test` are all the set-up a fresh machine needs: both create the virtual
# environment from requirements.lock (every package pinned, transitive ones too) on first use,
# and make it again whenever the lock changes.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LOCK := requirements.lock
LATEST := .venv-latest
# the platform the lock is resolved for: the project's machines (Linux x86_64, Python 3.11)
LOCK_TARGET := --python-version 3.11 --python-platform x86_64-manylinux_2_28

.PHONY: demo test test-fast test-latest lock install gpu-report

install: $(VENV)/.installed

# exactly the lock: a fresh venv, no dependency resolution, then pip's consistency check
$(VENV)/.installed: $(LOCK)
	$(PYTHON) -m venv --clear $(VENV)
	$(PY) -m pip install --no-deps -r $(LOCK)
	$(PY) -m pip check
	touch $@

demo: $(VENV)/.installed
	$(PY) demo.py

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

# the suite without the end-to-end tests marked slow (for development; CI runs `make test`)
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow" tests

# the newest versions requirements.txt allows, in a throw-away venv: learn about the next break early
test-latest:
	$(PYTHON) -m venv --clear $(LATEST)
	$(LATEST)/bin/python -m pip install --upgrade pip
	$(LATEST)/bin/python -m pip install --upgrade -r requirements.txt -r requirements-extras.txt
	$(LATEST)/bin/python -m pip freeze
	$(LATEST)/bin/python -m pytest -q tests

# write requirements.lock again from requirements.txt and requirements-extras.txt (uv from a throw-away venv)
lock:
	$(PYTHON) -m venv --clear .venv-lock
	.venv-lock/bin/python -m pip install uv
	.venv-lock/bin/uv pip compile requirements.txt requirements-extras.txt --constraint lock-constraints.txt $(LOCK_TARGET) \
		--output-file $(LOCK)

gpu-report: $(VENV)/.installed
	$(PY) benchmarks/gpu_report.py --output-dir gpu_report
