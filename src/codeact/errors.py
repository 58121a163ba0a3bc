"""codeact's exceptions share one root, `CodeActError`.

`ConfigurationError` (also a ValueError) means what the caller passed is wrong: fix the call. The
others are failures of a run's parts: the language model (`LMError` and its subclasses in
`codeact.lm.errors`), the sandbox (`InterpreterError`), the answer (`OutputValidationError`,
`MaxItersError`). `RunInterrupted` (Ctrl-C in a run) is a KeyboardInterrupt and `RunCancelled` (an
async run cancelled) a CancelledError, deliberately outside the tree, so that `except Exception`
never swallows them; both carry `.prediction`.
"""

from __future__ import annotations


class CodeActError(Exception):
    """The root of codeact's exceptions."""


class ConfigurationError(CodeActError, ValueError):
    """An argument, option or signature is wrong; nothing ran. The message says what to write."""
