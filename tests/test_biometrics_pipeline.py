"""Face decisions on the real photos: verify, identify, unknown, multiple faces, no face, validity.

Encodings of the shared photos are computed once per session (tests/_face_helpers.py).
"""

from __future__ import annotations

import itertools
import time

import cv2
import numpy as np
import pytest

from drivers.camera.decide import Decider, Thresholds
from drivers.camera.gallery import Gallery, Subject
from drivers.camera.lane import Lane, LaneConfig
from drivers.camera.liveness import MotionLiveness, NoLiveness
from drivers.camera.search import Index
from tests._face_helpers import (
    IDENTITIES,
    SECOND,
    analysis,
    conforms,
    encoding,
    frame,
    pipeline,
    template,
)


@pytest.fixture(autouse=True)
def _decisions_follow_the_contract(monkeypatch):
    """Every decision a lane makes in these tests must match its published payload schema."""
    process = Lane.process

    def checked(self, frame):
        out = process(self, frame)
        for d in out:
            conforms(d.type, d.payload)
        return out

    monkeypatch.setattr(Lane, "process", checked)


@pytest.fixture
def gallery(tmp_path):
    g = Gallery(tmp_path / "state")
    yield g
    g.close()


def enroll_all(g: Gallery, role: str = "staff", who=IDENTITIES, **window) -> None:
    if role == "visitor":
        window.setdefault("valid_until", time.time() + 3600)
    for name in who:
        g.upsert(Subject(name, role, [template(f"{name}_1")], **window))


@pytest.mark.parametrize("identity", IDENTITIES)
def test_enrolled_from_first_photo_is_verified_and_identified_on_the_others(gallery, identity):
    enroll_all(gallery)
    decider = Decider(gallery)
    for probe in SECOND[identity]:
        v = decider.verify(identity, encoding(probe), booking_id="B-1")
        assert v.type == "biometric.verified", (probe, v.payload)
        assert v.payload["distance"] <= v.payload["threshold"] == 0.5
        assert v.payload["booking_id"] == "B-1"
        i = decider.identify(encoding(probe))
        assert i.type == "biometric.identified", (probe, i.payload)
        assert i.payload["subject_id"] == identity
        assert i.payload["margin"] >= Thresholds().min_margin


def test_every_cross_identity_pair_fails_verification(gallery):
    enroll_all(gallery)
    decider = Decider(gallery)
    probes = {i: [f"{i}_1", *SECOND[i]] for i in IDENTITIES}
    checked = 0
    for claimed, actual in itertools.permutations(IDENTITIES, 2):
        for probe in probes[actual]:
            d = decider.verify(claimed, encoding(probe))
            assert d.type == "biometric.verify_failed" and d.payload["reason"] == "no_match", (claimed, probe)
            assert d.payload["distance"] > 0.5
            checked += 1
    assert checked == 4 * (5 + 4 * 2)  # each of 13 photos claimed as each of the 4 other people


def test_unenrolled_faces_are_unknown(gallery):
    enroll_all(gallery, who=["obama", "biden", "kit_harington"])
    decider = Decider(gallery)
    for probe in ["rose_leslie_1", "rose_leslie_2", "alex_lacamoire_1", "alex_lacamoire_2"]:
        d = decider.identify(encoding(probe))
        assert d.type == "biometric.unknown" and d.payload["reason"] == "no_match", probe
        assert "subject_id" not in d.payload  # who it looked most like is not disclosed


def test_visitors_are_never_identified_one_to_many(gallery):
    enroll_all(gallery, role="visitor", who=["obama"])
    decider = Decider(gallery)
    assert decider.identify(encoding("obama_2")).type == "biometric.unknown"
    assert decider.verify("obama", encoding("obama_2")).type == "biometric.verified"


def test_two_people_are_multiple_faces_and_never_a_decision():
    a = analysis("two_people")
    assert a.status == "multiple" and a.faces == 2 and a.encoding is None


