.PHONY: demo test lint setup

SETUP_STAMP := .venv/.setup-done

$(SETUP_STAMP): pyproject.toml scripts/setup $(wildcard scripts/setup.d/*.sh)
	bash scripts/setup

setup: $(SETUP_STAMP)

demo: $(SETUP_STAMP)
	.venv/bin/codeact run --max-iters 4 --tools examples/math_tools.py "What is 17 plus 25? Use the add tool."

test: $(SETUP_STAMP)
	.venv/bin/ruff check src tests bench examples
	.venv/bin/python -m pytest -q

lint: $(SETUP_STAMP)
	.venv/bin/ruff check src tests bench examples
