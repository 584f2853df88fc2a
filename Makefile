# wanserve: every command a person needs. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU build of torch that lies on this machine's disk; installed first so no dependency
# resolves plain "torch" to a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: help install services run generate test lint bench drill clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv/ and install wanserve with its dev tools
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

services: ## install the system packages the tests use (redis-server, prometheus with promtool, chromium, chromium-driver), when missing
	@bash scripts/install-services.sh

run: install ## serve locally on http://127.0.0.1:8000 (tiny checkpoint unless WANSERVE_MODEL_DIR is set); a canary: make run SERVE_ARGS="--candidate tiny"
	$(VENV)/bin/wanserve serve $(SERVE_ARGS)

generate: install ## one video in this process: make generate PROMPT="..." OUT=out.mp4
	$(VENV)/bin/wanserve generate "$(or $(PROMPT),a golden retriever running through a sunny park)" \
		--profile fast --size 256x256 --frames 17 --steps 4 -o $(or $(OUT),out.mp4)

test: install services ## the whole test suite (unit, integration with real Ray Serve and Redis, chart)
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

lint: install ## ruff and mypy
	$(VENV)/bin/ruff check serve operators tests bench
	$(VENV)/bin/mypy

BENCH_SCRIPTS := stage_split cache_hits priority batching burst memory quality_ladder eta_error gpu_fullsize

bench: install services ## CPU benchmarks; each prints its figures and a goal line (bench/NAME.py [--quick] alone)
	@for name in $(BENCH_SCRIPTS); do echo "== bench/$$name.py"; $(PY) bench/$$name.py || exit 1; done

drill: install services ## failure drills: kill a Denoiser or an Ingress replica, SIGKILL and restart wanserve serve, stop Redis 20 s, failover, quota and one generation across two routers
	$(PY) bench/drills.py

clean: ## remove caches and build outputs (keeps .venv)
	rm -rf .pytest_cache .mypy_cache .ruff_cache build *.egg-info