def test_a_frame_without_a_face_gives_no_decision(gallery):
    enroll_all(gallery)
    lane = Lane(pipeline(), Decider(gallery), NoLiveness(), LaneConfig(rearm_frames=1))
    noise = np.random.default_rng(7).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    black = np.zeros((480, 640, 3), np.uint8)
    assert lane.process(noise) == [] and lane.process(black) == []
    assert pipeline().analyse(black).status == "empty"
    assert pipeline().analyse(noise, use_presence=False).status == "no_face"


def test_expired_and_future_visitors_are_refused_even_when_the_face_matches(gallery):
    now = time.time()
    gallery.upsert(Subject("past", "visitor", [template("obama_1")], now - 7200, now - 600))
    gallery.upsert(Subject("future", "visitor", [template("obama_1")], now + 3600, now + 7200))
    gallery.upsert(Subject("long-gone", "visitor", [template("obama_1")], now - 90000, now - 86400))
    decider = Decider(gallery, purge_grace_s=3600)
    past = decider.verify("past", encoding("obama_2"))
    assert past.type == "biometric.verify_failed" and past.payload["reason"] == "expired"
    assert past.payload["distance"] < 0.5  # the face did match: refused on the window alone
    assert decider.verify("future", encoding("obama_2")).payload["reason"] == "not_yet_valid"
    # Past the grace period the template is purged, not just refused.
    assert decider.verify("long-gone", encoding("obama_2")).payload["reason"] == "not_enrolled"
    assert {s.subject_id for s in gallery.subjects()} == {"past", "future"}


def test_the_decider_judges_a_visit_by_the_daemons_trusted_time_not_the_wall_clock(gallery):
    from drivers.camera.decide import DeviceClock

    wall = {"t": time.time()}
    mono = {"t": 100.0}
    clock = DeviceClock(wall=lambda: wall["t"], mono=lambda: mono["t"])
    assert clock() == wall["t"]  # not told yet: the wall clock
    clock.tell(wall["t"] + 3600)  # the daemon: the real time is an hour past the wall clock
    mono["t"] += 10
    assert clock() == wall["t"] + 3610  # advanced by monotonic time since
    clock.tell("soon")  # not a number: nothing learnt
    assert clock() == wall["t"] + 3610
    gallery.upsert(Subject("ended", "visitor", [template("obama_1")], valid_until=wall["t"] + 1800))
    decider = Decider(gallery, clock=clock)
    ended = decider.verify("ended", encoding("obama_2"))
    assert (ended.type, ended.payload["reason"]) == ("biometric.verify_failed", "expired")
    wall["t"] += 7200  # the wall clock passes the told time: the later one counts
    assert clock() == wall["t"]


def test_quality_gate_asks_for_another_frame():
    blurred = cv2.GaussianBlur(frame("obama-720p"), (0, 0), 6)
    a = pipeline().analyse(blurred, use_presence=False)
    assert a.status == "quality_low" and "blurred" in a.quality["problems"] and a.encoding is None
    tiny = cv2.resize(frame("obama-720p"), None, fx=0.4, fy=0.4, interpolation=cv2.INTER_AREA)
    a = pipeline().analyse(tiny, use_presence=False)
    assert a.status in ("quality_low", "no_face")
    if a.status == "quality_low":
        assert "face_too_small" in a.quality["problems"]


def test_a_face_cut_off_by_the_frame_edge_waits_for_a_better_frame():
    a = analysis("obama_partial_face")
    assert a.status == "quality_low" and a.quality["problems"] == ["cut_off"] and a.encoding is None
    still = pipeline().analyse(frame("obama_partial_face"), use_presence=False, thorough=True)
    assert still.status == "ok"  # a photo has no next frame: decided, and it is still obama
    assert np.linalg.norm(still.encoding - encoding("obama_1")) < 0.3


def test_lane_reports_quality_low_once_per_approach(gallery):
    enroll_all(gallery)
    blurred = cv2.GaussianBlur(frame("obama-720p"), (0, 0), 6)
    lane = Lane(pipeline(), Decider(gallery), NoLiveness(), LaneConfig(quality_frames=2))
    out = [d for _ in range(3) for d in lane.process(blurred)]
    assert [d.type for d in out] == ["biometric.quality_low"]
    assert out[0].priority == "telemetry" and "blurred" in out[0].payload["quality"]["problems"]


