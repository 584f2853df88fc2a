"""Prompt moderation by block list, checked before any GPU work.

A text is compared with the block list through its *skeleton*, the letters a reader sees rather than
the code points typed, so spelling tricks don't get past it:

- Compatibility forms fold (NFKD: fullwidth, mathematical and styled letters become plain letters) and
  combining marks are dropped, whether accents or strokes stacked on letters to break a word up.
- Invisible characters are ignored: Unicode's Default_Ignorable code points (zero-width characters,
  bidi controls, soft hyphen, variation selectors, tag characters, Hangul fillers), every other format
  character, and the braille blank U+2800. A blank may stand for nothing ("be<ZWSP>heading") or for a
  space ("child<U+3164>pornography"), so a text that holds one is checked under both readings.
- Letters that look like Latin ones become those Latin letters (Cyrillic es U+0441 -> "c", Greek
  omicron U+03BF -> "o"), from Unicode's confusables table as shipped by the `confusable-homoglyphs`
  package; then case folds.
- Letters spelled out one by one ("c s a m", "c.s.a.m", "b-e-h-e-a-d-i-n-g") are joined into a word,
  and a listed term found anywhere inside such a run blocks the text.
- English inflections fold (Porter's steps 1 and 5a), so a listed term also catches its plural and
  verb forms: "beheadings", "beheaded" for "beheading"; "rape" catches "raped" but not "rap".

And innocent words don't trip it: matching is on whole words, so "class" never matches a blocked "ass"
and "grass" passes. Text in another script is compared like any other: a word is blocked only when
every one of its letters is a lookalike, so that it reads as a listed term; ordinary Russian or Greek
does not. A term listed in another script is also compared with its letters kept as they are, so it
matches in upper case too (lookalike folding is case sensitive). A term of several words matches
those words in sequence whatever whitespace or punctuation lies between them, but not run together
("bloodbath" is not "blood bath").

Callers moderate prompts only: a negative prompt lists what is unwanted ("nsfw, nude").
"""

from __future__ import annotations

import functools
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

BLOCKLIST_ENV = "WANSERVE_BLOCKLIST_FILE"

#: Small on purpose: deployments bring their own list through WANSERVE_BLOCKLIST_FILE.
DEFAULT_BLOCK_LIST: tuple[str, ...] = (
    "child sexual abuse",
    "child pornography",
    "csam",
    "revenge porn",
    "non consensual",
    "beheading",
)

# Letters and digits form words; everything else (spaces, punctuation, underscores) separates them.
_WORD = re.compile(r"[^\W_]+")

# Unicode's Default_Ignorable_Code_Point ranges (DerivedCoreProperties.txt), which unicodedata does not
# expose: code points that render as nothing. The braille blank renders as a space but is not a space.
_DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
_BRAILLE_BLANK = 0x2800
# Marks and format characters are all in planes 0, 1 and 14; scanning only those keeps the one-off
# table build to a few tens of milliseconds.
_PLANES_WITH_MARKS = (range(0x20000), range(0xE0000, 0xE1000))


_Table = dict[int, str | None]


@dataclass(frozen=True)
class _FoldTables:
    """str.translate tables from a decomposed text to a comparable one: (blanks as nothing, as spaces)."""

    latin: tuple[_Table, _Table]  # lookalikes made Latin: the skeleton
    plain: tuple[_Table, _Table]  # lookalikes kept, for terms listed in other scripts
    blanks: frozenset[str]


def _latin_lookalike(char: str, homoglyphs: list[dict[str, str]]) -> str | None:
    """The ASCII letters or digits that Unicode's confusables table says `char` looks like, if any."""
    for homoglyph in homoglyphs:
        # Table entries carry bidi marks and combining marks ("n̩" for Greek eta): keep the base letters.
        target = "".join(
            c for c in unicodedata.normalize("NFKD", homoglyph["c"]) if unicodedata.category(c)[0] not in "MC"
        )
        if target.isascii() and target.isalnum():
            # Unicode folds "I" into "l"; we compare case-folded text, where an upper-case lookalike of
            # that stroke (Cyrillic U+0406, Greek capital iota) is a capital I.
            return "i" if target == "l" and char.isupper() else target.casefold()
    return None


