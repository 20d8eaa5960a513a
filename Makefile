# Two commands for a new user: `make demo` (the main job) and `make test` (the suite).
# Each creates .venv and installs zsexp with its dependencies on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.zsexp-installed

.PHONY: install demo test test-quick test-latest lock lint clean browser engine stack stack-env stack-up stack-down \
	stack-test

# constraints.txt pins every package to the version the suite passed with, so a fresh clone gets that set
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]' --constraint constraints.txt
	@touch $(STAMP)

install: $(STAMP)

SWEEP  ?= demo-$(shell date +%Y%m%d-%H%M%S)

# The main job, on the embedded defaults (local Ray, SQLite MLflow under $ZSEXP_HOME, synthetic-tiny):
# a ZSCRGAN sweep, the final selection of its top 2 configurations x 3 seeds, promotion of the winner
# to @champion (a later demo whose winner is worse is refused, as it should be: `-` keeps make going),
# two Table 8 ablations of the winner, then a CM-GAN sweep.
demo: $(STAMP)
	$(BIN)/zsexp search zscrgan --dataset synthetic-tiny --trials 6 --name $(SWEEP)
	$(BIN)/zsexp select $(SWEEP) --k 2 --seeds 3
	-$(BIN)/zsexp promote zsexp-zscrgan-synthetic-tiny
	$(BIN)/zsexp promote zsexp-zscrgan-synthetic-tiny --list
	$(BIN)/zsexp ablate zscrgan --from $(SWEEP) --variants no_wrong,no_gan --seeds 2
	$(BIN)/zsexp search cmgan --dataset synthetic-tiny --trials 4 --name $(SWEEP)-cmgan

# The browser test drives Debian's chromium through its chromedriver; nothing downloads a browser.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver)

# Two pytest workers, one test file each at a time: most of the suite waits on Ray, MLflow servers and
# trial processes rather than computing, so two files in flight fit a 2-core machine.
test: $(STAMP) browser
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# The suite without the end-to-end modules marked slow (kill tests, browser, selection and ablation jobs)
test-quick: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not slow"

# Newer releases than the lock and pyproject's upper bounds admit, in their own .venv-latest: the quick lane
# and tests/test_compat.py (which names any private attribute an upgrade moved).  If it passes, raise the
# bounds in pyproject.toml and run `make lock`.
test-latest:
	rm -rf .venv-latest && $(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install --quiet --upgrade $$($(PYTHON) .ci/latest_requirements.py | tr '\n' ' ')
	.venv-latest/bin/python -m pip install --quiet --no-deps -e .
	.venv-latest/bin/python -m pip freeze | grep -iE '^(ray|optuna|mlflow|numpy|torch)=='
	.venv-latest/bin/python -m pytest -q -n 2 --dist loadfile -m "not slow"

# Write constraints.txt afresh: a clean resolution of pyproject.toml's requirements, frozen
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet -e '.[dev]'
	{ sed -n '1,2p' constraints.txt; .venv-lock/bin/python -m pip freeze --exclude-editable | grep -v '^[-#]' \
	  | sed -E 's/^(torch==[^+]*)\+.*/\1/' | sort -f; } > constraints.txt.new && mv constraints.txt.new constraints.txt
	rm -rf .venv-lock

# The compose stack on a machine without an image registry (docker/stack.py; docs/cluster.md).
# `engine` installs Debian's Docker engine, compose and debootstrap where absent and starts dockerd.
engine:
	@docker info >/dev/null 2>&1 || sh docker/engine.sh

stack: engine
	python3 docker/stack.py build

stack-env:
	python3 docker/stack.py env

stack-up: stack
	python3 docker/stack.py up

# VOLUMES=1 also removes the volumes (sweeps, MLflow's database, the artifacts)
stack-down:
	python3 docker/stack.py down $(if $(filter 1,$(VOLUMES)),--volumes)

# From nothing to a promoted model on the compose stack, with faults and figures (tests/stack/)
stack-test: $(STAMP) engine
	ZSEXP_STACK_TEST=1 $(BIN)/python -m pytest -q -x -s tests/stack

lint: $(STAMP)
	$(BIN)/ruff check zsexp tests benchmarks jobs
	$(BIN)/hadolint docker/Dockerfile
	$(BIN)/yamllint -c .yamllint.yaml docker jobs search_spaces

clean:
	rm -rf $(VENV) .venv-latest .venv-lock runs .pytest_cache
