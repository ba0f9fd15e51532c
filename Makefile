PYTHON ?= python3

.PHONY: install test demo demo-spin bench

install:
	$(PYTHON) -m pip install -e ".[test]"

test:
	$(PYTHON) -m pytest -q -n 2 tests

demo:
	$(MAKE) -j 2 -f examples/demo.mk demo demo-physics

demo-spin:
	$(MAKE) -j 2 -f examples/demo.mk demo-spin

bench:  # each script times cathodeml against its peers (benchmarks/requirements.txt); figures in benchmarks/BENCHMARKS.md
	set -e; for f in benchmarks/bench_*.py benchmarks/validate_analyze.py; do echo "== $$f"; $(PYTHON) $$f; done
