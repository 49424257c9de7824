# p2gmed set-up. Every target creates .venv when missing and installs what it needs.
# TORCH picks the PyTorch build: the default takes the CPU wheel cached on CPU-only CI machines and the
# regular (CUDA) wheel from PyPI elsewhere. On a GPU machine with another CUDA, e.g.:
#   make setup TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip
PYTEST_ARGS ?= -n 2

.PHONY: setup demo demo-quick test test-slow bench bench-learning bench-transfer clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel

# torch first and alone, so that the package's floor "torch>=2.4" is already satisfied and pip never
# replaces the chosen build with a multi-GB default one.
$(VENV)/.torch: | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install $(TORCH)
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PIP) install -e ".[test]"
	touch $@

setup: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/p2g demo

demo-quick: $(VENV)/.installed
	$(VENV)/bin/p2g demo --quick

test: $(VENV)/.installed
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(VENV)/.installed
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(PY) benchmarks/run_all.py

# Learning curves of the compared settings on the built-in brain data (docs/results.md; about an hour on 2 CPU cores).
bench-learning: $(VENV)/.installed
	$(PY) benchmarks/learning.py --setting crops4-cosine --setting crops4-lr1e-2 --setting swinunetr-crops4-lr1e-2 \
		--steps 150 --eval-every 50 --plot

# Transfer to real scans (docs/results.md): a synthesis checkpoint (default: the demo's) given real MNI
# T1 averages alone, its T2 scored against the real T2 average. The averages come from spm-runtime (GPL-2,
# 82 MB), installed with --no-deps: its only dependency, matlab-runtime, is a MATLAB installer, unused here.
MODEL ?= p2g-demo/runs/synthesis/checkpoints/last.pt
SPM_RUNTIME = spm-runtime==25.1.2.post4
bench-transfer: $(VENV)/.installed
	$(PY) -c "import importlib.metadata as m; assert m.version('spm-runtime') == '25.1.2.post4'" 2>/dev/null \
		|| $(PIP) install --no-deps "$(SPM_RUNTIME)"
	OMP_NUM_THREADS=1 $(PY) benchmarks/real_transfer.py --model "$(MODEL)" \
		--out bench-transfer/real_transfer.json --figure bench-transfer/real_transfer.png

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
