# Two commands on a fresh machine with Python 3.11: `make book` and `make test`. Both install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MATHJAX := book/_static/mathjax/tex-mml-chtml.js

.PHONY: book preview test bench install clean rerun lab chromium check-book

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP) $(MATHJAX)

# MathJax 3 served from the book itself, so math typesets offline (npm registry, pinned).
$(MATHJAX):
	rm -rf _build/mathjax && mkdir -p _build/mathjax book/_static/mathjax/output/chtml/fonts
	cd _build/mathjax && npm pack --silent mathjax@3.2.2 >/dev/null && tar xzf mathjax-3.2.2.tgz
	cp -r _build/mathjax/package/es5/output/chtml/fonts/woff-v2 book/_static/mathjax/output/chtml/fonts/
	cp _build/mathjax/package/es5/tex-mml-chtml.js $(MATHJAX)

# Where the runs go (RUN_ON=local | processes:N | dask:tcp://HOST:PORT | cuda) and the run cache (CACHE=folder,
# default .mcreg_cache); FRESH=1 deletes the cache first, a build from scratch.
RUN_ON ?= local
CACHE ?= $(CURDIR)/.mcreg_cache
BUILD_ENV = MCREG_RUN_ON=$(RUN_ON) MCREG_CACHE=$(CACHE)
FRESH_FLAG = $(if $(filter 1 yes true,$(FRESH)),--fresh,)

# The book at the papers' protocol: every chapter through the run cache, the ledger, the figure map, provenance.
book: $(STAMP) $(MATHJAX)
	$(BUILD_ENV) $(PY) -m mcreg_lib.book build $(FRESH_FLAG)

# The same book at every parameter's preview value, in a few minutes, labelled as a preview on every page.
preview: $(STAMP) $(MATHJAX)
	$(BUILD_ENV) $(PY) -m mcreg_lib.book build --preview $(FRESH_FLAG)

test: $(STAMP) $(MATHJAX) chromium
	$(PY) -m pytest

# The browser test on the full book that `make book` built (every page, screenshots in _build/screenshots/).
check-book: $(STAMP) chromium
	MCREG_BOOK_HTML=$(CURDIR)/_build/html $(PY) -m pytest -q tests/test_browser.py

# Debian's chromium for the browser test (the test drives it with playwright; nothing is downloaded by playwright).
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

bench: $(STAMP)
	$(PY) bench/bench.py

# make rerun CHAPTER=getting_started ARGS="-p n=50 -p depths=[2,3]"
rerun: $(STAMP)
	$(BUILD_ENV) $(PY) -m mcreg_lib.book run $(CHAPTER) $(ARGS) --html

# JupyterLab with jupytext: the chapters' .md files open as notebooks, and saving keeps .md and .ipynb in sync.
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.json
lab: $(STAMP)
	mkdir -p $(dir $(LAB_SETTINGS))
	echo '{"@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"markdown": "Jupytext Notebook", "myst": "Jupytext Notebook"}}}' > $(LAB_SETTINGS)
	MCREG_PROGRESS=1 $(VENV)/bin/jupyter lab --notebook-dir=. $$([ "$$(id -u)" = 0 ] && echo --allow-root) $(LAB_ARGS)

clean:
	rm -rf _build notebooks/*.ipynb
