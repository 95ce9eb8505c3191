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

# Every bench's quick version (tiny data, one or two seeds): checks they run; writes nothing (benches write BENCHMARKS.md
# only with --write). Full runs and their commands: BENCHMARKS.md. bench.reliability re-runs test files: see make test.
BENCH_TMP ?= /tmp/labelfix-bench
bench: setup
	$(PY) -m bench.cleaning_loop --quick --persons 16 --holdout 8 --seeds 0 --work $(BENCH_TMP)/cleaning-loop
	$(PY) -m bench.demo_learnability --quick --folder $(BENCH_TMP)/learnability
	$(PY) -m bench.label_issues --seeds 1 --demo skip
	$(PY) -m bench.dashboard --sizes 2000 --writes 20
	$(PY) -m bench.ingest --persons 20 --data $(BENCH_TMP)/ingest
	$(PY) -m bench.stress_store --workers 2 --per-worker 20 --persons 20
	$(PY) -m bench.train_throughput --persons 12 --loader-batches 2 --train-batches 2 --batch-size 8 --img-size 32 40
	$(PY) -m bench.startup --repeats 1
	$(PY) -m bench.calibration --seeds 2 --only held-out
	$(PY) -m bench.calibration_attack --seeds 2
	$(PY) -m bench.independent --seeds 2 --only design
	$(PY) -m bench.independent --seeds 2 --fold-attack --models "logistic regression" "decision tree"

clean:
	rm -rf $(VENV) .pytest_cache
