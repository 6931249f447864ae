class SpecError(Exception):
    """The spec (or a file it names) is wrong; nothing has been written."""
