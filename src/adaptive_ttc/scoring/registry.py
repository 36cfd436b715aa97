"""Build a scorer from a short spec string (the CLI's ``--scorer``)."""

from __future__ import annotations

from collections.abc import Callable

from adaptive_ttc.backends.base import Backend
from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.scoring.base import Scorer
from adaptive_ttc.scoring.judge import JudgeScorer
from adaptive_ttc.scoring.prm import PRMScorer
from adaptive_ttc.scoring.self_certainty import SelfCertaintyScorer

__all__ = ["SCORER_SPECS", "make_scorer"]

SCORER_SPECS: tuple[str, ...] = ("self-certainty", "mean-logprob", "judge", "prm:URL", "prm:URL#model")


def _judge(backend: Backend | None) -> Scorer:
    if backend is None:
        raise ConfigurationError("the judge scorer asks a chat model; pass backend= (often the policy itself)")
    return JudgeScorer(backend)


_SIMPLE: dict[str, Callable[[Backend | None], Scorer]] = {
    "self-certainty": lambda _: SelfCertaintyScorer("self-certainty"),
    "mean-logprob": lambda _: SelfCertaintyScorer("mean-logprob"),
    "judge": _judge,
}


def make_scorer(
    spec: str, *, backend: Backend | None, api_key: str | None = None, timeout: float | None = None
) -> Scorer:
    """The scorer a spec names.

    Args:
        spec: ``self-certainty``, ``mean-logprob``, ``judge``, ``prm:URL`` or ``prm:URL#model`` (the PRM's
            pooling server, e.g. ``prm:http://127.0.0.1:8001/v1#Qwen2.5-Math-PRM-7B``).
        backend: the backend the judge asks (ignored by the other scorers).
        api_key: the bearer token for a PRM server.
        timeout: seconds one request to a PRM server may take (default: the scorer's).

    Returns:
        A new scorer; the caller closes it with ``aclose``.

    Raises:
        ConfigurationError: the spec is unknown or incomplete.
    """
    name = spec.strip()
    if name in _SIMPLE:
        return _SIMPLE[name](backend)
    kind, _, target = name.partition(":")
    if kind == "prm":
        url, _, model = target.partition("#")
        if not url:
            raise ConfigurationError("the prm scorer needs the pooling server's URL: prm:http://HOST:PORT[#model]")
        if timeout is None:
            return PRMScorer(url, model or None, api_key=api_key)
        return PRMScorer(url, model or None, api_key=api_key, timeout=timeout)
    raise ConfigurationError(f"unknown scorer {spec!r}; use one of {', '.join(SCORER_SPECS)}")
