# The only entry points. `make demo` and `make test` set up everything they need first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RLIB := $(VENV)/R-library
export AMBIDEX_R_LIBS := $(CURDIR)/$(RLIB)
export R_LIBS := $(CURDIR)/$(RLIB)

.PHONY: setup demo test test-python test-r bench lint clean

setup: $(VENV)/.stamp-python $(RLIB)/.stamp-r

$(VENV)/.stamp-r-system: DESCRIPTION tools/setup-r.sh
	@mkdir -p $(VENV)
	tools/setup-r.sh
	@touch $@

$(VENV)/.stamp-python: pyproject.toml $(VENV)/.stamp-r-system
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
	$(PY) -m pip install -q -e '.[test,rpy2]' 2>&1 | grep -v '^WARNING: Location' || true
	$(PY) -c 'import ambidex, ambidex_stage, rpy2.robjects'
	@touch $@

$(RLIB)/.stamp-r: $(VENV)/.stamp-r-system $(shell find r -type f -not -path '*/tests/*' 2>/dev/null)
	@mkdir -p $(RLIB)
	R CMD INSTALL --no-multiarch --no-test-load -l $(RLIB) r >$(VENV)/r-install.log 2>&1 || (cat $(VENV)/r-install.log; exit 1)
	@touch $@

demo: setup
	@echo "== The churn loop from a cold start: one window per monthly signup cohort of 2024 (catch-up) =="
	rm -rf .ambidex   # the repository's own demo state (registry, artifacts, reports): start cold
	$(VENV)/bin/ambidex run config/churn.yaml
	@echo "== Revisions of the deployment =="
	$(VENV)/bin/ambidex deploy history churn-monthly
	@echo "== Windows and decisions with their reasons =="
	$(VENV)/bin/ambidex cycle show config/churn.yaml
	@echo "== Drift of the latest window with enough rows against the champion's reference, by impact =="
	$(VENV)/bin/ambidex drift check churn_r --window 2024-11-01/2024-12-01 --data mart:churn --exit-zero
	@echo "Reports a manager can open: .ambidex/reports/churn/*.html"

test: setup test-python test-r

test-python:
	$(PY) -m pytest -q

test-r:
	Rscript --vanilla -e 'res <- testthat::test_dir("r/tests/testthat", package = "ambidex", load_package = "installed", reporter = "summary", stop_on_failure = TRUE); df <- as.data.frame(res); cat(sprintf("testthat: %d passed, %d failed, %d skipped\n", sum(df$$passed), sum(df$$failed), sum(df$$skipped)))'

bench: setup
	$(PY) -m benchmarks

lint:
	$(PY) -m ruff check orchestrator python tests benchmarks || true

clean:
	rm -rf $(VENV) .ambidex .pytest_cache
