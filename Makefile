# attn-assets: `make demo` runs the whole graph on generated demo data, `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch==2.13.0 is a CPU build; set TORCH_SPEC=torch for the CUDA build on a GPU machine.
TORCH_SPEC ?= torch==2.13.0
export DAGSTER_HOME ?= $(CURDIR)/data/dagster_home

.PHONY: setup demo test test-fast ui validate clean-data

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

demo: setup
	$(VENV)/bin/attn-assets demo-data --images 24
	ATTN_ASSETS_MODEL=$${ATTN_ASSETS_MODEL:-random:streetclip} $(VENV)/bin/attn-assets materialize
	$(VENV)/bin/attn-assets sql "SELECT country, image_count, round(attention_entropy_mean, 3) AS entropy, round(attention_concentration_top10_mean, 3) AS top10 FROM country_aggregates ORDER BY image_count DESC"

test: setup
	$(PY) -m pytest -q -rs --durations=15

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

validate: setup
	mkdir -p "$(DAGSTER_HOME)"
	$(VENV)/bin/dagster definitions validate -w workspace.yaml

# The UI on http://127.0.0.1:3000 (webserver + daemon). The instance lives in DAGSTER_HOME
# (default data/dagster_home); the repo's dagster.yaml is copied there once, never overwritten.
ui: setup
	mkdir -p "$(DAGSTER_HOME)"
	test -e "$(DAGSTER_HOME)/dagster.yaml" || cp dagster.yaml "$(DAGSTER_HOME)/dagster.yaml"
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p $${DAGSTER_PORT:-3000}

clean-data:
	rm -rf data/demo data/manifest data/shards data/warehouse data/attention_analysis data/dagster_home
