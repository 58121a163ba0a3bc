"""Language models behind one `LM` class; importing this package makes every backend known to `LM(...)`."""

from codeact.lm.base import LM, Completion, LMError, LMRequest, Message, Usage
from codeact.lm.cache import ResponseCache
from codeact.lm.default import default_model
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
from codeact.lm.litellm import LiteLLMLM
from codeact.lm.local import LocalLM
from codeact.lm.openai import OpenAILM
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
    "LMRequest",
    "LMResponseError",
    "LMServerError",
    "LMTimeoutError",
    "LiteLLMLM",
    "LocalLM",
    "Message",
    "OpenAILM",
    "ResponseCache",
    "RetryPolicy",
    "ScriptedLM",
    "Usage",
    "default_model",
]
