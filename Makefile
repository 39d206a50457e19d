# SegSHAP set-up, demo, tests and benchmarks. Every target installs what it needs into .venv/ first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.segshap-installed

.PHONY: setup demo test bench clean

setup: $(STAMP)

# torch is installed first and pinned: an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test,slicer,ray]"
	touch $(STAMP)

demo: setup
	$(BIN)/segshap demo --out demo_out

test: setup
	$(BIN)/python -m pytest -q

# shap lives in its own venv (.venv-shap): its dependency `slicer` would overwrite slicer-core's package.
# shapiq 1.8 needs Python >= 3.12: its own venv (.venv-shapiq), made with $(PYTHON312).
PYTHON312 ?= python3.12
bench: setup
	$(BIN)/python benchmarks/bench_inference.py
	test -x .venv-shap/bin/python -a -x .venv-shapiq/bin/python || PYTHON312=$(PYTHON312) $(PYTHON) benchmarks/bench_solver.py --setup
	nice -n 10 .venv-shap/bin/python benchmarks/bench_solver.py

clean:
	rm -rf $(VENV) .venv-shap .venv-shapiq demo_out .pytest_cache
