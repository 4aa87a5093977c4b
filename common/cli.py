"""The wrapper every command-line ``main`` runs under: ``InputError`` -> one line and exit 2."""
from __future__ import annotations

import sys
from typing import Callable

from common.errors import InputError


def run_main(main: Callable[[list[str]], object]) -> Callable[[list[str]], object]:
    """Wrap an absl ``main(argv)`` so that ``InputError`` prints ``error: <msg>`` and exits 2.

    Args:
        main: the absl main function.

    Returns:
        A function with the same signature, for ``absl.app.run``.
    """

    def wrapped(argv: list[str]) -> object:
        try:
            return main(argv)
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)

    return wrapped
