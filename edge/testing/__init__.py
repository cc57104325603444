"""The mock driver harness: real brokers, real daemons, real subscribers for tests.

Shipped in the package and registered as a pytest plugin (``pytest11``), so a
third party writing a driver uses the same fixtures as edge's own tests.
"""

from edge.testing.broker import Mosquitto, free_port
from edge.testing.collector import MqttCollector
from edge.testing.daemon import DaemonProcess, dump_toml

__all__ = ["DaemonProcess", "Mosquitto", "MqttCollector", "dump_toml", "free_port"]
