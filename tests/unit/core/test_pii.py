"""E-mail and phone pseudonymisation, and scrubbing of raw payloads."""

from __future__ import annotations

import hashlib

import pytest

from pipeline.core.pii import PIIError, hash_email, hash_phone, normalize_phone, redact


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_email_is_trimmed_and_lower_cased_before_hashing() -> None:
    assert hash_email("  Jane.Doe@Example.COM ") == sha("jane.doe@example.com")


@pytest.mark.parametrize("bad", ["", "jane", "@example.com", "jane@"])
def test_bad_emails_are_refused_without_echoing_them(bad: str) -> None:
    with pytest.raises(PIIError) as err:
        hash_email(bad)
    assert bad not in str(err.value) or bad == ""


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("+1 (415) 555-0134", "+14155550134"),
        ("415-555-0134", "+14155550134"),
        ("1 415 555 0134", "+14155550134"),
        ("0044 20 7946 0958", "+442079460958"),
        ("+44 (0)20 7946 0958", "+4402079460958"),
    ],
)
def test_phones_are_hashed_in_e164(raw: str, e164: str) -> None:
    assert normalize_phone(raw) == e164
    assert hash_phone(raw) == sha(e164)


def test_national_numbers_take_the_default_country() -> None:
    assert normalize_phone("020 7946 0958", default_country_code="44") == "+442079460958"


@pytest.mark.parametrize("bad", ["", "12", "call me", "+1234567890123456789"])
def test_bad_phones_are_refused(bad: str) -> None:
    with pytest.raises(PIIError):
        hash_phone(bad)


def test_redact_scrubs_emails_and_phones() -> None:
    raw = b'{"email":"Jane@Example.com","phone":"+1 415 555 0134","n":42}'
    out = redact(raw)
    assert b"Jane@Example.com" not in out and b"555" not in out
    assert b"<email:sha256:" + sha("jane@example.com").encode() + b">" in out
    assert b'"n":42' in out
