# Two entry points, each sets itself up on a fresh machine:
#   make demo   the main job end to end on the built-in synthetic dataset
#   make demo-compare   supervised, fixmatch and ltg on the demo's shards, side by side
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

.PHONY: demo demo-compare test clean

$(READY): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e '.[test,ray,remote]'
	touch $(READY)

# The demo's labeled ratio: the low one of bench/accuracy.py's table, whose cells its end cites.
RATIO := 0.1
SHARDS := $(DEMO)/shards-$(RATIO)
CITED := bench/accuracy.json

# --overwrite: tgtrain refuses to train into a run folder that holds a run; a second `make demo` trains again.
demo: $(READY)
	$(VENV)/bin/tgprep synth --out $(DEMO)/synthetic
	$(VENV)/bin/tgprep build --dataset synthetic --root $(DEMO)/synthetic --ratio $(RATIO) --out $(SHARDS)
	$(VENV)/bin/tgprep inspect $(SHARDS)
	$(VENV)/bin/tgprep inspect $(SHARDS) --random 2 --png $(DEMO)/sheet.png
	$(VENV)/bin/tgtrain run --data $(SHARDS) --preset tiny --method ltg --out $(DEMO)/runs/ltg --overwrite
	$(VENV)/bin/tgtrain eval --ckpt $(DEMO)/runs/ltg/last.pt --data $(SHARDS) --clips 4 --crops 3
	$(PY) bench/accuracy.py --from $(CITED) --runs $(DEMO)/runs/ltg

# All three methods at the demo's ratio on the same shards, side by side (about three demos' time).
demo-compare: $(READY)
	$(VENV)/bin/tgprep synth --out $(DEMO)/synthetic
	$(VENV)/bin/tgprep build --dataset synthetic --root $(DEMO)/synthetic --ratio $(RATIO) --out $(SHARDS)
	for method in supervised fixmatch ltg; do \
	  $(VENV)/bin/tgtrain run --data $(SHARDS) --preset tiny --method $$method --out $(DEMO)/runs/$$method --overwrite || exit 1; \
	done
	$(PY) bench/accuracy.py --from $(CITED) --runs $(DEMO)/runs/supervised $(DEMO)/runs/fixmatch $(DEMO)/runs/ltg

test: $(READY)
	$(PY) -m pytest

clean:
	rm -rf $(DEMO) .pytest_cache
