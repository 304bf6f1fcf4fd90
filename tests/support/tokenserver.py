"""A Docker-registry token server (bearer JWTs for distribution's ``auth.token``) on a background thread.

Implements the GET token endpoint (``service``, repeated ``scope``, optional Basic auth) and the OAuth2
POST form (``grant_type=password`` / ``refresh_token``).  ACL: a known user with the right password is
granted every requested action; anonymous callers get only ``pull`` on repositories named ``public/...``;
a wrong password (or an unknown user) is answered 401.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

TOKEN_PATH = "/token"


@dataclass(frozen=True)
class TokenRequest:
    """One request the token server answered."""

    method: str
    path: str
    service: str | None
    scopes: tuple[str, ...]
    username: str | None
    grant_type: str | None
    client_id: str | None
    status: int
    granted: tuple[tuple[str, str, tuple[str, ...]], ...]  # (type, name, actions) put in the token


def parse_scope(scope: str) -> tuple[str, str, tuple[str, ...]] | None:
    """``repository:name[:port/path]:pull,push`` -> ``(type, name, actions)``; ``None`` if malformed."""
    kind, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not kind or not name:
        return None
    kind = kind.split("(", 1)[0]  # "repository(plugin)" -> "repository"
    return kind, name, tuple(a for a in actions.split(",") if a)


def libtrust_key_id(public_key_der: bytes) -> str:
    """The libtrust key ID (``ABCD:EFGH:...``) of a DER SubjectPublicKeyInfo."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(public_key_der)
    b32 = base64.b32encode(digest.finalize()[:30]).decode()
    return ":".join(b32[i : i + 4] for i in range(0, 48, 4))


