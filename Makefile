# Two entry points, each sets itself up on a fresh machine:
#   make demo   the main job end to end on the built-in synthetic dataset
#   make test   the test suite
# Everything installs into .venv; no system ffmpeg is needed (imageio-ffmpeg ships one).

PYTHON ?= python3
# torch goes in first and pinned, so the package's own "torch>=2.1" is already met;
# set TORCH=torch (or a CUDA build's spec) to choose another.
TORCH ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
READY := $(VENV)/.ready
DEMO := demo

.PHONY: demo test clean

$(READY): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e '.[test,ray]'
	touch $(READY)

demo: $(READY)
	$(VENV)/bin/tgprep synth --out $(DEMO)/synthetic
	$(VENV)/bin/tgprep build --dataset synthetic --root $(DEMO)/synthetic --ratio 0.4 --out $(DEMO)/shards
	$(VENV)/bin/tgprep inspect $(DEMO)/shards
	$(VENV)/bin/tgprep inspect $(DEMO)/shards --random 2 --png $(DEMO)/sheet.png
	$(VENV)/bin/tgtrain run --data $(DEMO)/shards --preset tiny --method ltg --out $(DEMO)/runs/ltg
	$(VENV)/bin/tgtrain eval --ckpt $(DEMO)/runs/ltg/best.pt --data $(DEMO)/shards --clips 4 --crops 3

test: $(READY)
	$(PY) -m pytest

clean:
	rm -rf $(DEMO) .pytest_cache
