"""The bench's forward-cost section: what a target forward costs by rows, and the bandwidth bound."""

from __future__ import annotations

import pytest

from leapdecode.api import LLM
from leapdecode.bench.report import forward_cost_section
from leapdecode.bench.roofline import roofline, weight_bytes


@pytest.fixture(scope="module")
def int4_llm():
    return LLM("smollm2-135m", dtype="int4", threads=2)


def test_weight_bytes_count_what_each_precision_stores(int4_llm):
    """SmolLM2-135M: 135M weights, 28M of them the tied head; at int4 in 16-row tiles 0.625 bytes a weight
    (nibbles plus float16 scale and offset per 32), in float32 4 bytes, so float32 reads ~6.4x as much."""
    int4 = weight_bytes(int4_llm.network)
    assert 80e6 < int4 < 90e6
    f32 = weight_bytes(LLM("smollm2-135m", dtype="float32", threads=2).network)
    assert 6.0 < f32 / int4 < 6.8


def test_roofline_times_every_row_count_and_reports_the_bound(int4_llm):
    cost = roofline(int4_llm.network)
    assert set(cost["forward_ms"]) == {1, 2, 4, 8, 16}
    assert all(ms > 0 for ms in cost["forward_ms"].values())
    assert cost["forward_ms"][16] > cost["forward_ms"][1]  # 16 rows can not be cheaper than one
    assert cost["read_gbs"] > 0.5 and cost["bound_ms"] == pytest.approx(cost["weight_mb"] / cost["read_gbs"])  # MB / (GB/s) = ms
    lines = "\n".join(forward_cost_section(cost))
    assert "## Target forward by rows" in lines and "bound" in lines
    assert int4_llm.generate("Hello", max_new_tokens=4).token_ids  # the timing left the model usable
