"""Shared helpers of the biometrics tests: the real photos, analysed once per test session."""

from __future__ import annotations

from functools import cache

from tests.conftest import FACES

IDENTITIES = ["obama", "biden", "kit_harington", "rose_leslie", "alex_lacamoire"]
SECOND = {i: [f"{i}_2"] for i in IDENTITIES}
SECOND["obama"] += ["obama_3", "obama-480p", "obama-720p"]


def photo(name: str):
    return FACES / f"{name}.jpg"


@cache
def pipeline():
    from drivers.camera.pipeline import Pipeline

    return Pipeline()


@cache
def frame(name: str):
    from drivers.camera.pipeline import read_image

    frame = read_image(photo(name))
    frame.setflags(write=False)
    return frame


@cache
def analysis(name: str):
    """The pipeline's analysis of a photo, computed once per session (encoding costs ~100 ms)."""
    return pipeline().analyse(frame(name), use_presence=False)


def encoding(name: str):
    a = analysis(name)
    assert a.status == "ok", f"{name}: {a.status} {a.quality}"
    return a.encoding


def template(name: str) -> bytes:
    return encoding(name).astype("<f4").tobytes()


def conforms(event_type: str, payload: dict) -> None:
    """Validate an event payload against the published contract (docs/asyncapi.json)."""
    from drivers.camera.contract import EVENT_PAYLOADS

    EVENT_PAYLOADS[event_type].model_validate(payload)
