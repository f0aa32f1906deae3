"""The toy world's error type: bad input to the toy tools, with a message that says what to do."""


class ToyError(ValueError):
    """A toy-world input is wrong (missing file, not a toy checkpoint, empty dataset)."""
