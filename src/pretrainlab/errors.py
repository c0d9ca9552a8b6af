"""User-facing errors: one line that says what was wrong and what is valid."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class PretrainlabError(Exception):
    """An error caused by the user's input; the CLI prints it on one line and exits with code 2."""


class UnknownNameError(PretrainlabError, KeyError):
    """A name that no registry holds."""

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0])


def unknown_name_message(kind: str, name: str, valid: Iterable[str]) -> str:
    """Builds "unknown KIND 'NAME'; did you mean 'X'? valid: a, b, c"."""
    valid = sorted(valid)
    closest = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{closest[0]}'?" if closest else ""
    return f"unknown {kind} '{name}'{hint} valid {kind}s: {', '.join(valid)}"
