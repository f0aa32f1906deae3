"""One exception type for everything a user can get wrong.

It subclasses ValueError so that the host shows the message as an execution error naming the node,
and so that callers can catch it without knowing this package.
"""


class IQAAdapterError(ValueError):
    """A problem with user input (a file, a value, a model) whose message says what to do."""


def load_error_detail(exc: Exception, limit: int = 300) -> str:
    """Why a weight file could not be loaded, for an error message. A refused pickle is explained here
    rather than relaying torch's advice to retry with weights_only=False, which would run its code."""
    if "Weights only load failed" in str(exc):
        return "it holds pickled Python objects besides tensors, which are never loaded because a pickle can run code"
    return f"{type(exc).__name__}: {str(exc)[:limit]}"
