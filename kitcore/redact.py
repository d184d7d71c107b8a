"""Personal data found by pattern in free text: e-mail addresses, phone and card numbers,
tokens. Shared by parity (recordings, reports) and the proxy (its shadow log), so one list of
patterns decides what never reaches a file.

Patterns are named built-ins (`email`, `phone`, `card`, `token`) or regular expressions of the
user's own. Card numbers must pass the Luhn check, phone numbers need a `+country` prefix or
the `(555) 123-4567` / `555-123-4567` shapes, so ids and dates are left alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MARK = "[REDACTED]"

BUILTIN_PATTERNS: dict[str, str] = {
    "email": (
        r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
    ),
    "phone": (
        r"(?<![\w+])\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){2,4}(?!\w)"
        r"|\(\d{3}\)[ ]?\d{3}[ .-]\d{4}(?!\d)"
        r"|(?<![\d.-])\d{3}[.-]\d{3}[.-]\d{4}(?![\d.-])"
    ),
    "card": r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])",
    "token": (
        r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"
        r"|\b(?:[Bb]earer|[Bb]asic)\s+[A-Za-z0-9._~+/=-]{8,}"
    ),
}
DEFAULT_PATTERNS: tuple[str, ...] = tuple(BUILTIN_PATTERNS)
# a built-in pattern can only match text holding one of these (a C-speed `in` test, or one
# simple regex pass, before the pattern's own costlier pass over a big body)
_NEEDS: dict[str, tuple[str | re.Pattern[str], ...]] = {
    "email": ("@",),
    "token": ("eyJ", "earer", "asic"),
    "phone": ("+", "(", re.compile(r"\d[.-]\d")),
}


def _present(need: str | re.Pattern[str], text: str) -> bool:
    return need in text if isinstance(need, str) else need.search(text) is not None


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = ord(ch) - 48
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


class TextScrubber:
    """Replaces every match of the chosen patterns by `[REDACTED]`, pattern by pattern (a
    pattern whose telltale text is absent costs one substring test, not a regex pass)."""

    def __init__(self, patterns: Iterable[str] = DEFAULT_PATTERNS, mark: str = MARK) -> None:
        self.mark = mark
        self.rules: list[tuple[str, re.Pattern[str], tuple[str | re.Pattern[str], ...]]] = []
        for i, pattern in enumerate(patterns):
            source = BUILTIN_PATTERNS.get(pattern, pattern)
            try:
                regex = re.compile(source)
            except re.error as exc:
                raise ValueError(f"redact pattern {i} ({pattern!r}): {exc}") from None
            self.rules.append((pattern, regex, _NEEDS.get(pattern, ())))

    def _card(self, m: re.Match[str]) -> str:
        return self.mark if luhn_valid(re.sub(r"[ -]", "", m.group())) else m.group()

    def __call__(self, text: str) -> str:
        if not text:
            return text
        for name, regex, needs in self.rules:
            if needs and not any(_present(n, text) for n in needs):
                continue
            text = regex.sub(self._card if name == "card" else self.mark, text)
        return text

    def __bool__(self) -> bool:
        return bool(self.rules)
