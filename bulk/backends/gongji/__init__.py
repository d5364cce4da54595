"""The 共绩算力 (Gongji) Open API backend: RSA-signed Job endpoints."""

from bulk.backends.gongji._backend import (
    CODES,
    DEFAULT_URL,
    KIND,
    GongjiBackend,
    GongjiClient,
    GongjiKind,
    GongjiOptions,
    Signer,
    map_status,
    string_to_sign,
)

__all__ = [
    "CODES",
    "DEFAULT_URL",
    "KIND",
    "GongjiBackend",
    "GongjiClient",
    "GongjiKind",
    "GongjiOptions",
    "Signer",
    "map_status",
    "string_to_sign",
]
