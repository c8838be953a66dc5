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
# run of digits, and Presidio's phone matcher alone takes about 6 ms on 200 characters.
_DIGITS = re.compile(r"\d")
_SEVEN_DIGITS = re.compile(r"\d(?:\D{0,3}\d){6}")  # a phone number has at least seven
_NEEDS: dict[str, Callable[[str], bool]] = {
    "EMAIL_ADDRESS": lambda text: "@" in text,
    "PHONE_NUMBER": lambda text: _SEVEN_DIGITS.search(text) is not None,
    "URL": lambda text: "." in text,
    "MAC_ADDRESS": lambda text: ":" in text or "-" in text,
}


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
        self._recognizers: list[tuple[str, Callable[[str], bool], Any]] = [
            (entity, _NEEDS.get(entity, _has_digit), classes[entity]()) for entity in entities
        ]
        for name, regex in patterns:
            custom = PatternRecognizer(supported_entity=name, patterns=[Pattern(name, regex, 1.0)])
            self._recognizers.append((name, _always, custom))

    def mask(self, text: str) -> str:
        if not text:
            return text
        found = [
            (result.start, result.end, result.score, entity)
            for entity, needed, recognizer in self._recognizers
            if needed(text)
            for result in recognizer.analyze(text, [entity], None)
        ]
        return _replace(text, found) if found else text


def _has_digit(text: str) -> bool:
    return _DIGITS.search(text) is not None


def _always(text: str) -> bool:
    return True


def _replace(text: str, found: list[tuple[int, int, float, str]]) -> str:
    """Replace the best of each group of overlapping matches (highest score, then
    longest), from the end so that earlier offsets hold."""
    kept: list[tuple[int, int, float, str]] = []
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
