"""Keyword rules: which choices a message names by their precise words.

Rules, in order:
1. A message that is exactly one of a choice's examples (or its id) names that choice.
2. Labels, keywords and longer examples are found anywhere in the message; a hit inside a
   longer hit of another choice does not count (「経理事務」 names 経理, not 一般事務's 「事務」;
   「転職はしない」 names stay, not change's 「転職」).
3. Negation: a hit of a choice that has an `opposite`, followed in its clause by an odd number
   of negations (ない, ません, へん, ちゃう, じゃない…), names the opposite instead
   (「転職はまだ考えてない」: change negated, so stay; 「嫌いじゃない」: no negated, so yes).
   Choices without an opposite are read as written (「評価されない」 is the complaint itself,
   「答えが出ない」 the unsure answer's own keyword). Two negations cancel (「嫌いってわけじゃない」 is negated once, 「好きじゃないわけじゃない」 not).
   The refusal word that did the negating is not an answer of its own.
4. Refusals before agreement: when a choice is named by a refusal word (違う, ちゃう, じゃない,
   いいえ…) or by a negation, choices named only by other words drop out, so 「好きじゃない」
   is a no even though 「好き」 is a yes keyword.
5. Doubt: a bare hesitation (「うーん」) or a message ending in a doubtful question (「〜のかな」,
   「どうだろう」) names the question's `unsure` choice, if it has one. A hesitation before an
   answer (「うーん、違うかな」) is only a pause.
6. Readings: when the written words name nothing, the same rules run on kana readings
   (`bot.nlu.reading`), so 「さいしょから」 and 「けいり」 are understood like 「最初から」 and 「経理」.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from bot.flows.schema import ChoiceSpec
from bot.nlu.memo import by_identity
from bot.nlu.normalize import HESITATION, normalize
from bot.nlu.reading import has_kanji, reading

REFUSALS: Final = ("いいえ", "違う", "ちがう", "ちゃう", "じゃない", "ではない", "ううん", "いや")
"""Words that turn an answer into a refusal; a keyword containing one is a refusal keyword."""

MIN_EXAMPLE_HIT: Final = 4
"""An example this long (normalised) found inside a message names its choice like a keyword."""

MIN_READING: Final = 2
"""A reading shorter than this (normalised) is too likely to be part of another word."""

NEGATIONS: Final = (
    "ない",
    "なく",
    "なかつ",
    "ません",
    "へん",
    "ひん",
    "ちゃう",
    "ちゃい",
    "ちがう",
    "違う",
    "ねえ",
)
"""Negations after a hit, normalised (small kana folded: 「なかった」 is なかつた)."""

_CLAUSE_END_NEGATIONS: Final = re.compile(r"(?:わん|らん|かん|せん)$")
"""Clipped negations at the end of a clause: 思わん, わからん, あかん, できせん."""

_NOT_NEGATIONS: Final = re.compile(
    r"しれな|しれん|しか.*?(?:ない|ません|ねえ|ないし)|かまわな|間違いな|まちがいな|なきや"
)
"""Look like negations but are not (かもしれない, 〜しかない, 間違いない, 〜なきゃ): blanked first
(normalised spellings)."""

DOUBTS: Final = (
    "のかな",
    "んかな",
    "のかなあ",
    "だろうか",
    "のだろう",
    "んだろう",
    "どうだろ",
    "どうだろう",
    "どうかな",
    "どうなんだろ",
    "どうなんだろう",
    "でしようか",
    HESITATION,
)
"""Endings that make the message a doubtful question rather than an answer (normalised)."""

_CLAUSE_BREAK: Final = re.compile(
    r"[、。,.!！?？\n\s・/…]+|(?<=けど)|(?<=けれど)|(?<=のに)|(?<=でも)(?=[^なあ])"
)

_REFUSALS_NORM: Final = tuple(normalize(w) for w in REFUSALS)
_NEGATIONS_NORM: Final = tuple(normalize(w) for w in NEGATIONS)
_NEGATOR_TERMS: Final = frozenset(_REFUSALS_NORM + _NEGATIONS_NORM) - {normalize("いいえ")}
_COPULA_NEGATIONS: Final = frozenset(normalize(w) for w in ("じゃない", "ではない", "でもない"))
"""「いやじゃない」 negates 「いや」; 「いや、違う」 only repeats it."""
_DOUBTS_NORM: Final = tuple(sorted({normalize(w) for w in DOUBTS}, key=len, reverse=True))


@dataclass(frozen=True, slots=True)
class Hit:
    """A label or keyword of `choice` found at text[start:end] (normalised text)."""

    choice: str
    start: int
    end: int
    refusal: bool
    negator: bool = False  # the term is only a negation (じゃない, 違う): it can negate a hit
    weak: bool = False  # a topic word or a hesitation: any other answer wins over it

    def inside(self, other: Hit) -> bool:
        return (
            other.start <= self.start
            and self.end <= other.end
            and (other.end - other.start) > (self.end - self.start)
        )


@dataclass(frozen=True, slots=True)
class Segmented:
    """A normalised message and where its clauses end (negation does not cross them)."""

    text: str
    ends: tuple[int, ...]

    def clause_end(self, position: int) -> int:
        return next((e for e in self.ends if e >= position), len(self.text))

    def negations(self, start: int, end: int, skip: Sequence[tuple[int, int]] = ()) -> int:
        """How many negations text[start:end] holds, outside the `skip` spans."""
        chars = list(self.text[start:end])
        for a, b in skip:
            for i in range(max(a, start), min(b, end)):
                chars[i - start] = " "
        region = "".join(chars)
        region = _NOT_NEGATIONS.sub(lambda m: " " * len(m.group()), region)
        count = 0
        for word in _NEGATIONS_NORM:
            count += region.count(word)
        if _CLAUSE_END_NEGATIONS.search(region.rstrip()):
            count += 1
        return count


def segment(text: str, *, read: bool = False) -> Segmented:
    """Normalise `text` clause by clause (as written, or as read in kana)."""
    parts = [reading(p) if read else normalize(p) for p in _CLAUSE_BREAK.split(text) if p]
    ends, total = [], 0
    for part in parts:
        total += len(part)
        ends.append(total)
    return Segmented("".join(parts), tuple(ends))


def named_choices(text: str, choices: Sequence[ChoiceSpec]) -> tuple[str, ...]:
    """Ids of the choices the message names, in the question's order, after the rules above."""
    norm = normalize(text)
    if not norm:
        return ()
    found = _named(norm, segment(text), choices, read=False)
    if found is None:
        found = _named(reading(text), segment(text, read=True), choices, read=True)
    return found or ()


