# Two commands on a fresh machine:  `make run` (dashboard on the demo data)  and  `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)
export OMP_NUM_THREADS ?= 2

.PHONY: setup run test lint typecheck bench clean

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

setup: $(VENV)/.installed

run: setup
	$(PY) -m streamlit run app/Home.py --server.address 127.0.0.1 --server.headless true \
		--browser.gatherUsageStats false --server.enableXsrfProtection true

test: setup
	$(PY) -m pytest -q tests

lint: setup
	$(PY) -m ruff check core train app tests bench

# mypy over core/ and train/ (settings: pyproject.toml [tool.mypy]); CI runs it with ruff before the tests.
typecheck: setup
	$(PY) -m mypy

clean:
	rm -rf $(VENV) .pytest_cache
