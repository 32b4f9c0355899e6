"""bench/engines.py runs and reports placement (no timing asserted: speed belongs to the benchmark); its
real-fleet part runs in the benchmark's smoke mode (tests/bench/test_smoke.py)."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.redis]


def test_engines_bench_reports_a_decision_time_and_an_even_spread():
    from bench import engines

    result = engines.placement()
    decision = result["placement_decision_3_engines_1000_agents"]
    assert decision["n"] == 1000 and 0 < decision["p50_ms"] <= decision["p99_ms"] <= decision["max_ms"]
    assert result["spread_150_over_3x50"] == {"a": 50, "b": 50, "c": 50}
    assert result["151st_refused"] is True
