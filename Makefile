# The two README commands. Both create .venv and install exactly requirements.lock on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
GOAL ?= Launch a localized campaign for our SaaS in Japan
# pip, not uv or poetry: pip finds the CPU build of torch==2.13.0 on these machines.
PIP := $(PY) -m pip install -q --disable-pip-version-check
COMPILE := $(VENV)/bin/pip-compile --quiet --strip-extras --allow-unsafe \
	--build-deps-for editable --no-emit-index-url --no-emit-find-links

.PHONY: demo test bench lint lock relock clean

# The lock, then the project itself without resolving anything (--no-deps); the build backend
# (setuptools) is pinned in the lock too, so nothing unpinned is fetched.
$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) -r requirements.lock
	$(PIP) --no-deps --no-build-isolation -e .
	touch $(STAMP)

$(BENCH_STAMP): requirements-bench.lock $(STAMP)
	$(PIP) -r requirements-bench.lock
	touch $(BENCH_STAMP)

demo: $(STAMP)
	THREADSWARM_DATA_DIR=$${THREADSWARM_DATA_DIR:-.threadswarm/demo} \
	  $(VENV)/bin/threadswarm run --yes "$(GOAL)"

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(BENCH_STAMP)
	$(PY) bench/run_all.py

lint: $(STAMP)
	$(VENV)/bin/ruff check bot swarm memory schedules tests bench
	$(VENV)/bin/mypy --ignore-missing-imports swarm bot memory schedules

# After a change to pyproject.toml: resolve both locks again, keeping every pin that still fits.
relock:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) pip-tools
	CUSTOM_COMPILE_COMMAND="make relock" $(COMPILE) --extra test -o requirements.lock pyproject.toml
	CUSTOM_COMPILE_COMMAND="make relock" $(COMPILE) --extra test --extra bench \
	  -o requirements-bench.lock pyproject.toml

# Re-resolve both locks on the newest releases pyproject.toml's ranges admit.
lock:
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) pip-tools
	$(COMPILE) --upgrade --extra test -o requirements.lock pyproject.toml
	$(COMPILE) --upgrade --extra test --extra bench -o requirements-bench.lock pyproject.toml

clean:
	rm -rf .threadswarm build *.egg-info
