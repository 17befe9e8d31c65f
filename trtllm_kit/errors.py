"""The two kinds of error: user errors (one clear line, non-zero exit) and bugs (keep the traceback)."""


class ToolkitError(Exception):
    """An expected user error. The CLI prints it as one line and exits non-zero.

    Args:
        message: what is wrong, naming the offending file, layer, tensor or flag.
        hint: how to fix it, appended to the message.
    """

    def __init__(self, message: str, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(f"{message} ({hint})" if hint else message)


class MissingToolError(ToolkitError):
    """A backend library is not installed; says what to install."""

    def __init__(self, what: str, install: str):
        super().__init__(f"{what} is not installed", f"install it with: {install}")


class ShapeError(ToolkitError):
    """A checkpoint or spec whose shapes contradict themselves."""


class ProfileError(ToolkitError):
    """A requested shape lies outside the engine's optimization profiles."""
