# Two commands for a new user: `make demo` (the main job) and `make test` (the suite).
# Each creates .venv and installs zsexp with its dependencies on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.zsexp-installed

.PHONY: install demo test lint clean browser

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
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

lint: $(STAMP)
	$(BIN)/ruff check zsexp tests benchmarks jobs
	$(BIN)/hadolint docker/Dockerfile
	$(BIN)/yamllint -c .yamllint.yaml docker jobs search_spaces

clean:
	rm -rf $(VENV) runs .pytest_cache
