# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup zookeeper prometheus demo test lint lab lab-check bench mutate clean

setup: $(STAMP) zookeeper prometheus

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is needed (set PYTHON=...)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

zookeeper:
	@scripts/ensure-zookeeper.sh

prometheus:
	@scripts/ensure-prometheus.sh

# The demo of the newest stage, against the local ZooKeeper where the stage needs one.
demo: setup
	$(BIN)/python -m stages demo

NOTEBOOKS := $(wildcard notebooks/*.ipynb)

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest tests
	$(if $(NOTEBOOKS),$(BIN)/python -m pytest --nbval --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg $(NOTEBOOKS))

lint: setup
	$(BIN)/ruff check .

lab: setup
	@echo "JupyterLab on the notebooks: open the URL it prints (Ctrl-C stops it)"
	$(BIN)/jupyter lab notebooks $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

# `make lab` checked in a real browser (tests/browser): JupyterLab started as `make lab` starts it,
# every notebook listed by its HTTP API, the overview notebook run from the Run menu in Debian's
# Chromium (installed when missing) driven headless by Playwright. Not part of `make test`, where
# these tests skip: a run costs about as much as running the overview notebook again. CI runs it
# after `make test`. RPC_LAB_SCREENSHOT=1 also renews docs/lab.png, the picture in the README.
lab-check: setup
	@scripts/ensure-chromium.sh
	$(BIN)/python -m pip install -q --disable-pip-version-check playwright==1.65.2
	RPC_LAB_CHECK=1 $(BIN)/python -m pytest -q tests/browser

bench: setup
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements-bench.lock
	$(BIN)/python -m benchmarks

# Mutation testing of the core modules (codec, heartbeat, serializers, v2.1 client, server and
# the blocking proxy's direct route):
# mutmut, configured in pyproject.toml [tool.mutmut], changes the code in small ways and checks
# that some test fails for each change. Not part of `make test`: on 2 cores a full run takes well
# over half an hour. Restricted to the fast in-process tests of those modules (the list and why
# is in [tool.mutmut]); CLI, real-process fault, bench, harness and ZooKeeper tests are not run.
# Each run starts afresh; the results stay in mutants/ (git-ignored): `$(BIN)/mutmut results`
# lists the survivors, `$(BIN)/mutmut show NAME` shows one, `$(BIN)/mutmut browse` browses them.
mutate: $(STAMP)
	rm -rf mutants
	$(BIN)/mutmut run
	$(BIN)/mutmut export-cicd-stats
	@cat mutants/mutmut-cicd-stats.json
	@$(BIN)/mutmut results

clean:
	rm -rf $(VENV)
