# Sluice: everything a fresh machine needs goes through these targets.
#   make run   — build plugins and host (release), start the default pipeline
#   make test  — the whole suite: Rust unit/integration tests and end-to-end tests with real peers

CARGO  ?= cargo
PYTHON ?= python3
VENV   ?= .venv
CONFIG ?= pipelines/default.toml
WASM_TARGET := wasm32-wasip2
# The exporters' gzip goes through ISA-L's igzip (about 1.7x faster than zlib-rs) where its build
# tools are installed (nasm, autotools: `apt-get install nasm autoconf automake libtool`); without
# them the host builds with zlib-rs. The start-up log line names the one in use (`gzip=`).
HOST_FEATURES ?= $(if $(and $(shell command -v nasm),$(shell command -v autoreconf),$(shell command -v libtoolize)),--features sluice-host/isal)

.PHONY: all build release run test test-rust test-e2e plugins wasm-target venv lint bench fuzz fuzz-host fuzz-tools clean

all: build

# Plugins are WebAssembly components in their own cargo workspace under plugins/.
wasm-target:
	@if command -v rustup >/dev/null 2>&1; then \
		rustup target list --installed | grep -qx '$(WASM_TARGET)' || rustup target add $(WASM_TARGET); \
	else \
		echo "rustup not found: install the $(WASM_TARGET) target for your toolchain by hand" >&2; \
	fi

# Python plugins (plugins/python/NAME, the world in its pyproject.toml's [tool.sluice]) are built
# by componentize-py with the SDK in sdk/python, into plugins/dist/NAME.wasm; only when a source
# changed, since each build bundles a Python interpreter (about 5 s, 18 MB).
PY_PLUGINS := $(notdir $(wildcard plugins/python/*))
PY_PLUGIN_WASM := $(PY_PLUGINS:%=plugins/dist/%.wasm)
COMPONENTIZE := $(VENV)/bin/componentize-py

$(VENV)/.componentize: sdk/python/requirements-build.txt
	test -x $(VENV)/bin/pip || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r sdk/python/requirements-build.txt
	touch $@

plugins/dist/%.wasm: plugins/python/%/app.py plugins/python/%/pyproject.toml sdk/python/sluice_plugin/__init__.py sdk/wit/plugin.wit $(VENV)/.componentize
	mkdir -p plugins/dist
	world=$$(sed -n 's/^world *= *"\(.*\)"/\1/p' plugins/python/$*/pyproject.toml); \
	cd plugins/python/$* && $(CURDIR)/$(COMPONENTIZE) -d $(CURDIR)/sdk/wit -w "$$world" componentize \
		-p $(CURDIR)/sdk/python -p . app -o $(CURDIR)/$@

# Built components are copied to plugins/dist/NAME.wasm (dashes, as the crates are named), the
# stable place pipelines refer to.
PLUGIN_OUT := plugins/target/$(WASM_TARGET)/release
plugins: wasm-target $(PY_PLUGIN_WASM)
	cd plugins && $(CARGO) build --release --target $(WASM_TARGET)
	mkdir -p plugins/dist
	for wasm in $(PLUGIN_OUT)/*.wasm; do \
		name=$$(basename $$wasm .wasm | tr _ -); \
		cmp -s $$wasm plugins/dist/$$name.wasm || cp $$wasm plugins/dist/$$name.wasm; \
	done

build: plugins
	$(CARGO) build -p sluice-host $(HOST_FEATURES)

release: plugins
	$(CARGO) build --release -p sluice-host -p sluice-bench $(HOST_FEATURES)

run: release
	./target/release/sluice run --config $(CONFIG)

$(VENV)/.installed: tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r tests/requirements.txt
	touch $@

venv: $(VENV)/.installed

test: test-rust test-e2e

test-rust: plugins
	$(CARGO) test --workspace $(HOST_FEATURES)
	cd plugins && $(CARGO) test

test-e2e: build venv
	SLUICE_BIN=$(CURDIR)/target/debug/sluice $(VENV)/bin/python -m pytest tests/e2e -q -p no:cacheprovider \
		-W ignore::DeprecationWarning

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets $(HOST_FEATURES) -- -D warnings
	cd plugins && $(CARGO) fmt --all --check && $(CARGO) clippy --all-targets -- -D warnings
	cd fuzz && $(CARGO) fmt --check
	cd fuzz/host && $(CARGO) fmt --check
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps

# Fuzzing (cargo-fuzz, nightly): every target under fuzz/fuzz_targets for FUZZ_SECONDS each,
# starting from the valid requests in fuzz/seeds/TARGET.
# Crashes land in fuzz/artifacts/TARGET/; reproduce one with
# `cd fuzz && cargo +nightly fuzz run TARGET artifacts/TARGET/crash-…`.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := $(basename $(notdir $(wildcard fuzz/fuzz_targets/*.rs)))

# The host's own parsers (OTLP/JSON, the config loader, the Prometheus conversions, the disk
# queue reader) and the gzip join have their targets under fuzz/host: building the whole host
# instrumented takes minutes, so CI runs only the wire targets above and `make fuzz-host` runs
# these.
FUZZ_HOST_TARGETS := $(basename $(notdir $(wildcard fuzz/host/fuzz_targets/*.rs)))

fuzz-tools:
	rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked

fuzz: fuzz-tools
	cd fuzz && for target in $(FUZZ_TARGETS); do \
		mkdir -p corpus/$$target seeds/$$target && \
		$(CARGO) +nightly fuzz run $$target corpus/$$target seeds/$$target -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

# Without AddressSanitizer: librdkafka's configure step (the Kafka exporter and receiver) cannot
# link its test programs under it. Coverage guidance, debug assertions and Rust's own checks stay.
fuzz-host: fuzz-tools
	for target in $(FUZZ_HOST_TARGETS); do \
		mkdir -p fuzz/host/corpus/$$target fuzz/host/seeds/$$target && \
		$(CARGO) +nightly fuzz run --sanitizer none --fuzz-dir fuzz/host $(if $(HOST_FEATURES),--features isal) \
			$$target fuzz/host/corpus/$$target fuzz/host/seeds/$$target \
			-- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

bench: release venv
	$(VENV)/bin/python bench/run.py

clean:
	$(CARGO) clean
	rm -rf $(VENV) data
