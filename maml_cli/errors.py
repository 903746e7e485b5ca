"""The one exception type for bad user input: its message is shown without a traceback."""

import sys
from typing import NoReturn


class MamlError(Exception):
    """A problem the user can fix (bad value, missing file, impossible task). The message says how."""

    def exit(self) -> NoReturn:
        """Print the message as one ``Error:`` line on stderr and exit with status 1 (the commands' way)."""
        print(f"Error: {self}", file=sys.stderr)
        sys.exit(1)
