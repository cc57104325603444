"""The biometrics part of the MQTT contract: ``biometric.*`` payloads and the gallery channels.

Published in docs/asyncapi.json through ``edge.contract``; the tests validate
every biometric event they receive against these models, so the document
cannot drift from what the gate emits. No model here has a field for a
template: templates travel only inside signed gallery documents, towards the
device.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.commands.model import Signature  # the one signature shape of every signed document
from edge.schema import SHA256_HEX, SITE


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Quality(_Strict):
    problems: list[Literal["face_too_small", "blurred", "not_frontal", "cut_off"]]
    face_px: int = Field(description="Face box width at full resolution, pixels.")
    sharpness: float = Field(description="Variance of the Laplacian of the face at 112x112.")
    yaw: float = Field(description="Nose offset from the eye midpoint along the eye line, in eye distances.")
    pitch: float = Field(description="Nose drop below the eye line, in eye distances (frontal ~0.6-0.9).")


class Liveness(_Strict):
    check: str = Field(description="motion (basic, built in), none, or the plug-in's name.")
    result: Literal["pass", "fail"]
    motion: float = Field(description="motion check: largest aligned landmark shift, eye distances.")


class _Timed(_Strict):
    timings_ms: dict[str, float] = Field(
        description="Per pipeline stage: presence, detect, landmarks, quality, encode, search.")
    decision_ms: float = Field(description="Sum of the stages for the deciding frame.")
    over_budget: list[str] = Field(default_factory=list, description="Stages that ran over their time budget.")
    audit_ref: str | None = Field(default=None, description="Opt-in audit mode: encrypted crop file name.")


class _Decision(_Timed):
    threshold: float
    distance: float | None = Field(description="Euclidean distance of the encodings; None if not compared.")
    gallery_epoch: int
    gallery_version: int
    liveness: Liveness
    quality: Quality | None = None


class Verified(_Decision):
    """biometric.verified (normal): the face matches the booking's subject within its window."""

    mode: Literal["verify"]
    subject_id: str
    booking_id: str | None
    against: Literal["entry"] | None = Field(default=None, description="entry: compared with the face kept "
                                             "at the visitor's entry (not the gallery): a visitor leaving, or a "
                                             "second entry on a booking whose entry face is kept.")


class VerifyFailed(Verified):
    """biometric.verify_failed (normal; alarm for not_the_entry_face and entry_face_of_another_subject):
    1:1 refused; ``reason`` says why. entry_face_of_another_subject: an entry on a booking whose
    entry face is kept for another subject (the kept face is never replaced)."""

    reason: Literal["no_match", "expired", "not_yet_valid", "not_enrolled", "not_the_entry_face",
                    "no_entry_template", "entry_face_of_another_subject"]


class Identified(_Decision):
    """biometric.identified (normal): 1:N against staff valid now; the nearest and its margin."""

    mode: Literal["identify"]
    subject_id: str
    gallery_size: int = Field(description="Staff templates searched; the threshold depends on it.")
    margin: float | None = Field(description="Runner-up subject's distance minus the best; None if alone.")
    runner_up_distance: float | None


class Unknown(_Decision):
    """biometric.unknown (normal): nobody close enough, or two staff too alike (ambiguous)."""

    mode: Literal["identify"]
    reason: Literal["no_match", "ambiguous", "empty_gallery"]
    gallery_size: int
    margin: float | None = None
    runner_up_distance: float | None = None


class MultipleFaces(_Timed):
    """biometric.multiple_faces (alarm): more than one person where the lane allows one."""

    faces: int = Field(ge=2)


class QualityLow(_Timed):
    """biometric.quality_low (telemetry): an approach gave no frame good enough to decide on."""

    quality: Quality


class LivenessFailed(_Timed):
    """biometric.liveness_failed (alarm): the presentation-attack check failed."""

    liveness: Liveness
    quality: Quality | None = None


class GalleryUpdated(_Strict):
    """biometric.gallery_updated (telemetry): a central gallery document was applied."""

    op: Literal["snapshot", "upsert", "revoke"]
    epoch: int
    version: int
    subjects: int | None = Field(default=None, description="snapshot: subjects it holds.")
    subject_id: str | None = Field(default=None, description="upsert/revoke: whom it changed.")


class GalleryRejected(_Strict):
    """biometric.gallery_rejected (normal): a gallery document was unsigned, forged or malformed;
    an alarm when it would make someone staff, or start a new epoch, on fewer than two gallery
    keys' signatures."""

    topic: str
    error: str


class LocalEnrollment(_Strict):
    """biometric.local_enrollment (alarm): someone enrolled a face at the gate, not through central.
    It is kept only while central's snapshots vouch for it (GallerySnapshot.local_enrollments)."""

    subject_id: str
    role: Literal["visitor", "staff"]
    operator: str = Field(description="Who ran `edge biometrics enroll` (their login; for staff, the "
                          "account the daemon saw on its control socket).")
    approved_by: str | None = Field(default=None, description=(
        "Staff: the second operator, under another account, who approved it (`edge cmd approve`); "
        "a staff face is a standing pass, so never one person. None for a visitor (one operator)."))
    reason: str
    template_sha256: str = Field(description="sha256 of the templates, in order, concatenated.")
    enrolled_at: datetime


