# Two entry points for a fresh machine: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU wheel of torch lies on this machine's disk; pinning it here keeps pip from pulling a
# multi-GB CUDA build. GPU users install gvbench into their own environment instead.
TORCH  ?= torch==2.13.0

.PHONY: setup demo test docs lint bench clean

$(BIN)/gvbench: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

setup: $(BIN)/gvbench

demo: setup
	$(BIN)/gvbench demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

# The docs extra is part of dev; a venv set up before it existed gets it here.
docs: setup
	$(BIN)/python -c "import sphinx, pydata_sphinx_theme, myst_parser" 2>/dev/null \
		|| $(BIN)/pip install --quiet -e ".[docs]"
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis docs/_build
