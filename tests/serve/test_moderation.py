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
    normalise_text,
    words,
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


# Bypasses of issue 19 (point 8): each class of trick on its own, against a list like a deployment's.
listed = Moderator(["csam", "beheading", "child pornography", "ass"])


@pytest.mark.parametrize(
    ("text", "term"),
    [
        ("a \u0441sam video", "csam"),  # Cyrillic es
        ("a \u0421SAM video", "csam"),  # Cyrillic capital es
        ("a c\u0455\u0430m video", "csam"),  # Cyrillic dze and a
        ("CH\u0406LD PORNOGRAPHY", "child pornography"),  # Cyrillic capital I, which Unicode folds into "l"
        ("what an \u0430\u0455\u0455", "ass"),  # every letter Cyrillic: reads as the term all the same
    ],
)
def test_cyrillic_lookalikes_are_read_as_latin_letters(text: str, term: str) -> None:
    assert listed.check(text) == ModerationResult(allowed=False, matched=term)


@pytest.mark.parametrize(
    ("text", "term"),
    [
        ("child p\u03bfrnography", "child pornography"),  # Greek omicron
        ("cs\u03b1m", "csam"),  # Greek alpha
        ("behead\u03b9ng", "beheading"),  # Greek iota
        ("BEHE\u0391DING", "beheading"),  # Greek capital alpha
    ],
)
def test_greek_lookalikes_are_read_as_latin_letters(text: str, term: str) -> None:
    assert listed.check(text) == ModerationResult(allowed=False, matched=term)


@pytest.mark.parametrize("text", ["a c s a m video", "C  S  A  M", "c\ns\na\nm", "c s\u00a0a\u3000m"])
def test_letters_spelled_out_with_spaces_are_joined(text: str) -> None:
    assert listed.check(text) == ModerationResult(allowed=False, matched="csam")


@pytest.mark.parametrize("text", ["c.s.a.m", "C.S.A.M.", "c\u00b7s\u00b7a\u00b7m", "c\u2026s\u2026a\u2026m", "c_s_a_m"])
def test_letters_spelled_out_with_dots_are_joined(text: str) -> None:
    assert listed.check(text) == ModerationResult(allowed=False, matched="csam")


@pytest.mark.parametrize("text", ["b-e-h-e-a-d-i-n-g", "B-E-H-E-A-D-I-N-G-S", "\u2013".join("beheaded")])
def test_letters_spelled_out_with_hyphens_are_joined(text: str) -> None:
    assert listed.check(text) == ModerationResult(allowed=False, matched="beheading")


def test_a_term_hidden_inside_a_longer_spelled_out_run_is_caught() -> None:
    assert listed.check("x c s a m s").matched == "csam"


def test_a_phrase_spelled_out_next_to_a_plain_word_is_caught() -> None:
    assert listed.check("child p o r n o g r a p h y").matched == "child pornography"


@pytest.mark.parametrize(
    "text",
    [
        "c\u0336s\u0336a\u0336m\u0336",  # combining long stroke overlay (strikethrough)
        "c\u0335sam",  # combining short stroke overlay
        "cs\u20ddam",  # combining enclosing circle
        "c\u0301\u0302\u0303\u0304sam",  # stacked accents
        "cs\u034fam",  # combining grapheme joiner
    ],
)
def test_combining_marks_are_dropped(text: str) -> None:
    assert listed.check(text) == ModerationResult(allowed=False, matched="csam")


FILLERS = {
    "hangul filler": "\u3164",
    "hangul choseong filler": "\u115f",
    "hangul jungseong filler": "\u1160",
    "halfwidth hangul filler": "\uffa0",
    "braille pattern blank": "\u2800",
    "variation selector 16": "\ufe0f",
    "variation selector 1": "\ufe00",
    "variation selector 17": "\U000e0100",
    "tag latin small letter c": "\U000e0063",
    "language tag": "\U000e0001",
    "zero width space": "\u200b",
    "zero width non-joiner": "\u200c",
    "zero width joiner": "\u200d",
    "word joiner": "\u2060",
    "byte order mark": "\ufeff",
    "soft hyphen": "\u00ad",
    "mongolian vowel separator": "\u180e",
    "right-to-left mark": "\u200f",
}


