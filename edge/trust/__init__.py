"""Trust: which public keys this device trusts, for which documents, and until when.

The role check, for any subsystem (one API, two shapes)::

    from edge.trust import trust_store
    store = trust_store(settings)                  # anchors checked; TrustAnchorError (exit 78) names the file
    signers = store.check(doc, "config", required=1)   # raises TrustRefused(problem, detail)
    keys = store.keys_for("update")                # live key_id -> key mapping for edge.signing.open_signed

A document type maps to the role its signers need (``DOCUMENT_ROLES``:
command, catalog, gallery, directory/contacts, config, update, revocations).
Revocation and expiry are judged at every call; a component that keeps a signed
document (and its version as the floor) registers ``watch_revocations`` to judge
it again when a revocation arrives. Anchors live in
``trust.central_keys``: public keys only, each with a ``NAME.pub.json``
roles file (see ``_anchors``).
"""

from __future__ import annotations

import time

from edge.trust._anchors import Anchor, TrustAnchorError, load_anchors, read_anchor
from edge.trust._store import (
    DOCUMENT_ROLES,
    RoleKeys,
    TrustRefused,
    TrustStore,
    role_for,
    store_for_keys,
)
from edge.trust.roles import ROLES, write_roles

REVOCATIONS_FILE = "trust/revocations.json"

__all__ = ["DOCUMENT_ROLES", "ROLES", "Anchor", "RoleKeys", "TrustAnchorError", "TrustRefused", "TrustStore",
           "daemon_keys_for", "keys_for", "load_anchors", "read_anchor", "role_for", "store_for_keys", "trust_store",
           "watch_revocations", "write_roles"]


def trust_store(settings, clock=time.time) -> TrustStore:
    """The device's trust store from ``[trust].central_keys`` and the persisted revocation list.

    ``clock`` judges key expiry where a caller gives no time: the daemon passes its trusted time
    (Daemon.trusted_now), so a clock set back revives no expired directory, gallery or config key."""
    return TrustStore(load_anchors(settings.trust.central_keys), settings.state_dir / REVOCATIONS_FILE, clock)


def keys_for(settings, doc_type: str) -> RoleKeys:
    """Shortcut: the live mapping of keys allowed to sign ``doc_type`` on this device."""
    return trust_store(settings).keys_for(doc_type)


def daemon_keys_for(daemon, doc_type: str) -> RoleKeys:
    """For a daemon component: the daemon's own trust store (loaded and checked at start)."""
    store = getattr(daemon, "trust", None) or trust_store(daemon.settings)
    return store.keys_for(doc_type)


def watch_revocations(daemon, listener) -> None:
    """For a daemon component that keeps a signed document: ``listener()`` runs after each
    revocation list that revokes a key (``TrustStore.on_revocations``: on the network thread)."""
    store = getattr(daemon, "trust", None)
    if store is not None:
        store.on_revocations(listener)
