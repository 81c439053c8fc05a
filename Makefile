# Set-up and checks. Every target creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The Triton kernels run on the CPU through Triton's interpreter in the tests; it reads
# this variable when Triton is first imported.
TEST_ENV := TRITON_INTERPRET=1 OMP_NUM_THREADS=2

.PHONY: install test test-all lint demo bench reliability clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

test: install
	$(TEST_ENV) $(BIN)/pytest -q

test-all: install
	$(TEST_ENV) $(BIN)/pytest -q -m 'slow or not slow'

# RELIABILITY.md is written by the hardening tests; run twice after adding a case (the
# freshness test reads the file before the run rewrites it).
reliability: install
	$(TEST_ENV) $(BIN)/pytest -q -m 'slow or not slow' --reliability-report RELIABILITY.md tests/hardening/

# The public API's docstrings, Google style: ruff checks their form (pydocstyle's D rules)
# and that every exception raised in a body is in its Raises section (DOC501, a preview
# rule); pydoclint checks the Args and Returns sections against the signatures. The
# pipelines' entry points are listed with their whole files (every public function there
# is documented); other pipeline files join as they are.
DOCUMENTED := vqtok/__init__.py vqtok/checkpoint.py vqtok/registry.py vqtok/models/tokenizer.py \
	vqtok/models/vae.py vqtok/entropy kernels/__init__.py kernels/dispatch.py kernels/reference.py \
	pipelines/config.py pipelines/data/shards.py pipelines/compression/fit_prior.py \
	pipelines/evaluation/nll.py pipelines/evaluation/rd.py pipelines/jobs/encode.py \
	pipelines/jobs/tokens.py pipelines/jobs/ray_engine.py pipelines/training/loop.py \
	pipelines/jobs/preflight.py pipelines/folder_lock.py vqtok/models/discriminators.py \
	pipelines/training/adversarial.py pipelines/training/recipes.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff check --preview --select D,DOC501 --ignore D105,D107,D403 $(DOCUMENTED)
	$(BIN)/pydoclint --quiet $(DOCUMENTED)

demo: install
	$(BIN)/python -m vqtok.pipelines.demo --out demo-out

bench: install
	$(BIN)/vqtok bench kernels --json bench-out/kernels.json

clean:
	rm -rf $(VENV) demo-out bench-out .pytest_cache
