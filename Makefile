# Set-up and everyday tasks. `make demo` and `make test` work on a fresh machine with Python 3.10+.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
DEMO_ROOT ?= demo-data

.PHONY: demo test lint bench image clean

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

DEMO_TOPICS := $(DEMO_ROOT)/intermediate/firm-topics/quarter=2016Q4

# The bundled sample (173 firms of 2016Q4): sentences, then every firm's topics on local workers
# (one per CPU core), in batches of 50 firms; a re-run skips what is done.
demo: $(VENV)/.installed-app
	$(BIN)/ftm prefetch 2016Q4 --source files --root $(DEMO_ROOT) \
		--input "$$($(BIN)/python -c 'import ftm.sample; print(ftm.sample.PATH)')"
	$(BIN)/ftm submit --quarter 2016Q4 --batch-size 50 --root $(DEMO_ROOT)
	$(BIN)/ftm reduce --quarter 2016Q4 --root $(DEMO_ROOT)
	$(BIN)/ftm name --quarter 2016Q4 --root $(DEMO_ROOT)
	@echo
	@$(BIN)/python scripts/demo_report.py $(DEMO_ROOT) 2016Q4
	@echo
	@echo "The demo's output is in $(DEMO_ROOT)/ (the same layout as on S3). The firm topics, one part file per 50 firms:"
	@echo "  $(DEMO_TOPICS)/"
	@$(BIN)/python -c "import pyarrow.parquet as pq; t = pq.read_table('$(DEMO_TOPICS)').to_pandas(); \
		print(f'{len(t):,} topics of {t.firm_id.nunique()} firms; a few:'); \
		print(t[['firm_id', 'topic_id', 'n_sentences', 'representation']].head(12).to_string(index=False))"
	@echo "Look at the sentences:  $(BIN)/python -c \"import pyarrow.parquet as pq; print(pq.read_table('$(DEMO_ROOT)/prefetch/transcripts/quarter=2016Q4/chunk_0000.parquet').to_pandas()[['firm_id','raw_text','cleaned_text']].head(20))\""
	@echo "The run, batch by batch:  $(BIN)/ftm watch --root $(DEMO_ROOT)"
	@echo "Every setting and its source:  $(BIN)/ftm config"
	@echo
	@echo "The themes as a page (offline, one file): open the path below in a browser."
	@$(BIN)/ftm report 2016Q4 --root $(DEMO_ROOT)

# The report's tests open it in Debian's chromium through Playwright, which cannot download a
# browser here: installed where missing (as root, with apt-get), else the tests say what to do.
test: $(VENV)/.installed-dev
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }
	$(BIN)/pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks

# On demand, not in CI: each prints its numbers against a baseline measured in the same run.
bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/prefetch.py
	$(BIN)/python benchmarks/map.py
	$(BIN)/python benchmarks/reduce.py
	$(BIN)/python benchmarks/name.py

# The GPU image for AWS Batch (needs Docker and `ftm deploy` first): built and pushed only when
# the dependencies or the Dockerfile changed, then aws.image is set in ftm.toml.
image: $(VENV)/.installed-app
	$(BIN)/ftm image build

clean:
	rm -rf $(VENV) $(DEMO_ROOT) ftm-data .pytest_cache
