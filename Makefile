# Two commands set everything up: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: soak install brokers demo test scenarios lint bench bench-compute-child image report milestone clean kind-e2e

IMAGE ?= ttg-worker:$(shell $(PYTHON) -c 'import re; print(re.search(r"__version__ = \"(.+?)\"", open("ttg/__init__.py").read()).group(1))')

install: $(VENV)/.installed brokers

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "TTG needs Python >= 3.11 (found %s); set PYTHON=python3.11" % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,dev,chaos,k8s]'
	@touch $@

brokers:
	@scripts/ensure-broker redis-server redis-server
	@scripts/ensure-broker rabbitmq-server rabbitmq-server
	@scripts/ensure-broker tini tini  # the image's PID 1; tests/test_k8s_semantics.py runs workers under it
	@scripts/ensure-broker chromium chromium  # the report's HTML is checked in a real headless browser (tests/test_report.py)

demo: install
	$(VENV)/bin/ttg run --params 1000000 --chunk 10000 --workers 2 --cost-us 2 --fault kill-worker@30%

test: install lint
	$(PY) -m pytest -m "not matrix" --durations=20

scenarios: install
	$(PY) -m pytest scenarios
	$(PY) -m pytest tests -m matrix

lint: install
	$(VENV)/bin/ruff check ttg tests fixtures scenarios conftest.py
	$(VENV)/bin/ruff format --check ttg tests fixtures scenarios conftest.py
	$(VENV)/bin/mypy

bench: install
	$(VENV)/bin/ttg bench --params 10000000 --chunk 10000 --workers 2

# The compute child's cost: ttg bench with the algorithm in the child and in the worker's own process, side by side
# (about 10 minutes). Issue 12's bar: the child loses at most 2 % of the ratio to Pool.
bench-compute-child: install
	scripts/compute-child-ab/run

# The milestone results report: small and medium sweeps on both backends (with their fault scenarios and the
# benchmarks), the chaos experiments' journals and a short fuzz per backend, rendered into reports/milestone/.
# make report writes a new dated directory under reports/out/ (never the committed one), its inputs under inputs/;
# make milestone refreshes reports/milestone/. Both fail when a scenario, an experiment (exit statuses in
# inputs/experiments.txt) or the fuzz fails: nothing is hidden behind `|| true`. BASELINE=DIR compares with an earlier
# report's inputs (e.g. reports/milestone/inputs) and fails on a regression beyond 10 %.
REPORT_OUT ?= reports/out/$(shell date -u +%Y%m%d-%H%M%S)
report: install
	PY=$(PY) BASELINE=$(BASELINE) scripts/report $(REPORT_OUT)

milestone: install
	PY=$(PY) scripts/report reports/milestone

# The soak: SOAK_RUNS fuzzed sweeps per backend with fresh seeds, every fault kind drawn (the hostile ones included:
# junk-messages, forged-task, and kill-coordinator and terminate-coordinator, each followed by ttg run --resume).
# Its tables and JSON go to reports/soak/; a failing seed fails the target and replays with:
# ttg chaos fuzz --backend B --seed S --runs 1. About 30-40 minutes per backend at 200 runs on 2 cores.
SOAK_RUNS ?= 200
SOAK_SEED ?= $(shell date +%s)
SOAK_BACKENDS ?= redis rabbitmq
soak: install
	mkdir -p reports/soak
	failed=0; for b in $(SOAK_BACKENDS); do \
		COLUMNS=200 $(VENV)/bin/ttg chaos fuzz --backend $$b --runs $(SOAK_RUNS) --seed $(SOAK_SEED) --out runs/soak 2> reports/soak/$$b.txt || failed=1; \
		cp runs/soak/fuzz-$$b-seed$(SOAK_SEED)-runs$(SOAK_RUNS).json reports/soak/fuzz-$$b.json; tail -n 30 reports/soak/$$b.txt; \
	done; exit $$failed

# Everything the Kubernetes half claims, on a throwaway Kind cluster (needs docker, kind >= 0.24, kubectl): cluster,
# images, `pytest scenarios -m kind`, every experiments/kubernetes/ experiment on both backends, a report, teardown.
kind-e2e: install
	PY=$(PY) scripts/kind-e2e

image:
	@command -v docker >/dev/null || { echo "make image needs docker (https://docs.docker.com/engine/install/)"; exit 1; }
	docker build --build-arg VERSION=$(word 2,$(subst :, ,$(IMAGE))) -t $(IMAGE) .

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache *.egg-info
