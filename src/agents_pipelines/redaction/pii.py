"""Mask personal data (``redact_pii``) with Presidio's pattern recognizers.

Presidio's predefined recognizers for these entities are patterns with checks (the Luhn
checksum of a card number, the IBAN's mod-97 check, the phone number library's
per-region rules): they need no NLP engine, so no spaCy model is loaded or downloaded.
We call each recognizer's ``analyze`` ourselves rather than build an ``AnalyzerEngine``
(which would load a spaCy model). A match becomes ``<ENTITY>``; where two overlap, the
higher score wins (a US SSN over the phone number it also looks like).

Two changes to Presidio's defaults, both for machines without internet:
- the email check reads the public suffix list bundled with tldextract instead of
  downloading it (tldextract's default would try the network on first use);
- nothing else is fetched: these recognizers have no other I/O.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agents_pipelines.spec.models import PiiConfig

__all__ = ["PiiMasker", "masker_for"]

# Cheap tests that let a text skip a recognizer: most span attributes hold no "@" and no
# run of digits.
_DIGITS = re.compile(r"\d")
# Each test is a necessary condition of every pattern of Presidio's recognizer (read from
# presidio-analyzer 2.2.366's patterns): a card's first 7 digits, an SSN's 9 digits with at most
# two separators, an IBAN's country and check digits, an IPv4's "d.d.d.d", or an IPv6's
# "::" or eight full groups (every IPv6 and IPv4-in-IPv6 pattern holds one of these; a
# looser "d.d" let every decimal in a span's JSON through to the costly IP patterns).
# Presidio still finds and validates every match.
_CARD = re.compile(r"\d{4}[- ]?\d{3}")
_SSN = re.compile(r"\d{3}[- .]?\d{2}[- .]?\d{4}")
_IBAN = re.compile(r"[A-Z]{2}\d{2}")
_IP = re.compile(r"::|\d\.\d{1,3}\.\d{1,3}\.\d|(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]")
_NEEDS: dict[str, Callable[[str], bool]] = {
    "EMAIL_ADDRESS": lambda text: "@" in text,
    "CREDIT_CARD": lambda text: _CARD.search(text) is not None,
    "US_SSN": lambda text: _SSN.search(text) is not None,
    "IBAN_CODE": lambda text: _IBAN.search(text) is not None,
    "IP_ADDRESS": lambda text: _IP.search(text) is not None,
    "URL": lambda text: "." in text,
    "MAC_ADDRESS": lambda text: ":" in text or "-" in text,
}
# Where a phone number may be: seven or more characters of digits and separators, from a
# digit (or "+", "(") to a digit. Presidio's phone recognizer (the phonenumbers library,
# once per region) reads only a window around each run, not the whole text: on a run's
# span JSON it spent 90 % of the masking time on everything else (1.39 of 1.55 s of 11
# calls). The window keeps the context phonenumbers checks: the character before (a letter
# there means a hex id, not a number) and a few after (an extension "ext. 12", a time
# stamp's ":35" that makes "2026-12-06 02" no number).
_PHONE_RUN = re.compile(r"[+(]?\d[\d \t().\-/]{5,}\d")
_BEFORE, _AFTER = 1, 12
# An email address holds no whitespace (nor does Presidio's pattern), so it lies inside the
# whitespace-free token around an "@": the recognizer reads those tokens, not the whole text
# (its pattern costs about 1 ms per 1,000 characters it scans).
_WHITESPACE = re.compile(r"\s")
# Memos: a run masks the same texts again and again (a span's metadata JSON repeats the
# version hash whose digits look like a phone number to the run finder, each call's spans
# repeat the model name, the placeholder of unrecorded content...). Only texts of up to
# 4,096 characters are kept, 4,096 of them with their masked copies: at most about 32 MB of
# ASCII text per process, far less in practice (a run of 11 calls masks about 200 texts).
_MEMO_ENTRIES, _MEMO_MAX_CHARS = 4096, 4096


def _recognizer_classes() -> dict[str, Any]:
    from presidio_analyzer import predefined_recognizers as p

    return {
        "EMAIL_ADDRESS": _offline_email_recognizer(),
        "PHONE_NUMBER": p.PhoneRecognizer,
        "CREDIT_CARD": p.CreditCardRecognizer,
        "IBAN_CODE": p.IbanRecognizer,
        "IP_ADDRESS": p.IpRecognizer,
        "US_SSN": p.UsSsnRecognizer,
        "CRYPTO": p.CryptoRecognizer,
        "MAC_ADDRESS": p.MacAddressRecognizer,
        "URL": p.UrlRecognizer,
        "US_BANK_NUMBER": p.UsBankRecognizer,
        "US_DRIVER_LICENSE": p.UsLicenseRecognizer,
        "US_ITIN": p.UsItinRecognizer,
        "US_PASSPORT": p.UsPassportRecognizer,
        "UK_NHS": p.NhsRecognizer,
    }


class PiiMasker:
    """``mask(text)``: ``text`` with every match of the configured entities and patterns
    replaced by ``<ENTITY>``. Thread-safe: the recognizers keep no state between calls."""

    def __init__(self, entities: Sequence[str], patterns: Sequence[tuple[str, str]]):
        from presidio_analyzer import Pattern, PatternRecognizer

        classes = _recognizer_classes()
        self._finders: list[tuple[Callable[[str], bool], Finder]] = [
            (_NEEDS.get(entity, _has_digit), _finder(entity, classes[entity]()))
            for entity in entities
        ]
        for name, regex in patterns:
            custom = PatternRecognizer(supported_entity=name, patterns=[Pattern(name, regex, 1.0)])
            self._finders.append((_always, _finder(name, custom)))
        self._memo = functools.lru_cache(maxsize=_MEMO_ENTRIES)(self._mask)

    def mask(self, text: str) -> str:
        if not text:
            return text
        return self._memo(text) if len(text) <= _MEMO_MAX_CHARS else self._mask(text)

    def _mask(self, text: str) -> str:
        found = [match for needed, find in self._finders if needed(text) for match in find(text)]
        return _replace(text, found) if found else text


Match = tuple[int, int, float, str]  # start, end, score, entity
Finder = Callable[[str], list[Match]]


def _finder(entity: str, recognizer: Any) -> Finder:
    def find(text: str) -> list[Match]:
        results = recognizer.analyze(text, [entity], None)
        return [(r.start, r.end, r.score, entity) for r in results]

    windows = {"PHONE_NUMBER": _phone_windows, "EMAIL_ADDRESS": _email_windows}.get(entity)
    if windows is None:
        return find

    memo = functools.lru_cache(maxsize=_MEMO_ENTRIES)(find)

    def find_in_windows(text: str) -> list[Match]:
        return [
            (offset + start, offset + end, score, entity)
            for offset, window in windows(text)
            for start, end, score, _ in memo(window)
        ]

    return find_in_windows


def _email_windows(text: str) -> list[tuple[int, str]]:
    """(offset, token) of each whitespace-free token that holds an "@", found by string
    search (linear: a regex such as ``\\S*@\\S*`` is quadratic on a long token)."""
    windows: list[tuple[int, str]] = []
    at = text.find("@")
    while at != -1:
        start = max(text.rfind(space, 0, at) for space in " \t\n\r\f\v") + 1
        after = _WHITESPACE.search(text, at)
        end = after.start() if after else len(text)
        windows.append((start, text[start:end]))
        at = text.find("@", end)
    return windows


def _phone_windows(text: str) -> list[tuple[int, str]]:
    """(offset, window) of each run of ``_PHONE_RUN`` with its context, windows that
    overlap merged so that a number is read whole, once."""
    spans: list[list[int]] = []
    for run in _PHONE_RUN.finditer(text):
        start, end = max(run.start() - _BEFORE, 0), min(run.end() + _AFTER, len(text))
        if spans and start <= spans[-1][1]:
            spans[-1][1] = end
        else:
            spans.append([start, end])
    return [(start, text[start:end]) for start, end in spans]


def _has_digit(text: str) -> bool:
    return _DIGITS.search(text) is not None


def _always(text: str) -> bool:
    return True


def _replace(text: str, found: list[Match]) -> str:
    """Replace the best of each group of overlapping matches (highest score, then
    longest), from the end so that earlier offsets hold."""
    kept: list[Match] = []
    for match in sorted(found, key=lambda m: (-m[2], m[0] - m[1])):
        if all(match[1] <= k[0] or match[0] >= k[1] for k in kept):
            kept.append(match)
    for start, end, _score, entity in sorted(kept, reverse=True):
        text = f"{text[:start]}<{entity}>{text[end:]}"
    return text


def masker_for(config: PiiConfig) -> PiiMasker:
    """The masker of a workflow's ``redact_pii``, built once per distinct config (building
    Presidio's recognizers compiles their patterns)."""
    patterns = tuple((p.name, p.regex) for p in config.patterns)
    return _masker(tuple(config.entities), patterns)


@functools.lru_cache(maxsize=32)
def _masker(entities: tuple[str, ...], patterns: tuple[tuple[str, str], ...]) -> PiiMasker:
    return PiiMasker(entities, patterns)


@functools.cache
def _offline_email_recognizer() -> Any:
    """Presidio's EmailRecognizer, its domain check on tldextract's bundled suffix list."""
    import tldextract
    from presidio_analyzer.predefined_recognizers import EmailRecognizer

    # suffix_list_urls=(): the snapshot bundled with tldextract; cache_dir=None: no files.
    extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return bool(extract(pattern_text).fqdn != "")

    return OfflineEmailRecognizer
