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


def closest_hint(name: str, valid: Iterable[str]) -> str:
    """"; did you mean 'X'?" naming the valid name closest to `name`, or "" when none is close."""
    closest = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.5)
    return f"; did you mean '{closest[0]}'?" if closest else ""


def unknown_name_message(kind: str, name: str, valid: Iterable[str]) -> str:
    """Builds "unknown KIND 'NAME'; did you mean 'X'? valid: a, b, c"."""
    valid = sorted(valid)
    return f"unknown {kind} '{name}'{closest_hint(name, valid)} valid {kind}s: {', '.join(valid)}"


def refuse_unknown_options(options: Iterable[str], valid: Iterable[str], read_by: str) -> None:
    """An option nothing reads is a typo: raises "option 'K' is read by READ_BY; did you mean 'X'? valid options: ..."
    for the first key not in `valid`."""
    valid = sorted(valid)
    for key in options:
        if key not in valid:
            raise PretrainlabError(f"option '{key}' is read by {read_by}{closest_hint(key, valid)} valid options: "
                                   f"{', '.join(valid) or 'none'}")
