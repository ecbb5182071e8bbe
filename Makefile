# lambda-memory-profiler — build, test, demo.
# `make test` installs everything it needs (project venv, pinned tools) on a fresh machine.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
VPY := $(VENV)/bin/python
export CARGO_TERM_COLOR := never
# Python folders that exist in this checkout (ruff fails on a missing path).
PY_DIRS := $(wildcard layer tests bench examples scripts)

.PHONY: all build test lint rust-test py-test py-test-matrix bench-decorator venv localstack clean

all: build

build:
	cargo build --release --workspace

$(VENV)/.stamp: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.stamp

# LocalStack (local CloudWatch) in its own venv: it needs Python >= 3.13.
localstack:
	scripts/localstack.sh install

lint: venv
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(VPY) -m ruff check $(PY_DIRS)
	$(VPY) -m ruff format --check $(PY_DIRS)

rust-test: venv localstack
	LMP_TEST_PYTHON=$(abspath $(VPY)) LMP_LOCALSTACK=$(abspath scripts/localstack.sh) cargo test --workspace

py-test: venv
	$(VPY) -m pytest -q tests/python

# The decorator's suite on every CPython >= 3.9 under ~/.pyenv/versions (absent ones skipped).
py-test-matrix:
	tests/python/run_matrix.sh

# Time added per call by the decorator vs the tutorial decorator (BENCHMARKS.md, Decorator).
bench-decorator: venv
	$(VPY) bench/decorator_overhead.py

test: lint rust-test py-test py-test-matrix

clean:
	cargo clean
	rm -rf $(VENV) .venv-localstack build
