"""Recursive language model mode on a long document: the document stays in the sandbox, the model
sees its size and a preview, and its code reads it (and may ask a model about pieces with llm_query).

Run with any configured model:   python examples/long_context.py --model openai/gpt-4o-mini
Or scripted, to see the mechanics offline:   python examples/long_context.py --model reference
"""

from __future__ import annotations

import argparse
import random

import codeact

CODE = 482913


def make_document(lines: int = 200_000) -> str:
    rng = random.Random(7)
    body = [f"entry {i}: routine status, value {rng.randrange(10**6)}" for i in range(lines)]
    body.insert(rng.randrange(lines), f"entry X: the launch code is {CODE}")
    return "\n".join(body)  # about 8 MB


REFERENCE = """The document is too long to read in the prompt; I search it in code.
```python
import re
hits = [line for line in document.splitlines() if "launch code" in line]
print(hits)
submit(answer=int(re.search(r"launch code is (\\d+)", hits[0]).group(1)))
```"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="reference", help="a model name, 'local', or 'reference'")
    args = parser.parse_args()
    lm = codeact.ScriptedLM([REFERENCE]) if args.model == "reference" else codeact.LM(args.model)
    act = codeact.CodeAct(
        codeact.Signature("document: str -> answer: int", instructions="Find the launch code in the document."),
        lm=lm,
        inputs_in_prompt="preview",  # name, type, size and a preview in the prompt; the whole value in the sandbox
        max_llm_calls=20,  # llm_query / llm_query_batched from code, on the same model (or pass sub_lm=)
        max_iters=6,
    )
    prediction = act(document=make_document())
    verdict = "right" if prediction.answer == CODE else "wrong"
    print(
        f"answer: {prediction.answer} ({verdict}); end reason {prediction.end_reason}; "
        f"{prediction.usage.total_tokens:,} tokens, {prediction.record.sub_usage.calls} sub-calls"
    )


if __name__ == "__main__":
    main()
