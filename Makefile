# One command to set up and run the demo, one more to run the tests.
VENV ?= .venv
PYTHON ?= python3

.PHONY: setup demo serve test lint conformance

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

demo: setup
	$(VENV)/bin/kizuna demo

serve: setup
	$(VENV)/bin/kizuna serve

test: setup
	$(VENV)/bin/ruff check src tests bench scripts
	$(VENV)/bin/pytest -n 2

conformance: setup
	$(VENV)/bin/python scripts/conformance.py --suite $(SUITE)
