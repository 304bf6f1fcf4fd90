"""A yes/no fact about each registry host, learnt from its first answer and kept for the run."""

from __future__ import annotations


class HostFact:
    """Per registry host: True or False once learnt, None before (whether it has the referrers API,
    whether it takes single-POST uploads...). One per fact per run, shared by the host's repositories."""

    def __init__(self) -> None:
        self._known: dict[str, bool] = {}

    def get(self, host: str) -> bool | None:
        return self._known.get(host)

    def learn(self, host: str, value: bool) -> None:
        self._known[host] = value
