"""The default language model, set once with `codeact.configure(lm=...)`."""

from __future__ import annotations

import threading

from codeact.lm.base import LM

_lock = threading.Lock()
_default_lm: LM | None = None


def configure(*, lm: LM | str | None) -> None:
    """Set the LM that `CodeAct` uses when it is not given one (`None` clears it).

    A string is a model name for `codeact.LM`, e.g. `"openai/gpt-4o-mini"`.
    """
    global _default_lm
    resolved = resolve_lm(lm) if lm is not None else None
    with _lock:
        _default_lm = resolved


def resolve_lm(lm: LM | str) -> LM:
    if isinstance(lm, str):
        return LM(lm)
    if not isinstance(lm, LM):
        complete = getattr(lm, "complete", None)
        if not callable(complete):
            raise TypeError(f"lm must be a codeact.LM (or a model name string), got {type(lm).__name__}")
    return lm


def default_lm() -> LM:
    """The configured LM; raises `RuntimeError` saying how to set one when there is none."""
    with _lock:
        lm = _default_lm
    if lm is None:
        raise RuntimeError(
            "no language model configured: pass lm=... to CodeAct or call "
            "codeact.configure(lm=codeact.LM('openai/gpt-4o-mini'))"
        )
    return lm
