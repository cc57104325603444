"""Simulated devices: drivers for demos and tests, and emulators of real wire protocols."""
