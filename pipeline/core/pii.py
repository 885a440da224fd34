"""Pseudonymisation of personal identifiers, applied where data enters Journeys.

Raw e-mail addresses and phone numbers never leave a connector: they become
``email_sha256`` and ``phone_sha256`` here, and only the hashes travel on.
"""

from __future__ import annotations

import hashlib
import re

_NON_DIGITS = re.compile(r"[^\d+]")


class PIIError(ValueError):
    """A personal identifier that cannot be normalised (the message never holds the value)."""


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def normalize_email(email: str) -> str:
    return email.strip().lower()


def hash_email(email: str) -> str:
    """``email_sha256``: hex SHA-256 of the address trimmed and lower-cased."""
    norm = normalize_email(email)
    if "@" not in norm or norm.startswith("@") or norm.endswith("@"):
        raise PIIError("email: not an e-mail address")
    return sha256_hex(norm)


def normalize_phone(phone: str, default_country_code: str = "1") -> str:
    """The E.164 form of *phone* (``+`` and digits only).

    Numbers written without a leading ``+`` or ``00`` get *default_country_code*
    (national numbers with a single trunk ``0`` lose it first).
    """
    raw = phone.strip()
    digits = _NON_DIGITS.sub("", raw)
    if digits.startswith("+"):
        body = digits[1:].replace("+", "")
    elif digits.startswith("00"):
        body = digits[2:].replace("+", "")
    else:
        national = digits.replace("+", "")
        if national.startswith("0"):
            national = national[1:]
        if default_country_code == "1" and len(national) == 11 and national.startswith("1"):
            national = national[1:]
        body = default_country_code + national
    if not body.isdigit() or not 8 <= len(body) <= 15:
        raise PIIError("phone: not a phone number that has an E.164 form")
    return "+" + body


def hash_phone(phone: str, default_country_code: str = "1") -> str:
    """``phone_sha256``: hex SHA-256 of the E.164 form."""
    return sha256_hex(normalize_phone(phone, default_country_code))


_EMAIL_RE = re.compile(rb"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
_PHONE_RE = re.compile(rb"(?<![\w\d])\+?\d[\d \-().]{7,18}\d(?![\w\d])")


def redact(raw: bytes) -> bytes:
    """Scrub e-mail addresses and phone numbers out of a raw payload kept as a dead letter.

    Addresses become ``<email:sha256:HEX>`` (so a dead letter can still be matched to a
    person) and phone-like digit runs become ``<phone>``.
    """

    def _email(match: re.Match[bytes]) -> bytes:
        text = match.group(0).decode("ascii", "replace")
        return b"<email:sha256:" + sha256_hex(normalize_email(text)).encode() + b">"

    return _PHONE_RE.sub(b"<phone>", _EMAIL_RE.sub(_email, raw))
