# Two commands set everything up on a fresh machine (see README):
#   make study   create .venv if needed, then run the default study (cpu profile)
#   make test    create .venv if needed, then run the tests
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.cosam-installed

.PHONY: env study test reports notebooks clean-cache

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

# Execute every notebook on the cpu profile into results/<name>.{ipynb,html} (reuses finished runs).
reports: $(STAMP)
	OMP_NUM_THREADS=2 $(BIN)/python notebooks/run_reports.py --profile cpu

# Write each notebooks/NN_*.py (the source to edit) into its paired .ipynb.
notebooks: $(STAMP)
	$(BIN)/jupytext --sync notebooks/[0-9][0-9]_*.py

clean-cache:
	rm -rf .cache/cosam
