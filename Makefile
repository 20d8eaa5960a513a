# Two commands for a new user: `make demo` (the main job) and `make test` (the suite).
# Each creates .venv and installs zsexp with its dependencies on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.zsexp-installed

.PHONY: install demo test lint clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# The main job: a real small sweep of each model on the embedded defaults (local Ray, SQLite MLflow
# under $ZSEXP_HOME, the synthetic-tiny dataset).
demo: $(STAMP)
	$(BIN)/zsexp search zscrgan --dataset synthetic-tiny --trials 6
	$(BIN)/zsexp search cmgan --dataset synthetic-tiny --trials 4

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check zsexp tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
