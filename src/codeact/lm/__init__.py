"""Language model backends behind one `LM` class."""

from codeact.lm.base import LM, Completion, LMError, Message, Usage
from codeact.lm.scripted import ScriptedLM

__all__ = ["LM", "Completion", "LMError", "Message", "ScriptedLM", "Usage"]
