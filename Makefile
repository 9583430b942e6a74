# Shortcuts for the scripts under deploy/scripts/ (they do the real work; see README.md).
#
#   make run                          set up and serve the platform on http://127.0.0.1:8000/
#   make test [ARGS="-k docker -x"]   set up and run the whole suite (ARGS go to pytest)
#   make lint                         ruff and mypy (on the virtualenv that run/test set up)
#   make bench                        list the benchmarks in bench/
#   make bench BENCH=start_latency [ARGS="--rounds 5"]   run one
#   make bench BENCH=all [ARGS_terminal="--idle 100" ...]  run every one, each with its own ARGS_<name>
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

BENCHES := $(basename $(notdir $(wildcard bench/*.py)))

bench:
ifeq ($(BENCH),)
	@echo "benchmarks (make bench BENCH=NAME [ARGS=...], or BENCH=all [ARGS_NAME=...]):"
	@for f in bench/*.py; do printf "  %-16s %s\n" "$$(basename $$f .py)" "$$(sed -n '1s/^\"\"\"//p' $$f)"; done
else
	@test -x $(PY) || { echo "no $(VENV): run 'make run' or 'make test' once to set it up" >&2; exit 1; }
	@# The baselines (websockify for the VNC bench) are development requirements, which a virtualenv
	@# made by run.sh lacks.
	@$(VENV)/bin/pip install -q -r requirements-dev.txt
ifeq ($(BENCH),all)
	@test -z "$(ARGS)" || { echo "ARGS goes to one bench and the benches' flags differ: use ARGS_<name> with BENCH=all" >&2; exit 2; }
	@set -e; $(foreach name,$(BENCHES),echo "== bench/$(name).py $(ARGS_$(name))"; $(PY) bench/$(name).py $(ARGS_$(name));)
else
	$(PY) bench/$(BENCH).py $(ARGS)
endif
endif

images:
	bash deploy/scripts/build-images.sh $(ARGS)
