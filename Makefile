# The two commands: `make run` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint format clean bench

run: $(STAMP)
	$(BIN)/replaybus serve

test: $(STAMP) lint
	scripts/ensure-debian-packages redis-server:redis-server nginx:nginx "/usr/lib/postgresql/*/bin/initdb:postgresql" /usr/bin/chromium:chromium /usr/bin/chromedriver:chromium-driver
	$(BIN)/python -m pytest -n 2 -m "not e2e"  # the quick tests, two at a time
	$(BIN)/python -m pytest -m e2e            # real processes needing the cores, one at a time

bench: $(STAMP)
	scripts/ensure-debian-packages redis-server:redis-server nginx:nginx "/usr/lib/nginx/modules/ngx_nchan_module.so:libnginx-mod-nchan" node:nodejs npm:npm go:golang-go
	$(BIN)/python -m loadtests.bench.run $(BENCH_FLAGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

$(STAMP): pyproject.toml clients/python/pyproject.toml scripts/bootstrap-venv
	PYTHON=$(PYTHON) scripts/bootstrap-venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e clients/python -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
