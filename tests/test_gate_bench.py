"""``bench.py gate``'s card part runs to the end and times each stage it names."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1] / "scripts"))
from benchmarks import _card_pulse


def test_card_to_pulse_bench_times_the_chain_and_the_relay_grant_alone():
    result = _card_pulse.run(2, append_alone_ms=0.5)
    assert result["runs"] == 2
    stages = result["stages_alone_ms"]
    assert set(stages) == {"osdp_card_read_ms", "store_append_ms", "relay_grant_to_coil_ms"}
    # Each figure is a coil actually switched on after its start (a timeout raises instead).
    assert 0 < result["card_to_pulse_ms_p50"] <= result["card_to_pulse_ms_max"] < 5000
    assert 0 < stages["relay_grant_to_coil_ms"] < 1000 and stages["osdp_card_read_ms"] > 0
    assert result["stages_sum_ms"] == round(sum(stages.values()), 2)
