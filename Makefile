# hf-recipes. On a fresh machine, `make demo` and `make test` do all the set-up themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Pinned so pip/uv take the CPU build (from a local wheel folder where there is one) instead of a multi-GB CUDA
# build. On a GPU machine: make install TORCH=torch
TORCH  ?= torch==2.13.0
WHEELS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels)
STAMP  := $(VENV)/.installed
ARGS   ?=
LYRICS ?=
TITLE  ?=
MODEL  ?=
BENCH  ?= sentiment

.PHONY: install demo test wheel-check sentiment lyrics instruct bench clean

install:
	$(PYTHON) -m venv $(VENV)
	# uv installs the ~70 dependencies in seconds; plain pip is the fallback.
	@if $(BIN)/python -m pip install -q uv; then \
		$(BIN)/uv pip install --python $(BIN)/python $(WHEELS) "$(TORCH)" -e ".[dev]"; \
	else \
		$(BIN)/python -m pip install $(WHEELS) "$(TORCH)" -e ".[dev]"; \
	fi
	@touch $(STAMP)

$(STAMP): pyproject.toml
	$(MAKE) install

demo: $(STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/hf-recipes demo $(ARGS)

test: $(STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest $(ARGS)

# The wheel as users install it: built from a clean copy of the tree, installed alone into a fresh venv (its
# dependencies are this venv's), every recipe's demo run from an empty folder, offline.
wheel-check: $(STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest tests/end_to_end/test_wheel.py $(ARGS)

sentiment: $(STAMP)
	$(BIN)/hf-recipes train sentiment $(ARGS)

lyrics: $(STAMP)
	$(BIN)/hf-recipes train lyrics $(if $(LYRICS),--train_file $(LYRICS)) $(if $(TITLE),--title_column $(TITLE)) $(ARGS)

instruct: $(STAMP)
	$(BIN)/hf-recipes train instruct $(if $(MODEL),--model_name_or_path $(MODEL)) $(ARGS)

bench: $(STAMP)
	$(BIN)/python bench/bench_$(BENCH).py $(ARGS)

clean:
	rm -rf runs .pytest_cache
