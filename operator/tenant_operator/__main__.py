"""`python -m tenant_operator` / `tenant-operator`: run the operator against the cluster of the environment
(in-cluster service account, else KUBECONFIG)."""

import argparse
import logging
import sys
import threading

import kopf

from tenant_operator import handlers, leader, metrics
from tenant_operator.context import MEMO_KEY, Context
from tenant_operator.kube import Rest, load_configuration
from tenant_operator.release import redact
from tenant_operator.settings import Settings

# zap's levels (the guide's `--zap-log-level`), as Python's; a number means zap's verbose debug levels.
ZAP_LEVELS = {"debug": "debug", "info": "info", "warn": "warning", "warning": "warning", "error": "error"}
ZAP_LEVELS |= dict.fromkeys(("dpanic", "panic", "fatal"), "error")


def zap_level(value: str) -> str:
    """The log level that a `--zap-log-level` value stands for."""
    if value.isdigit():
        return "debug" if int(value) > 0 else "info"
    try:
        return ZAP_LEVELS[value.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"unknown level {value!r}: use debug, info, warn or error") from None


class Redacting(logging.Filter):
    """Every record leaves without secret values (release.redact): kopf's debug records show whole Tenants,
    and an API error may carry an object; so may a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage(), limit=None), ()
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), limit=None)
            record.exc_info = None
        return True


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tenant-operator",
        description="The NeuralLog Tenant Operator (settings: TENANT_OPERATOR_* environment variables).",
    )
    parser.add_argument(
        "--zap-log-level", type=zap_level, help="debug, info, warn or error (TENANT_OPERATOR_LOG_LEVEL)"
    )
    parser.add_argument(
        "--log-format", choices=["json", "text"], help="log format (TENANT_OPERATOR_LOG_FORMAT)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    settings = Settings.from_env()
    overrides = {"log_level": options.zap_log_level, "log_format": options.log_format}
    settings = settings.model_copy(update={key: value for key, value in overrides.items() if value})
    kopf.configure(
        debug=settings.log_level == "debug",
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(Redacting())
    logging.getLogger().setLevel(settings.log_level.upper())
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    if settings.log_level != "debug":  # kopf's line per handled event; our modules log what happened
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        # A line per probe of the kubelet (every 10 s, twice) would bury what the operator does.
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    metrics.serve(settings.metrics_port)
    assert handlers.start  # the handlers register themselves with kopf when imported
    if settings.backend == "flux":
        handlers.follow_helm_releases()
    context = Context.create(settings)
    elector = None
    if settings.leader_election_namespace:
        elector = leader.Elector(
            leader.LeaseApi(
                Rest(load_configuration()),
                settings.leader_election_namespace,
                settings.lease_name,
            ),
            leader.identity(),
        )
        with leader.StandbyHealth(settings.health_port):
            elector.acquire()
        stop_renewing = threading.Event()
        threading.Thread(
            target=elector.keep, args=(leader.exit_now, stop_renewing), name="lease-renewal", daemon=True
        ).start()
    try:
        kopf.run(
            clusterwide=True,
            standalone=True,
            liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
            memo=kopf.Memo({MEMO_KEY: context}),
        )
    finally:
        if elector is not None:
            stop_renewing.set()
            elector.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
