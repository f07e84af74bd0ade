# Two entry points for a newcomer: `make demo` and `make test` (both install first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO := demo_output
DEMO_CONFIG := configs/dcal_deit-tiny_digits-cub.py

.PHONY: install lint test test-fast demo demo-reid bench ablation rehearsal pretrained mutation clean

install: $(STAMP)

# Exactly the tested set: constraints.txt pins every package (setup.cfg holds the ranges).
$(STAMP): setup.cfg setup.py pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade -c constraints.txt "pip>=23" setuptools
	$(PY) -m pip install -q -c constraints.txt torch torchvision
	$(PY) -m pip install -q --no-build-isolation -c constraints.txt -e ".[mmpretrain,torchreid,test]"
	touch $(STAMP)

# pyflakes' and pycodestyle's checks, lines of at most 120 characters (pyproject.toml [tool.ruff]); CI runs it first
lint: install
	$(VENV)/bin/ruff check .

test: install
	$(PY) -m pytest -q --durations=25 tests

# The quick loop while editing: every test but those marked slow (training runs, subprocesses, wheel builds)
test-fast: install
	$(PY) -m pytest -q -m "not slow" tests

# The main job on the built-in data: digits in the CUB-200-2011 layout -> train -> test -> heat-maps
# (the four tool runs of dcal_plugin/cli.py's run_demo; a pip user runs the same as `dcal demo`).
demo: install
	$(PY) -m dcal_plugin demo --out $(DEMO)

# Re-ID through torchreid's engine on the built-in digits in the VeRi-776 layout.
demo-reid: install
	$(PY) tools/demo_reid.py --out $(DEMO)/reid

# DCAL ÷ timm's plain ViT: time, FLOP and memory ratios -> benchmarks/results/speed_cpu_malloc-tuned.{json,md}.
# glibc keeps freed memory in the process (what jemalloc/tcmalloc do), so no time is page faults.
BENCH_MALLOC := MALLOC_TRIM_THRESHOLD_=4000000000 MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TOP_PAD_=536870912
bench: install
	$(BENCH_MALLOC) $(PY) -m benchmarks.speed --tag _malloc-tuned

# SA only / SA + GLCA / SA + PWCA / DCAL / DCAL with random queries, FGVC (5 seeds) and Re-ID (3 seeds, no random
# queries) on the digits, each fine-tuned from the built-in pretrained ViT, rollout vs random queries on the same
# models -> docs/ablation.{md,png,json}, ~2.5 h of runs (tools/ablation.py --seeds/--reid-seeds split it over processes);
# then (in tools/ablation.py) the rollout's localisation of the deciding digit (DCAL vs the SA-only ViT, seed 0)
# -> docs/localization.md, rollout_grid.png.
ablation: install
	$(PY) tools/ablation.py

# The paper's recipes, scaled down, fine-tune the built-in pretrained ViT (and from scratch, and with torch's coupled
# Adam decay of old): per-block weight drift per epoch and accuracy / mAP -> docs/rehearsal.{md,png,json}.
rehearsal: install
	$(PY) tools/rehearsal.py

# The built-in pretrained ViT (configs/_pretrained_/, shipped with its record): 20 epochs on the digit pairs, ~25 min.
pretrained: install
	$(PY) tools/pretrain_source_vit.py

# Mutation testing of the model's arithmetic (dcal_plugin/core; config in pyproject.toml) -> mutants/.
# One thread per test process: mutmut forks its workers, and a forked OpenMP pool spins until the time limit.
mutation: install
	$(PY) -m pip install -q mutmut==3.8.1
	rm -rf mutants
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(VENV)/bin/mutmut run --max-children 2
	$(VENV)/bin/mutmut results

clean:
	rm -rf $(VENV) $(DEMO) mutants
