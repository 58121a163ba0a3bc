"""Language model backends behind one `LM` class."""

from codeact.lm.base import LM, Completion, LMError, Message, Usage
from codeact.lm.cache import ResponseCache
from codeact.lm.errors import (
    LMAPIError,
    LMAuthError,
    LMBadRequestError,
    LMConfigError,
    LMConnectionError,
    LMContextLengthError,
    LMMissingExtraError,
    LMModelNotFoundError,
    LMQuotaError,
    LMRateLimitError,
    LMResponseError,
    LMServerError,
    LMTimeoutError,
)
from codeact.lm.registry import default_model
from codeact.lm.retry import RetryPolicy
from codeact.lm.scripted import ScriptedLM

__all__ = [
    "LM",
    "Completion",
    "LMAPIError",
    "LMAuthError",
    "LMBadRequestError",
    "LMConfigError",
    "LMConnectionError",
    "LMContextLengthError",
    "LMError",
    "LMMissingExtraError",
    "LMModelNotFoundError",
    "LMQuotaError",
    "LMRateLimitError",
    "LMResponseError",
    "LMServerError",
    "LMTimeoutError",
    "Message",
    "ResponseCache",
    "RetryPolicy",
    "ScriptedLM",
    "Usage",
    "default_model",
]
