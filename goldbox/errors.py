"""The one exception goldbox raises for anything a user can fix."""


class GoldboxError(Exception):
    """A failure explained in one line: what (file, key, step or command), what was
    expected, what was found. tasks.py prints it without a traceback and exits 1."""
