# mailgate — the two commands a newcomer needs:
#   make run    set up everything on this machine and start every service
#   make test   run the whole test suite against real servers
SHELL := /bin/bash
UV ?= uv
PYTEST_ARGS ?=

.PHONY: run test chaos setup setup-test lint bounce-score validate-deploy bench clean

run: setup
	@token=$$(scripts/admin-token.sh) && MAILGATE_ADMIN_TOKEN=$$token scripts/run-all.sh

setup:
	@scripts/bootstrap.sh

setup-test:
	@scripts/bootstrap.sh --test

test: setup-test
	$(UV) run --frozen pytest -q -p no:cacheprovider $(PYTEST_ARGS)

chaos: setup-test
	MAILGATE_CHAOS=1 $(UV) run --frozen pytest -q -p no:cacheprovider -s tests/chaos $(PYTEST_ARGS)

lint:
	$(UV) run --frozen ruff check libs services tests bench
	$(UV) run --frozen mypy --strict libs/common/src/mailgate_common
	for pkg in services/*/src/mailgate_*; do $(UV) run --frozen mypy --strict "$$pkg" || exit 1; done

bounce-score:
	$(UV) run --frozen python -m mailgate_common.bounces.score tests/data/bounces/sisimai

bench:
	@scripts/bootstrap.sh --bench
	$(UV) run --frozen python -m bench.run

validate-deploy:
	bash deploy/validate.sh

clean:
	rm -rf .venv var .tools .pytest_cache .mypy_cache .ruff_cache
