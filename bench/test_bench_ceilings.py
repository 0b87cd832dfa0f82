"""The ceilings themselves, so every benchmark run records them even when filtered."""

import pytest

from bench.triad import copy_bandwidth_now


@pytest.mark.benchmark(group="ceilings")
def test_machine_ceilings(benchmark, ceilings):
    benchmark.extra_info.update(
        bandwidth_gbs=ceilings.bandwidth_gbs,
        gemm_gflops=ceilings.gemm_gflops,
        bfloat16_gemm_gflops=ceilings.bfloat16_gemm_gflops,
        copy_bandwidth_gbs=round(copy_bandwidth_now(), 1),
    )
    benchmark.pedantic(lambda: None, rounds=1)
    assert ceilings.bandwidth_gbs > 0 and ceilings.gemm_gflops > 0
