# Thin wrappers: every target is one documented command.
.PHONY: setup test lint up down bench clean-tools

setup:           ## install everything into .venv/ and .tools/ (idempotent)
	scripts/setup

test: setup      ## the README's test command: quality gates + every test tier
	scripts/test

lint:            ## ruff, format check, mypy, import contracts
	scripts/test --lint-only

up: setup        ## run camfleet locally
	.venv/bin/camfleet up

down:
	.venv/bin/camfleet down

bench:           ## benchmarks (by hand; results go to docs/benchmarks.md)
	.venv/bin/python benchmarks/run_all.py
