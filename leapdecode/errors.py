"""User-facing errors: one clear line each, raised for bad input, never for our own bugs."""


class LeapError(Exception):
    """A problem with what the user asked for (a path, a model, a parameter), told in one line."""


class ModelLoadError(LeapError):
    """The model could not be found, fetched, converted or understood."""


class InvalidRequest(LeapError):
    """A generation request whose parameters cannot be honoured (empty prompt, bad temperature...)."""


def one_line(exc: BaseException) -> str:
    """An exception from a library as one short line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
