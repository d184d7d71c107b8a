"""Diffy-style noise learning.

The same request goes to the control twice (primary, secondary) and once to the candidate.
Where primary and secondary disagree, the control disagrees with itself: that path is noise
for the endpoint (array indices generalised to `[*]`). Candidate differences there are
reported as noise, never as regressions. Learned noise saves as rules and loads back.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

from parity.compare import Comparator
from parity.model import Response
from parity.rules import RuleSet


class NoiseLearner:
    """Accumulates noise paths per endpoint; thread-safe (runners observe concurrently)."""

    def __init__(self, comparator: Comparator | None = None) -> None:
        self.comparator = comparator or Comparator()
        self._noise: dict[str, set[str]] = defaultdict(set)
        self._observations: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def observe(self, endpoint: str, primary: Response, secondary: Response) -> set[str]:
        """Compare two control answers to the same request; return the paths where they differ
        (empty when the control agreed with itself) and remember them as noise."""
        paths = self.comparator.noise_paths(primary, secondary, endpoint)
        with self._lock:
            self._observations[endpoint] += 1
            self._noise[endpoint] |= paths
        return paths

    def add(self, endpoint: str, paths: Iterable[str]) -> None:
        with self._lock:
            self._noise[endpoint] |= set(paths)

    def noise_for(self, endpoint: str) -> frozenset[str]:
        with self._lock:
            return frozenset(self._noise.get(endpoint, ()))

    def observations(self, endpoint: str) -> int:
        with self._lock:
            return self._observations.get(endpoint, 0)

    def as_mapping(self) -> dict[str, list[str]]:
        with self._lock:
            return {e: sorted(p) for e, p in sorted(self._noise.items()) if p}

    def to_rules(self, base: RuleSet | None = None) -> RuleSet:
        """Learned noise as `noise` entries of a RuleSet (merged into `base` when given)."""
        return (base or RuleSet()).with_noise(self.as_mapping())

    def save(self, path: str | Path, base: RuleSet | None = None) -> None:
        """Write learned noise as rules: `.json` → JSON, anything else → TOML."""
        self.to_rules(base).save(path)

    @classmethod
    def from_rules(cls, rules: RuleSet, comparator: Comparator | None = None) -> NoiseLearner:
        learner = cls(comparator)
        for section in rules.endpoints:
            if section.noise:
                learner.add(section.endpoint, section.noise)
        return learner

    @classmethod
    def load(cls, path: str | Path, comparator: Comparator | None = None) -> NoiseLearner:
        return cls.from_rules(RuleSet.load(path), comparator)


def noise_mapping(rules: RuleSet) -> Mapping[str, list[str]]:
    """The noise paths declared per endpoint in a RuleSet."""
    return {s.endpoint: list(s.noise) for s in rules.endpoints if s.noise}