class TokenServer:
    """Token server; use as a context manager or call :meth:`start` / :meth:`stop`."""

    def __init__(
        self,
        workdir: Path,
        *,
        users: Mapping[str, str] | None = None,
        service: str = "mirror-testbed-registry",
        issuer: str = "mirror-testbed-issuer",
        ttl: int = 300,
        public_prefix: str = "public/",
    ) -> None:
        self.workdir = workdir
        self.users: dict[str, str] = dict(users or {})
        self.service = service
        self.issuer = issuer
        self.ttl = ttl  # mutable: tests may shorten it to exercise token expiry
        self.public_prefix = public_prefix
        self._lock = threading.Lock()
        self._requests: list[TokenRequest] = []
        self._refresh_tokens: dict[str, str] = {}
        self._issued: list[str] = []  # every access and refresh token handed out, for leak checks
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = dt.datetime.now(dt.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mirror-testbed token signer")])
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        workdir.mkdir(parents=True, exist_ok=True)
        self.cert_path = workdir / "token-signer.crt"
        self.cert_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        spki = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.key_id = libtrust_key_id(spki)
        self._x5c = [base64.b64encode(self._cert.public_bytes(serialization.Encoding.DER)).decode()]

    # ----------------------------------------------------------------------------- lifecycle
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("token server not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The realm: ``http://127.0.0.1:PORT/token``."""
        return f"http://127.0.0.1:{self.port}{TOKEN_PATH}"

    def start(self) -> TokenServer:
        handler = type("_BoundHandler", (_Handler,), {"token_server": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        server = self._server
        self._thread = threading.Thread(
            target=lambda: server.serve_forever(poll_interval=0.05), name="token-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def default_credentials(self) -> tuple[str | None, str | None]:
        """The first configured user (what a registry fixture advertises as its credentials)."""
        for user, password in self.users.items():
            return user, password
        return None, None

    # ----------------------------------------------------------------------------- records
    @property
    def requests(self) -> list[TokenRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def issued(self) -> list[str]:
        """Every access token and refresh token this server has handed out, in order."""
        with self._lock:
            return list(self._issued)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def scope_counts(self) -> Counter[str]:
        """How many token requests (answered 200) asked for each scope."""
        c: Counter[str] = Counter()
        for r in self.requests:
            if r.status == 200:
                c.update(r.scopes)
        return c

    def _record(self, req: TokenRequest) -> None:
        with self._lock:
            self._requests.append(req)

    # ----------------------------------------------------------------------------- tokens
    def grant(self, username: str | None, scopes: list[str]) -> list[tuple[str, str, tuple[str, ...]]]:
        """The ACL: which (type, name, actions) a caller gets for the requested scopes."""
        out: list[tuple[str, str, tuple[str, ...]]] = []
        for scope in scopes:
            parsed = parse_scope(scope)
            if parsed is None:
                continue
            kind, name, actions = parsed
            if username is not None:
                allowed = actions
            elif kind == "repository" and name.startswith(self.public_prefix):
                allowed = tuple(a for a in actions if a == "pull")
            else:
                allowed = ()
            out.append((kind, name, allowed))
        return out

    def issue_token(
        self, subject: str | None, access: list[tuple[str, str, tuple[str, ...]]], ttl: int | None = None
    ) -> str:
        """A signed RS256 JWT the registry accepts (x5c header carries the trusted signer cert)."""
        now = int(time.time())
        lifetime = self.ttl if ttl is None else ttl
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject or "",
            "aud": self.service,
            "exp": now + lifetime,
            "nbf": now - 5,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": [{"type": k, "name": n, "actions": list(a)} for k, n, a in access],
        }
        headers = {"typ": "JWT", "x5c": self._x5c}
        return jwt.encode(claims, self._key, algorithm="RS256", headers=headers)

    def _token_response(
        self, subject: str | None, access: list[tuple[str, str, tuple[str, ...]]], *, refresh: str | None
    ) -> dict[str, Any]:
        token = self.issue_token(subject, access)
        with self._lock:
            self._issued.append(token)
        body: dict[str, Any] = {
            "token": token,
            "access_token": token,
            "expires_in": self.ttl,
            "issued_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if refresh is not None:
            body["refresh_token"] = refresh
        return body

    def _new_refresh_token(self, username: str) -> str:
        rt = "rt-" + secrets.token_urlsafe(24)
        with self._lock:
            self._refresh_tokens[rt] = username
            self._issued.append(rt)
        return rt

    def _refresh_owner(self, rt: str) -> str | None:
        with self._lock:
            return self._refresh_tokens.get(rt)

    def check_basic(self, header: str | None) -> tuple[bool, str | None]:
        """``(ok, username)``; no header is ``(True, None)`` (anonymous)."""
        if not header:
            return True, None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False, None
        try:
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except ValueError:
            return False, None
        ok = user in self.users and secrets.compare_digest(self.users[user], password)
        return ok, user if ok else None


class _Handler(BaseHTTPRequestHandler):
    token_server: TokenServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send_json(self, status: int, body: dict[str, Any], extra: Mapping[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _finish(
        self,
        status: int,
        body: dict[str, Any],
        *,
        service: str | None,
        scopes: list[str],
        username: str | None,
        grant_type: str | None,
        client_id: str | None,
        granted: list[tuple[str, str, tuple[str, ...]]],
    ) -> None:
        extra = {"WWW-Authenticate": 'Basic realm="mirror-testbed-token"'} if status == 401 else None
        self._send_json(status, body, extra)
        path = urllib.parse.urlsplit(self.path).path
        self.token_server._record(
            TokenRequest(
                self.command,
                path,
                service,
                tuple(scopes),
                username,
                grant_type,
                client_id,
                status,
                tuple(granted),
            )
        )

    def do_GET(self) -> None:
        ts = self.token_server
        url = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(url.query)
        service = q.get("service", [None])[0]
        scopes = [s for raw in q.get("scope", []) for s in raw.split(" ") if s]
        client_id = q.get("client_id", [None])[0]
        common: dict[str, Any] = {
            "service": service,
            "scopes": scopes,
            "grant_type": None,
            "client_id": client_id,
        }
        if url.path != TOKEN_PATH:
            self._finish(404, {"error": "not found"}, username=None, granted=[], **common)
            return
        ok, user = ts.check_basic(self.headers.get("Authorization"))
        if not ok:
            self._finish(401, {"error": "unauthorized"}, username=None, granted=[], **common)
            return
        granted = ts.grant(user, scopes)
        refresh = ts._new_refresh_token(user) if user and q.get("offline_token", [""])[0] == "true" else None
        self._finish(
            200, ts._token_response(user, granted, refresh=refresh), username=user, granted=granted, **common
        )

    def do_POST(self) -> None:
        ts = self.token_server
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())

        def field(name: str) -> str | None:
            return form.get(name, [None])[0]

        grant_type = field("grant_type")
        service = field("service")
        client_id = field("client_id")
        scopes = (field("scope") or "").split()
        common: dict[str, Any] = {
            "service": service,
            "scopes": scopes,
            "grant_type": grant_type,
            "client_id": client_id,
        }
        if urllib.parse.urlsplit(self.path).path != TOKEN_PATH:
            self._finish(404, {"error": "not found"}, username=None, granted=[], **common)
            return
        if not client_id:
            self._finish(
                400,
                {"error": "invalid_request", "error_description": "client_id required"},
                username=None,
                granted=[],
                **common,
            )
            return
        user: str | None
        refresh: str | None
        if grant_type == "password":
            user, password = field("username"), field("password")
            if user is None or password is None or ts.users.get(user) != password:
                self._finish(401, {"error": "invalid_grant"}, username=None, granted=[], **common)
                return
            refresh = ts._new_refresh_token(user)
        elif grant_type == "refresh_token":
            rt = field("refresh_token") or ""
            user = ts._refresh_owner(rt)
            if user is None:
                self._finish(401, {"error": "invalid_grant"}, username=None, granted=[], **common)
                return
            refresh = rt
        else:
            self._finish(400, {"error": "unsupported_grant_type"}, username=None, granted=[], **common)
            return
        granted = ts.grant(user, scopes)
        self._finish(
            200, ts._token_response(user, granted, refresh=refresh), username=user, granted=granted, **common
        )
