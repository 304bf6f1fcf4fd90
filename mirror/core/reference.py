"""Image references: skopeo's ``transport:reference`` names and the docker reference grammar.

Normalisation follows distribution/reference: no domain means ``docker.io``, a single Hub component
gets ``library/``, no tag and no digest means ``:latest``; ``tag@digest`` is refused for the docker
transport, as containers/image does.
"""

from __future__ import annotations

import json
import re

from msgspec import Struct

from mirror.core.digest import Digest
from mirror.errors import InvalidReference

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"

TRANSPORTS = (
    "docker",
    "dir",
    "oci",
    "oci-archive",
    "docker-archive",
    "docker-daemon",
    "containers-storage",
)

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(rf"^(?:{_LABEL}(?:\.{_LABEL})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$")
TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)
_MAX_NAME = 255
#: docker/distribution's words for a malformed reference (``ErrReferenceInvalidFormat``): scripts match them.
FORMAT = "invalid reference format"


def _q(text: str) -> str:
    """Go's %q, as skopeo quotes names in its messages."""
    return json.dumps(text, ensure_ascii=False)


class Repo(Struct, frozen=True):
    """A repository on a registry: ``registry`` is ``host[:port]``, ``path`` the repository name."""

    registry: str
    path: str

    def __str__(self) -> str:
        return f"{self.registry}/{self.path}"

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry


class Tag(Struct, frozen=True):
    """A tag name (validated by whoever parsed it)."""

    name: str

    def __str__(self) -> str:
        return self.name


#: What names a manifest inside a repository: a tag or a digest, typed so nothing sniffs strings.
ManifestRef = Tag | Digest


def manifest_ref(text: str) -> ManifestRef:
    """A tag or ``alg:hex`` digest written as text (YAML tag lists, CLI): the one place the two are told apart."""
    return Digest.parse(text) if text.startswith(("sha256:", "sha512:")) else Tag(text)


class Reference(Struct, frozen=True):
    """A tag or digest in a repository (exactly one of the two after parsing)."""

    repo: Repo
    tag: str | None = None
    digest: Digest | None = None

    def __str__(self) -> str:
        if self.digest is not None:
            return f"{self.repo}@{self.digest}"
        return f"{self.repo}:{self.tag}"

    @property
    def ref(self) -> ManifestRef:
        """The manifest this reference names: its digest, else its tag."""
        return self.digest if self.digest is not None else Tag(str(self.tag))

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.repo, tag, None)

    def with_digest(self, digest: Digest) -> Reference:
        return Reference(self.repo, None, digest)


def split_domain(name: str) -> tuple[str, str]:
    """Split ``name`` into (domain, path) applying Docker Hub normalisation."""
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        domain, path = first, rest
    else:
        domain, path = DOCKER_HUB, name
    if domain == "index.docker.io":
        domain = DOCKER_HUB
    if domain == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    return domain, path


def parse_repo(name: str) -> Repo:
    """Parse a repository name (no tag, no digest), normalised."""
    domain, path = split_domain(name)
    if not _DOMAIN_RE.match(domain):
        raise InvalidReference(f"{FORMAT}: bad registry host {domain!r} in {name!r}")
    _host, colon, port = domain.rpartition(":")
    if colon and port.isdigit() and (len(port) > 5 or not 0 < int(port) <= 65535):
        raise InvalidReference(f"{FORMAT}: port {port[:20]} out of range in {domain[:100]!r}")
    if not _PATH_RE.match(path):
        if path.lower() != path and _PATH_RE.match(path.lower()):
            raise InvalidReference(f"{FORMAT}: repository name must be lowercase ({name!r})")
        raise InvalidReference(f"{FORMAT}: bad repository name {path!r} in {name!r}")
    if len(domain) + 1 + len(path) > _MAX_NAME:
        raise InvalidReference(f"{FORMAT}: repository name must not be more than {_MAX_NAME} characters "
                               f"({name[:100]!r}...)")
    return Repo(domain, path)


def parse_docker(text: str) -> Reference:
    """Parse a docker reference (the part after ``docker://``)."""
    if not text:
        raise InvalidReference(f"{FORMAT}: empty name")
    name, at, digest_text = text.partition("@")
    try:
        digest = Digest.parse(digest_text) if at else None
    except InvalidReference as exc:
        raise InvalidReference(f"{FORMAT}: {exc}") from None
    tag = None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not TAG_RE.match(tag):
            raise InvalidReference(f"{FORMAT}: bad tag {tag!r} in {text!r}")
    if tag is not None and digest is not None:
        raise InvalidReference(
            f"invalid reference {text!r}: Docker references with both a tag and digest are currently not supported"
        )
    if len(name) == 64 and all(c in "0123456789abcdef" for c in name) and tag is None:
        raise InvalidReference(f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings")
    repo = parse_repo(name)
    if tag is None and digest is None:
        tag = "latest"
    return Reference(repo, tag, digest)


def split_transport(text: str) -> tuple[str, str]:
    """Split skopeo's ``transport:reference`` form; unknown transports are refused."""
    transport, sep, rest = text.partition(":")
    if not sep:
        raise InvalidReference(f"Invalid image name {_q(text)}, expected colon-separated transport:reference")
    if transport not in TRANSPORTS:
        raise InvalidReference(f"Invalid image name {_q(text)}, unknown transport {_q(transport)}")
    if transport == "docker":
        if not rest.startswith("//"):
            raise InvalidReference(f"Invalid image name {_q(text)}: docker: image reference {rest} does not start "
                                   "with //")
        rest = rest[2:]
    return transport, rest


def parse_image_name(text: str) -> tuple[str, Reference]:
    """Parse a CLI image name. Only ``docker://`` yields a Reference today."""
    transport, rest = split_transport(text)
    if transport != "docker":
        raise InvalidReference(f"transport {transport!r} is not supported yet (only docker://)")
    return transport, parse_docker(rest)
