"""One exception type for everything a user can get wrong.

It subclasses ValueError so that the host shows the message as an execution error naming the node,
and so that callers can catch it without knowing this package.
"""


class IQAAdapterError(ValueError):
    """A problem with user input (a file, a value, a model) whose message says what to do."""
