# Two commands do everything: `make run` (the server on the embedded default)
# and `make test` (the whole suite). Both build .venv first when needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test venv bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

run: venv
	$(BIN)/gunicorn -c gunicorn.conf.py server:app

# gevent's monkey patching must come before pytest imports anything.
test: venv
	scripts/system-deps
	$(BIN)/python -m gevent.monkey --module pytest $(PYTEST_ARGS)

# The benchmark (bench/README.md): BENCH_ARGS=--quick for a smoke run.
bench: venv
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
