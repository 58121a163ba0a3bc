"""The code's signals, kept out of the session's own work between steps.

A handler the code installed (an alarm it left armed that raises TimeoutError) must not run in a
holder, which keeps the state, nor in a worker waiting for its next step: an exception there ends
the session. Outside a step, the main thread holds every signal but the fault signals. Where the
code left threads running, one of them may still take a signal, and CPython runs the handler in the
main thread: there each handler the code installed is swapped for one that only notes the signal.
When the next step starts, the code's handlers and signal mask come back and the noted signals are
raised again: their handlers run then, and what they raise is reported in that step's stderr.
"""

from __future__ import annotations

import _signal  # signal's wrappers turn numbers into enum members: 100 us for a held mask, 3 us a handler
import signal
import threading
from collections.abc import Callable
from typing import Any

# Every signal but those the kernel does not let a process hold, or sends for a fault it must act on.
HELD = frozenset(int(n) for n in signal.valid_signals()) - {
    signal.SIGKILL,
    signal.SIGSTOP,
    signal.SIGSEGV,
    signal.SIGBUS,
    signal.SIGFPE,
    signal.SIGILL,
    signal.SIGTRAP,
    signal.SIGSYS,
    signal.SIGABRT,
}
_set_handler, _get_handler, _set_mask = _signal.signal, _signal.getsignal, _signal.pthread_sigmask
_signal_for_code = signal.signal  # what the code's signal.signal calls, through `CodeSignals`


class CodeSignals:
    """Holds the code's signals outside its steps (`hold`) and gives them back as one starts (`release`)."""

    def __init__(self) -> None:
        self.mask: set[int] = set()  # the code's signal mask, while held
        self.handled: set[int] = set()  # signals the code gave a handler of its own
        self.handlers: dict[int, Any] = {}  # the code's handlers, while swapped out
        self.arrived: list[int] = []
        signal.signal = self._install_for_code  # type: ignore[assignment]

    def _install_for_code(self, signalnum: int, handler: Any) -> Any:
        previous = _signal_for_code(signalnum, handler)
        if callable(handler):
            self.handled.add(signalnum)
        return previous

    def _note(self, signalnum: int, _frame: Any) -> None:
        if signalnum not in self.arrived:
            self.arrived.append(signalnum)

    def hold(self) -> str:
        """As a step ends (or the session starts): hold signals and swap out the code's handlers.
        Returns what a handler raised if one ran meanwhile (its signal came as the step ended)."""
        raised = ""
        try:
            self.mask = _set_mask(signal.SIG_BLOCK, HELD)
        except BaseException as exc:  # held now, though the code's own mask was not read
            self.mask, raised = set(), _described(exc, "as the step ended")
        if threading.active_count() == 1:  # no thread but this one can take a signal now
            return raised
        for signalnum in self.handled:
            handler = _get_handler(signalnum)
            if callable(handler) and handler != self._note:
                self.handlers[signalnum] = handler
                _set_handler(signalnum, self._note)
        return raised

    def release(self, report: Callable[[str], object]) -> None:
        """As a step starts: the code's handlers and mask again; the signals noted meanwhile are
        raised, and what their handlers raise goes to `report`."""
        for signalnum, handler in self.handlers.items():
            _set_handler(signalnum, handler)
        self.handlers = {}
        arrived, self.arrived = self.arrived, []
        try:
            _set_mask(signal.SIG_SETMASK, self.mask)
        except BaseException as exc:
            report(_described(exc, "between steps"))
        for signalnum in arrived:
            try:
                signal.raise_signal(signalnum)
            except BaseException as exc:
                report(_described(exc, "between steps"))


def _described(exc: BaseException, when: str) -> str:
    return f"[sandbox] a signal handler raised {type(exc).__name__} {when}: {exc}\n"
