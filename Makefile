PYTHON ?= python3

.PHONY: install test demo bench

install:
	$(PYTHON) -m pip install -e ".[test]"

test:
	$(PYTHON) -m pytest -q -n 2 tests

demo:
	bash examples/demo.sh

bench:
	$(PYTHON) benchmarks/run_all.py
