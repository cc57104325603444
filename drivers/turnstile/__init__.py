"""Serial turnstile controllers: codecs (pure bytes <-> messages) and one driver loop."""
