"""Hiding a job's secret values in what its attempt reports (output, progress, errors).

Standard library only: the job's own process uses it too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
# Shorter values ("1", "yes") would blank out ordinary output everywhere they occur.
MIN_SECRET_CHARS = 4


class SecretMask:
    """Callable that replaces every occurrence of a secret value in a text by ``***``."""

    def __init__(self, values: Iterable[str]) -> None:
        parts: set[str] = set()
        for value in values:
            # A multi-line secret (a key file) is printed line by line, so each line is
            # one more value to hide.
            for part in (value, *value.splitlines()):
                if len(part.strip()) >= MIN_SECRET_CHARS:
                    parts.add(part)
        # Longest first, so a secret that contains another one is hidden whole.
        ordered = sorted(parts, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)