def test_one_approach_gives_one_decision_with_stage_timings(gallery):
    enroll_all(gallery)
    lane = Lane(pipeline(), Decider(gallery), NoLiveness(), LaneConfig(rearm_frames=2))
    black = np.zeros((480, 640, 3), np.uint8)
    seq = [frame("obama-720p"), frame("obama-480p"), black, black, frame("obama-720p")]
    out = [d for f in seq for d in lane.process(f)]
    assert [d.type for d in out] == ["biometric.identified", "biometric.identified"]
    p = out[0].payload
    assert set(p["timings_ms"]) >= {"presence", "detect", "landmarks", "quality", "encode", "search"}
    assert p["decision_ms"] > 0 and p["liveness"]["check"] == "none"
    assert lane.approaches == 2


def test_multiple_faces_is_an_alarm_once_per_approach(gallery):
    lane = Lane(pipeline(), Decider(gallery), NoLiveness())
    out = lane.process(frame("two_people")) + lane.process(frame("two_people"))
    assert [(d.type, d.priority) for d in out] == [("biometric.multiple_faces", "alarm")]
    assert out[0].payload["faces"] == 2


def test_a_presented_booking_is_verified_one_to_one(gallery):
    enroll_all(gallery, role="visitor")
    lane = Lane(pipeline(), Decider(gallery), NoLiveness(), LaneConfig(mode="verify"))
    assert lane.process(frame("biden_2")) == []  # verify-only lane waits for the booking
    lane.claim("biden", "BK-77")
    [d] = lane.process(frame("biden_2"))
    assert d.type == "biometric.verified" and d.payload["booking_id"] == "BK-77"
    lane.claim("obama", "BK-78")  # someone else's booking with biden's face
    [d] = lane.process(frame("biden_2"))
    assert d.type == "biometric.verify_failed" and d.payload["reason"] == "no_match"


def test_a_bookings_entry_face_is_never_replaced_by_another_subjects(gallery):
    """Another enrolled visitor walking in on a booking whose visitor is inside must not make
    their own face the one the exit is compared with (and so walk out in the visitor's place)."""
    enroll_all(gallery, role="visitor", who=["biden", "obama"])
    lane = Lane(pipeline(), Decider(gallery), NoLiveness(), LaneConfig(mode="verify"))

    def decide(subject, face, entry):
        lane.claim(subject, "BK-1", entry=entry)
        [d] = lane.process(frame(face))
        return d

    assert decide("biden", "biden_2", "keep").type == "biometric.verified"  # the visitor comes in
    swap = decide("obama", "obama_2", "keep")  # verified against obama's own template, but BK-1 is taken
    assert (swap.type, swap.priority, swap.payload["reason"]) == \
        ("biometric.verify_failed", "alarm", "entry_face_of_another_subject")
    assert swap.payload["against"] == "entry" and swap.payload["distance"] > swap.payload["threshold"]
    out = decide("obama", "obama_2", "compare")  # the entry face is still the visitor's
    assert (out.type, out.payload["reason"]) == ("biometric.verify_failed", "not_the_entry_face")
    assert decide("biden", "biden_2", "keep").type == "biometric.verified"  # the same visitor again: fine
    assert len(lane.entries) == 1
    back = decide("biden", "biden_2", "compare")  # positive control: the visitor themself leaves
    assert (back.type, back.payload["against"]) == ("biometric.verified", "entry")


def test_an_entry_face_kept_for_a_subject_is_not_replaced_by_another_face_of_that_subject():
    from drivers.camera.entries import EntryTemplates

    entries = EntryTemplates()
    first, other = encoding("biden_1"), encoding("kit_harington_1")
    assert entries.keep("BK-1", "V-1", first, 0.5) is None
    assert entries.keep("BK-1", "V-1", other, 0.5) == "not_the_entry_face"
    assert entries.keep("BK-1", "V-1", encoding("biden_2"), 0.5) is None  # the same face, seen again
    assert entries.distance("BK-1", first) == 0.0  # still the first face kept
    assert entries.keep("BK-1", "V-2", first, 0.5) == "entry_face_of_another_subject"
    assert entries.forget("BK-1") and entries.keep("BK-1", "V-2", other, 0.5) is None  # after the exit


