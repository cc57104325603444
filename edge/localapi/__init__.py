"""The tablet's local API: HTTP over a unix socket that only the UI app's group can open."""
