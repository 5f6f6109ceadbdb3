# Every target builds (or reuses) its own virtual environment from the project's files.
# torch comes from the CPU build through constraints.txt (never an unpinned torch).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DATA ?= ../shared/data/mp-formation-energy-36737/sample-500
# OpenMP threads that sleep instead of spinning: with spinning, torch on 2 cores
# slows down several times as soon as another process wants a core.
export OMP_WAIT_POLICY ?= PASSIVE
OUT ?= results/demo

.PHONY: venv test demo bench clean

$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt "torch==2.13.0"
	$(PIP) install -q -c constraints.txt -e ".[all,test]"
	$(PIP) check
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q -p no:cacheprovider

demo: venv
	$(VENV)/bin/skcgcnn benchmark $(DATA) --output-dir $(OUT)

clean:
	rm -rf $(VENV) results
