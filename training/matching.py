"""Answer matchers, picked by name: does a prediction answer the reference?

``vqa`` (the default) normalises the way a VQA user expects: case, whitespace, punctuation, articles,
number words vs digits, yes/no variants, and multiple-choice answers given as a letter ("(B)", "B.",
"option b") or as the option's text (options are read from the question: "A. red", "(B) blue", ...).
``exact`` compares the stripped strings.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable

Matcher = Callable[[str, str, str | None], bool]

NUMBER_WORDS = {
    "zero": "0", "none": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "thirteen": "13",
    "fourteen": "14", "fifteen": "15", "sixteen": "16", "seventeen": "17", "eighteen": "18",
    "nineteen": "19", "twenty": "20",
}
YES_NO = {
    "yes": "yes", "yeah": "yes", "yep": "yes", "true": "yes", "correct": "yes", "right": "yes", "y": "yes",
    "no": "no", "nope": "no", "false": "no", "incorrect": "no", "wrong": "no", "n": "no",
}
ARTICLES = {"a", "an", "the"}
_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
_DECIMAL = re.compile(r"(?<=\d)[.,](?=\d)")  # keep 3.5 and 1,000 intact while stripping punctuation
# A bare letter, "(B)", "B.", "B)", "option B", "answer: (b) red" — the letter must stand alone.
_LETTER = re.compile(r"^\s*(?:the\s+)?(?:answer|option|choice)?\s*(?:is|:)?\s*\(?([A-Za-z])\)?(?:[.):]|\s|$)", re.I)
_OPTION = re.compile(r"(?:^|\n|\s)\(?([A-H])[.)]\s*([^\n]+?)(?=\s+\(?[A-H][.)]\s|\n|$)")


def normalize(text: str) -> str:
    """Lower case, decimal marks kept, punctuation dropped, articles dropped, number words as digits."""
    text = _DECIMAL.sub(lambda m: "\0" if m.group(0) == "." else "", text.lower().strip())
    text = _PUNCT.sub(" ", text).replace("\0", ".")
    words = [NUMBER_WORDS.get(w, w) for w in text.split() if w not in ARTICLES]
    if len(words) == 1:
        words = [YES_NO.get(words[0], words[0])]
    return " ".join(words)


def choice_letter(text: str) -> str | None:
    """The multiple-choice letter a text gives, if it is written as one ("(B)", "B.", "option b")."""
    match = _LETTER.match(text)
    if not match:
        return None
    rest = text[match.end():].strip()
    letter = match.group(1).upper()
    # "a" alone is an article, not option A, unless it is marked as a choice
    if letter in {"A", "I"} and not re.search(r"[().:]|option|choice|answer", text[: match.end()], re.I) and rest:
        return None
    return letter


def parse_options(question: str | None) -> dict[str, str]:
    """Options listed in a question as ``A. text`` / ``(A) text`` / ``A) text``, letter -> normalised text."""
    if not question:
        return {}
    return {m.group(1): normalize(m.group(2)) for m in _OPTION.finditer(question)}


def match_exact(prediction: str, reference: str, question: str | None = None) -> bool:
    return prediction.strip() == reference.strip()


def match_vqa(prediction: str, reference: str, question: str | None = None) -> bool:
    pred, ref = normalize(prediction), normalize(reference)
    if pred == ref and pred:
        return True
    ref_letter = _bare_letter(reference)
    pred_letter = choice_letter(prediction)
    options = parse_options(question)
    if ref_letter is not None:
        if pred_letter == ref_letter:
            return True
        return bool(options.get(ref_letter)) and pred == options[ref_letter]
    if pred_letter is not None and options.get(pred_letter):
        return options[pred_letter] == ref
    return False


def _bare_letter(reference: str) -> str | None:
    """A reference is a choice letter only when it is nothing but one ("B", "(B)", "B.")."""
    match = re.fullmatch(r"\s*\(?([A-Za-z])[.)]?\s*", reference)
    return match.group(1).upper() if match else None


MATCHERS: dict[str, Matcher] = {"vqa": match_vqa, "exact": match_exact}


def get_matcher(name: str) -> Matcher:
    try:
        return MATCHERS[name]
    except KeyError:
        raise ValueError(f"unknown matcher {name!r}; choose one of {sorted(MATCHERS)}") from None
