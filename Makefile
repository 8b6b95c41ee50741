# The two commands a newcomer runs (README): `make demo` and `make test`.
# Each creates (or reuses) the virtual environment it needs in .venv, installing the versions
# pinned in requirements/lock.txt (the ones the tests passed with; `make lock` refreshes them).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
LOCK   := requirements/lock.txt
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml $(wildcard $(LOCK)) | sha1sum | cut -c1-12)
LATEST := .venv-latest

.PHONY: demo test venv bench docs clean lock test-latest

# Every pip command of this recipe installs within the lock (a constraints file: it pins what
# gets installed and adds nothing); set here, not per line, so the pip lines stay as they were.
$(STAMP): export PIP_CONSTRAINT = $(abspath $(LOCK))
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned, so pip takes the local CPU wheel where one exists.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	# the C++ kernels compile against this torch (setup.py), so no isolated build environment;
	# numpy first too, or importing torch in setup.py warns that it is missing
	$(BIN)/python -m pip install --quiet setuptools wheel numpy
	$(BIN)/python -m pip install --quiet --no-build-isolation -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/rnnlab demo --quick --out demo-out --force

# The tests include the import-layer contract (lint-imports), `mkdocs build --strict` and the
# Python examples of README.md and docs/ (doctests): see tests/test_layers.py, tests/test_docs.py.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

docs: $(STAMP)
	$(BIN)/python -m mkdocs build --strict -d site

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_engine.py

# Re-resolve the lock to the newest versions pyproject.toml allows (then run `make test`).
# pip-compile writes the local wheel's torch==2.13.0+cpu; the lock keeps torch==2.13.0, which
# that wheel and PyPI's both satisfy. The [dev] extra names rnnlab itself, whose line is dropped.
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet 'pip-tools>=7.4'
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --upgrade --extra dev --strip-extras \
		--allow-unsafe --no-emit-index-url --no-emit-find-links --output-file $(LOCK) pyproject.toml
	sed -E -i -e 's/^(torch==[0-9.]+)\+[a-z0-9]+/\1/' -e '/^rnnlab @ /,/^[^ ]/{/^(rnnlab @ |    #)/d}' $(LOCK)

# The tests against the newest versions pyproject.toml allows (not the lock), in a fresh
# .venv-latest, to see drift before the lock moves. torch stays at the pinned release.
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST)/bin/python -m pip install --quiet torch==2.13.0
	$(LATEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[dev]'
	$(LATEST)/bin/python -m pip freeze --exclude-editable > $(LATEST)/versions.txt
	@echo "versions under test: $(LATEST)/versions.txt (compare with $(LOCK))"
	$(LATEST)/bin/python -m pytest -n 2 -q

clean:
	rm -rf $(VENV) $(LATEST) demo-out site
