# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup zookeeper demo test lint lab bench clean

setup: $(STAMP) zookeeper

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is needed (set PYTHON=...)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

zookeeper:
	@scripts/ensure-zookeeper.sh

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
	$(BIN)/jupyter lab notebooks

bench: setup
	$(BIN)/python -m stages bench

clean:
	rm -rf $(VENV)
