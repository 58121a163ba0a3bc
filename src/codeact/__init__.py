"""codeact: language models that solve tasks by writing and running Python in a secure sandbox."""

from codeact.lm import LM, ScriptedLM, Usage
from codeact.tools import Tool, tool

__all__ = ["LM", "ScriptedLM", "Tool", "Usage", "tool"]
