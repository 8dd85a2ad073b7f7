# Two commands do all the set-up on a fresh clone:
#   make demo   -> runs the main job (robustlens study) on the embedded procedural data set
#   make test   -> runs the test suite
# Both create (or reuse) .venv. An installed torch is reused (the venv sees the system
# site-packages); otherwise the CPU build this machine offers (torch==2.13.0) is installed
# before anything else, so pip never pulls the multi-GB CUDA stack on a CPU-only machine.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_CPU ?= torch==2.13.0

.PHONY: demo test venv bench clean

$(BIN)/python:
	$(PY) -m venv --system-site-packages $(VENV)

$(VENV)/.torch: | $(BIN)/python
	@$(BIN)/python -c "import torch" 2>/dev/null && echo "reusing torch $$($(BIN)/python -c 'import torch; print(torch.__version__)')" \
	  || $(BIN)/python -m pip install -q "$(TORCH_CPU)"
	@touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(BIN)/python -m pip install -q -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install -q -e ".[test]"
	@touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/robustlens study

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q tests

bench: $(VENV)/.installed-test
	@echo "see benchmarks/BENCHMARKS.md for the individual commands"

clean:
	rm -rf $(VENV) runs .pytest_cache
