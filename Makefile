# mmaker — the two commands: `make run` (the whole stack on the simulator) and `make test` (the full suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Two installs, two stamps: `make run` needs the runtime only; tests, benchmarks and docs add the test extras.
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
SITE_DIR ?= site

.PHONY: run test bench docs lint venv clean reset chromium

venv: $(RUN_STAMP)

$(PY):
	@$(PYTHON) -m venv $(VENV) || { echo "cannot create $(VENV): install python3-venv (Debian: apt-get install python3-venv)"; exit 1; }
	$(PY) -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	@touch $(RUN_STAMP)

# The test extras include the runtime: one install satisfies both stamps.
$(TEST_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(RUN_STAMP) $(TEST_STAMP)

run: $(RUN_STAMP)
	@$(VENV)/bin/mmaker run

test: $(TEST_STAMP) chromium
	@command -v redis-server >/dev/null || { echo "redis-server not found: the tests start their own. Install Redis (Debian: apt-get install redis-server)"; exit 1; }
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mkdocs build --strict --quiet --site-dir $(SITE_DIR)
	$(PY) -m pytest

# The documentation site (docs/ and mkdocs.yml); --strict turns a broken link or anchor into a failure.
docs: $(TEST_STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir $(SITE_DIR)
	@echo "open $(SITE_DIR)/index.html"

# The dashboard's browser test drives Debian's Chromium with Playwright (no browser download is possible).
chromium:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium for the browser test"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null || \
	    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; \
	  fi; \
	  test -x /usr/bin/chromium || { echo "Chromium is needed for the browser test: apt-get install chromium"; exit 1; }; }

bench: $(TEST_STAMP)
	$(PY) -m bench

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

# Build and test leftovers only: .venv (the install) and var/ (make run's state: see `make reset`) stay.
clean:
	rm -rf .pytest_cache .ruff_cache .hypothesis $(SITE_DIR) build dist *.egg-info tests/web/screenshots
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# Delete the state make run keeps under var/ (the local Redis's AOF, beat's schedule, recordings), once
# nothing of make run still uses it; prints what it deletes.
reset:
	@bash scripts/reset.sh