def test_still_photo_fails_basic_liveness_and_a_moving_face_passes(gallery):
    enroll_all(gallery)
    still = Lane(pipeline(), Decider(gallery), MotionLiveness(max_frames=3))
    out = [d for _ in range(3) for d in still.process(frame("obama_1"))]
    assert [(d.type, d.priority) for d in out] == [("biometric.liveness_failed", "alarm")]
    # The same person turning the head between frames (three real photos of one face).
    moving = Lane(pipeline(), Decider(gallery), MotionLiveness(max_frames=3))
    out = [d for name in ("obama_1", "obama_2") for d in moving.process(frame(name))]
    assert [d.type for d in out] == ["biometric.identified"]
    assert out[0].payload["liveness"]["result"] == "pass"


def test_identify_threshold_tightens_as_the_gallery_grows():
    t = Thresholds()
    sizes = [1, 100, 1000, 10_000, 100_000, 10_000_000]
    values = [t.identify_at(n) for n in sizes]
    assert values[0] == values[1] == 0.45
    assert values == sorted(values, reverse=True) and values[2] == pytest.approx(0.42)
    assert values[-1] == t.identify_floor
    assert all(v <= 0.5 for v in values)


def test_search_matches_brute_force_with_several_templates_per_subject():
    rng = np.random.default_rng(3)
    subjects = [Subject(f"s{i}", "staff", [rng.normal(0, 0.1, 128).astype("<f4").tobytes()
                                           for _ in range(1 + i % 3)]) for i in range(50)]
    index = Index(subjects)
    assert index.matrix_t.flags["C_CONTIGUOUS"] and index.matrix_t.dtype == np.float32
    q = rng.normal(0, 0.1, 128).astype(np.float32)
    brute = {s.subject_id: min(np.linalg.norm(np.frombuffer(t, "<f4") - q) for t in s.templates)
             for s in subjects}
    order = sorted(brute, key=brute.get)
    m = index.nearest(q)
    assert (m.subject_id, m.runner_up_id) == (order[0], order[1])
    assert m.distance == pytest.approx(brute[order[0]], abs=1e-4)
    assert index.distance_to("s7", q) == pytest.approx(brute["s7"], abs=1e-4)


def test_audit_mode_keeps_only_encrypted_crops_of_failed_decisions(gallery, tmp_path):
    from drivers.camera.pipeline import Pipeline

    enroll_all(gallery, who=["biden"])
    audit_dir = tmp_path / "state" / "biometrics" / "audit"
    lane = Lane(Pipeline(pipeline().config, keep_crops=True), Decider(gallery), NoLiveness(),
                LaneConfig(audit=True, audit_retention_days=1), audit_dir)
    [d] = lane.process(frame("obama_2"))
    assert d.type == "biometric.unknown"
    crop_file = audit_dir / d.payload["audit_ref"]
    sealed = crop_file.read_bytes()
    assert b"JFIF" not in sealed and (crop_file.stat().st_mode & 0o077) == 0
    jpeg = gallery.open_blob(sealed, d.payload["audit_ref"].encode())
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR) is not None
    assert lane.purge_audit(now=time.time() + 2 * 86400) == 1 and not crop_file.exists()


class CertifiedCheck:
    """Stands in for a vendor's certified presentation-attack check (the plug-in seam)."""

    name = "vendor-pad"

    def __init__(self, verdict: str = "fail"):
        self.verdict, self.seen = verdict, 0

    def reset(self) -> None:
        self.seen = 0

    def observe(self, frame, face) -> str:
        self.seen += 1
        return self.verdict