def is_doubtful(text: str) -> bool:
    """A bare hesitation, or a message ending in a doubtful question (rule 5)."""
    return _doubtful(normalize(text))


def _doubtful(norm: str) -> bool:
    if not norm:
        return False
    bare = _FINAL_PARTICLES.sub("", norm)
    return norm.replace(HESITATION, "") == "" or bare.endswith(_DOUBTS_NORM)


_FINAL_PARTICLES: Final = re.compile(r"(?:あ|ね|ねえ|よ|わ)+$")


def negated(segmented: Segmented, start: int, end: int) -> bool:
    """Whether what sits at [start, end) is negated in its clause (rule 3)."""
    return segmented.negations(end, segmented.clause_end(end)) % 2 == 1


def is_refusal(term: str) -> bool:
    norm = normalize(term)
    return any(r in norm for r in _REFUSALS_NORM)


def _named(
    plain: str, segmented: Segmented, choices: Sequence[ChoiceSpec], *, read: bool
) -> tuple[str, ...] | None:
    """The rules on one spelling of the message; None when nothing at all was named."""
    if not plain:
        return None
    vocabularies = [(c, _readings(c) if read else _vocabulary(c)) for c in choices]
    exact = [c.id for c, v in vocabularies if plain == c.id or plain in v.examples]
    if len(exact) == 1:
        return (exact[0],)
    unsure = next((c.id for c in choices if c.unsure), None)
    if unsure is not None and _doubtful(plain):
        return (unsure,)
    key = tuple(choices) if isinstance(choices, tuple) else None
    index = (_reading_index if read else _term_index)(key) if key else _index(vocabularies)
    hits = [h for h in _hits(segmented.text, index) if _stands_alone(h, segmented)]
    hits = [h for h in hits if not any(h.inside(o) for o in hits if o.choice != h.choice)]
    if not hits and not exact:
        return None
    by_id = {c.id: c for c in choices}
    kept: list[Hit] = []
    strong: set[str] = set()
    negators: list[Hit] = []
    for hit in hits:
        opposite = by_id[hit.choice].opposite
        if opposite is None:  # only answers with an opposite are polar enough to negate
            kept.append(hit)
            if hit.refusal:
                strong.add(hit.choice)
            continue
        clause_end = segmented.clause_end(hit.end)
        # A negation belongs to the nearest answer before it: 「あんまり好きじゃない」 negates
        # 「好き」, not 「あんまり」.
        scope = min([o.start for o in hits if not o.negator and o.start >= hit.end] + [clause_end])
        others = [(o.start, o.end) for o in hits if o is not hit and not o.negator]
        # 「いや、違う」「ちゃうちゃう」: a refusal right after a refusal is emphasis.
        emphasis = hit.negator and any(
            o.negator
            and 0 <= o.start - hit.end <= 1
            and segmented.text[o.start : o.end] not in _COPULA_NEGATIONS
            for o in hits
            if o is not hit
        )
        if emphasis or segmented.negations(hit.end, scope, others) % 2 == 0:
            kept.append(hit)
            if hit.refusal:
                strong.add(hit.choice)
            continue
        # Negated: the refusal words after it were its negation, not answers of their own.
        negators += [o for o in hits if o.negator and hit.end <= o.start < scope]
        if opposite in by_id:
            kept.append(Hit(opposite, hit.start, hit.end, True, weak=hit.weak))
            if not hit.weak:
                strong.add(opposite)
    kept = [h for h in kept if h not in negators]
    if strong:
        kept = [h for h in kept if h.choice in strong]
    if any(not h.weak for h in kept):
        kept = [h for h in kept if not h.weak]
    named = {h.choice for h in kept} | set(exact)
    return tuple(c.id for c in choices if c.id in named)


