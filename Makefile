# The two README commands. Both create .venv and install on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
GOAL ?= Launch a localized campaign for our SaaS in Japan

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	THREADSWARM_DATA_DIR=$${THREADSWARM_DATA_DIR:-.threadswarm/demo} \
	  $(VENV)/bin/threadswarm run --yes "$(GOAL)"

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[test,bench]'
	$(PY) bench/run_all.py

lint: $(STAMP)
	$(VENV)/bin/ruff check bot swarm memory schedules tests bench

clean:
	rm -rf .threadswarm build *.egg-info
