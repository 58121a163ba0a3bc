"""The names users import from codeact, and its one exception tree."""

from __future__ import annotations

import pytest

import codeact
from codeact.lm.errors import LMAuthError, LMConfigError

DOCUMENTED = {
    # the core
    "CodeAct",
    "Signature",
    "InputField",
    "OutputField",
    "Tool",
    "tool",
    "LM",
    "ScriptedLM",
    "configure",
    "Prediction",
    "RunRecord",
    "Step",
    "StepError",
    "ToolCall",
    "LLMCall",
    "Usage",
    # the sandbox
    "Sandbox",
    "SandboxPool",
    "SandboxOptions",
    "ApprovalRequest",
    # events a run emits to on_event
    "Event",
    "RunStarted",
    "StepStarted",
    "TokenReceived",
    "CodeParsed",
    "Observed",
    "StepEnded",
    "RunEnded",
    # errors
    "CodeActError",
    "ConfigurationError",
    "SignatureError",
    "OutputValidationError",
    "ToolArgumentError",
    "InterpreterError",
    "LMError",
    "MaxItersError",
    "RunInterrupted",
    "RunCancelled",
}


def test_all_holds_exactly_the_documented_names():
    assert set(codeact.__all__) == DOCUMENTED
    for name in DOCUMENTED:
        assert getattr(codeact, name) is not None


def test_the_readme_import_works():
    from codeact import Sandbox, SandboxPool  # noqa: F401


@pytest.mark.parametrize(
    "error",
    [
        codeact.ConfigurationError,
        codeact.SignatureError,
        codeact.InterpreterError,
        codeact.LMError,
        LMAuthError,
        LMConfigError,
        codeact.MaxItersError,
        codeact.OutputValidationError,
        codeact.ToolArgumentError,
    ],
)
def test_every_codeact_error_has_one_root(error):
    assert issubclass(error, codeact.CodeActError)


def test_configuration_errors_are_value_errors_and_ctrl_c_is_not_swallowed():
    assert issubclass(codeact.ConfigurationError, ValueError)
    assert issubclass(codeact.SignatureError, codeact.ConfigurationError)
    assert not issubclass(codeact.RunInterrupted, Exception)
    assert not issubclass(codeact.RunCancelled, Exception)
    with pytest.raises(codeact.CodeActError):
        codeact.Signature("this is not -> a: valid[[type")


def test_failure_kinds_are_one_enumeration_the_sandbox_owns():
    from codeact.sandbox import Failure
    from codeact.sandbox.base import SESSION_LOST_KINDS

    assert {kind.value for kind in Failure} == set(SESSION_LOST_KINDS)
    assert Failure("Timeout") is Failure.TIMEOUT and not Failure.TIMEOUT.ends_session
    assert Failure.CRASHED.ends_session and Failure.PROTOCOL_ERROR.ends_session
