"""Render the prompt templates of this folder: ``render("diagnose_user", question=..., ...)``.

Templates are text files with ``$name`` placeholders (``string.Template``): braces in a template or in
dataset text need no escaping, and substituted values are never expanded again. A missing or an
unused field is an error, so a renamed placeholder cannot silently send a half-empty prompt.

Dataset text is untrusted. `data_tag` gives the delimiter of the DATA blocks a template wraps it in:
derived from the text itself (so a request, and the cache key made from it, stays reproducible) and
checked to occur nowhere in that text, so quoted text cannot close its own block.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from string import Template

PROMPTS_DIR = Path(__file__).resolve().parent


class PromptError(ValueError):
    pass


@cache
def load_template(name: str) -> Template:
    path = PROMPTS_DIR / f"{name}.txt"
    if not path.is_file():
        known = sorted(p.stem for p in PROMPTS_DIR.glob("*.txt"))
        raise PromptError(f"no prompt template {name!r} ({path}); known: {', '.join(known)}")
    return Template(path.read_text(encoding="utf-8"))


def placeholders(name: str) -> set[str]:
    template = load_template(name)
    return {m.group("named") or m.group("braced") for m in template.pattern.finditer(template.template)
            if m.group("named") or m.group("braced")}


def render(name: str, **fields: object) -> str:
    """The template ``prompts/<name>.txt`` with every ``$field`` substituted; strips the trailing newline."""
    wanted = placeholders(name)
    missing = sorted(wanted - fields.keys())
    if missing:
        raise PromptError(f"prompt {name!r}: missing field(s) {', '.join(missing)} (file {PROMPTS_DIR / name}.txt)")
    unused = sorted(fields.keys() - wanted)
    if unused:
        raise PromptError(f"prompt {name!r}: unknown field(s) {', '.join(unused)}; it takes {', '.join(sorted(wanted))}")
    return load_template(name).substitute({k: str(v) for k, v in fields.items()}).rstrip("\n")


def data_tag(*texts: str, length: int = 12) -> str:
    """A delimiter code that occurs in none of ``texts`` (deterministic for the same texts)."""
    joined = "\x00".join(texts)
    for salt in range(1000):
        tag = hashlib.sha256(f"{salt}\x00{joined}".encode()).hexdigest()[:length].upper()
        if all(tag not in text.upper() for text in texts):
            return tag
    raise PromptError("could not find a DATA delimiter absent from the text")  # needs ~1000 planted hashes
