"""What every handler works with, made once at start: settings, Helm, API client, cache, status reporter."""

from dataclasses import dataclass

import kopf

from tenant_operator.cache import Cache
from tenant_operator.events import EventRecorder
from tenant_operator.flux import Flux
from tenant_operator.kube import Kube, load_configuration
from tenant_operator.release import Helm
from tenant_operator.reporting import Reporter
from tenant_operator.settings import Settings


@dataclass(frozen=True)
class Context:
    settings: Settings
    helm: Helm
    kube: Kube
    cache: Cache
    reporter: Reporter
    events: EventRecorder
    flux: Flux | None = None  # the flux backend (settings.backend); None: the helm backend

    @property
    def fingerprint(self) -> str:
        """What the releases pass through besides their values (chart, post-renderer, backend)."""
        return self.flux.fingerprint if self.flux is not None else self.helm.chart_fingerprint

    @classmethod
    def create(cls, settings: Settings) -> "Context":
        kube = Kube(load_configuration(), settings.api_qps, settings.api_burst)
        events = EventRecorder(kube)
        helm = Helm(settings)
        cache = Cache()
        return cls(
            settings=settings,
            helm=helm,
            kube=kube,
            cache=cache,
            reporter=Reporter(kube, cache, events, settings.secret_recheck_seconds),
            events=events,
            flux=Flux(settings, helm, kube) if settings.backend == "flux" else None,
        )


MEMO_KEY = "tenant_operator"


def from_memo(memo: kopf.Memo) -> Context:
    """The context that `main` put into kopf's memo."""
    context = memo[MEMO_KEY]
    assert isinstance(context, Context)
    return context
