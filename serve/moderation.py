"""Prompt moderation by block list, checked before any GPU work.

Matching is on whole words after normalisation, so spelling tricks don't get past it and innocent
words don't trip it: NFKC (fullwidth and styled letters become plain), case folding, accents
stripped, invisible format characters (zero-width joiners, soft hyphens, bidi marks) removed.
A term of several words matches those words in sequence whatever whitespace or punctuation lies
between them; "class" never matches a blocked "ass".
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable
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


def normalise_text(text: str) -> str:
    """The comparable form of a text: NFKC, case-folded, no diacritics, no format characters."""
    text = unicodedata.normalize("NFKC", text).casefold()
    # NFKD splits "é" into "e" + a combining accent that is then dropped.
    decomposed = unicodedata.normalize("NFKD", text)
    kept = (c for c in decomposed if not unicodedata.combining(c) and unicodedata.category(c) != "Cf")
    return unicodedata.normalize("NFKC", "".join(kept))


def words(text: str) -> list[str]:
    """The normalised words of `text`, in order."""
    return _WORD.findall(normalise_text(text))


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
        # first word -> (term's words, term as listed): a text is scanned once, and only terms
        # starting with the current word are compared.
        self._by_first: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        for term in block_list:
            term_words = tuple(words(term))
            if term_words:
                self._by_first.setdefault(term_words[0], []).append((term_words, term))

    @classmethod
    def from_env(cls) -> Moderator:
        """The list in the file named by WANSERVE_BLOCKLIST_FILE, else the default list."""
        path = os.environ.get(BLOCKLIST_ENV)
        return cls(load_block_list(path) if path else DEFAULT_BLOCK_LIST)

    def check(self, text: str) -> ModerationResult:
        """Block the text if any listed term appears in it as whole words."""
        text_words = words(text)
        for i, word in enumerate(text_words):
            for term_words, term in self._by_first.get(word, ()):
                if tuple(text_words[i : i + len(term_words)]) == term_words:
                    return ModerationResult(allowed=False, matched=term)
        return ModerationResult(allowed=True)
