"""Which registries take a small blob in one request: OCI distribution's single-POST monolithic upload,
``POST /v2/<name>/blobs/uploads/?digest=<digest>`` with the bytes as the body, answered ``201``.

Learnt without sending any byte twice: while a registry's answer is unknown, the upload's opening
``POST`` carries ``?digest=`` and no body. A registry without single-POST uploads (distribution 2.8,
the reference one) ignores the parameter and opens the session the upload goes on with (``202``:
no extra request); one that has them refuses an empty body for that digest (``400``), and the
bytes follow in a single POST. The answer is kept for the rest of the run, per registry host.
"""

from __future__ import annotations

from collections.abc import Sequence

from mirror.core.digest import Digest
from mirror.core.reference import Repo
from mirror.errors import RegistryError
from mirror.http.client import Reply
from mirror.transports.registry import api
from mirror.transports.registry.endpoint import RegistryEndpoint
from mirror.transports.registry.hostfact import HostFact


async def post_blob(endpoint: RegistryEndpoint, repo: Repo, digest: Digest, data: bytes, scopes: Sequence[str],
                    single: HostFact) -> tuple[Reply, bool] | None:
    """The upload's opening ``POST`` with ``?digest=``: (reply, whether ``data`` went with it), the
    reply a ``201`` (stored) or a ``202`` (a session to complete); None: the usual ``POST``, please."""
    host = repo.registry
    supported = single.get(host)
    if supported is False:
        return None
    if supported is None:
        try:
            reply = await _post(endpoint, repo, digest, b"", scopes)
        except RegistryError as exc:
            if exc.status != 400:
                raise
        else:
            single.learn(host, False)  # it answered without looking at the digest (a 201: the blob was there)
            return reply, False
    try:
        reply = await _post(endpoint, repo, digest, data, scopes)
    except RegistryError as exc:
        if exc.status not in (400, 405, 415, 501):  # not a refusal of the single POST itself
            raise
        single.learn(host, False)
        return None
    single.learn(host, reply.status == 201)
    return reply, True


async def _post(endpoint: RegistryEndpoint, repo: Repo, digest: Digest, data: bytes, scopes: Sequence[str]) -> Reply:
    headers = {"Content-Length": str(len(data))}
    if data:
        headers["Content-Type"] = "application/octet-stream"
    return await endpoint.fetch(
        "POST", f"{api.uploads_path(repo.path)}?digest={digest.algorithm}%3A{digest.hex}", scopes=scopes,
        headers=headers, data=data, ok=(201, 202), what=f"uploading blob {digest}", repeatable=True)
