# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo-data
# torch is pinned: 2.13.0 is a CPU wheel here; an unpinned torch pulls a multi-GB CUDA build.
TORCH := torch==2.13.0

.PHONY: install demo test lint format typecheck bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m ingest synth-plate $(DEMO_DIR)/plate --wells 12 --fields 4 --size 256
	$(PY) -m ingest cellpainting $(DEMO_DIR)/plate $(DEMO_DIR)/plate.zarr --overwrite
	$(PY) examples/train.py $(DEMO_DIR)/plate.zarr

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) benchmarks/layout.py
	$(PY) benchmarks/ingest_speed.py
	$(PY) benchmarks/ingest_memory.py
	$(PY) benchmarks/loader_speed.py
	$(PY) benchmarks/netcdf_ingest.py
	$(PY) benchmarks/climate_loader.py
	$(PY) benchmarks/codecs.py
	$(PY) benchmarks/recipe_overhead.py
	$(PY) benchmarks/jump_dry_run.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache .mypy_cache
