# The two commands a newcomer needs: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch lies on this machine's disk for these versions (a CUDA build that also runs on CPU).
ifeq ($(shell uname -m),aarch64)
TORCH_PKGS ?= torch==2.9.1 torchvision==0.24.1
else
TORCH_PKGS ?= torch==2.14.1 torchvision==0.29.1
endif
STAMP := $(VENV)/.installed
DEMO := data/demo

.PHONY: install example-deps lint test test-fast mutants demo demo-data bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH_PKGS)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@$(MAKE) --no-print-directory example-deps
	@touch $@

install: $(STAMP)

# The examples' Debian side (examples/, docs/examples.md): espeak-ng speaks the spoken digits,
# and the package lists that `apt update` fetches are the text example's corpus. Installed where apt
# works and we are root; elsewhere their tests skip and say why.
example-deps:
	@if command -v espeak-ng >/dev/null && apt-cache dumpavail 2>/dev/null | grep -q '^Section: games'; then \
		echo "examples: found espeak-ng and Debian's package lists"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && apt-get install -y -qq espeak-ng) || true; \
	fi

# ruff (lint + format check) and mypy: the habits that keep the seams where they are.
lint: $(STAMP)
	$(VENV)/bin/ruff check softlabels trainer bench tests examples tools
	$(VENV)/bin/ruff format --check softlabels trainer bench tests examples tools
	$(VENV)/bin/mypy

# One test process per core (pytest-xdist): the suite's subprocess and torchrun tests wait more than
# they compute, and every test works in its own tmp_path.
test: lint
	$(PY) -m pytest -n auto

test-fast: $(STAMP)
	$(PY) -m pytest -n auto -m "not slow"

# Hand-written mutants of the core (tools/mutants.py), each run in a copy of the tree against the
# tests that should kill it; fails if one survives. Not part of `make test` (about half an hour).
mutants: $(STAMP)
	$(PY) tools/mutants.py

# Fashion-MNIST: Debian's package where apt works and we are root, else torchvision's download.
demo-data:
	@if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then \
		echo "Fashion-MNIST: found Debian's dataset-fashion-mnist"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) || true; \
	fi

demo: $(STAMP) demo-data
	@mkdir -p $(DEMO)
	$(PY) -m trainer.demo --out $(DEMO)

clean:
	rm -rf $(DEMO) .pytest_cache
