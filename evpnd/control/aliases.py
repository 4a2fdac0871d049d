"""FRR's `show` commands as aliases of evpnd's views (pure: words in, words out).

An operator who knows FRR types `evpnd show evpn mac vni all` or `evpnd show bgp
l2vpn evpn`; `expand` turns the words after `show` into the evpnd view and
its options (`mac`, `routes`), and leaves anything else as it is. The table
is also what the completion scripts and `evpnd show --help` list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

VNI = "<vni>"  # a VNI number in the alias's words
TYPE = "<type>"  # a route type: a number or FRR's name of it

# FRR's names of the route types (`show bgp l2vpn evpn route type macip`).
ROUTE_TYPE_NAMES = {"ead": 1, "macip": 2, "multicast": 3, "es": 4, "prefix": 5}


@dataclass(frozen=True, slots=True)
class Alias:
    words: tuple[str, ...]  # after `show`; VNI and TYPE stand for the operator's value
    view: str
    options: tuple[str, ...] = ()  # evpnd's options; VNI and TYPE take the value typed


ALIASES: tuple[Alias, ...] = (
    Alias(("bgp", "summary"), "peers"),
    Alias(("bgp", "l2vpn", "evpn", "summary"), "peers"),
    Alias(("bgp", "l2vpn", "evpn"), "routes"),
    Alias(("bgp", "l2vpn", "evpn", "route"), "routes"),
    Alias(("bgp", "l2vpn", "evpn", "route", "type", TYPE), "routes", ("--type", TYPE)),
    Alias(("bgp", "l2vpn", "evpn", "route", "vni", VNI), "routes", ("--vni", VNI)),
    Alias(("evpn",), "status"),
    Alias(("evpn", "vni"), "vni"),
    Alias(("evpn", "vni", "all"), "vni"),
    Alias(("evpn", "vni", VNI), "vni", ("--vni", VNI)),
    Alias(("evpn", "mac", "vni", "all"), "mac"),
    Alias(("evpn", "mac", "vni", VNI), "mac", ("--vni", VNI)),
    Alias(("evpn", "arp-cache", "vni", "all"), "neighbors"),
    Alias(("evpn", "arp-cache", "vni", VNI), "neighbors", ("--vni", VNI)),
    Alias(("running-config",), "config"),
)


def _value(placeholder: str, word: str) -> str | None:
    """The option value `word` gives for a placeholder, or None if it does not fit."""
    if placeholder == VNI:
        return word if word.isascii() and word.isdigit() else None
    if placeholder == TYPE:
        if word in ROUTE_TYPE_NAMES:
            return str(ROUTE_TYPE_NAMES[word])
        return word if word.isascii() and word.isdigit() else None
    return word if word == placeholder else None


def expand(words: Sequence[str]) -> list[str] | None:
    """The words after `show` with a leading FRR command replaced by its view and options;
    None when they start with no alias (an evpnd view, or a typo argparse reports)."""
    best: tuple[Alias, list[str]] | None = None
    for alias in ALIASES:
        if len(alias.words) > len(words):
            continue
        values: dict[str, str] = {}
        for expected, word in zip(alias.words, words, strict=False):
            value = _value(expected, word)
            if value is None:
                break
            values[expected] = value
        else:
            if best is None or len(alias.words) > len(best[0].words):
                options = [values.get(o, o) for o in alias.options]
                best = (alias, options)
    if best is None:
        return None
    alias, options = best
    rest = list(words[len(alias.words):])
    if rest and not rest[0].startswith("-"):
        return None  # more words than any alias has: `show evpn mac` is no command
    return [alias.view, *options, *rest]


def starting_with(word: str) -> list[Alias]:
    """The aliases whose first word is `word` (`evpn`, `bgp`): what to suggest after a typo."""
    return [a for a in ALIASES if a.words[0] == word]


def describe(aliases: Sequence[Alias] = ALIASES) -> list[str]:
    """One line per alias for help texts: `bgp l2vpn evpn route type <type>  = show routes
    --type <type>`."""
    rows = [(" ".join(a.words), " ".join([a.view, *a.options])) for a in aliases]
    width = max(len(left) for left, _ in rows)
    return [f"{left.ljust(width)}  = show {right}" for left, right in rows]
