"""User-facing input errors and fallback warnings: one line naming the culprit and what is wrong
(or, for a warning, what was used instead)."""
from __future__ import annotations

import sys
from typing import Any, Mapping


class InputError(ValueError):
    """Bad user input (file, flag, data). The message is one line naming the culprit."""


def warn(message: str) -> None:
    """Print ``warning: <message>`` as one line on stderr (a fallback that is not an error: say what
    was used instead)."""
    print("warning: " + " ".join(str(message).split()), file=sys.stderr, flush=True)


def check_choice(flag: str, value: Any, choices: Mapping[Any, str]) -> None:
    """``InputError`` ``--<flag> must be 0 (a), 1 (b) or 2 (c), got <value>`` unless ``value`` is a key of
    ``choices`` (value -> what it means)."""
    if value not in choices:
        parts = [f"{k} ({label})" for k, label in choices.items()]
        allowed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]
        raise InputError(f"--{flag} must be {allowed}, got {value}")
