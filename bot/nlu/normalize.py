"""One normalisation for keywords, examples and user input alike."""

from __future__ import annotations

import re
import unicodedata

_KATAKANA = {chr(c): chr(c - 0x60) for c in range(ord("ァ"), ord("ヶ") + 1)}
_SMALL_KANA = str.maketrans("ぁぃぅぇぉっゃゅょゎ", "あいうえおつやゆよわ")
_LONG_VOWELS = re.compile(r"[ー〜~～]+")
_NOISE = re.compile(r"[\s\W_]+", re.UNICODE)
_REPEATS = re.compile(r"(.)\1{2,}")


def normalize(text: str) -> str:
    """NFKC, lower case, katakana to hiragana, small kana and long vowels folded, no punctuation.

    Repeated characters (3 or more) collapse to one, so 「つまんないいいい」 matches 「つまんない」.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(_KATAKANA.get(ch, ch) for ch in text)
    text = text.translate(_SMALL_KANA)
    text = _LONG_VOWELS.sub("", text)
    text = _NOISE.sub("", text)
    return _REPEATS.sub(r"\1", text)
