"""aiohttp, imported without the CA bundle loads it does at import time.

When ``aiohttp.connector`` is imported it builds two default SSL contexts (``ssl.create_default_context()``
and an unverified one), each parsing the system CA bundle: about 100 ms of every start-up, for contexts
mirror never uses. Every HTTPS request mirror sends carries its own context: the registry client's
``Request.ssl`` (``mirror.http.tls.ssl_context``, which the sender always passes for ``https``) and the
Docker daemon client's ``TCPConnector(ssl=...)``.

So while aiohttp is imported here, ``SSL_CERT_FILE`` names an empty file and those two contexts load no CA
file. Nothing is weakened: their verification settings are untouched (the verified one still requires a
certificate and checks the host name), and the only trust they keep is OpenSSL's hashed CA directory,
searched on demand. Were one ever used, it would verify or refuse, never accept blindly. The variable is
restored at once, so mirror's own contexts load the CA bundle as usual (when a TLS connection needs one).
Import aiohttp through this module (``from mirror.http.aiohttplib import aiohttp``).
"""

from __future__ import annotations

import os

_CA_FILE = "SSL_CERT_FILE"  # OpenSSL reads it when a context loads the default CA locations

_saved = os.environ.get(_CA_FILE)
os.environ[_CA_FILE] = os.devnull
try:
    import aiohttp
finally:
    if _saved is None:
        del os.environ[_CA_FILE]
    else:
        os.environ[_CA_FILE] = _saved

__all__ = ["aiohttp"]
