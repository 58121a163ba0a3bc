"""What a run gives back: `Prediction`, and the exceptions that carry one."""

from __future__ import annotations

import asyncio
from typing import Any

from codeact.errors import CodeActError
from codeact.lm.base import Usage
from codeact.trajectory import EndReason, Fallback, RunRecord, Step


class Prediction:
    """The outputs of a run as attributes (None when the run produced none), and its record."""

    def __init__(self, outputs: dict[str, Any], record: RunRecord) -> None:
        self._outputs = outputs
        self.record = record

    def __getattr__(self, name: str) -> Any:
        outputs = self.__dict__.get("_outputs", {})
        if name in outputs:
            return outputs[name]
        raise AttributeError(f"prediction has no field {name!r}; its outputs are {', '.join(outputs) or 'none'}")

    def __getitem__(self, name: str) -> Any:
        return self._outputs[name]

    @property
    def outputs(self) -> dict[str, Any]:
        return dict(self._outputs)

    @property
    def trajectory(self) -> list[Step]:
        return self.record.steps

    @property
    def end_reason(self) -> EndReason:
        return self.record.end_reason

    @property
    def fallback(self) -> Fallback | None:
        return self.record.fallback

    @property
    def usage(self) -> Usage:
        return self.record.usage

    @property
    def error(self) -> str | None:
        return self.record.error

    def save(self, path: str) -> Any:
        """Save the run record as JSON (see `RunRecord.save`)."""
        return self.record.save(path)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self._outputs.items())
        return f"Prediction({fields}, end_reason={self.end_reason!r}, steps={len(self.record.steps)})"


# Names a signature may not use: the sandbox's own functions, and Prediction's attributes
RESERVED_INPUTS = frozenset({"submit", "print", "SUBMIT"})
PREDICTION_ATTRIBUTES = frozenset(name for name in vars(Prediction) if not name.startswith("_")) | {"record"}


class MaxItersError(CodeActError, RuntimeError):
    """Raised with `fallback="raise"` when no step submitted; `.prediction` holds the run."""

    def __init__(self, prediction: Prediction) -> None:
        self.prediction = prediction
        super().__init__(
            f"no valid submit(...) within {prediction.record.max_iters} steps "
            "(fallback='raise'); the run is in .prediction"
        )


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; `.prediction` holds the run up to that point."""

    def __init__(self, prediction: Prediction) -> None:
        self.prediction = prediction
        super().__init__("run interrupted")


class RunCancelled(asyncio.CancelledError):
    """An async run was cancelled (`task.cancel()`, a timeout, Ctrl-C under `asyncio.run`); it is a
    CancelledError, so asyncio's cancellation works as ever, and `.prediction` holds the run so far."""

    def __init__(self, prediction: Prediction) -> None:
        self.prediction = prediction
        super().__init__("run cancelled")