@functools.cache
def _fold_tables() -> _FoldTables:
    """Built on first use (about 0.15 s): the confusables table is a 900 KB JSON file."""
    from confusable_homoglyphs import confusables

    lookalikes: _Table = {}
    for source, homoglyphs in confusables.confusables_data.items():
        # Only letters, digits and letter-like symbols (APL alpha); punctuation separates words anyway.
        if len(source) == 1 and not source.isascii() and unicodedata.category(source)[0] in "LNS":
            lookalike = _latin_lookalike(source, homoglyphs)
            if lookalike is not None:
                lookalikes[ord(source)] = lookalike
    marks: _Table = {
        code: None for plane in _PLANES_WITH_MARKS for code in plane if unicodedata.category(chr(code)) in ("Mn", "Me")
    }
    blanks = {code for first, last in _DEFAULT_IGNORABLE for code in range(first, last + 1)}
    blanks.add(_BRAILLE_BLANK)
    blanks.update(code for plane in _PLANES_WITH_MARKS for code in plane if unicodedata.category(chr(code)) == "Cf")
    as_nothing, as_space = marks | dict.fromkeys(blanks, None), marks | dict.fromkeys(blanks, " ")
    return _FoldTables(
        latin=(lookalikes | as_nothing, lookalikes | as_space),
        plain=(as_nothing, as_space),
        blanks=frozenset(map(chr, blanks)),
    )


def _readings(text: str, *, plain: bool = False) -> Iterator[str]:
    """The skeleton of `text`; with blanks read as spaces too if it holds one; with `plain`, the same
    again with lookalikes kept as they are.

    Readings are for comparison only: letters stay decomposed (NFKD), which is as good as composed
    when both sides are folded the same way, and cheaper.
    """
    if text.isascii():
        yield text.lower()
        return
    tables = _fold_tables()
    decomposed = unicodedata.normalize("NFKD", text)
    has_blank = not tables.blanks.isdisjoint(decomposed)
    for as_nothing, as_space in (tables.latin, tables.plain) if plain else (tables.latin,):
        # Lookalikes map before case folding: Cyrillic capital en looks like "H", its small en like no
        # Latin letter.
        yield decomposed.translate(as_nothing).casefold()
        if has_blank:
            yield decomposed.translate(as_space).casefold()


def normalise_text(text: str) -> str:
    """The skeleton of a text: compatibility forms folded, lookalikes made Latin, case folded, no marks,
    no invisible characters."""
    return next(_readings(text))


def _join_spelled_out(tokens: list[str]) -> tuple[list[str], list[str]]:
    """The words with each run of two or more one-letter tokens joined into one word, and those runs."""
    joined: list[str] = []
    runs: list[str] = []
    run: list[str] = []
    for token in [*tokens, ""]:  # the empty sentinel ends the last run
        if len(token) == 1:
            run.append(token)
            continue
        if len(run) > 1:
            runs.append("".join(run))
            joined.append(runs[-1])
        else:
            joined.extend(run)
        run.clear()
        if token:
            joined.append(token)
    return joined, runs


def _words_of(reading: str) -> list[str]:
    return _join_spelled_out(_WORD.findall(reading))[0]


def words(text: str) -> list[str]:
    """The normalised words of `text`, in order, letters spelled out one by one joined into a word."""
    return _words_of(normalise_text(text))


# Porter's stemmer, steps 1a-1c and 5a only: the inflections (plural, -ed, -ing), none of the derivations
# ("executive" must not fold into "execute"). Both sides are stemmed the same way, so a stem need not be a
# real word, only the same for every form of one.
def _shape(word: str) -> str:
    """Porter's consonant/vowel pattern, "c" or "v" per letter; "y" after a consonant is a vowel."""
    shape = ""
    for letter in word:
        shape += "v" if letter in "aeiou" or (letter == "y" and shape.endswith("c")) else "c"
    return shape


def _measure(shape: str) -> int:
    """Porter's m: the number of vowel-consonant sequences."""
    return shape.count("vc")


