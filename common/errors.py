"""User-facing input errors and fallback warnings: one line naming the culprit and what is wrong
(or, for a warning, what was used instead)."""
from __future__ import annotations

import sys


class InputError(ValueError):
    """Bad user input (file, flag, data). The message is one line naming the culprit."""


def warn(message: str) -> None:
    """Print ``warning: <message>`` as one line on stderr (a fallback that is not an error: say what
    was used instead)."""
    print("warning: " + " ".join(str(message).split()), file=sys.stderr, flush=True)
