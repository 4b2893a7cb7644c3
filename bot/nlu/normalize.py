"""One normalisation for keywords, examples and user input alike, and a lighter one for models."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_KATAKANA = {chr(c): chr(c - 0x60) for c in range(ord("ァ"), ord("ヶ") + 1)}
_SMALL_KANA = str.maketrans("ぁぃぅぇぉっゃゅょゎ", "あいうえおつやゆよわ")
_LONG_VOWELS = re.compile(r"[ー〜~～]+")
_NOISE = re.compile(r"[\s\W_]+", re.UNICODE)
_REPEATS = re.compile(r"(.)\1{2,}")
_SPACES = re.compile(r"\s+")
_PUNCT_RUNS = re.compile(r"([^\w\s])\1+")
# 「うーん」「う〜ん」「んー」 hesitate; folding their long vowel would make them 「うん」 (yes).
# They keep a mark of their own (ゞ survives the punctuation filter) and match only each other.
_HESITATION = re.compile(r"(?:^|(?<=\W))(?:[うぅ]+[ー〜~～]+[んむ]+|ん[ー〜~～]+)")
# Kansai negatives folded into standard ones, so 「できへん」 meets 「できない」's keywords.
_DIALECT = (
    (re.compile(r"(?:せえ|せー|しい|し)へん|せえひん|しいひん"), "しない"),
    (re.compile(r"(?:でき|でけ)へん"), "できない"),
    (re.compile(r"わか(?:ら|れ)へん"), "わからない"),
    (re.compile(r"あらへん"), "ない"),
    (re.compile(r"(思|おも)わへん"), r"\1わない"),
    (re.compile(r"(?:知|し)らへん"), "しらない"),
)
HESITATION: str = "うゞん"
"""What every spelling of 「うーん」 normalises to."""


@lru_cache(maxsize=256)
def normalize(text: str) -> str:
    """NFKC, lower case, katakana to hiragana, small kana and long vowels folded, no punctuation.

    The hesitation 「うーん」 is kept apart from 「うん」 (see `HESITATION`).

    Repeated characters (3 or more) collapse to one, so 「つまんないいいい」 matches 「つまんない」.
    The last few results are kept: one message is looked at by several rules in a row, and
    flow words (a question's 「これで全部」) come back on every message.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(_KATAKANA.get(ch, ch) for ch in text)
    text = _HESITATION.sub(HESITATION, text)
    for pattern, standard in _DIALECT:
        text = pattern.sub(standard, text)
    text = text.translate(_SMALL_KANA)
    text = _LONG_VOWELS.sub("", text)
    text = _NOISE.sub("", text)
    return _REPEATS.sub(r"\1", text)


def tidy(text: str) -> str:
    """What an embedding model reads: NFKC (width folded), runs collapsed, script kept.

    Models know 「エクセル」 and 「つまらない」 as written; hiragana-folding them, as `normalize`
    does for matching, would turn common words into spellings the model rarely saw.
    """
    text = unicodedata.normalize("NFKC", text).strip()
    text = _SPACES.sub(" ", text)
    text = _PUNCT_RUNS.sub(r"\1", text)
    text = re.sub(r"[ー〜~]{2,}", "ー", text)
    return _REPEATS.sub(r"\1\1", text)