class LocalEnrollmentSettled(_Strict):
    """biometric.local_enrollment_settled (normal, alarm when removed): what a snapshot decided."""

    subject_id: str
    outcome: Literal["confirmed", "removed"]
    reason: str
    epoch: int
    version: int


EVENT_PAYLOADS: dict[str, type[BaseModel]] = {
    "biometric.verified": Verified, "biometric.verify_failed": VerifyFailed,
    "biometric.identified": Identified, "biometric.unknown": Unknown,
    "biometric.multiple_faces": MultipleFaces, "biometric.quality_low": QualityLow,
    "biometric.liveness_failed": LivenessFailed,
    "biometric.gallery_updated": GalleryUpdated, "biometric.gallery_rejected": GalleryRejected,
    "biometric.local_enrollment": LocalEnrollment, "biometric.local_enrollment_settled": LocalEnrollmentSettled,
}


# -- gallery documents (central -> device, signed) ----------------------------------------------

class GallerySubject(_Strict):
    subject_id: str = Field(min_length=1, max_length=128)
    role: Literal["visitor", "staff"] = Field(description="Only staff are identified 1:N.")
    templates: list[str] = Field(min_length=1, description="Base64 of 128 little-endian float32 (dlib encoding).")
    valid_from: datetime | None = Field(default=None, description="With a timezone; refused before.")
    valid_until: datetime | None = Field(
        default=None, description="With a timezone; refused after, then purged. Required for visitors.")


class VouchedEnrollment(_Strict):
    subject_id: str
    template_sha256: str = Field(pattern=SHA256_HEX)


class GallerySnapshot(_Strict):
    """The whole central gallery of a site at (epoch, version). Publish retained, QoS 1."""

    site: str
    epoch: int = Field(ge=0, description=(
        "Changes when central rebuilds its gallery; only a snapshot starts one, signed by two distinct "
        "gallery keys (except a device's first): one key could otherwise start an epoch ahead of "
        "central's and make every later revoke old. A version one key made up within an epoch is "
        "undone the same way: central starts a new epoch."))
    version: int = Field(ge=0, description="Version of the last update included.")
    issued_at: datetime | None = None
    subjects: list[GallerySubject] = Field(description=(
        "Every subject. One that becomes staff here (new, other templates, or a window beyond the one "
        "the device holds) needs signatures from two distinct gallery keys: a staff face is a standing "
        "pass (identify, then grant)."))
    local_enrollments: list[VouchedEnrollment] = Field(default_factory=list, description=(
        "Local enrollments (biometric.local_enrollment events) central accepts. A device keeps a local "
        "enrollment made before `issued_at` only while each snapshot lists it with the same hash; "
        "otherwise it removes it and says so (biometric.local_enrollment_settled)."))
    signatures: list[Signature] = Field(min_length=1)


class GalleryUpdate(_Strict):
    """One change at ``version`` = previous + 1 in the same epoch. Publish QoS 1, not retained."""

    site: str
    epoch: int = Field(ge=0)
    version: int = Field(ge=1)
    op: Literal["upsert", "revoke"]
    subject: GallerySubject | None = Field(default=None, description=(
        "upsert: the subject, all its templates. Making someone staff (new, other templates, a longer "
        "window) needs signatures from two distinct gallery keys; visitors and revokes need one."))
    subject_id: str | None = Field(default=None, description="revoke: whom to remove.")
    issued_at: datetime | None = None
    signatures: list[Signature] = Field(min_length=1)


class GalleryRequest(_Strict):
    """The device asks for a snapshot: it saw a gap or an epoch it cannot start from updates."""

    device: str
    epoch: int
    version: int
    reason: str


_GALLERY_RULES = (
    "Sealed to every device of the site ({\"sealed\": envelope}, edge/sealing.py: one document, the "
    "key sealed to each device's birth-message seal_key); a document in clear is refused. Inside, "
    "signed with a key in the device's [trust].central_keys (edge/signing.py: Ed25519 over canonical "
    "JSON). Updates apply strictly in version order within an epoch: a version already applied is "
    "dropped; a later one is held and a snapshot requested on gallery/request. A snapshot applies "
    "when its (epoch, version) is newer than the device's; held updates after it then apply. "
    "Each change is committed before the next decision, so a revoke takes effect at once.")


def channels():
    from edge.contract import Channel

    site = {"site": SITE}
    return [
        Channel("siteGallerySnapshot", "edge/v1/{site}/gallery/snapshot", "receive", GallerySnapshot,
                "The site's face gallery, whole (retained).",
                "Republish after every few updates and on each gallery/request, retained, so a new or "
                "long-offline device starts from it. Local enrollments on the device are kept. "
                + _GALLERY_RULES, retain=True, parameters=site),
        Channel("siteGalleryUpdate", "edge/v1/{site}/gallery/update", "receive", GalleryUpdate,
                "One signed upsert or revoke of the face gallery.",
                "Devices keep a persistent session, so updates published while they are offline "
                "arrive on return. " + _GALLERY_RULES, parameters=site),
        Channel("siteGalleryRequest", "edge/v1/{site}/gallery/request", "send", GalleryRequest,
                "A device asks for the gallery snapshot.",
                "Sent at most every 30 s per device when it detects a gap in update versions or "
                "an unknown epoch. Answer by (re)publishing the retained snapshot.", parameters=site),
    ]
