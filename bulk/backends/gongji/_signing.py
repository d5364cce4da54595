"""Gongji request signatures.

Requests carry the headers ``token``, ``timestamp`` (ms), ``version: 1.0.0`` and, for a key in
RSA mode, ``sign_str``: Base64 of RSA PKCS#1 v1.5 / SHA-256 over::

    {path}\\n{version}\\n{timestamp}\\n{token}\\n{data}

where *path* is the request target exactly as sent (with its query string on a GET; the doc
leaves this open, and every client that signs GETs does so) and *data* the exact body bytes
(empty for a GET). The body is serialised once, those bytes signed, those bytes sent. Every
retry is signed afresh with a new timestamp. Simple-mode ("token only") keys send no signature.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = ["VERSION", "Signer", "string_to_sign"]

VERSION = "1.0.0"


def string_to_sign(target: str, timestamp: str, token: str, data: bytes) -> bytes:
    """The bytes an RSA-mode request signs (``data`` is the exact body; empty for a GET)."""
    return f"{target}\n{VERSION}\n{timestamp}\n{token}\n".encode() + data


class Signer:
    """RSA-SHA256 (PKCS#1 v1.5) signatures, Base64-encoded, with the user's private key.

    Args:
        pem: the private key, PKCS#8 or PKCS#1 PEM (or bare Base64 DER).
    """

    def __init__(self, pem: bytes):
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            try:
                key = serialization.load_der_private_key(base64.b64decode(pem), password=None)
            except (ValueError, TypeError):
                msg = "is not an unencrypted RSA private key in PEM (PKCS#8 or PKCS#1)"
                raise ValueError(msg) from None
        if not isinstance(key, rsa.RSAPrivateKey):
            msg = "is not an RSA private key"
            raise TypeError(msg)
        self._key = key

    def sign(self, message: bytes) -> str:
        """Base64 of the signature (256 bytes for a 2048-bit key)."""
        signature = self._key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        return base64.b64encode(signature).decode()
