"""Why a model call failed, as `LMError` subclasses whose messages say what to fix.

`retryable` tells the retry loop whether trying again can help (rate limits, server errors,
dropped connections, timeouts); `retry_after` carries the server's Retry-After in seconds.
"""

from __future__ import annotations

from codeact.errors import CodeActError


class LMError(CodeActError, RuntimeError):
    """A model call failed for good (after retries, or at once for errors retrying cannot fix)."""


class LMConfigError(LMError, ValueError):
    """The model string or a backend option is wrong; nothing was sent."""


class LMMissingExtraError(LMError, ImportError):
    """A backend needs an optional dependency that is not installed."""


class LMAPIError(LMError):
    """The model server answered with an error or could not be reached."""

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class LMAuthError(LMAPIError):
    """401/403: the API key is missing, wrong, or lacks access."""


class LMModelNotFoundError(LMAPIError):
    """404: the server does not serve this model (or the api_base path is wrong)."""


class LMContextLengthError(LMAPIError):
    """The prompt plus max_tokens does not fit the model's context window."""


class LMBadRequestError(LMAPIError):
    """400/422: the server refused the request's contents."""


class LMQuotaError(LMAPIError):
    """429 because the account is out of credit; waiting does not help."""


class LMRateLimitError(LMAPIError):
    """429: too many requests; retried after the server's Retry-After or a backoff."""

    retryable = True


class LMServerError(LMAPIError):
    """5xx (or 408/409): the server failed; retried."""

    retryable = True


class LMConnectionError(LMAPIError):
    """The server could not be reached or dropped the connection; retried."""

    retryable = True


class LMTimeoutError(LMConnectionError):
    """No complete reply within the per-call timeout; retried."""


class LMResponseError(LMAPIError):
    """The server's reply could not be read as a chat completion."""
