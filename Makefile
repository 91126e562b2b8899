# The README's two commands: `make demo` and `make test`. Both are idempotent.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RAW := data/raw/FakeAVCeleb_v1.2
OUT := data/processed

.PHONY: demo test lint bench clean-demo

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

demo: $(STAMP)
	test -f $(RAW)/meta_data.csv || $(PY) -m src.datasets.demo --out $(RAW)
	$(PY) preprocess.py --dataset fakeavceleb --input-dir $(RAW) --output-dir $(OUT)
	$(PY) -m src.demo_summary $(OUT)/FakeAVCeleb_v1.2

test: $(STAMP)
	$(PY) -m pytest -q -n 2

lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)
	$(PY) benchmarks/run.py

clean-demo:
	rm -rf $(RAW) $(OUT)/FakeAVCeleb_v1.2
