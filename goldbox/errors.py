"""The one exception goldbox raises for anything a user can fix."""


class GoldboxError(Exception):
    """A failure explained in one line: what (file, key, step or command), what was
    expected, what was found. tasks.py prints it without a traceback and exits 1."""


def describe_os_error(exc: OSError) -> str:
    """An OSError in one line: what went wrong and on which file(s)."""
    what = exc.strerror or str(exc)
    files = [str(name) for name in (exc.filename, exc.filename2) if name is not None]
    return f"{what}: {' -> '.join(files)}" if files else what
