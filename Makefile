# lambda-memory-profiler — build, test, demo.
# `make test` installs everything it needs (project venv, pinned tools) on a fresh machine.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
VPY := $(VENV)/bin/python
export CARGO_TERM_COLOR := never
# Python folders that exist in this checkout (ruff fails on a missing path).
PY_DIRS := $(wildcard layer tests bench examples scripts demo)

.PHONY: demo all build test lint rust-test py-test py-test-matrix bench-decorator bench venv localstack clean emulator-conformance fuzz native platform-test

all: build

# The first command to run: build everything, then a leaky example and its fixed twin (three
# environments each) on the local emulator with the real layer and a local CloudWatch
# (LocalStack); the report is printed by the report command, as for a deployed function.
demo: venv localstack layer
	cargo build --release -p lambda-emulator
	cargo build -p lambda-memory-profiler-report
	.venv-localstack/bin/python demo/run_demo.py

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

# tests/analysis_truth.rs and tests/leak_detection.rs (the examples' leaky twins flagged, fixed
# twins not) run twice, whole: on the decorator's pure-Python path (LMP_NATIVE=false, forwarded
# to the function by the test: the leak rules' ground truths), then with the native sampler on
# (LMP_NATIVE=true, the default). The other end-to-end tests run the decorator's defaults.
rust-test: venv localstack native
	LMP_NATIVE=false LMP_TEST_PYTHON=$(abspath $(VPY)) LMP_LOCALSTACK=$(abspath scripts/localstack.sh) cargo test --workspace
	LMP_NATIVE=true LMP_TEST_PYTHON=$(abspath $(VPY)) cargo test -p lambda-memory-profiler --test analysis_truth --test leak_detection

# Lambda Managed Instances (Python 3.13+) and SnapStart (3.12+) are newer runtimes than the
# project venv's 3.11: their end-to-end tests (emulator and extension) run again on CPython 3.13
# from ~/.pyenv with the real runtime client.
RUNTIME313 := .venv-runtime-3.13
$(RUNTIME313)/.stamp: tests/runtime-requirements.txt
	rm -rf $(RUNTIME313)
	"$$(ls -d $$HOME/.pyenv/versions/3.13.* | sort -V | tail -n 1)/bin/python3" -m venv $(RUNTIME313)
	$(RUNTIME313)/bin/python -m pip install -q -r tests/runtime-requirements.txt
	touch $@

platform-test: $(RUNTIME313)/.stamp
	LMP_NATIVE=false LMP_TEST_PYTHON=$(abspath $(RUNTIME313)/bin/python) cargo test -p lambda-memory-profiler --test managed_instances --test snapstart
	LMP_TEST_PYTHON=$(abspath $(RUNTIME313)/bin/python) cargo test -p lambda-emulator --test managed_instances --test snapstart

# The native heap sampler, one module per CPython found (3.9+), into the package folder; the
# Python suites then require it (LMP_REQUIRE_NATIVE=1: a missing module fails, not skips).
native: tools
	scripts/build-native.sh

py-test: venv native
	LMP_REQUIRE_NATIVE=1 $(VPY) -m pytest -q tests/python

# The emulator against extensions in the shapes of the AWS samples (Python example extension,
# Telemetry API example) and of the lambda-extension crate's record types, end to end (~5 s
# with a warm build). `make test` runs them within `rust-test`, with the rest of the workspace.
emulator-conformance: venv
	LMP_TEST_PYTHON=$(abspath $(VPY)) cargo test -p lambda-emulator --test conformance

# The decorator's suite on every CPython >= 3.9 under ~/.pyenv/versions (absent ones skipped).
py-test-matrix: native
	LMP_REQUIRE_NATIVE=1 tests/python/run_matrix.sh

# Time added per call by the decorator vs the tutorial decorator (BENCHMARKS.md, Decorator).
bench-decorator: venv
	$(VPY) bench/decorator_overhead.py

# Extension overhead vs a do-nothing extension, metric sending vs the alternatives, criterion
# micro-benchmarks, layer size: rewrites the extension tables of BENCHMARKS.md (~3 min; not part
# of `make test`). The decorator's own tables (bench-decorator) go to build/bench/decorator.md.
bench: venv localstack layer
	cargo build -q --release -p lambda-emulator
	$(VPY) bench/extension_overhead.py
	$(VPY) bench/decorator_overhead.py --rounds 30 > build/bench/decorator.md

test: lint rust-test platform-test py-test py-test-matrix examples-test layer-test check-template

# Every parser of outside input (intake datagram, telemetry batch, /proc text, Extensions API
# event, configuration, the limits) for 1,000,000 generated cases each (the Python configuration
# parsers, with hypothesis, 100,000); `make test` runs 256 (100).
# (No coverage-guided fuzzer: cargo-fuzz needs a nightly toolchain, which this machine lacks.)
fuzz: venv
	PROPTEST_CASES=1000000 cargo test --release -p lambda-memory-profiler --test parsers_prop
	$(VPY) -m pytest -q tests/python/test_config_prop.py --hypothesis-profile=fuzz

