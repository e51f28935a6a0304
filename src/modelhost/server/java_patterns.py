"""Java regular expressions (botocore's ``pattern`` traits are written for the Java service) in the
``regex`` module's dialect."""

from __future__ import annotations

import functools
import re

import regex

# Java's POSIX classes are ASCII-only, while `regex` would read them as Unicode properties.
_JAVA_POSIX = {
    "Lower": "a-z",
    "Upper": "A-Z",
    "ASCII": r"\x00-\x7F",
    "Alpha": "a-zA-Z",
    "Digit": "0-9",
    "Alnum": "a-zA-Z0-9",
    "Punct": r"!-/:-@\[-`{-~",
    "Graph": r"!-~",
    "Print": r" -~",
    "Blank": r" \t",
    "Cntrl": r"\x00-\x1F\x7F",
    "XDigit": "0-9a-fA-F",
    "Space": r" \t\n\x0B\f\r",
}
# Java's \d \w \s are ASCII-only by default too; `regex`'s ASCII flag cannot be used instead
# because it would also make \p{L} ASCII-only.
_JAVA_SHORTHAND = {
    "d": "0-9",
    "D": "0-9",
    "w": "a-zA-Z0-9_",
    "W": "a-zA-Z0-9_",
    "s": r" \t\n\x0B\f\r",
    "S": r" \t\n\x0B\f\r",
}
# Java writes supplementary characters as UTF-16 surrogate pairs (`\uD800\uDC00`); Python needs
# the code point itself.
_SURROGATE_PAIR = re.compile(r"\\u(D[89AB][0-9A-F]{2})\\u(D[C-F][0-9A-F]{2})", re.IGNORECASE)


def _join_surrogates(m: re.Match[str]) -> str:
    hi, lo = int(m.group(1), 16), int(m.group(2), 16)
    return "\\U%08X" % (0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))


def translate_java_pattern(pattern: str) -> str:
    """Rewrite the Java-only bits of a botocore ``pattern`` into `regex` syntax."""
    return _translate(pattern)[0]


def _translate(pattern: str) -> tuple[str, bool]:
    """Translate; the flag says whether nested sets were used (needs `regex` V1 syntax)."""
    pattern = _SURROGATE_PAIR.sub(_join_surrogates, pattern)
    nested = "&&" in pattern  # Java class intersection, which only V1 understands
    out: list[str] = []
    depth = 0  # character-class nesting, so POSIX classes expand to ranges or to a class
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            ranges: str | None = None
            neg = False
            step = 2
            if nxt in "pP" and i + 2 < n and pattern[i + 2] == "{":
                end = pattern.find("}", i + 3)
                name = pattern[i + 3 : end] if end != -1 else ""
                name = name[2:] if name.startswith("Is") and name[2:] in _JAVA_POSIX else name
                if end != -1 and name in _JAVA_POSIX:
                    ranges, neg, step = _JAVA_POSIX[name], nxt == "P", end + 1 - i
            elif nxt in _JAVA_SHORTHAND:
                ranges, neg = _JAVA_SHORTHAND[nxt], nxt.isupper()
            if ranges is not None:
                if depth and not neg:
                    out.append(ranges)
                else:
                    # Outside a class (or negated) it has to be a set of its own; a set
                    # inside a set needs `regex` V1 syntax.
                    nested = nested or bool(depth)
                    out.append(f"[{'^' if neg else ''}{ranges}]")
            elif nxt == "z":
                out.append(r"\Z")  # Java \z is the absolute end, which is Python's \Z
            else:
                out.append(c + nxt)
            i += step
            continue
        if c == "[":
            depth += 1
        elif c == "]" and depth:
            depth -= 1
        out.append(c)
        i += 1
    return "".join(out), nested


@functools.cache
def compile_pattern(pattern: str) -> regex.Pattern[str] | None:
    """Compile a botocore pattern once; None (cached too) when it cannot be translated."""
    translated, nested = _translate(pattern)
    # V1 only when needed: it reads `--` and `||` inside sets as operators, unlike Java.
    flags = regex.V1 if nested else regex.V0
    try:
        return regex.compile(translated, flags)
    except (regex.error, ValueError, OverflowError, RecursionError):
        return None
