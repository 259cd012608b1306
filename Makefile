# The two commands a newcomer needs: `make run` and `make test`.
# Everything they depend on is installed and started on the way.

UV := python3 -m uv
PACKAGES := songswipe.shared songswipe.webhook songswipe.orchestrator \
	songswipe.generator songswipe.finalizer songswipe.cli

.PHONY: help install up down status migrate lint format test run bench

help:
	@echo "make run     the whole pipeline on this machine plus a demo order"
	@echo "make test    every test, against a real Kafka and PostgreSQL"
	@echo "make up      start Kafka and PostgreSQL (installs them when missing)"
	@echo "make down    stop everything make up / make run started"
	@echo "make lint    ruff (lint + format check) and mypy strict"
	@echo "make bench   the webhook, generator and whole-pipeline benchmarks"

install:
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@$(UV) sync --all-packages --frozen --quiet

up: install
	@bash scripts/infra.sh up

down:
	-@$(UV) run --no-sync songswipe down
	@bash scripts/infra.sh down

status:
	@bash scripts/infra.sh status

migrate: install
	@$(UV) run --no-sync songswipe-migrate

lint: install
	$(UV) run --no-sync ruff check .
	$(UV) run --no-sync ruff format --check .
	$(UV) run --no-sync mypy $(addprefix -p ,$(PACKAGES))

format: install
	$(UV) run --no-sync ruff format .
	$(UV) run --no-sync ruff check --fix .

test: up
	$(UV) run --no-sync pytest

run: up
	@$(UV) run --no-sync songswipe run

bench: up
	$(UV) run --no-sync python bench/webhook_bench.py
	$(UV) run --no-sync python bench/generator_bench.py
	$(UV) run --no-sync python bench/pipeline_bench.py
