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

# Delta is required. GraphFrames 0.11.0 (core + its GraphX fork, both needed on spark.jars) comes
# from the Maven repository when it serves it; otherwise it is built from the vendored upstream
# sources (GRAPHFRAMES_VENDOR/graphframes-X-src.tar.gz, extracted under $(JARS)/build, never into
# the repo) with conf/jars/graphframes/pom.xml. Without either, the graph algorithms run on the
# native Spark engine (see README "Versions"). Maven's output goes to logs in $(JARS).
GRAPHFRAMES_VERSION := 0.11.0
GRAPHFRAMES_VENDOR  ?= ../shared/vendor
GRAPHFRAMES_TARBALL := $(GRAPHFRAMES_VENDOR)/graphframes-$(GRAPHFRAMES_VERSION)-src.tar.gz
GRAPHFRAMES_POMS    := conf/jars/graphframes/pom.xml conf/jars/graphframes/graphx/pom.xml conf/jars/graphframes/core/pom.xml
GF_BUILD            := $(JARS)/build/graphframes
GF_JARS             := graphframes-spark4_2.13-$(GRAPHFRAMES_VERSION).jar graphframes-graphx-spark4_2.13-$(GRAPHFRAMES_VERSION).jar

jars: $(JARS)/.resolved
$(JARS)/.resolved: conf/jars/pom.xml $(GRAPHFRAMES_POMS) $(wildcard $(GRAPHFRAMES_TARBALL))
	@mkdir -p $(JARS)
	@mvn -q -B -f conf/jars/pom.xml dependency:copy-dependencies -Djars.dir=$(JARS) >$(JARS)/delta-resolve.log 2>&1 \
	  || { echo "jars: Delta resolution failed, see $(JARS)/delta-resolve.log: $$(grep -m1 '\[ERROR\] .' $(JARS)/delta-resolve.log | sed 's/\x1b\[[0-9;]*m//g')"; exit 1; }
	@rm -f $(JARS)/graphframes-*.jar; \
	if mvn -q -B -f conf/jars/pom.xml -Pgraphframes dependency:copy-dependencies -Djars.dir=$(JARS) \
	     >$(JARS)/graphframes-resolve.log 2>&1 \
	   && $(foreach j,$(GF_JARS),test -s $(JARS)/$(j) &&) true; then \
	  echo "jars: GraphFrames $(GRAPHFRAMES_VERSION) from Maven Central"; \
	elif [ ! -f "$(GRAPHFRAMES_TARBALL)" ]; then \
	  echo "jars: GraphFrames $(GRAPHFRAMES_VERSION) not in the Maven repository and no $(GRAPHFRAMES_TARBALL) (see $(JARS)/graphframes-resolve.log); graph engine: native"; \
	else \
	  log=$(JARS)/graphframes-build.log; start=$$(date +%s); \
	  rm -rf $(GF_BUILD) && mkdir -p $(GF_BUILD) \
	  && tar -xzf "$(GRAPHFRAMES_TARBALL)" -C $(GF_BUILD) >$$log 2>&1 \
	  && mvn -q -B -f conf/jars/graphframes/pom.xml package \
	       -Dgf.src=$(GF_BUILD)/graphframes-$(GRAPHFRAMES_VERSION) -Dgf.out=$(GF_BUILD)/target >>$$log 2>&1 \
	  && jar tf $(GF_BUILD)/target/core/graphframes-spark4_2.13-$(GRAPHFRAMES_VERSION).jar \
	       | grep -q 'org/graphframes/GraphFramePythonAPI.class' \
	  && cp $(GF_BUILD)/target/core/graphframes-spark4_2.13-$(GRAPHFRAMES_VERSION).jar \
	        $(GF_BUILD)/target/graphx/graphframes-graphx-spark4_2.13-$(GRAPHFRAMES_VERSION).jar $(JARS)/; \
	  if [ $$? -eq 0 ]; then \
	    echo "jars: GraphFrames $(GRAPHFRAMES_VERSION) built from $(GRAPHFRAMES_TARBALL) in $$(( $$(date +%s) - start )) s"; \
	  else \
	    rm -f $(JARS)/graphframes-*.jar; \
	    err=$$(grep -m1 -E '\[ERROR\] .+|error:|^(tar|gzip): ' $$log | sed 's/\x1b\[[0-9;]*m//g'); \
	    echo "jars: GraphFrames $(GRAPHFRAMES_VERSION) source build failed, see $$log: $${err:-no compiler error logged (jar without GraphFrames classes?)}; graph engine: native"; \
	  fi; \
	fi
	@touch $@

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
