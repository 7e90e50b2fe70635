# Set-up and everyday tasks. `make demo` and `make test` work on a fresh machine with Python 3.10+.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
DEMO_ROOT ?= demo-data

.PHONY: demo test lint bench clean

# torch is installed first and pinned: a looser requirement pulls several GB of CUDA wheels on a
# CPU-only machine, while torch==2.13.0 resolves to the CPU build.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0

$(VENV)/.installed-app: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[models]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed-app

demo: $(VENV)/.installed-app
	$(BIN)/ftm prefetch 2016Q4 --source files --root $(DEMO_ROOT) \
		--input "$$($(BIN)/python -c 'import ftm.sample; print(ftm.sample.PATH)')"
	@echo
	@echo "The demo's output is in $(DEMO_ROOT)/ (the same layout as on S3)."
	@echo "Look at the sentences:  $(BIN)/python -c \"import pyarrow.parquet as pq; print(pq.read_table('$(DEMO_ROOT)/prefetch/transcripts/quarter=2016Q4/chunk_0000.parquet').to_pandas()[['firm_id','raw_text','cleaned_text']].head(20))\""
	@echo "Every setting and its source:  $(BIN)/ftm config"

test: $(VENV)/.installed-dev
	$(BIN)/pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/prefetch.py

clean:
	rm -rf $(VENV) $(DEMO_ROOT) ftm-data .pytest_cache
