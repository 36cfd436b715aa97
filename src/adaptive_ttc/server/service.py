"""What the server holds: the backend, one engine per configuration, the budgets, and the concurrency limit."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from adaptive_ttc.backends.base import Backend
from adaptive_ttc.budget import Ledger, WorkflowBudget
from adaptive_ttc.engine import Engine
from adaptive_ttc.errors import ConfigurationError
from adaptive_ttc.router.configs import FALLBACK, Configuration
from adaptive_ttc.router.router import Router
from adaptive_ttc.scoring.base import Scorer
from adaptive_ttc.server.budgets import BudgetRegistry
from adaptive_ttc.server.errors import APIError

__all__ = ["AUTO", "ServerSettings", "Service", "Slot"]

AUTO = "auto"
"""The configuration name that asks for routing (the default)."""


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Limits and defaults of one server.

    Args:
        api_key: the bearer token every request (except ``GET /health``) must carry; ``None``: no auth.
        max_body_bytes: largest request body accepted (413 beyond it).
        max_concurrency: chat completions running at once; more are refused with 429 ``server_busy``.
        max_tokens: ``max_tokens`` of a request that gives none, when ``context_tokens`` is unknown (or the
            prompt may leave less room than this).
        context_tokens: the model's context length; a request that gives no ``max_tokens`` may then generate
            up to what its prompt leaves of it (counted from above, without a tokenizer), as OpenAI's API does.
        max_open_budgets: workflow budgets open at once.
        max_samples: most samples a fixed configuration may ask for per request (``n`` of best-of-N or beam
            search); more is refused, so one request cannot ask the backend for thousands of samples.
        max_steps: most steps a fixed beam search may ask for.
        ledger_url: ``redis://HOST:PORT/DB`` to keep budgets in Redis, shared by every server using it.
        workflows: named budgets (``--budgets FILE``) a client opens with ``{"workflow": name}``.
    """

    api_key: str | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    max_concurrency: int = 64
    max_tokens: int = 512
    context_tokens: int | None = None
    max_open_budgets: int = 10_000
    max_samples: int = 64
    max_steps: int = 100
    ledger_url: str | None = None
    workflows: Mapping[str, WorkflowBudget] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = ("max_body_bytes", "max_concurrency", "max_tokens", "max_open_budgets", "max_samples", "max_steps")
        for name in names:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigurationError(f"{name} must be an integer >= 1, got {value!r}")
        if self.context_tokens is not None and (not isinstance(self.context_tokens, int) or self.context_tokens < 1):
            raise ConfigurationError(f"context_tokens must be an integer >= 1 or None, got {self.context_tokens!r}")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigurationError("api_key must not be empty; pass None to turn auth off")


class Slot:
    """One running chat completion's place under the concurrency limit; ``release`` is idempotent."""

    def __init__(self, service: Service) -> None:
        self._service = service
        self._held = True

    def release(self) -> None:
        """Give the place back."""
        if self._held:
            self._held = False
            self._service.in_flight -= 1


class Service:
    """The engines (routing by default, or one fixed configuration per request) over one backend.

    Args:
        backend: where generations run (owned by the caller).
        router: the router that decides per call; ``None``: every call runs greedy unless it names a configuration.
        scorer: the scorer reward-guided configurations use (owned by the caller).
        settings: limits and defaults.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        router: Router | None = None,
        scorer: Scorer | None = None,
        settings: ServerSettings | None = None,
    ) -> None:
        self.backend = backend
        self.router = router
        self.scorer = scorer
        self.settings = settings or ServerSettings()
        self.budgets = BudgetRegistry(
            max_open=self.settings.max_open_budgets,
            ledger_url=self.settings.ledger_url,
            workflows=self.settings.workflows,
        )
        self.in_flight = 0
        self._engines: dict[str, Engine] = {}

    @property
    def model(self) -> str:
        """The served model's name, as clients must name it."""
        return self.backend.model

    def slot(self) -> Slot:
        """A place under the concurrency limit, or 429 ``server_busy``."""
        if self.in_flight >= self.settings.max_concurrency:
            raise APIError(
                429,
                f"the server is running {self.in_flight} completions, its limit; retry shortly",
                "rate_limit_error",
                "server_busy",
                retry=True,
                headers={"retry-after": "1"},
            )
        self.in_flight += 1
        return Slot(self)

    def configuration_of(self, model: str, requested: str | None) -> str:
        """The configuration a request asks for: a ``MODEL:LABEL`` suffix or ``adaptive_ttc.strategy``."""
        if model == self.model:
            suffix = None
        elif model.startswith(self.model + ":"):
            suffix = model[len(self.model) + 1 :]
        else:
            raise APIError(
                404,
                f"the model {model!r} is not served here; use {self.model!r} (or {self.model + ':<configuration>'!r})",
                code="model_not_found",
                param="model",
            )
        if suffix is not None and requested is not None and suffix != requested:
            raise APIError(
                400,
                f"the model name asks for {suffix!r} but adaptive_ttc.strategy for {requested!r}; give one",
                param="adaptive_ttc.strategy",
            )
        return suffix or requested or AUTO

    def engine(self, label: str) -> Engine:
        """The engine for ``label``: the routing one (``auto``, built once), or one for a fixed configuration
        (cheap to build, so not kept: clients may name any number of labels)."""
        if label != AUTO:
            return self._build(label)
        if AUTO not in self._engines:
            self._engines[AUTO] = self._build(AUTO)
        return self._engines[AUTO]

    def _build(self, label: str) -> Engine:
        try:
            if label == AUTO:
                fixed = None if self.router is not None else FALLBACK
                return Engine(self.backend, router=self.router, configuration=fixed, scorer=self.scorer)
            configuration = Configuration.parse(label)
            self._check_size(configuration)
            if configuration.needs_scorer and self.scorer is None:
                raise ConfigurationError(
                    f"configuration {label!r} needs a scorer, and this server has none (start it with --scorer)"
                )
            return Engine(self.backend, router=self.router, configuration=configuration, scorer=self.scorer)
        except ConfigurationError as exc:
            raise APIError(
                400,
                f"{exc} (use auto, greedy, bon-<selector>-<n> or beam-<n>x<w>x<steps>)",
                code="invalid_configuration",
                param="adaptive_ttc.strategy",
            ) from None

    def _check_size(self, configuration: Configuration) -> None:
        settings = self.settings
        if configuration.n > settings.max_samples or configuration.max_steps > settings.max_steps:
            raise ConfigurationError(
                f"configuration {configuration.label!r} asks for more than this server allows "
                f"({settings.max_samples} samples, {settings.max_steps} beam-search steps)"
            )

    def ledger_of(self, budget_id: str | None) -> Ledger | None:
        """The open ledger a request names in ``X-Adaptive-Budget`` (none: an unbudgeted call)."""
        return None if budget_id is None else self.budgets.ledger(budget_id)
