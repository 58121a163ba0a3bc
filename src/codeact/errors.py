"""codeact's exceptions share one root, `CodeActError`.

`ConfigurationError` (also a ValueError) means what the caller passed is wrong: fix the call. The
others are failures of a run's parts: the language model (`LMError` and its subclasses in
`codeact.lm.errors`), the sandbox (`InterpreterError`), the answer (`OutputValidationError`,
`MaxItersError`). `RunInterrupted` is a KeyboardInterrupt, deliberately outside the tree, so that
`except Exception` never swallows Ctrl-C.
"""

from __future__ import annotations


class CodeActError(Exception):
    """The root of codeact's exceptions."""


class ConfigurationError(CodeActError, ValueError):
    """An argument, option or signature is wrong; nothing ran. The message says what to write."""
