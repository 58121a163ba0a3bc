"""codeact: language models that solve tasks by writing and running Python in a secure sandbox."""

from codeact.agent import CodeAct, MaxItersError, Prediction, RunInterrupted
from codeact.lm import LM, LMError, ScriptedLM, Usage
from codeact.sandbox import Sandbox, SandboxOptions, SandboxPool, ToolCall
from codeact.sandbox.driver import ApprovalRequest
from codeact.settings import configure
from codeact.signature import InputField, OutputField, Signature
from codeact.tools import Tool, tool
from codeact.trajectory import RunRecord

__all__ = [
    "LM",
    "ApprovalRequest",
    "CodeAct",
    "InputField",
    "LMError",
    "MaxItersError",
    "OutputField",
    "Prediction",
    "RunInterrupted",
    "RunRecord",
    "Sandbox",
    "SandboxOptions",
    "SandboxPool",
    "ScriptedLM",
    "Signature",
    "Tool",
    "ToolCall",
    "Usage",
    "configure",
    "tool",
]
