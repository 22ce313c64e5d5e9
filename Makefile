# Two commands set everything up on a fresh machine (see README):
#   make study   create .venv if needed, then run the default study (cpu profile)
#   make test    create .venv if needed, then run the tests
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.cosam-installed

.PHONY: env study test clean-cache

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

env: $(STAMP)

study: $(STAMP)
	$(BIN)/python -m cosam study

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean-cache:
	rm -rf .cache/cosam
