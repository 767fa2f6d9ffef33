"""Sentiment of an item's title + summary, per language.

- English: VADER compound score (vaderSentiment; Hutto & Gilbert 2014, ICWSM), in [-1, 1].
- Other languages with a lexicon in asent (the Chen & Skiena 2014 lexicons, "Building
  Sentiment Lexicons for All Major Languages", ACL; 81 languages, among them de, es, sk, fr,
  ru, it, nl, pl, cs, pt): asent's compound score in [-1, 1] (VADER's rules on that lexicon),
  with the language's spaCy stop words removed from the lexicon (the lexicons were built by
  translation graphs and list words such as German "die" as negative).
- Otherwise, or when no lexicon word occurs in the text: null, and the reason is returned for
  ``ingest_warnings``.

The Chen & Skiena lexicons list base forms only, so inflected languages (German, Slovak) are
scored on the words that occur in their base form; coverage per language is in
docs/enrichment.md.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import spacy
from spacy.language import Language

with warnings.catch_warnings():
    # asent imports its plotting helpers (matplotlib) at package import; nothing is drawn
    warnings.simplefilter("ignore")
    from asent.component import Asent
    from asent.utils import LEXICON_PATH, read_lexicon
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

LEXICON_SUFFIX = "_lexicon_chen_skiena_2014_v1.txt"
LEXICON_LANGUAGES: frozenset[str] = frozenset(
    p.name.removesuffix(LEXICON_SUFFIX) for p in Path(LEXICON_PATH).glob(f"*{LEXICON_SUFFIX}")
)
"""ISO 639-1 codes with a Chen & Skiena lexicon shipped inside the asent wheel."""

_vader: SentimentIntensityAnalyzer | None = None
_pipelines: dict[str, tuple[Language, dict[str, float]]] = {}
# asent keeps its lexicon in global spaCy Token extensions (one lexicon at a time), so a scorer
# is built for each call, and calls are serialised.
_LOCK = threading.Lock()


def has_model(lang: str | None) -> bool:
    """True when a sentiment score can be computed for ISO 639-1 ``lang``."""
    return lang == "en" or lang in LEXICON_LANGUAGES


def _vader_analyzer() -> SentimentIntensityAnalyzer:
    global _vader
    if _vader is None:
        _vader = SentimentIntensityAnalyzer()
    return _vader


def _pipeline(lang: str) -> tuple[Language, dict[str, float]]:
    """A blank spaCy pipeline for ``lang`` (generic tokenizer when spaCy has no such language)
    and its lexicon less the language's stop words (built once per language)."""
    got = _pipelines.get(lang)
    if got is None:
        try:
            nlp = spacy.blank(lang)
        except ImportError:
            nlp = spacy.blank("xx")
        nlp.add_pipe("sentencizer")
        stop = nlp.Defaults.stop_words
        lexicon = {
            w: v
            for w, v in read_lexicon(Path(LEXICON_PATH) / f"{lang}{LEXICON_SUFFIX}").items()
            if w not in stop
        }
        got = (nlp, lexicon)
        _pipelines[lang] = got
    return got


def _scorer(nlp: Language, lexicon: dict[str, float]) -> Asent:
    """An asent scorer bound to ``lexicon`` (it replaces the global Token extensions)."""
    return Asent(
        nlp,
        name="asent",
        lexicon=lexicon,
        intensifiers={},
        negations={},
        contrastive_conjugations={},
        lowercase=True,
        lemmatize=False,
        force=True,
    )


def warm_up() -> None:
    """Build VADER ahead of traffic."""
    _vader_analyzer()


def sentiment(text: str, lang: str | None) -> tuple[float | None, str | None]:
    """``(compound score in [-1, 1] rounded to 4 places, None)``, or ``(None, reason)`` when
    no score can be given (no model for ``lang``, no lexicon word in ``text``, no letters)."""
    if not any(ch.isalpha() for ch in text):
        return None, "sentiment: no text to score"
    if lang == "en":
        return round(float(_vader_analyzer().polarity_scores(text)["compound"]), 4), None
    if lang not in LEXICON_LANGUAGES:
        return None, f"sentiment: no model for language {lang!r}"
    with _LOCK:
        nlp, lexicon = _pipeline(lang)
        doc = _scorer(nlp, lexicon)(nlp(text))
        if not any(t._.polarity.polarity != 0 for t in doc):
            return None, f"sentiment: no word of the {lang!r} lexicon in the title or summary"
        return round(float(doc._.polarity.compound), 4), None
