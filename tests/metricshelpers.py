"""
Reading a scrape of C{/metrics} as Prometheus would: the text format parsed
by C{prometheus_client}'s own parser, so a test sees what a server exports,
not how the library stores it.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(text: bytes | str) -> dict[tuple[str, frozenset], float]:
    """
    Every sample of a scrape: C{(name, frozenset(labels.items())) -> value}.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    found: dict[tuple[str, frozenset], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(text: bytes | str, name: str, **labels: str) -> float | None:
    """The value of one sample of a scrape, or L{None} when it is absent."""
    return samples(text).get((name, frozenset(labels.items())))


def names(text: bytes | str) -> set[str]:
    """The names of every sample of a scrape (C{_total}, C{_bucket}...)."""
    return {name for name, _ in samples(text)}