def _ends_cvc(stem: str, shape: str) -> bool:
    """Porter's *o: consonant-vowel-consonant at the end, the last not w, x or y ("hop", not "box")."""
    return shape.endswith("cvc") and stem[-1] not in "wxy"


@functools.lru_cache(maxsize=1 << 14)
def _stem(word: str) -> str:
    """The inflection-free form of an English word; other words unchanged."""
    if len(word) < 3 or word[-1] not in "sdgye" or not (word.isascii() and word.isalpha()):
        return word
    if word.endswith(("sses", "ies")):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    if word.endswith("eed"):
        if _measure(_shape(word[:-3])) > 0:
            word = word[:-1]
    else:
        for suffix in ("ed", "ing"):
            stem = word[: -len(suffix)]
            shape = _shape(stem)
            if word.endswith(suffix) and "v" in shape:
                if stem.endswith(("at", "bl", "iz")):
                    stem += "e"
                elif shape.endswith("c") and stem[-1] == stem[-2]:
                    stem = stem if stem[-1] in "lsz" else stem[:-1]
                elif _measure(shape) == 1 and _ends_cvc(stem, shape):
                    stem += "e"
                word = stem
                break
    if word.endswith("y") and "v" in _shape(word[:-1]):
        word = word[:-1] + "i"
    if word.endswith("e"):
        stem = word[:-1]
        shape = _shape(stem)
        if _measure(shape) > 1 or (_measure(shape) == 1 and not _ends_cvc(stem, shape)):
            word = stem
    return word


@dataclass(frozen=True)
class ModerationResult:
    """The verdict on one text, and the block-list term (as listed) that caused a block."""

    allowed: bool
    matched: str | None = None


def load_block_list(path: str | Path) -> list[str]:
    """One term per line; blank lines and '#' comments (whole-line or trailing) are ignored."""
    terms = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        term = line.split("#", 1)[0].strip()
        if term:
            terms.append(term)
    return terms


class Moderator:
    """Checks texts against a block list of words and phrases."""

    def __init__(self, block_list: Iterable[str] = DEFAULT_BLOCK_LIST) -> None:
        # first stem -> (term's stems, term as listed): a text is scanned once, and only terms starting
        # with the current word are compared.
        self._by_first: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        # (term's stems run together, term as listed), looked for inside spelled-out runs.
        self._spelled: list[tuple[str, str]] = []
        # Lookalike folding is case sensitive (Cyrillic capital te looks like "T", its small te does not),
        # so a term listed in another script is also compared in a reading that keeps its letters, where
        # an upper-case spelling matches it.
        self._plain_too = False
        for term in block_list:
            forms = {tuple(_stem(word) for word in _words_of(reading)) for reading in _readings(term, plain=True)}
            forms.discard(())
            self._plain_too = self._plain_too or len(forms) > 1
            for stems in forms:
                self._by_first.setdefault(stems[0], []).append((stems, term))
                self._spelled.append(("".join(stems), term))

    @classmethod
    def from_env(cls) -> Moderator:
        """The list in the file named by WANSERVE_BLOCKLIST_FILE, else the default list."""
        path = os.environ.get(BLOCKLIST_ENV)
        return cls(load_block_list(path) if path else DEFAULT_BLOCK_LIST)

    def check(self, text: str) -> ModerationResult:
        """Block the text if any listed term appears in its skeleton (see the module docstring)."""
        for reading in _readings(text, plain=self._plain_too):
            term = self._find(reading)
            if term is not None:
                return ModerationResult(allowed=False, matched=term)
        return ModerationResult(allowed=True)

    def _find(self, reading: str) -> str | None:
        text_words, runs = _join_spelled_out(_WORD.findall(reading))
        stems = [_stem(word) for word in text_words]
        for i, stem in enumerate(stems):
            for term_stems, term in self._by_first.get(stem, ()):
                if tuple(stems[i : i + len(term_stems)]) == term_stems:
                    return term
        if runs:
            # Spelled-out letters have no word boundaries to respect: "a c s a m" hides "csam".
            spelled = " ".join(runs)
            for letters, term in self._spelled:
                if letters in spelled:
                    return term
        return None
