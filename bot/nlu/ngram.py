"""The fallback classifier: character n-grams, TF-IDF weighted, pure Python.

It needs no package beyond the standard library, so the bot still understands typed answers
(somewhat less well) when the sentence-encoder model cannot load.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Final

from bot.nlu.intents import Intent, Thresholds
from bot.nlu.normalize import normalize

Vector = dict[str, float]

SIZES: Final = (1, 2, 3)


class NgramClassifier:
    """Nearest examples by cosine similarity of character 1- to 3-gram TF-IDF vectors."""

    def __init__(self, intents: Sequence[Intent], *, thresholds: Thresholds) -> None:
        self.name = "ngram"
        self.thresholds = thresholds
        grams: dict[str, list[Counter[str]]] = {}
        for intent in intents:
            if intent.key not in grams:
                grams[intent.key] = [_grams(t) for t in intent.texts if normalize(t)]
        documents = [g for per_intent in grams.values() for g in per_intent]
        frequency: Counter[str] = Counter(g for doc in documents for g in doc)
        total = len(documents) or 1
        self._idf = {g: math.log((1 + total) / (1 + n)) + 1.0 for g, n in frequency.items()}
        self._default_idf = math.log(1 + total) + 1.0
        self._examples = {
            key: [self._vector(g) for g in per_intent] for key, per_intent in grams.items()
        }

    def knows(self, key: str) -> bool:
        return key in self._examples

    def scores(self, texts: Sequence[str], keys: Sequence[str]) -> list[dict[str, float]]:
        """For each text, the similarity of its nearest example in each intent of `keys`."""
        result = []
        for text in texts:
            query = self._vector(_grams(text))
            result.append(
                {
                    key: max((_dot(query, e) for e in self._examples[key]), default=0.0)
                    for key in keys
                    if key in self._examples
                }
            )
        return result

    def _vector(self, grams: Counter[str]) -> Vector:
        vector = {
            g: (1 + math.log(n)) * self._idf.get(g, self._default_idf) for g, n in grams.items()
        }
        norm = math.sqrt(sum(w * w for w in vector.values())) or 1.0
        return {g: w / norm for g, w in vector.items()}


def _grams(text: str) -> Counter[str]:
    norm = normalize(text)
    return Counter(norm[i : i + n] for n in SIZES for i in range(len(norm) - n + 1))


def _dot(a: Vector, b: Vector) -> float:
    if len(a) > len(b):
        a, b = b, a
    return sum(w * b.get(g, 0.0) for g, w in a.items())
