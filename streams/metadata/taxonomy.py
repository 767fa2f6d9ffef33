"""Topics derived from an item's text: keywords and entities mapped onto the brand taxonomy.

A brand's taxonomy (``topology.yaml`` ``brands.<brand>.taxonomy``, CMS category -> brand
category) names the subjects the brand files content under. An item whose keywords or entity
names contain one of those names (as a whole word, compared as slugs) gets that brand
category, whatever tags its source gave. Then the slugs of its best keywords and of the
persons, organisations and places it names are added, so an item without any source tag still
gets topics that the ranking's topic affinity can match against readers' profiles.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from feedpipe.topology import BrandSpec, slug

TEXT_KEYWORDS = 5
"""Best YAKE keyphrases whose slugs become topics."""

TEXT_ENTITIES = 5
"""First entities (source ones first) whose slugs become topics."""

MIN_SLUG_CHARS = 3
"""Shorter slugs (``'us'``, ``'tv'`` as a keyword) are too ambiguous to stand as a topic."""


def _words(s: str) -> list[str]:
    return [w for w in s.split("-") if w]


def _contains(haystack: list[str], needle: list[str]) -> bool:
    """True when the word list ``needle`` occurs contiguously in ``haystack``."""
    n = len(needle)
    return any(haystack[i:i + n] == needle for i in range(len(haystack) - n + 1))


def brand_categories(phrases: Iterable[str], spec: BrandSpec) -> list[str]:
    """Brand categories (slugs) whose taxonomy entry is named in ``phrases``.

    Each taxonomy entry contributes its CMS name and its brand category as names; a phrase
    matches a name when the name's slug words occur contiguously in the phrase's slug words
    (``'Premier League football'`` matches ``football``). Order: first phrase first.
    """
    names: list[tuple[list[str], str]] = []
    for cms, category in spec.taxonomy.items():
        target = slug(category)
        for name in (cms, category):
            words = _words(slug(name))
            if words and target:
                names.append((words, target))
    out: list[str] = []
    for phrase in phrases:
        phrase_words = _words(slug(phrase))
        for name_words, category in names:
            if category not in out and _contains(phrase_words, name_words):
                out.append(category)
    return out


def text_topics(keywords: list[str], entities: Iterable[Mapping[str, Any]],
                spec: BrandSpec) -> list[str]:
    """Topic slugs derived from the text of one item.

    Args:
        keywords: YAKE keyphrases, best first.
        entities: ``feedpipe.Entity`` dicts (source ones first, then extracted ones).
        spec: the item's brand (its taxonomy).

    Returns:
        The brand categories named in the keywords or entity labels
        (:func:`brand_categories`), then the slugs of the first 5 keywords and of the first 5
        entity labels; unique, slugs of at least 3 characters, order kept.
    """
    labels = [str(e.get("label") or "") for e in entities]
    out: list[str] = []
    candidates = (
        *brand_categories([*keywords, *labels], spec),
        *(slug(k) for k in keywords[:TEXT_KEYWORDS]),
        *(slug(label) for label in labels[:TEXT_ENTITIES]),
    )
    for s in candidates:
        if len(s) >= MIN_SLUG_CHARS and s not in out:
            out.append(s)
    return out
