"""redact_pii's masker on its own: the shortcuts that keep it near 1 ms per LLM call (a
memo per text and per phone-number window, cheap tests that let a text skip a recognizer,
cost_summary.json redacted value by value) never let personal data through."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agents_pipelines.redaction import masking, redact
from agents_pipelines.redaction.pii import masker_for
from agents_pipelines.spec.models import PiiConfig
from agents_pipelines.tracking.session import _write_artifact

FILLER = "The parcel left the warehouse on time and the courier was polite. " * 200


def test_an_email_in_a_long_text_without_other_triggers_is_masked() -> None:
    text = FILLER + "write to jane.doe@example.com please" + FILLER
    assert len(text) > 4096  # past the memo's limit: masked the long way
    with masking(PiiConfig()):
        assert redact(text) == FILLER + "write to <EMAIL_ADDRESS> please" + FILLER
        short = "write to jane.doe@example.com please"
        assert redact(short) == redact(short) == "write to <EMAIL_ADDRESS> please"


def test_a_text_whose_only_digits_are_a_card_number_is_masked() -> None:
    with masking(PiiConfig()):
        assert redact("paid with 4111-1111-1111-1111 today") == "paid with <CREDIT_CARD> today"


def test_the_memo_gives_each_text_its_own_result() -> None:
    masker = masker_for(PiiConfig())
    first = masker.mask("call +1 415-555-0132 now")
    again = masker.mask("call +1 415-555-0132 now")
    other = masker.mask("call +1 415-555-0132 or mail a@b.example.org")
    assert first == again == "call <PHONE_NUMBER> now"
    assert other == "call <PHONE_NUMBER> or mail <EMAIL_ADDRESS>"


def test_a_phone_number_is_read_in_its_context() -> None:
    """phonenumbers checks the characters around a number: a time stamp is none, an
    extension belongs to the number, digits inside a hex id are none."""
    with masking(PiiConfig()):
        assert redact("at 2026-12-06 02:35:26 ok") == "at 2026-12-06 02:35:26 ok"
        assert redact("call 415-555-0132 ext. 12 today") == "call <PHONE_NUMBER> today"
        hex_id = '{"version": "fb6f2a2620139555d3582eec89dbe1a7"}'
        assert redact(hex_id) == hex_id
        two = redact("a +1 415-555-0132, b +44 20 7946 0958")
        assert two == "a <PHONE_NUMBER>, b <PHONE_NUMBER>"


def test_cost_summary_numbers_stay_and_its_text_is_masked(tmp_path: Path) -> None:
    summary = {"total_tokens": 4155550132, "error": "no reply for jane.doe@example.com"}
    state = {"phone": 4155550132}  # a user's value: a number may be personal data
    with masking(PiiConfig()):
        _write_artifact(tmp_path / "cost_summary.json", summary)
        _write_artifact(tmp_path / "inputs.json", state)
    written = json.loads((tmp_path / "cost_summary.json").read_text())
    assert written == {"total_tokens": 4155550132, "error": "no reply for <EMAIL_ADDRESS>"}
    state_text = (tmp_path / "inputs.json").read_text()
    assert "4155550132" not in state_text
    assert "<PHONE_NUMBER>" in state_text


def test_cost_summary_rows_are_made_and_written_one_at_a_time(tmp_path: Path) -> None:
    """A map's summary has a row per call: each row is made, redacted and written before
    the next is made (none is held to the end), and the file is what json.dump wrote."""
    import weakref

    from agents_pipelines.redaction import redact_value
    from agents_pipelines.usage.cost_summary_json import JsonWithRows

    class Row(dict[str, object]):  # a dict that can be watched
        pass

    def row(i: int) -> Row:
        return Row(item=i, cost_usd=0.5, error=None if i else "mail jane.doe@example.com")

    alive: list[weakref.ref[Row]] = []

    def rows() -> Any:
        for i in range(50):
            # At most the row just written (still named by the writer's loop); rows hold
            # no cycles, so a row no longer named is gone without a collection.
            assert sum(ref() is not None for ref in alive) <= 1
            made = row(i)
            alive.append(weakref.ref(made))
            yield made
            del made

    head = {"schema_version": 1, "totals": {"calls": 50}, "calls": None, "batch_jobs": []}
    with masking(PiiConfig()):
        _write_artifact(tmp_path / "cost_summary.json", JsonWithRows(head, "calls", rows))
        whole = {**head, "calls": [row(i) for i in range(50)]}
        expected = json.dumps(redact_value(whole), indent=2)
    written = (tmp_path / "cost_summary.json").read_text()
    assert written == expected
    assert json.loads(written)["calls"][0]["error"] == "mail <EMAIL_ADDRESS>"
    assert len(alive) == 50


@pytest.mark.parametrize(
    ("text", "entity"),
    [
        ("ssn 536-22-1234 ok", "US_SSN"),
        ("ssn 536 22 1234 ok", "US_SSN"),
        ("card 4111111111111111 ok", "CREDIT_CARD"),
        ("card 4111 1111 1111 1111 ok", "CREDIT_CARD"),
        ("iban DE89370400440532013000 ok", "IBAN_CODE"),
        ("iban DE89 3704 0044 0532 0130 00 ok", "IBAN_CODE"),
        ("host 192.168.12.34 ok", "IP_ADDRESS"),
        ("host 2001:db8::8a2e:370:7334 ok", "IP_ADDRESS"),
        ("host fe80::1 ok", "IP_ADDRESS"),
        ("host ::ffff:10.0.0.1 ok", "IP_ADDRESS"),
    ],
)
def test_each_entity_alone_in_a_text_passes_its_prefilter(text: str, entity: str) -> None:
    """A text that holds one entity and nothing else to find is masked: the cheap test
    that lets a text skip a recognizer never skips one of its matches."""
    with masking(PiiConfig()):
        assert redact(text) == f"{text.split()[0]} <{entity}> ok"


def test_emails_are_found_wherever_their_token_starts_and_ends() -> None:
    # The email recognizer reads only the whitespace-free tokens around each "@".
    masker = masker_for(PiiConfig(entities=["EMAIL_ADDRESS"]))
    text = "to:<bob@example.org>,\tthen\nann@ex.com (cc carl.d@corp.co.uk) a@b @ end@"
    assert masker.mask(text) == (
        "to:<<EMAIL_ADDRESS>>,\tthen\n<EMAIL_ADDRESS> (cc <EMAIL_ADDRESS>) a@b @ end@"
    )


def test_decimals_and_times_do_not_look_like_ip_addresses_but_addresses_do() -> None:
    masker = masker_for(PiiConfig(entities=["IP_ADDRESS"]))
    assert masker.mask('{"cost": 0.00013, "at": "02:35:26.5"}') == (
        '{"cost": 0.00013, "at": "02:35:26.5"}'
    )
    assert masker.mask("from 10.0.0.1 and fe80::1") == "from <IP_ADDRESS> and <IP_ADDRESS>"
