"""The pieces the contracts and settings share: id patterns and channel parameter texts, defined once.

Each pattern is a JSON-schema ``pattern`` (pydantic ``Field(pattern=...)``) and
the same rule everywhere it is checked (settings, documents, commands, the
ACL generator). Plain strings: importing this module costs nothing, so the
fast CLI paths may use it too.
"""

from __future__ import annotations

#: Site, device, driver, lane and zone names: safe in an MQTT topic, a file name, a log line.
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
#: A resident's pseudonym (never a real name).
PSEUDONYM = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
#: Ids this system makes: messages, contacts, courses, catalog items.
ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
#: Ids from other systems (bookings, face subjects, cards, scans): they may hold / @ +.
EXTERNAL_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:/@+-]{0,127}$"
#: A SHA-256 digest, lower-case hex.
SHA256_HEX = r"^[0-9a-f]{64}$"
#: A PIN's PBKDF2 salt and hash, hex (either case): what a directory or a reader stores, never the PIN.
PIN_SALT_HEX = r"^[0-9a-fA-F]{16,128}$"
PIN_HASH_HEX = r"^[0-9a-fA-F]{32,128}$"

#: Descriptions of the topic parameters of the MQTT channels (edge.contract.Channel.parameters).
SITE = "Site id, e.g. hmp-example."
DEVICE = "Device id (also the MQTT client id and the certificate's CN)."
TABLET = "Device id of the tablet."
