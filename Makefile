# Shortcuts for the scripts under deploy/scripts/ (they do the real work; see README.md).
#
#   make run                          set up and serve the platform on http://127.0.0.1:8000/
#   make test [ARGS="-k docker -x"]   set up and run the whole suite (ARGS go to pytest)
#   make lint                         ruff and mypy (on the virtualenv that run/test set up)
#   make bench                        list the benchmarks in bench/
#   make bench BENCH=start_latency [ARGS="--rounds 5"]   run one (BENCH=all runs every one)
#   make images [ARGS="--force"]      build the lab images locally (no registry needed)

VENV ?= .venv
PY := $(VENV)/bin/python
BENCH ?=
ARGS ?=

.PHONY: help run test lint bench images

help:
	@sed -n '3,8s/^# \{0,1\}//p' Makefile

run:
	bash deploy/scripts/run.sh

test:
	bash deploy/scripts/test.sh $(ARGS)

lint:
	@test -x $(VENV)/bin/ruff || { echo "no $(VENV): run 'make test' (or deploy/scripts/test.sh) once to set it up" >&2; exit 1; }
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy .

bench:
ifeq ($(BENCH),)
	@echo "benchmarks (make bench BENCH=NAME [ARGS=...], or BENCH=all):"
	@for f in bench/*.py; do printf "  %-16s %s\n" "$$(basename $$f .py)" "$$(sed -n '1s/^\"\"\"//p' $$f)"; done
else ifeq ($(BENCH),all)
	@set -e; for f in bench/*.py; do echo "== $$f"; $(PY) $$f $(ARGS); done
else
	$(PY) bench/$(BENCH).py $(ARGS)
endif

images:
	bash deploy/scripts/build-images.sh $(ARGS)
