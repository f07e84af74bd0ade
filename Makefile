# Two entry points for a newcomer: `make demo` and `make test` (both install first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test demo clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=23" "setuptools>=64,<81"
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q --no-build-isolation -e ".[mmpretrain,torchreid,test]"
	touch $(STAMP)

test: install
	$(PY) -m pytest -q tests

demo: install
	$(PY) tools/demo.py --out demo_output

clean:
	rm -rf $(VENV) demo_output
