"""User-facing input errors: one line naming the file or flag and what is wrong."""
from __future__ import annotations


class InputError(ValueError):
    """Bad user input (file, flag, data). The message is one line naming the culprit."""