clean:
	cargo clean
	rm -rf $(VENV) .venv-localstack .venv-tools $(RUNTIME313) build

# ---- layer, template, examples ---------------------------------------------------------------
TOOLS_VENV := .venv-tools
ZIGBUILD_VERSION := 0.24.1
ZIGBUILD_STAMP := build/tools/.cargo-zigbuild-$(ZIGBUILD_VERSION)
# x86_64 (default) or arm64; arm64 needs `rustup target add aarch64-unknown-linux-gnu`.
ARCH ?= x86_64
LAYER_ZIP := build/$(if $(filter x86_64,$(ARCH)),layer.zip,layer-$(ARCH).zip)
SAM_ENV := AWS_DEFAULT_REGION=us-east-1 SAM_CLI_TELEMETRY=0 AWS_EC2_METADATA_DISABLED=true

.PHONY: tools layer examples-test layer-test check-template build-MemoryProfilerLayer build-ExampleFunction

$(TOOLS_VENV)/.stamp: requirements-tools.txt
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install -q -r requirements-tools.txt
	touch $@

$(ZIGBUILD_STAMP):
	cargo install cargo-zigbuild --version $(ZIGBUILD_VERSION) --locked --root build/tools
	touch $@

tools: $(TOOLS_VENV)/.stamp $(ZIGBUILD_STAMP)

# build/layer.zip: extensions/lambda-memory-profiler (glibc <= 2.17) + python/lambda_memory_profiler
# + the exec wrapper lambda-memory-profiler (AWS_LAMBDA_EXEC_WRAPPER=/opt/lambda-memory-profiler).
layer: tools native
	ARCH=$(ARCH) scripts/build-layer.sh

examples-test: venv native
	$(VPY) -m pytest -q tests/examples

# Layout and glibc floor of the zip; the unpacked layer under the project's emulator.
layer-test: venv layer
	cargo build -q -p lambda-emulator
	LMP_LAYER_ZIP=$(abspath $(LAYER_ZIP)) LMP_EMULATOR=$(abspath target/debug/lambda-emulator) \
	  $(VPY) -m pytest -q tests/layer

# cfn-lint, metric names against the README table, SAM's own lint and a real `sam build`
# (through the targets below), all offline.
check-template: tools venv
	@# Two profiled functions, as a user lists them: cfn-lint and `sam validate` expand Fn::ForEach
	@# with the parameters' defaults, so they also read a copy whose default names both.
	$(TOOLS_VENV)/bin/python scripts/check-template.py --template template.yaml --readme README.md \
	  --parameter-overrides ProfiledFunctionNames=lambda-memory-profiler-example,orders \
	  --write-defaults build/check-template/template.yaml
	$(SAM_ENV) $(TOOLS_VENV)/bin/cfn-lint template.yaml build/check-template/template.yaml
	$(SAM_ENV) $(TOOLS_VENV)/bin/sam validate --lint --template-file template.yaml
	$(SAM_ENV) $(TOOLS_VENV)/bin/sam validate --lint --template-file build/check-template/template.yaml
	$(SAM_ENV) $(TOOLS_VENV)/bin/sam validate --language-extensions --template-file build/check-template/template.yaml
	$(SAM_ENV) $(TOOLS_VENV)/bin/sam build --language-extensions --template-file template.yaml --build-in-source \
	  --build-dir build/sam --cache-dir build/sam-cache \
	  --parameter-overrides ProfiledFunctionNames=lambda-memory-profiler-example,orders
	test -x build/sam/MemoryProfilerLayer/extensions/lambda-memory-profiler
	test -f build/sam/MemoryProfilerLayer/python/lambda_memory_profiler/__init__.py
	test -f build/sam/ExampleFunction/leaky.py
	$(VPY) -m pytest -q tests/alarms
	@# Metrics and dimension sets against the extension just built, under each LMP_DIMENSIONS.
	$(TOOLS_VENV)/bin/python scripts/check-alarms.py --template template.yaml --readme README.md \
	  --parameter-overrides ProfiledFunctionNames=lambda-memory-profiler-example,orders \
	  --extension build/sam/MemoryProfilerLayer/extensions/lambda-memory-profiler

# Called by `sam build` (Metadata: BuildMethod: makefile) with ARTIFACTS_DIR set.
build-MemoryProfilerLayer: layer
	cp -R build/layer-$(ARCH)/. "$(ARTIFACTS_DIR)/"

# The example needs no dependencies (the layer brings the decorator): copy its sources only.
build-ExampleFunction:
	cp examples/log_aggregator/*.py "$(ARTIFACTS_DIR)/"