_SHORT: Final = 2
_KANA_WORD: Final = re.compile(r"[ぁ-ゖ]+")
_FOLLOWERS: Final = frozenset("ですだねよかなわもとはつさやぜ")
"""What may follow a short kana word that stands alone: 「そうです」「うんうん」, not 「うんざり」."""


def _stands_alone(hit: Hit, segmented: Segmented) -> bool:
    """A kana keyword of one or two characters (はい, うん, そう, ない, まだ…) counts only as a
    word of its own: a whole clause, the start of one followed by a particle or a kanji, or the
    end of one; 「うんざり」「そうじ」「はいる」 hold it by chance."""
    text = segmented.text
    term = text[hit.start : hit.end]
    if len(term) > _SHORT or not _KANA_WORD.fullmatch(term):
        return True
    starts = {0, *segmented.ends}
    end = segmented.clause_end(hit.end)
    if hit.end == end:
        return True
    if hit.start not in starts:
        return False
    after = text[hit.end]
    if text.startswith(("だん", "どう"), hit.end):  # 相談, 運動
        return False
    if text.startswith(tuple(_COPULA_NEGATIONS), hit.end):  # 「いやじゃない」
        return True
    return after in _FOLLOWERS or after == term[0] or not _KANA_WORD.fullmatch(after)


def _is_weak(term: str) -> bool:
    """A hesitation keyword yields to any other answer in the message."""
    return term.replace(HESITATION, "") == ""


