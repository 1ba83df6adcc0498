"""User-facing error types: a one-line message a person can act on, never a traceback."""


class UserInputError(Exception):
    """Bad input supplied by the user (a file, a flag, a folder). The CLI prints it and exits 2."""


class DatasetError(UserInputError):
    """A capture folder or one of its files cannot be used; the message names the file and the problem."""


class CheckpointError(UserInputError):
    """A checkpoint or weights file is missing, unreadable or of the wrong kind."""
