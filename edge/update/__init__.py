"""Over-the-air updates: TUF-verified releases installed into A/B slots, confirmed by a
health check or rolled back on their own.

- ``settings``: the ``[update]`` config section.
- ``tuf_client``: finds and downloads this device's release through python-tuf's ngclient.
- ``slots``: the slot layout under the install root, the install steps and the record.
- ``boot``: the stdlib-only launcher that picks the slot to run (and rolls back).
- ``health``: the health check that confirms a new slot.
- ``agent``: the daemon component that ties them together.
- ``repo``: central's side, building and signing the TUF repository.
"""