@dataclass(frozen=True, slots=True)
class _Vocabulary:
    terms: tuple[tuple[str, bool], ...]  # (normalised term, is a refusal)
    examples: frozenset[str]
    topic: frozenset[str] = frozenset()  # the weak terms among `terms`


@by_identity
def _vocabulary(choice: ChoiceSpec) -> _Vocabulary:
    """A choice's terms, normalised once (flows are immutable, so are their choices)."""
    examples = [normalize(e) for e in choice.examples]
    terms = [normalize(t) for t in (choice.label, *choice.keywords)]
    terms += [e for e in examples if len(e) >= MIN_EXAMPLE_HIT]
    topic = {normalize(t) for t in choice.topic} - set(terms)
    unique = dict.fromkeys(t for t in [*terms, *sorted(topic)] if t)
    return _Vocabulary(
        tuple((t, is_refusal(t)) for t in unique), frozenset(examples), frozenset(topic)
    )


@by_identity
def _readings(choice: ChoiceSpec) -> _Vocabulary:
    """The same terms read in kana; readings too short to be safe are left out."""
    written = _vocabulary(choice)
    terms = []
    sources = _term_sources(choice)
    for (_, refusal), source in zip(written.terms[: len(sources)], sources, strict=True):
        # Kana terms are matched as written already; folded again (もういい -> もいい) they
        # would only find words by chance.
        read = reading(source)
        if has_kanji(source) and len(read) >= MIN_READING:
            terms.append((read, refusal or is_refusal(read)))
    examples = frozenset(reading(e) for e in choice.examples if has_kanji(e))
    topic = frozenset(reading(t) for t in choice.topic if has_kanji(t)) - {t for t, _ in terms}
    terms += [(t, False) for t in sorted(topic) if len(t) >= MIN_READING]
    return _Vocabulary(tuple(dict.fromkeys(terms)), examples, topic)


def _term_sources(choice: ChoiceSpec) -> list[str]:
    """The written terms of `_vocabulary` (topic words aside), unnormalised, in its order."""
    return _sources(choice)


def _sources(choice: ChoiceSpec) -> list[str]:
    """The written terms of `_vocabulary`, unnormalised and in the same order."""
    sources = [*(choice.label, *choice.keywords)]
    sources += [e for e in choice.examples if len(normalize(e)) >= MIN_EXAMPLE_HIT]
    seen: dict[str, str] = {}
    for source in sources:
        norm = normalize(source)
        if norm and norm not in seen:
            seen[norm] = source
    return list(seen.values())


_TermIndex = dict[str, tuple[tuple[str, str, bool, bool], ...]]
"""First character of a term -> (choice id, term, is a refusal, is weak) for every term
starting so."""


def _index(vocabularies: Iterable[tuple[ChoiceSpec, _Vocabulary]]) -> _TermIndex:
    index: dict[str, list[tuple[str, str, bool, bool]]] = {}
    for choice, vocabulary in vocabularies:
        for key, refusal in vocabulary.terms:
            weak = key in vocabulary.topic or _is_weak(key)
            index.setdefault(key[0], []).append((choice.id, key, refusal, weak))
    return {first: tuple(terms) for first, terms in index.items()}


@by_identity
def _term_index(choices: tuple[ChoiceSpec, ...]) -> _TermIndex:
    """A question's choices (a tuple, as flows hold them) are indexed once."""
    return _index((c, _vocabulary(c)) for c in choices)


@by_identity
def _reading_index(choices: tuple[ChoiceSpec, ...]) -> _TermIndex:
    return _index((c, _readings(c)) for c in choices)


def _hits(norm: str, index: _TermIndex) -> Iterable[Hit]:
    """Every occurrence of every term; only terms starting with a character of `norm` can occur."""
    for first in set(norm):
        for choice, key, refusal, weak in index.get(first, ()):
            start = norm.find(key)
            while start >= 0:
                yield Hit(choice, start, start + len(key), refusal, key in _NEGATOR_TERMS, weak)
                start = norm.find(key, start + 1)
