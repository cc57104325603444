"""open_signed: the one gate every signed document from central passes (catalogs, contacts, doses, galleries)."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, Field

from edge import signing
from edge.signing import DocumentRejected, SignatureError, open_signed

SITE, DEVICE = "site-a", "tab-1"


class Doc(BaseModel):
    site: str
    device: str
    version: int = Field(ge=1)
    signatures: list[dict]


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    central = signing.load_private_key(signing.generate_keypair(folder, "central")[0])
    stranger = signing.load_private_key(signing.generate_keypair(folder, "stranger")[0])
    trusted = signing.load_public_keys([folder / "central.pub"])
    return central, stranger, trusted


def _body(**overrides):
    return {"site": SITE, "device": DEVICE, "version": 3, **overrides}


def _refused(raw, trusted, model=Doc, **where) -> DocumentRejected:
    with pytest.raises(DocumentRejected) as info:
        open_signed(raw, trusted, model, "test doc", **{"site": SITE, "device": DEVICE, **where})
    assert isinstance(info.value, SignatureError) and str(info.value).startswith("test doc: ")
    return info.value


def test_a_good_document_is_returned_validated_from_bytes_str_or_dict(keys):
    central, _, trusted = keys
    doc = signing.sign(_body(), central)
    for raw in (json.dumps(doc).encode(), json.dumps(doc), doc):
        got = open_signed(raw, trusted, Doc, "test doc", site=SITE, device=DEVICE)
        assert isinstance(got, Doc) and got.version == 3
    plain = open_signed(json.dumps(doc).encode(), trusted, None, "test doc", site=SITE)
    assert plain == doc  # no model: the verified dict itself


def test_unsigned_forged_and_untrusted_documents_are_refused(keys):
    central, stranger, trusted = keys
    unsigned = _refused(json.dumps(_body()).encode(), trusted)
    assert unsigned.problem == "signature" and "not signed" in str(unsigned)
    forged = signing.sign(_body(), central)
    forged["version"] = 4  # changed after signing
    bad = _refused(forged, trusted)
    assert bad.problem == "signature" and "bad signature from key" in str(bad)
    foreign = _refused(signing.sign(_body(), stranger), trusted)
    assert foreign.problem == "signature" and "is not trusted" in str(foreign)


def test_not_json_and_not_an_object_say_what_was_expected(keys):
    _, _, trusted = keys
    for raw in (b"{nope", b"\xff\xfe\x00", b"[" * 100_000):  # garbage, bad encoding, nesting bomb
        err = _refused(raw, trusted)
        assert err.problem == "not_json" and "not JSON" in str(err) and "expected a UTF-8 JSON object" in str(err)
    err = _refused(b"[1, 2]", trusted)
    assert err.problem == "not_object" and str(err) == (
        "test doc: not a JSON object (got a JSON array); expected an object with a 'signatures' list")


def test_a_schema_error_names_the_field_after_the_signature_is_checked(keys):
    central, _, trusted = keys
    err = _refused(signing.sign(_body(version=0), central), trusted)
    assert err.problem == "schema" and str(err) == (
        "test doc: wrong schema at version: Input should be greater than or equal to 1")
    err = _refused(signing.sign({"version": "x"}, central), trusted)
    assert "wrong schema at site: Field required (and 2 more problem(s))" in str(err)
    # An unsigned document learns nothing about the schema: the signature is checked first.
    assert _refused(json.dumps({"version": 0}).encode(), trusted).problem == "signature"


def test_a_document_for_another_site_or_device_is_refused(keys):
    central, _, trusted = keys
    err = _refused(signing.sign(_body(site="site-z"), central), trusted)
    assert err.problem == "wrong_site" and str(err) == "test doc: addressed to site 'site-z', this device is at 'site-a'"
    err = _refused(signing.sign(_body(device="tab-9"), central), trusted)
    assert err.problem == "wrong_device" and str(err) == "test doc: addressed to device 'tab-9', this is 'tab-1'"
    # Without a model the dict is checked: a missing site is not this site.
    err = _refused(signing.sign({"version": 1}, central), trusted, model=None, device=None)
    assert err.problem == "wrong_site" and "addressed to site None" in str(err)
