"""Red team: freeze the revocation list so a stolen command key can never be revoked.

A revocation list needs one ``config`` signature (revoking only tightens) and a
growing ``serial``; a lower serial was refused as a rollback. Whoever holds a
config key publishes a list with the largest serial JSON allows here (4300
digits) and revokes nothing: every later list from central has a lower serial
and was refused, so the command key stolen with it stayed valid until its
roles file expired. But the device keeps the union of every list (a revocation
is never undone), so a lower serial can only ever add revocations: its new
ones are applied; a lower list that adds nothing is still refused as a
rollback, with its alarm.
"""

from __future__ import annotations

import json

from tests.security._redteam import result_of
from tests.security.test_revocation_and_replay import _retain, _trust_events, device  # noqa: F401

HUGE = 10 ** 4299  # 4300 digits: the longest integer the device's JSON parser takes


def test_a_huge_serial_does_not_stop_later_revocations(device):  # noqa: F811
    broker, collector, keys, daemon = device
    assert result_of(collector, broker, keys.command("ops", target="hb", name="ping"))["status"] == "ok"
    frozen = json.loads(keys.revocations(1))
    frozen["serial"] = HUGE
    from edge.signing import sign

    frozen = sign({k: v for k, v in frozen.items() if k != "signatures"}, keys.private["trustee"])
    _retain(broker, json.dumps(frozen).encode())
    collector.wait_for(lambda c: _trust_events(c, "trust.revocations_applied"), 20, "the huge serial applied")

    # Central learns that 'ops' was stolen and revokes it with its next serial.
    _retain(broker, keys.revocations(2, "ops"))
    applied = collector.wait_for(lambda c: [e for e in _trust_events(c, "trust.revocations_applied")
                                            if e["payload"]["added"]], 20, "the revocation of ops applied")
    assert applied[0]["payload"]["trusted_keys_revoked"] == [keys.kid["ops"]], applied
    assert applied[0]["priority"] == "alarm"
    got = result_of(collector, broker, keys.command("ops", target="hb", name="ping"))
    assert (got["status"], got["reason"]) == ("rejected", "revoked_key"), got

    # Positive controls: other keys work; an older list that adds nothing is still a rollback.
    assert result_of(collector, broker, keys.command("security", target="hb", name="ping"))["status"] == "ok"
    _retain(broker, keys.revocations(1, "ops"))
    refused = collector.wait_for(lambda c: _trust_events(c, "trust.revocations_rejected"), 20, "rollback refused")
    assert "rollback" in refused[0]["payload"]["reason"], refused
    daemon.stop()
    daemon.start()
    again = result_of(collector, broker, keys.command("ops", target="hb", name="ping"))
    assert again["reason"] == "revoked_key", again
