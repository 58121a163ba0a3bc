"""codeact: language models that solve tasks by writing and running Python in a secure sandbox."""

from importlib.metadata import version

from codeact.agent import CodeAct
from codeact.errors import CodeActError, ConfigurationError
from codeact.events import (
    CodeParsed,
    Event,
    Observed,
    RunEnded,
    RunStarted,
    StepEnded,
    StepStarted,
    TokenReceived,
)
from codeact.lm import LM, LMError, ScriptedLM, Usage
from codeact.prediction import MaxItersError, Prediction, RunCancelled, RunInterrupted
from codeact.sandbox import InterpreterError, Sandbox, SandboxOptions, SandboxPool, ToolCall
from codeact.sandbox.driver import ApprovalRequest
from codeact.settings import configure
from codeact.signature import (
    InputField,
    OutputField,
    OutputValidationError,
    Signature,
    SignatureError,
)
from codeact.tools import Tool, ToolArgumentError, tool
from codeact.trajectory import LLMCall, RunRecord, Step, StepError

__version__ = version("codeact")

__all__ = [
    "LM",
    "ApprovalRequest",
    "CodeAct",
    "CodeActError",
    "CodeParsed",
    "ConfigurationError",
    "Event",
    "InputField",
    "InterpreterError",
    "LLMCall",
    "LMError",
    "MaxItersError",
    "Observed",
    "OutputField",
    "OutputValidationError",
    "Prediction",
    "RunCancelled",
    "RunEnded",
    "RunInterrupted",
    "RunRecord",
    "RunStarted",
    "Sandbox",
    "SandboxOptions",
    "SandboxPool",
    "ScriptedLM",
    "Signature",
    "SignatureError",
    "Step",
    "StepEnded",
    "StepError",
    "StepStarted",
    "TokenReceived",
    "Tool",
    "ToolArgumentError",
    "ToolCall",
    "Usage",
    "configure",
    "tool",
]
