"""``segshap demo`` finds the bundled sample CT, organ map and demo model wherever its module lives.

(The whole demo is a five-minute run, so CI checks its inputs here; the demo itself is `make demo`.)
"""

from __future__ import annotations

from conftest import DEMO_MODEL, SAMPLE_CT, SAMPLE_ORGANS


def test_demo_inputs_are_the_bundled_resources():
    from SegSHAPLib.cli import demo

    assert demo.SAMPLE_CT.resolve() == SAMPLE_CT and demo.SAMPLE_CT.is_file()
    assert demo.SAMPLE_ORGANS.resolve() == SAMPLE_ORGANS and demo.SAMPLE_ORGANS.is_file()
    assert demo.DEMO_MODEL.resolve() == DEMO_MODEL and (demo.DEMO_MODEL / "plans.json").is_file()
