"""Names scripts/deadcode.py must not report: each is used where vulture cannot see it.

Read by vulture with the tree, never run. ``_.name`` marks ``name`` used wherever it is defined.
"""
# ruff: noqa: B018

from vulture.whitelist_utils import Whitelist

_ = Whitelist()

# Test drivers and a liveness plug-in the tests register as "module:Class" strings.
_.StuckDriver, _.FlappingDriver, _.StateDirDriver, _.BadHealthDriver, _.CertifiedCheck
# Found with getattr: doctor checks (edge.doctor.run_checks), messaging's _apply_<document kind>.
_.check_store, _.check_audit, _.check_disk, _.check_clock, _.check_components, _.check_trust, _.check_packages
_._apply_contacts, _._apply_status, _._apply_in
# Module __getattr__ (PEP 562): the lazy imports that keep start-up light.
_.__getattr__
# Hooks the standard library and libraries call: http.server handlers, pydantic-settings,
# configparser, paho-mqtt callbacks and client settings.
_.log_message, _.address_string, _.client_address, _.settings_customise_sources, _.optionxform
_.on_connect, _.on_disconnect, _.on_subscribe, _.on_socket_open, _.connect_timeout
# Attributes set on library objects, which read them: MQTT 5 properties, TUF metadata,
# DICOM elements of the simulated scanner's files (pydicom), urllib3's pool classes (edge/update/fetcher.py).
_.SessionExpiryInterval, _.ReceiveMaximum, _.snapshot_meta, _.pool_classes_by_scheme
_.MediaStorageSOPInstanceUID, _.TransferSyntaxUID, _.ThreatSequence, _.ThreatROIBase, _.ThreatROIExtents
_.ThreatCategory, _.Rows, _.Columns, _.BitsAllocated, _.BitsStored, _.HighBit, _.PixelRepresentation
_.PhotometricInterpretation, _.SamplesPerPixel, _.PixelData
