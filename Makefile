# dlmie: every target sets up what it needs first, and each step is skipped when already done.
#   make notebooks   set up, fetch the data sets, execute every notebook into build/ (ipynb + HTML)
#   make test        set up, fetch the data sets, run the unit tests and nbval over the notebooks
#   make bench       benchmark rows against PyTorch CPU and NumPy (python -m dlmie.bench)
#   make grade       the graded tests: points per part, last line "score: X/Y" (PART=NAME: one part)
#   make submit      student side: build/submission.zip with the files holding parts and the notebooks
#   make student     teacher side: the student handout build/dlmie-student.zip (tools/handout.py)
#   make fixtures    teacher side: the graded tests' expected values (tests/graded/make_fixtures.py)
#   make autograder  teacher side: the Gradescope autograder build/autograder.zip (SEED=N: its hidden cases' seed)
# Variables: PYTHON (the interpreter that creates .venv), DLMIE_MIRROR (see get_datasets.sh).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.dlmie-installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9]*.ipynb))
# Executed copies: build/NAME.ipynb and build/NAME.html for every notebook.
EXECUTED := $(patsubst notebooks/%.ipynb,build/%.html,$(NOTEBOOKS))
TEST_COMMAND := $(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env -p no:cacheprovider
# HTML of an executed notebook: nbconvert's lab template, with each figure's alternative text from its
# cell's metadata (dlmie/templates/dlmie-lab; tests/test_notebook_html.py runs the same options).
NBCONVERT_HTML := --to html --template dlmie-lab --TemplateExporter.extra_template_basedirs=dlmie/templates

.PHONY: setup data notebooks test bench grade submit student fixtures autograder clean

setup: $(INSTALLED)

# Rebuilt only when pyproject.toml changes; the stamp marks a complete install.
$(INSTALLED): pyproject.toml
	@echo "== setup: Python environment in $(VENV) (pip install -e . from pyproject.toml)"
	@test -n "$(PYTHON)" || { echo "No python3 found: install Python 3.11 or set PYTHON=..."; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "$(PYTHON) is older than Python 3.11: set PYTHON=/path/to/python3.11"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e .
	@touch $@
	@echo "== setup: done ($$($(PY) -c 'import dlmie.config as c; print("PyTensor BLAS:", c.BLAS)'))"

data: setup
	@echo "== data: ./get_datasets.sh (the default set; present ones are kept)"
	./get_datasets.sh

notebooks: data
	@mkdir -p build
	@$(MAKE) --no-print-directory $(EXECUTED)

# A notebook is executed again when it, or any dlmie module, changed since its last run.
build/%.html: notebooks/%.ipynb $(wildcard dlmie/*.py dlmie/*/*.py dlmie/templates/*/*)
	@echo "== notebooks: executing $< -> build/$*.ipynb, build/$*.html"
	$(VENV)/bin/jupyter nbconvert --log-level WARN --to notebook --execute --output-dir build $<
	$(VENV)/bin/jupyter nbconvert --log-level WARN $(NBCONVERT_HTML) --output-dir build build/$*.ipynb

test: data
	@echo "== test: unit tests and nbval over notebooks/"
	$(TEST_COMMAND)

bench: setup
	$(PY) -m dlmie.bench

grade: setup
	$(PY) -m dlmie.grade $(if $(PART),--part $(PART))

submit: setup
	$(PY) -m dlmie.grade --pack

# The teacher targets need the solution repository; the handout leaves their scripts out.
student: setup
	@test -f tools/handout.py || { echo "make student runs in the solution repository (tools/handout.py)"; exit 1; }
	$(PY) tools/handout.py --out build/dlmie-student.zip

fixtures: setup
	@test -f tests/graded/make_fixtures.py || { echo "make fixtures runs in the solution repository (tests/graded/make_fixtures.py)"; exit 1; }
	$(PY) tests/graded/make_fixtures.py

# The solution's dlmie (hidden cases included) and the handout, in Gradescope's layout.
autograder: student
	$(PY) -m dlmie.teacher.autograder build --handout build/dlmie-student.zip --out build/autograder.zip $(if $(SEED),--seed $(SEED))

.PHONY: site lab

# The course website in build/site/ from the executed notebooks (not run again); `python website/check.py`
# reads it in headless Chromium.
site: notebooks
	$(PY) website/build.py --notebooks build --out build/site

# JupyterLab on notebooks/; its kernel is this environment's Python, where dlmie is installed.
# LAB_ARGS adds options of `jupyter lab` (e.g. --port=8889, or --allow-root where it runs as root).
lab: setup
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=notebooks $(LAB_ARGS)

clean:
	rm -rf build
