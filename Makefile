# pgplane: `make run` starts the whole platform, `make test` runs the whole suite.
SHELL := /bin/bash
UV := python3 -m uv
PY := .venv/bin/python
# Every platform process imports the same few hundred modules: let Python keep their bytecode
# (some environments switch that off, and each process start then recompiles them all).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: run test lint bench deps system-deps

run: deps
	$(PY) -m entrypoints.cli dev

test: deps lint
	.venv/bin/pytest -q -p no:cacheprovider --durations=30 tests

lint: deps
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

# The fleet and provisioning benchmarks delete hundreds of thousands of files when they end; ext4
# skips inodes freed in the last minute (longer while their tables are not written back), which
# makes the next benchmark's file creations (CREATE DATABASE) pay for it. So the disk settles
# after each: its writes flushed, then a minute.
SETTLE = sync && sleep 60

bench: deps
	$(PY) -m bench.fleet
	$(SETTLE)
	$(PY) -m bench.projector
	$(PY) -m bench.webhooks
	$(PY) -m bench.provision
	$(SETTLE)
	$(PY) -m bench.backup
	$(PY) -m bench.pitr

deps: system-deps
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen --quiet

# PostgreSQL server binaries and PgBouncer come from the OS.
system-deps:
	@if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && ! command -v postgres >/dev/null 2>&1 \
	   || ! command -v pgbouncer >/dev/null 2>&1 && ! test -x /usr/sbin/pgbouncer; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql pgbouncer >/dev/null; \
	  else \
	    echo "missing PostgreSQL server or PgBouncer: run 'sudo apt-get install postgresql pgbouncer'"; exit 1; \
	  fi; \
	fi
