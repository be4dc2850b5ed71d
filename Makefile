# The two commands: `make run` and `make test`. Both create the virtual environment if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# The TypeScript client (lib/api.ts) and its tests.
CLIENT := clients/typescript

.PHONY: run test test-e2e fuzz types migrate lint format bench bench-load wrk chromium token install install-dev \
	install-e2e clean

# server.py's protocol bounds request heads and cuts off slow clients; an idle keep-alive
# connection is closed after 5 s (raise it above a proxy's idle timeout behind one).
run: install migrate
	$(BIN)/uvicorn main:app --host $(HOST) --port $(PORT) --http server:BoundedHttpToolsProtocol \
		--timeout-keep-alive 5

test: install-dev
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

# The TypeScript client's journey (Node's test runner), the browser tests (Debian's Chromium)
# and a bounded fuzz run; each installs what it needs first.
test-e2e: install-e2e chromium $(CLIENT)/node_modules/.installed
	$(BIN)/mypy e2e  # here, not in `make test`: it needs the e2e tools' types
	cd $(CLIENT) && npm test
	$(BIN)/pytest e2e

# A longer fuzz run: FUZZ_EXAMPLES examples per operation (`make test-e2e` takes 100).
fuzz: install-e2e
	FUZZ_EXAMPLES=$(or $(FUZZ_EXAMPLES),1000) $(BIN)/pytest e2e/test_fuzz.py

# The client's types again, from the service's /openapi.json (after a change to the API).
types: install-dev $(CLIENT)/node_modules/.installed
	$(BIN)/python -m testkit.openapi > $(CLIENT)/openapi.json
	cd $(CLIENT) && npm run --silent generate

migrate: install
	$(BIN)/alembic upgrade head

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile

format: install-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install-dev wrk
	$(BIN)/python -m bench

bench-load: install-dev wrk
	$(BIN)/python -m bench.load

wrk:  # the load generator of the load benchmark (Debian's package)
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }

chromium:  # the browser of the browser tests (Debian's package; Playwright drives it)
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

token: install
	@$(BIN)/python tokens.py $(or $(USER_ID),$(error usage: make token USER_ID=alice))

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev
install-e2e: $(VENV)/.e2e

# `make run` and `make token` may both start on a fresh clone: one creates and installs the
# environment, the other waits for it (flock) and then finds it up to date.
LOCKED := flock $(VENV).lock sh -ec

$(VENV)/.runtime: requirements.txt
	@$(LOCKED) '$(MAKE_VENV); [ $@ -nt requirements.txt ] || { $(BIN)/pip install --quiet -r requirements.txt; touch $@; }'

$(VENV)/.dev: requirements.txt requirements-dev.txt
	@$(LOCKED) '$(MAKE_VENV); [ $@ -nt requirements.txt ] && [ $@ -nt requirements-dev.txt ] || \
		{ $(BIN)/pip install --quiet -r requirements-dev.txt; touch $@ $(VENV)/.runtime; }'

$(VENV)/.e2e: requirements.txt requirements-dev.txt requirements-e2e.txt
	@$(LOCKED) '$(MAKE_VENV); [ $@ -nt requirements.txt ] && [ $@ -nt requirements-dev.txt ] && \
		[ $@ -nt requirements-e2e.txt ] || \
		{ $(BIN)/pip install --quiet -r requirements-e2e.txt; touch $@ $(VENV)/.dev $(VENV)/.runtime; }'

# The client's pinned tools (package-lock.json): TypeScript, openapi-typescript, Node's types.
$(CLIENT)/node_modules/.installed: $(CLIENT)/package.json $(CLIENT)/package-lock.json
	cd $(CLIENT) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

MAKE_VENV = [ -x $(BIN)/pip ] || { \
	$(PYTHON) -c "import sys; assert sys.version_info >= (3, 11), \"Python 3.11 or newer is needed\""; \
	$(PYTHON) -m venv $(VENV); $(BIN)/python -m pip install --quiet --upgrade pip; }

clean:
	rm -rf $(VENV) $(VENV).lock .pytest_cache .ruff_cache .mypy_cache artifacts $(CLIENT)/node_modules \
		$(CLIENT)/build
