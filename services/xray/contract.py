"""The x-ray service's part of the MQTT contract: central's signed dose records for other sites."""

from __future__ import annotations

from edge.schema import SITE


def channels():
    from edge.contract import Channel
    from services.xray.totals import DoseRecords

    return [
        Channel(
            "siteXrayDose", "edge/v1/{site}/xray/dose", "receive", DoseRecords,
            "Signed dose records of people scanned at other sites (body-scanner dose ledger).",
            "Ed25519-signed like commands. Each origin entry replaces what the device holds for that "
            "person at that site (newest `issued_at` wins), so re-sending never double counts; entries "
            "for the device's own site are ignored. Give per-scan records where known (they leave the "
            "rolling window on time) or a bare `total_usv` with `as_of`. Publish with QoS 1; the "
            "device answers with an xray.dose_records_applied or xray.dose_records_rejected event.",
            parameters={"site": SITE}),
    ]