@pytest.mark.parametrize("filler", FILLERS.values(), ids=FILLERS.keys())
def test_filler_characters_inside_a_word_are_ignored(filler: str) -> None:
    assert listed.check(f"a cs{filler}am video") == ModerationResult(allowed=False, matched="csam")


@pytest.mark.parametrize("filler", FILLERS.values(), ids=FILLERS.keys())
def test_filler_characters_between_every_letter_are_ignored(filler: str) -> None:
    assert listed.check(filler.join("beheading")) == ModerationResult(allowed=False, matched="beheading")


@pytest.mark.parametrize("filler", FILLERS.values(), ids=FILLERS.keys())
def test_filler_characters_standing_for_a_space_still_separate_a_phrase(filler: str) -> None:
    assert listed.check(f"child{filler}pornography") == ModerationResult(allowed=False, matched="child pornography")


@pytest.mark.parametrize("text", ["beheadings", "beheaded", "Beheads", "behead", "a beheading's aftermath"])
def test_plural_and_verb_forms_of_a_listed_term_are_caught(text: str) -> None:
    assert listed.check(text) == ModerationResult(allowed=False, matched="beheading")


@pytest.mark.parametrize("text", ["asses", "csams", "child pornographies"])
def test_plural_of_a_listed_noun_is_caught(text: str) -> None:
    assert not listed.check(text).allowed


def test_inflections_fold_to_the_listed_word_not_to_a_shorter_one() -> None:
    verbs = Moderator(["rape", "stab"])
    for text in ["raped", "rapes", "raping", "stabbed", "stabbing", "stabs"]:
        assert not verbs.check(text).allowed, text
    for text in ["rap", "rapping", "rapper", "stable", "stability"]:
        assert verbs.check(text).allowed, text


@pytest.mark.parametrize(
    "text",
    ["a class of students", "classes", "the grass is green", "grasses and brass", "assess the asset", "as is"],
)
def test_whole_word_matching_lets_longer_and_shorter_words_pass(text: str) -> None:
    assert listed.check(text).allowed


@pytest.mark.parametrize("text", ["scsam", "csamx", "a csamplified sound", "tcsams", "beheadingly"])
def test_a_listed_term_inside_a_longer_word_is_allowed(text: str) -> None:
    assert listed.check(text).allowed


@pytest.mark.parametrize(
    "text",
    [
        "Кот сидит на окне и смотрит на снег, кинематографичный свет",
        "Ένας σκύλος τρέχει στην παραλία με τον ήλιο να δύει",  # noqa: RUF001 (real Greek)
        "Лиса бежит по снегу, cinematic lighting, 35mm",
        "Σκηνή: ένας καφές σε ένα μικρό καφέ, close-up",
    ],
)
def test_ordinary_russian_and_greek_text_is_allowed(text: str) -> None:
    assert listed.check(text).allowed


def test_a_listed_term_in_another_script_matches_that_script() -> None:
    russian = Moderator(["убийство"])
    assert russian.check("сцена: УБИЙСТВО в снегу").matched == "убийство"
    assert russian.check("сцена: лиса в снегу").allowed


@pytest.mark.parametrize("text", ["U.S.A. road trip", "an A/B test", "I am a fox", "x y z axes"])
def test_ordinary_single_letters_are_allowed(text: str) -> None:
    assert listed.check(text).allowed


def test_words_joins_spelled_out_letters_and_folds_lookalikes() -> None:
    assert words("C.S.A.M and the f o x, \u0441at") == ["csam", "and", "the", "fox", "cat"]
    assert normalise_text("\u0421S\u200bAM\u0336") == "csam"
