"""Reference central ingest: MQTT (shared subscription) -> SQLite or PostgreSQL, acked after commit.

Why a console command of this project (``edge central …``) and not a separate
package: the ingest reads exactly the contract this repository defines
(``edge.contract``, ``edge.mqtt.topics``), so shipping both from one tree keeps
them in step, and the conformance tests run the real device code against the
real consumer in one test run. It is kept apart all the same: nothing under
``edge/`` outside this package imports it, the daemon never loads it, and its
PostgreSQL driver is an extra (``pip install edge[central]``) that devices never
install. See docs/fleet.md.
"""
