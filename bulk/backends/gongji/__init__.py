"""The 共绩算力 (Gongji) Open API backend: RSA-signed Job endpoints."""

from bulk.backends.gongji._backend import KIND, GongjiBackend, GongjiKind, map_status
from bulk.backends.gongji._client import DEFAULT_URL, GongjiClient, GongjiOptions
from bulk.backends.gongji._codes import CODES
from bulk.backends.gongji._signing import Signer, string_to_sign

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
