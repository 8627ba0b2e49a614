"""The one exception type a user can cause. The CLI prints its message without a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class GlassViTError(ValueError):
    """A user-caused error: bad name, wrong input, missing annotation, corrupt file."""


def unknown(kind: str, name: str, choices: Iterable[str]) -> GlassViTError:
    """An error for an unknown `name`, naming the closest `choices` (or all of them when few)."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=5, cutoff=0.5)
    hint = close if close else choices[:12]
    more = "did you mean" if close else "known"
    return GlassViTError(f"unknown {kind} {name!r}; {more}: {', '.join(hint)}")
