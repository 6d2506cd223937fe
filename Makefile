# The two set-up commands are `make serve` and `make test`; both build .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO := data/demo
DEMO_SETTINGS := data/demo-survey.toml

.PHONY: serve test soak bench demo clean browser screenshots postgres replicas

# Reinstall only when pyproject.toml changes: the stamp is newer than it otherwise.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

# The demo archive is rebuilt when missing, when its generator settings change, or when the index's
# records change (an index of an older schema is refused at start-up).
$(DEMO)/siasync-index.sqlite: $(DEMO_SETTINGS) $(VENV)/.installed cutout/scan.py cutout/index.py cutout/layout.py
	$(BIN)/siasync demo-archive $(DEMO) --settings $(DEMO_SETTINGS)
	$(BIN)/siasync archive index $(DEMO)

demo: $(DEMO)/siasync-index.sqlite

serve: demo
	@echo "The command line is $(BIN)/siasync (or run: . $(BIN)/activate, then siasync --help)."
	$(BIN)/siasync serve --archive $(DEMO)

# The browser tests drive Debian's Chromium and its driver; installed here when missing (as root, as CI runs).
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      chromium chromium-driver fonts-dejavu-core >/dev/null; \
	  else echo "the browser tests need Chromium: sudo apt-get install chromium chromium-driver" >&2; exit 1; fi; \
	fi

# The tests start PostgreSQL servers of their own (deploy/postgres.py): its server programs come from Debian's
# postgresql package, installed here when missing (as root, as CI runs; otherwise this says what to install).
postgres:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else echo "the tests need PostgreSQL's server programs: install Debian's postgresql package" >&2; exit 1; fi

test: $(VENV)/.installed browser postgres
	$(BIN)/python -m pytest

# Screenshots of the main pages for docs/ and the README, from a real server and Chromium.
screenshots: $(VENV)/.installed browser demo
	$(BIN)/python docs/screenshots.py --archive $(DEMO) --out docs

# The long variants of the reliability tests (marked soak; `make test` runs the short ones):
# 50 SIGKILL cycles of the server, 300 destroys at random moments, 200 ABORT-with-DELETE races.
soak: $(VENV)/.installed postgres
	$(BIN)/python -m pytest --soak -m soak tests/e2e

bench: $(VENV)/.installed-bench demo postgres
	$(BIN)/python bench/cutout_bench.py
	$(BIN)/python bench/service_bench.py --archive $(DEMO)
	$(BIN)/python bench/page_bench.py --archive $(DEMO)
	$(BIN)/python bench/staging_bench.py --archive $(DEMO)
	$(BIN)/python bench/poll_bench.py --archive $(DEMO)
	$(BIN)/python bench/stack_bench.py --archive $(DEMO)
	$(BIN)/python bench/load_bench.py --archive $(DEMO)
	$(BIN)/python bench/archive_bench.py --archive $(DEMO)
	$(BIN)/python bench/load_bench.py --archive $(DEMO) --replicas 1,2,4
	$(BIN)/python bench/remote_bench.py --archive $(DEMO)

# Several servers on one machine: two replicas on a PostgreSQL of their own, a Dask scheduler and two workers,
# and a round-robin proxy at http://127.0.0.1:8000/ (deploy/local.py; Ctrl-C stops everything)
replicas: demo postgres
	$(BIN)/python -m deploy.local --archive $(DEMO)

clean:
	rm -rf $(VENV) $(DEMO) build dist *.egg-info .pytest_cache bench/.scratch var-replicas
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
