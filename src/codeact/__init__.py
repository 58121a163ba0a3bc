"""codeact: language models that solve tasks by writing and running Python in a secure sandbox."""

from codeact.agent import CodeAct, Prediction
from codeact.lm import LM, LMError, ScriptedLM, Usage
from codeact.sandbox import Sandbox, SandboxOptions, SandboxPool
from codeact.settings import configure
from codeact.signature import InputField, OutputField, Signature
from codeact.tools import Tool, tool

__all__ = [
    "LM",
    "CodeAct",
    "InputField",
    "LMError",
    "OutputField",
    "Prediction",
    "Sandbox",
    "SandboxOptions",
    "SandboxPool",
    "ScriptedLM",
    "Signature",
    "Tool",
    "Usage",
    "configure",
    "tool",
]
