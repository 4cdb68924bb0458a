"""The static resource report (sm_90): every kernel instantiation compiled as the launcher
compiles it, with ptxas's report, shows no spill and at least 50% theoretical occupancy at the
launch shapes the launcher uses, for every T from 4 to 1024. The table is printed in CI's log.
"""

from __future__ import annotations

import pytest

from spikingjelly_psn.ops.cupy import _source, resources

pytest.importorskip("cupy_backends.cuda.libs.nvrtc", reason="CuPy is not installed")

from cupy_support import nvrtc_programs  # noqa: E402  (compiles with NVRTC)


def test_resource_report_no_spills_and_half_occupancy_at_every_t(capsys):
    report = resources.rows(nvrtc_programs.programs()["sm_90"])
    with capsys.disabled():
        print("\n\nStatic resource report, sm_90 (ptxas through NVRTC, launcher's shapes):")
        print(resources.format_table(report))
    assert len(report) == sum(len(_source.module_names(m)) for m in _source.all_modules())
    for row in report:
        assert row.usage.spill_stores == row.usage.spill_loads == 0, row.name
        assert row.usage.registers <= 64, row.name
        assert set(row.occupancy) == set(resources.T_VALUES)
        assert min(row.occupancy.values()) >= 0.5, (row.name, row.occupancy)


def test_occupancy_model_matches_the_sm90_calculator():
    def use(registers, shared=0):
        return resources.Usage(registers, 0, 0, 0, shared)

    assert resources.occupancy(use(32), 256, 0) == 1.0
    assert resources.occupancy(use(40), 256, 0) == 0.75  # 51 warps by registers -> 48
    assert resources.occupancy(use(64), 256, 0) == 0.5
    assert resources.occupancy(use(65), 256, 0) == 0.375
    assert resources.occupancy(use(32), 32, 0) == 0.5  # 32 blocks of one warp at most
    assert resources.occupancy(use(32), 256, 48 * 1024) == 0.5  # 4 blocks of 49 KiB fit
    assert resources.occupancy(use(40), 128, 65 * 128 * 4) == 0.375  # old backward, T = 64


def test_ptxas_log_parsing():
    log = (
        "ptxas info    : Compiling entry function '_Zk' for 'sm_90'\n"
        "ptxas info    : Function properties for _Zk\n"
        "ptxas         .     8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n"
        "ptxas info    : Used 64 registers, used 1 barriers, 512 bytes smem\n"
    )
    assert resources.parse_ptxas(log) == {"_Zk": resources.Usage(64, 4, 12, 8, 512)}
