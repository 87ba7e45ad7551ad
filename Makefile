# Two commands on a fresh machine with Python 3.11: `make book` and `make test`. Both install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: book test bench install clean rerun lab

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

book: $(STAMP)
	MCREG_PROGRESS=0 $(PY) -m mcreg_lib.chapters run-all
	$(VENV)/bin/jupyter-book build . -W --keep-going
	@echo "The book: $(CURDIR)/_build/html/index.html"

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) bench/bench.py

# make rerun CHAPTER=getting_started ARGS="-p n=50 -p depths=[2,3]"
rerun: $(STAMP)
	$(PY) -m mcreg_lib.chapters run $(CHAPTER) $(ARGS) --html

clean:
	rm -rf _build notebooks/*.ipynb
