"""Kana readings: 「経理」 and 「けいり」, 「担当者と話したい」 and 「たんとうしゃとはなしたい」 meet.

People type the bot's own words in hiragana (no IME conversion on a phone, or on purpose).
Matching compares readings as a second pass: every flow term and every message is read by
SudachiPy (small dictionary) and normalised like everything else (`normalize`), so kanji, kana
and mixed spellings of one word become the same string. Readings are only a second pass: a
reading is looser than the written word (homophones), so what the written words settle is
never reopened by the readings.

Chosen by measuring (README, "Readings"): pykakasi misreads common words (人 as にん, 労務士 as
ろうむさむらい); fugashi with unidic-lite reads as well as Sudachi but ships a 250 MB dictionary
as a source package; SudachiPy and sudachidict-small are wheels (42 MB), start in ~0.07 s and
read a message in ~0.02 ms. If the package is missing, readings fall back to `normalize` and
kana spellings of kanji words are simply not recognised (logged once).
"""

from __future__ import annotations

import logging
import re
import threading
from functools import lru_cache
from typing import Any, Final

from bot.nlu.normalize import normalize

log = logging.getLogger(__name__)

_MAX_CHARS: Final = 400
"""Longer messages are read in their first part only: an answer is said early."""

_lock = threading.Lock()
_tokenizer: Any = None
_loaded = False


def reading(text: str, *, fold: bool = True) -> str:
    """The normalised kana reading of `text` (hiragana, folded like `normalize`, and with
    long vowels shortened: けい/けー -> け, そう/そー -> そ, unless `fold` is false)."""
    read = _reading(text[:_MAX_CHARS])
    return _fold_length(read) if fold else read


@lru_cache(maxsize=4096)
def _fold_length(text: str) -> str:
    # Cached like the reading itself: the flow's own words are folded on every message.
    return _LONG_O.sub(r"\1", _LONG_E.sub(r"\1", text))


def has_kanji(text: str) -> bool:
    """Whether a reading can differ from the written form."""
    return any(_needs_reading(ch) for ch in text)


def available() -> bool:
    """Whether readings come from the dictionary (else they equal `normalize`)."""
    return _load() is not None


@lru_cache(maxsize=4096)
def _reading(text: str) -> str:
    tokenizer = _load()
    if tokenizer is None or not any(_needs_reading(ch) for ch in text):
        return normalize(text)
    with _lock:  # a Sudachi tokenizer is not safe to share between threads
        morphemes = tokenizer.tokenize(text)
        parts = [_read(m.surface(), m.reading_form()) for m in morphemes]
    return normalize("".join(parts))


# 「けいり」「けーり」「けり」, 「そうむ」「そーむ」: vowel length is spelled many ways (and
# `normalize` already drops ー), so readings compare without it.
_LONG_E = re.compile(r"([えけげせぜてでねへべぺめれ])い")
_LONG_O = re.compile(r"([おこごそぞとどのほぼぽもよろ])う")


def _read(surface: str, reading_form: str) -> str:
    # Sudachi gives unknown words (and symbols, latin letters) their surface or nothing.
    if not reading_form or not any(_needs_reading(ch) for ch in surface):
        return surface
    return reading_form


def _needs_reading(ch: str) -> bool:
    """Kanji (and the iteration mark 々) are what a reading changes."""
    return "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" or ch == "々"


def _load() -> Any:
    global _tokenizer, _loaded
    if _loaded:
        return _tokenizer
    with _lock:
        if not _loaded:
            try:
                from sudachipy import Dictionary  # type: ignore[import-untyped]

                _tokenizer = Dictionary(dict="small").tokenizer()
            except Exception as exc:  # missing package or dictionary: keep working without
                log.warning("nlu: no kana readings (%s); kana spellings of kanji words missed", exc)
                _tokenizer = None
            _loaded = True
    return _tokenizer
