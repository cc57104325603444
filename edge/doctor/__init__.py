"""``edge doctor``: the field engineer's two-minute diagnosis, one line per check.

Every check returns ``Check`` records (ok or not, what was found, what to do
next). Checks never raise: a failure is a result. Broker checks walk the
layers in order (dns, tcp, tls, mqtt, roundtrip) and stop at the first one
that fails, so the line that says FAIL names the layer to fix.
"""

from __future__ import annotations

from edge.doctor.check import CHECK_NAMES, Check


def run_checks(config_path, *, only: set[str] | None = None, skip: set[str] = frozenset(),
               progress=None) -> list[Check]:
    """Run the selected checks in order; ``progress(check)`` is told about each as it finishes."""
    from edge.doctor import local

    wanted = [n for n in CHECK_NAMES if (not only or n in only) and n not in skip]
    results: list[Check] = []

    def add(items: list[Check]) -> None:
        for item in items:
            results.append(item)
            if progress:
                progress(item)

    settings, config_checks = local.check_config(config_path)
    if "config" in wanted:
        add(config_checks)
    if settings is None:
        return results
    for name in wanted:
        if name == "config":
            continue
        if name == "broker":
            from edge.doctor.broker import check_broker, no_brokers

            for uri in settings.mqtt.brokers:  # shown broker by broker: a dead one takes seconds
                add(check_broker(settings, uri))
            add(no_brokers(settings))
        else:
            add(getattr(local, f"check_{name}")(settings))
    return results


__all__ = ["CHECK_NAMES", "Check", "run_checks"]
