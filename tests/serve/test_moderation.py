"""Moderation: blocked terms caught through Unicode tricks, innocent words left alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve.moderation import (
    BLOCKLIST_ENV,
    DEFAULT_BLOCK_LIST,
    ModerationResult,
    Moderator,
    load_block_list,
)

moderator = Moderator(["ass", "blood bath", "naïve term"])


def fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def test_allowed_text_has_no_match() -> None:
    assert moderator.check("a fox in the snow") == ModerationResult(allowed=True, matched=None)


@pytest.mark.parametrize(
    "text",
    [
        "what an ass",
        "What an ASS!",
        f"what an {fullwidth('ass')}",
        "what an a\u200bs\u200ds",  # zero-width space and joiner inside the word
        "what an a\u00ads\u2060s",  # soft hyphen and word joiner
        "what an \U0001d41a\U0001d42c\U0001d42c",  # mathematical bold letters
        "what an àśš",  # accents
        "what an (ass).",
    ],
)
def test_blocked_word_is_caught_through_normalisation_tricks(text: str) -> None:
    assert moderator.check(text) == ModerationResult(allowed=False, matched="ass")


@pytest.mark.parametrize("text", ["a class of students", "an assassin's creed", "bass guitar", "passage"])
def test_words_that_merely_contain_a_blocked_word_are_allowed(text: str) -> None:
    assert moderator.check(text).allowed


@pytest.mark.parametrize(
    "text",
    ["a blood bath", "a BLOOD   bath", "a blood-bath", "a blood,\n bath", "a blood\u200b_bath"],
)
def test_phrase_matches_whatever_separates_its_words(text: str) -> None:
    assert moderator.check(text) == ModerationResult(allowed=False, matched="blood bath")


def test_phrase_words_apart_are_allowed() -> None:
    assert moderator.check("blood on the bath mat").allowed
    assert moderator.check("a bloodbath").allowed  # one word, not the listed phrase


def test_listed_term_with_accents_matches_text_without_them() -> None:
    assert moderator.check("a NAIVE term") == ModerationResult(allowed=False, matched="naïve term")


def test_block_list_file_ignores_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "blocklist.txt"
    path.write_text("# house list\n\nfoo\nbar baz  # a phrase\n   \n", encoding="utf-8")
    assert load_block_list(path) == ["foo", "bar baz"]


def test_from_env_reads_the_file_named_by_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "blocklist.txt"
    path.write_text("zebra\n", encoding="utf-8")
    monkeypatch.setenv(BLOCKLIST_ENV, str(path))
    loaded = Moderator.from_env()
    assert loaded.check("a Zebra").matched == "zebra"
    assert loaded.check(DEFAULT_BLOCK_LIST[0]).allowed


def test_from_env_without_the_variable_uses_the_default_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BLOCKLIST_ENV, raising=False)
    assert not Moderator.from_env().check(f"about {DEFAULT_BLOCK_LIST[0]}").allowed


def test_empty_terms_in_the_list_block_nothing() -> None:
    assert Moderator(["", "  ", "!!"]).check("anything at all !!").allowed
