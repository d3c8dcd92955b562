"""Errors the models turn into clean Triton error responses (the server keeps serving)."""


class RequestError(ValueError):
    """The request is malformed or asks for something this engine does not have."""


class EngineMissingError(RuntimeError):
    """An engine folder or file is missing: the fix is to build the engines."""
