.PHONY: demo test lint setup

SETUP_STAMP := .venv/.setup-done

$(SETUP_STAMP): pyproject.toml scripts/setup $(wildcard scripts/setup.d/*.sh)
	bash scripts/setup

setup: $(SETUP_STAMP)

# The bundled offline model is held to the reply format by a grammar and submits by itself (exit 0);
# a run that ends after --max-iters with an extracted answer exits 1, which the demo accepts too.
demo: $(SETUP_STAMP)
	.venv/bin/codeact run --signature "task -> answer: float" --max-iters 3 \
		--tools examples/math_tools.py "What is 17 plus 25? Use the add tool." || [ $$? -eq 1 ]

test: $(SETUP_STAMP)
	.venv/bin/ruff check src tests bench examples
	.venv/bin/ruff format --check src tests bench examples
	.venv/bin/python -m pytest -q

lint: $(SETUP_STAMP)
	.venv/bin/ruff check src tests bench examples
	.venv/bin/ruff format --check src tests bench examples
