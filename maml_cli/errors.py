"""The one exception type for bad user input: its message is shown without a traceback."""


class MamlError(Exception):
    """A problem the user can fix (bad value, missing file, impossible task). The message says how."""
