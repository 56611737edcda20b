# PACA Integrations — the local stack, code generation, checks and tests.
# `make help` lists the targets.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
PROTO_DIR := protos
PROTOS := $(shell find $(PROTO_DIR) -name '*.proto' | sort)
PY_GEN := clients/python/src
PYTEST_ARGS ?=
GO_PLUGIN_DIR := var/tools/go/bin
# Pinned code generators for the Go client (installed from the Go module proxy).
GO_PLUGINS := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12 \
	google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
export GOFLAGS := -buildvcs=false

.DEFAULT_GOAL := help
.PHONY: help run test venv protos protos-check lint check unit clean backing-up backing-down \
	clients go-plugins certs breaking

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

run: $(STAMP) protos ## Start api_service, db_service and monitor on embedded defaults (Ctrl-C stops)
	$(PY) -m paca_runtime.stack

test: $(STAMP) clients ## Bring up the backing engines, run the whole suite, stop what was started
	bash scripts/run_tests.sh $(PYTEST_ARGS)

venv: $(STAMP) ## Create .venv with the project and its dev tools

$(STAMP): pyproject.toml clients/python/pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e clients/python -e '.[dev]'
	touch $(STAMP)

protos: $(STAMP) go-plugins ## Regenerate client code (Python with .pyi stubs, Go, Node) from protos/
	$(PY) scripts/gen_protos.py

protos-check: $(STAMP) go-plugins ## Fail when generated code differs from what protos/ produce
	$(PY) scripts/gen_protos.py --check

go-plugins: $(GO_PLUGIN_DIR)/protoc-gen-go-grpc ## Install the pinned Go code generators

$(GO_PLUGIN_DIR)/protoc-gen-go-grpc:
	mkdir -p $(GO_PLUGIN_DIR)
	for plugin in $(GO_PLUGINS); do GOBIN=$(abspath $(GO_PLUGIN_DIR)) go install $$plugin || exit 1; done

certs: ## A local CA with server and client certificates in var/certs (TLS / mTLS)
	bash scripts/make_certs.sh var/certs

clients: ## Fetch the Node and Go client dependencies (their tests run in the e2e suite)
	cd clients/node && npm ci --no-audit --no-fund --loglevel=error
	cd clients/go && go mod download

lint: $(STAMP) ## ruff, ruff format --check, mypy, buf lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	cd $(PROTO_DIR) && npx --yes @bufbuild/buf@1.75.0 lint

breaking: ## buf breaking: the wire stays compatible with the newest release tag
	bash scripts/check_breaking.sh

check: lint protos-check breaking ## Everything CI checks besides the tests

unit: $(STAMP) ## The unit tests alone (no servers, seconds)
	$(BIN)/pytest -m unit $(PYTEST_ARGS)

backing-up: ## Install (when missing) and start PostgreSQL, MariaDB, Redis, FerretDB
	bash scripts/backing_services.sh up

backing-down: ## Stop the backing engines that backing-up started
	bash scripts/backing_services.sh down

clean: ## Remove the virtualenv and local state
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
