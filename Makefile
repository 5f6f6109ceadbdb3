# Every target builds (or reuses) its own virtual environment from the project's files.
# torch comes from the CPU build through constraints.txt (never an unpinned torch).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# the main job: CGCNN against the descriptor baselines on LIMIT seeded MP crystals, one
# seeded 80/20 train/test split
DATA ?= ../shared/data/mp-formation-energy-36737
LIMIT ?= 5000
DEMO_MODELS ?= cgcnn,magpie-rf,structure-gb,dummy
# OpenMP threads that sleep instead of spinning: with spinning, torch on 2 cores
# slows down several times as soon as another process wants a core.
export OMP_WAIT_POLICY ?= PASSIVE
OUT ?= results/demo
# the name and unit of DATA's target in the demo's tables and plots
TARGET_LABEL ?= E_form (eV/atom)
# The demo's second step: the pretrained formation-energy model (PRETRAINED: a shipped
# model's name or a file of skcgcnn.save_model) fine-tuned for band gap on FT_TRAIN
# crystals, against CGCNN from scratch and the descriptor models, all scored on FT_TEST
# crystals of the test rows of PRETRAINED_SPLIT, the split PRETRAINED was made on (for a
# shipped model its name: its own split; for a file, its id,split CSV), so that no test
# crystal was seen in pretraining. FT_ARGS: more benchmark options, e.g. --freeze conv.
PRETRAINED ?= mp-formation-energy
PRETRAINED_SPLIT ?= $(PRETRAINED)
FT_TRAIN ?= 500
FT_TEST ?= 1000
FT_MODELS ?= cgcnn-finetuned,cgcnn,magpie-rf,structure-gb,dummy
FT_ARGS ?=
# numpy picks vector kernels by CPU; its AVX-512 ones round some results (the sines and
# cosines behind a lattice's coordinates) differently from its AVX2 ones in the last bit,
# which decides ties at the 12-neighbour cut.  The parity references were made with the
# AVX2 kernels, so the tests run with those (names this CPU lacks are ignored).
NPY_KERNELS ?= X86_V4 AVX512_ICL AVX512_SPR

.PHONY: venv test demo bench clean lock test-latest docs docs-inventories

$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt "torch==2.13.0"
	$(PIP) install -q -c constraints.txt setuptools
	$(PIP) install -q -c constraints.txt --no-build-isolation -e ".[all,test]"
	$(PIP) check
	touch $@

venv: $(VENV)/.installed

test: venv
	NPY_DISABLE_CPU_FEATURES="$(NPY_KERNELS)" $(PY) -m pytest -q -p no:cacheprovider

# The documentation site (docs/_build/html/index.html), built from scratch in its own venv
# (the package with the all and docs extras, from the pins): the API reference, the user
# guide (docs/*.md) and the gallery and tutorial, whose scripts run during the build
# (a few minutes on 2 cores). Warnings are errors; then every internal link is checked.
DOCS_VENV ?= .venv-docs
$(DOCS_VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/python -m pip install -q -c constraints.txt "torch==2.13.0"
	$(DOCS_VENV)/bin/python -m pip install -q -c constraints.txt setuptools
	$(DOCS_VENV)/bin/python -m pip install -q -c constraints.txt --no-build-isolation \
	    -e ".[all,docs]"
	$(DOCS_VENV)/bin/python -m pip check
	touch $@

docs: $(DOCS_VENV)/.installed
	rm -rf docs/_build docs/generated docs/auto_examples docs/auto_tutorial \
	    docs/sg_execution_times.rst
	cd docs && NPY_DISABLE_CPU_FEATURES="$(NPY_KERNELS)" ../$(DOCS_VENV)/bin/sphinx-build \
	    -b html -W --keep-going -q . _build/html
	$(DOCS_VENV)/bin/python docs/check_links.py docs/_build/html

# stores the intersphinx inventories in docs/_intersphinx/ (needs network; commit them so
# that builds without network link to scikit-learn, skorch, pymatgen, torch, Optuna too)
docs-inventories:
	$(PYTHON) docs/_ext/inventories.py

demo: venv
	$(VENV)/bin/skcgcnn benchmark $(DATA) --limit $(LIMIT) --test-size 0.2 \
	    --models $(DEMO_MODELS) --n-jobs -1 --target-label "$(TARGET_LABEL)" --output-dir $(OUT)
	$(VENV)/bin/skcgcnn benchmark $(DATA) --id-prop id_prop_multi.csv --target target_1 \
	    --split $(PRETRAINED_SPLIT) --n-train $(FT_TRAIN) --n-test $(FT_TEST) \
	    --models $(FT_MODELS) --init $(PRETRAINED) $(FT_ARGS) --n-jobs -1 \
	    --target-label "band gap (eV)" --output-dir $(OUT)/band-gap-finetuned

# constraints.txt: every package that `make test` and `make demo` install, pinned by a real
# resolver (pip-tools) from setup.cfg's extras, with the versions of the environment the
# parity references were made in (REFERENCE_ENV) wherever both have a package.
# `make lock LOCK_ARGS=--upgrade` re-resolves the packages that the reference leaves free.
REFERENCE_ENV ?= ../shared/data/cgcnn-reference/expected-predictions/environment.txt
LOCK_VENV ?= .venv-lock
lock:
	test -f $(REFERENCE_ENV) || { echo "REFERENCE_ENV=$(REFERENCE_ENV) not found" >&2; exit 1; }
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install -q "pip-tools==7.6.2"
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile --quiet --allow-unsafe \
	    --strip-extras --no-emit-index-url --no-emit-find-links --extra all --extra test \
	    --extra docs \
	    --constraint $(REFERENCE_ENV) $(LOCK_ARGS) --output-file constraints.txt pyproject.toml

# The drift check: the suite in a venv resolved without the pins (only torch stays the
# CPU build), to see which upstream release moves a result before users do. Not in CI.
LATEST_VENV ?= .venv-latest
NORMALIZE_PINS = awk -F'==' '{n = tolower($$1); gsub(/[._]/, "-", n); print n "==" $$2}' | sort
test-latest:
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/pip install -q "torch==2.13.0"
	$(LATEST_VENV)/bin/pip install -q -e ".[all,test]"
	$(LATEST_VENV)/bin/pip freeze --all --exclude-editable | grep -v '^pip==' \
	    > $(LATEST_VENV)/freeze.txt
	@echo "packages that differ from constraints.txt (< pinned, > latest):"
	-@diff <(grep -E '^[A-Za-z0-9]' constraints.txt | $(NORMALIZE_PINS)) \
	      <(cat $(LATEST_VENV)/freeze.txt | $(NORMALIZE_PINS)) | grep '^[<>]' || echo "  none"
	NPY_DISABLE_CPU_FEATURES="$(NPY_KERNELS)" $(LATEST_VENV)/bin/python -m pytest -q \
	    -p no:cacheprovider

clean:
	rm -rf $(VENV) $(LOCK_VENV) $(LATEST_VENV) $(DOCS_VENV) results docs/_build \
	    docs/generated docs/auto_examples docs/auto_tutorial docs/sg_execution_times.rst
