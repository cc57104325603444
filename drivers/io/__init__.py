"""Relay and digital-input modules (Modbus TCP/RTU) driving plain turnstiles, doors and sally ports."""
