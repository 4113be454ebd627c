# Set-up and test entry points. Every target creates the virtual environment first if it is missing or
# older than the requirement files (the stamp file records the last successful install).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.pcdet-installed
# auto: build the CUDA ops only with a CUDA torch and a CUDA toolkit (see setup.py).
PCDET_BUILD_CUDA ?= auto
export PCDET_BUILD_CUDA

.PHONY: venv test quickstart lint

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt setup.py pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements-dev.txt
	# --no-build-isolation: setup.py must see the venv's torch to decide whether CUDA ops can be built.
	$(PY) -m pip install --no-build-isolation -e .
	@touch $(STAMP)

test: venv
	$(PY) -m pytest -q

quickstart: venv
	$(PY) tools/quickstart.py

lint: venv
	$(PY) -m ruff check .
