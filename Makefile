# Conveyor task runner: each target calls the script CI runs. `make help` lists them.
.DEFAULT_GOAL := help
SHELL := bash
PY ?= python3

.PHONY: help venv generate check-generated lint format breaking test test-typescript ci

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

venv: ## Create .venv and install conveyor with the dev extra (editable)
	$(PY) -m venv .venv
	.venv/bin/python -m pip install --upgrade pip
	.venv/bin/python -m pip install -e '.[dev]'

generate: ## Regenerate generated/conveyor/v1 and clients/typescript/src/gen from protos/
	scripts/generate

check-generated: ## Fail when generated/ or clients/typescript/src/gen is stale
	scripts/check-generated

lint: ## buf lint + buf format, ruff check + ruff format, mypy
	scripts/lint

format: ## Rewrite protos/ and Python sources in the checked format
	scripts/format

breaking: ## buf breaking (WIRE_JSON) against the previous commit
	scripts/breaking

test: ## Run the test suite (the README's command)
	.venv/bin/pytest

test-typescript: ## Build the TypeScript client and run its node tests against a test server
	.venv/bin/pytest -q tests/test_typescript_client.py

ci: ## Everything CI runs, in a fresh .venv
	bash .ci/run
