# attn-assets: `make demo` runs the whole graph on generated demo data with the committed demo model (models/demo;
# ATTN_ASSETS_MODEL=random:streetclip for an untrained StreetCLIP-shaped model), `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch==2.13.0 is a CPU build; set TORCH_SPEC=torch for the CUDA build on a GPU machine.
TORCH_SPEC ?= torch==2.13.0
export DAGSTER_HOME ?= $(CURDIR)/data/dagster_home
# Geolocation (PLONK, PyPI diff-plonk) needs torchvision, which here pairs only with torch 2.14.1 (a ~5.5 GB CUDA
# build), and pins scipy==1.13.1: it gets its own venv so the core install stays lean. --no-cache-dir: a downloaded
# CUDA torch would otherwise sit in pip's cache too (another 3 GB of disk).
PLONK_VENV ?= .venv-plonk
PLONK_TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup setup-plonk demo test test-fast test-plonk lint-imports ui validate clean-data

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-cache-dir --upgrade pip
	$(PY) -m pip install --quiet --no-cache-dir "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet --no-cache-dir -e ".[test]"
	touch $@

setup-plonk: $(PLONK_VENV)/.installed

$(PLONK_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(PLONK_VENV)
	$(PLONK_VENV)/bin/python -m pip install --quiet --no-cache-dir --upgrade pip
	$(PLONK_VENV)/bin/python -m pip install --quiet --no-cache-dir $(PLONK_TORCH_SPEC) -e ".[plonk]" "pytest>=8" "psutil>=5.9"
	touch $@

demo: setup
	$(VENV)/bin/attn-assets demo-data --images 48
	ATTN_ASSETS_MODEL=$${ATTN_ASSETS_MODEL:-demo} $(VENV)/bin/attn-assets materialize
	$(VENV)/bin/attn-assets sql "SELECT country, image_count, round(attention_entropy_mean, 3) AS entropy, round(attention_concentration_top10_mean, 3) AS top10 FROM country_aggregates ORDER BY image_count DESC"

# The layering contracts first (pyproject [tool.importlinter]), then the whole suite in the core venv (PLONK tests
# skip there, saying why), then the geolocation tests with diff-plonk.
test: setup lint-imports
	$(PY) -m pytest -q -rs --durations=15
	$(MAKE) test-plonk

lint-imports: setup
	$(VENV)/bin/lint-imports

test-plonk: setup-plonk
	ATTN_ASSETS_REQUIRE_PLONK=1 $(PLONK_VENV)/bin/python -m pytest -q -rs --durations=5 attn_assets_tests/geolocation \
		attn_assets_tests/core/test_device_decode.py

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

validate: setup
	$(VENV)/bin/attn-assets ui --dry-run  # sets up DAGSTER_HOME (the repo's dagster.yaml) as every entry point does
	$(VENV)/bin/dagster definitions validate -w workspace.yaml

# The UI on http://127.0.0.1:3000 (webserver + daemon; stop it with Ctrl-C / SIGINT). The instance lives in
# DAGSTER_HOME (default data/dagster_home); `attn-assets ui`, like `attn-assets materialize` (make demo), copies the
# repo's dagster.yaml there when it has none (telemetry off), never overwriting one.
ui: setup
	$(VENV)/bin/attn-assets ui --port $${DAGSTER_PORT:-3000}

clean-data:
	rm -rf data/demo data/manifest data/shards data/warehouse data/attention_analysis data/dagster_home
