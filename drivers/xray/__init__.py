"""Body-scanner adapters: every source maps to one ``xray.scan`` event.

One small module per source (``json_source``, ``xml_source``,
``dicos_source``, ``line_source``: bytes in, Scan fields out) and two drivers
that move the bytes: ``folder`` (result files, incl. DICOS) and ``stream``
(serial/TCP lines). Dose ledger and lawful-scan rules: ``services.xray``.
"""
