"""Vendor webhook signatures: Shopify's HMAC, Twilio's signature, SendGrid's ECDSA."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit


class SignatureKeyError(ValueError):
    """A configured verification key cannot be used."""


def shopify_hmac(secret: str, body: bytes) -> str:
    """``X-Shopify-Hmac-Sha256``: base64 HMAC-SHA256 of the raw body, keyed by the secret."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def twilio_signature(token: str, url: str, params: Sequence[tuple[str, str]] = ()) -> str:
    """``X-Twilio-Signature``: base64 HMAC-SHA1 of the URL followed by every POST
    parameter, sorted by name, as ``name`` + ``value`` with no separators."""
    data = url + "".join(k + v for k, v in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def url_variants(url: str) -> list[str]:
    """The URL as given, and with its default port added or removed (Twilio signs
    whichever form it was configured with)."""
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    out = [url]
    host = parts.hostname or ""
    if parts.port is not None and parts.port == default:
        out.append(urlunsplit(parts._replace(netloc=host)))
    elif parts.port is None and default is not None:
        out.append(urlunsplit(parts._replace(netloc=f"{host}:{default}")))
    return out


def load_sendgrid_key(key: str) -> Any:
    """The SendGrid verification key (base64 DER, or PEM) as a public key object."""
    try:
        from cryptography.hazmat.primitives import serialization
    except ImportError as exc:  # pragma: no cover - cryptography comes with the extras
        raise SignatureKeyError(
            "checking SendGrid signatures needs the 'cryptography' package"
        ) from exc
    text = key.strip()
    try:
        if text.startswith("-----BEGIN"):
            return serialization.load_pem_public_key(text.encode())
        return serialization.load_der_public_key(base64.b64decode(text, validate=True))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise SignatureKeyError(
            "JOURNEYS_SENDGRID_VERIFICATION_KEY is not a public key (base64 DER or PEM)"
        ) from exc


def sendgrid_signature_ok(public_key: Any, body: bytes, signature: str, timestamp: str) -> bool:
    """ECDSA (P-256, SHA-256) over the timestamp header followed by the raw body."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        der = base64.b64decode(signature, validate=True)
        public_key.verify(der, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, TypeError, binascii.Error):
        return False
    return True