def test_an_external_liveness_check_plugs_in_by_name(gallery):
    from drivers.camera.liveness import make_liveness
    from edge.errors import EdgeError

    check = make_liveness("tests.test_biometrics_pipeline:CertifiedCheck", {"verdict": "fail"})
    enroll_all(gallery)
    lane = Lane(pipeline(), Decider(gallery), check)
    [d] = lane.process(frame("obama_2"))
    assert d.type == "biometric.liveness_failed" and d.payload["liveness"]["check"] == "vendor-pad"
    with pytest.raises(EdgeError, match="cannot be loaded"):
        make_liveness("no_such_vendor.module:Check")
    with pytest.raises(EdgeError, match="expected 'motion'"):
        make_liveness("nonsense")


def test_bad_driver_options_name_the_key_and_what_is_expected(tmp_path):
    from edge.config import load_settings
    from edge.errors import ConfigError
    from edge.testing.daemon import dump_toml

    path = tmp_path / "edge.toml"
    path.write_text(dump_toml({"device_id": "g", "site": "s", "role": "gate", "drivers": [
        {"name": "cam", "kind": "camera.face", "source": "/dev/video0", "liveness": "maybe",
         "thresholds": {"verify": 0.6}}]}))
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    text = "\n".join(err.value.lines)
    assert "drivers[0] (cam).thresholds.verify: got 0.6" in text and "0.5" in text
    assert "drivers[0] (cam).liveness: got 'maybe'" in text


def test_decisions_name_the_stages_over_their_time_budget(gallery):
    from drivers.camera.pipeline import Pipeline, PipelineConfig

    enroll_all(gallery, who=["obama"])
    generous = {s: 1e6 for s in ("presence", "detect", "landmarks", "quality", "search")}
    config = PipelineConfig.from_dict({"budgets_ms": {**generous, "encode": 0.001}})
    assert dict(config.budgets_ms)["encode"] == 0.001
    lane = Lane(Pipeline(config), Decider(gallery), NoLiveness())
    [d] = lane.process(frame("obama_2"))
    assert d.payload["over_budget"] == ["encode"]
    assert lane.status()["over_budget"] == {"encode": 1}


def test_a_small_face_in_a_still_photo_is_found_by_the_thorough_pass():
    import cv2 as _cv2

    # obama_3 shrunk so the face is ~45 px wide at the gate's 640-px detection scale: the fast
    # pass misses it; a still photo has no next frame, so the CLI looks again more closely.
    big = frame("obama_3")
    canvas = np.full((1300, 2000, 3), 128, np.uint8)
    small = _cv2.resize(big, None, fx=0.5, fy=0.5, interpolation=_cv2.INTER_AREA)
    canvas[50:50 + small.shape[0], 600:600 + small.shape[1]] = small
    fast = pipeline().analyse(canvas, use_presence=False)
    thorough = pipeline().analyse(canvas, use_presence=False, thorough=True)
    assert fast.status == "no_face"
    assert thorough.status == "ok" and np.linalg.norm(thorough.encoding - encoding("obama_3")) < 0.2


def test_a_photo_slid_turned_and_scaled_in_its_own_plane_still_fails_liveness(gallery):
    # A printed photo held up and moved about: shifted, rotated, scaled, with sensor noise.
    enroll_all(gallery, who=["obama"])
    lane = Lane(pipeline(), Decider(gallery), MotionLiveness(max_frames=4))
    rng = np.random.default_rng(5)
    out = []
    for angle, dx, dy, scale in [(0, 0, 0, 1.0), (4, 25, -10, 1.04), (-5, -30, 15, 0.96), (3, 15, 20, 1.02)]:
        m = cv2.getRotationMatrix2D((640, 360), angle, scale)
        m[:, 2] += (dx, dy)
        moved = cv2.warpAffine(frame("obama-720p"), m, (1280, 720), borderMode=cv2.BORDER_REFLECT)
        noisy = np.clip(moved + rng.normal(0, 3, moved.shape), 0, 255).astype(np.uint8)
        out += lane.process(noisy)
    assert [d.type for d in out] == ["biometric.liveness_failed"]
    assert out[0].payload["liveness"]["motion"] < 0.05
