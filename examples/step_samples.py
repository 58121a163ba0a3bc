"""Best of several replies per step, from a shared prefix: when a step's code fails, codeact samples
another reply for the same step and runs it in a fork of the session as it was before the failed
code ran, so the expensive state built by earlier steps is reused, not rebuilt, and the failed
attempt leaves no trace in it.

Run with any configured model:   python examples/step_samples.py --model openai/gpt-4o-mini
Or scripted, to see the mechanics offline:   python examples/step_samples.py --model reference
"""

from __future__ import annotations

import argparse

import codeact

# Step 1 builds a table; the first reply for step 2 corrupts it and then fails; the second sample
# starts again from the table as step 1 left it.
REFERENCE = [
    "```python\nprices = {'apple': 3, 'pear': 5, 'fig': 11}\nprint(len(prices), 'prices loaded')\n```",
    "```python\nprices.clear()\ntotal = prices['apple'] + prices['fig']\n```",
    "```python\nsubmit(answer=prices['apple'] + prices['fig'])\n```",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="reference", help="a model name, 'local', or 'reference'")
    args = parser.parse_args()
    lm = codeact.ScriptedLM(REFERENCE) if args.model == "reference" else codeact.LM(args.model)
    act = codeact.CodeAct(
        codeact.Signature(
            "question -> answer: int", instructions="Load the price table in one step, then answer from it."
        ),
        lm=lm,
        step_samples=3,
        sandbox={"backend": "process"},
    )
    prediction = act(question="What do an apple and a fig cost together?")
    for step in prediction.trajectory:
        for sample in step.rejected_samples:
            print(f"step {step.index + 1}: set aside a sample that failed with {sample.error}")
        print(f"step {step.index + 1}: kept\n{step.code}")
    print("answer:", prediction.answer)


if __name__ == "__main__":
    main()
