# meltrca developer and operator entry points. `make help` lists them.
PYTHON ?= python3.11
VENV   ?= .venv
JARS   ?= $(CURDIR)/.jars
BIN    := $(VENV)/bin
PYTEST_ARGS ?=
DEMO   ?= demo

.DEFAULT_GOAL := help
.PHONY: help setup venv jars browser test test-slow test-all lint demo bench clean

help:
	@echo "make setup      venv with pinned deps + JVM jars (Delta, GraphFrames) in .jars/"
	@echo "make demo       setup, generate demo data, run the pipeline, evaluate, report"
	@echo "make test       setup, lint, default test suite (slow cases excluded)"
	@echo "make test-slow  setup, slow cases (standalone cluster, crash/rerun, accuracy)"
	@echo "make bench      scale benchmark (writes bench/benchmark.json)"

setup: venv jars browser

venv: $(VENV)/.installed
$(VENV)/.installed: setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

# Delta is required. GraphFrames is resolved when the Maven repository has it; without it the
# graph algorithms run on the native Spark engine (see README "Versions").
jars: $(JARS)/.resolved
$(JARS)/.resolved: conf/jars/pom.xml
	mkdir -p $(JARS)
	mvn -q -B -f conf/jars/pom.xml dependency:copy-dependencies -Djars.dir=$(JARS)
	@mvn -q -B -f conf/jars/pom.xml -Pgraphframes dependency:copy-dependencies -Djars.dir=$(JARS) >$(JARS)/graphframes-resolve.log 2>&1 \
	  && echo "jars: Delta and GraphFrames in $(JARS)" \
	  || echo "jars: Delta in $(JARS); GraphFrames jar not found in the Maven repository (graph engine: native)"
	touch $@

# Headless Chromium from the Debian packages, driven by playwright in the report's browser test.
browser:
	@test -x /usr/bin/chromium || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }
	@test -x /usr/bin/chromium && echo "browser: $$(/usr/bin/chromium --version 2>/dev/null)"

lint: venv
	$(BIN)/ruff check lib jobs tests scripts

test: setup lint
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

test-slow: setup
	$(BIN)/pytest -m slow $(PYTEST_ARGS)

test-all: test test-slow

demo: setup
	$(BIN)/meltrca generate --services 8 --duration 24 --interval 1 --faults 6 --seed 7 --output $(DEMO)/input
	$(BIN)/meltrca run --input $(DEMO)/input --output $(DEMO)/results --models all --threshold 0.95
	$(BIN)/meltrca evaluate --results $(DEMO)/results --labels $(DEMO)/input/labels.json
	$(BIN)/meltrca report --results $(DEMO)/results
	@echo "report: $(CURDIR)/$(DEMO)/results/report.html"

bench: setup
	$(BIN)/python jobs/benchmark.py --output bench

clean:
	rm -rf $(DEMO) bench build dist lib/*.egg-info
