"""Every kernel source and template instantiation compiles with NVRTC for sm_80 and sm_90.

NVRTC needs no GPU when given an explicit -arch. The source text and options are the
launcher's own (spikingjelly_psn.ops.cupy._source).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from spikingjelly_psn.ops.cupy import _source, _surrogates

nvrtc = pytest.importorskip("cupy_backends.cuda.libs.nvrtc", reason="CuPy is not installed")

ARCHS = ("sm_80", "sm_90")


def _names(filename: str) -> list[str]:
    names = {
        name
        for file, scalar, sg, index in _source.all_modules()
        if file == filename
        for name in _source.module_names(file, scalar, sg, index)
    }
    return sorted(names)


def _compile(filename: str, arch: str) -> dict[str, str]:
    """Lowered (mangled) name of every instantiation of ``filename``, compiled in one program."""
    prog = nvrtc.createProgram(_source.assemble(filename), filename, [], [])
    try:
        names = _names(filename)
        for name in names:
            nvrtc.addNameExpression(prog, name)
        try:
            nvrtc.compileProgram(prog, list(_source.nvrtc_options(arch)))
        except nvrtc.NVRTCError as error:
            raise AssertionError(f"{filename} {arch}:\n{nvrtc.getProgramLog(prog)}") from error
        assert len(nvrtc.getCUBIN(prog)) > 0
        return {name: nvrtc.getLoweredName(prog, name) for name in names}
    finally:
        nvrtc.destroyProgram(prog)


@pytest.fixture(scope="module")
def compiled() -> dict[tuple[str, str], dict[str, str]]:
    jobs = [(filename, arch) for filename in _source.SOURCES for arch in ARCHS]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = pool.map(lambda job: _compile(*job), jobs)
        return dict(zip(jobs, results))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("filename", _source.SOURCES)
def test_every_instantiation_compiles(compiled, filename, arch):
    lowered = compiled[(filename, arch)]
    assert set(lowered) == set(_names(filename))
    assert all(mangled.startswith("_Z") for mangled in lowered.values())


def test_instantiations_cover_every_dtype_surrogate_and_index():
    modules = _source.all_modules()
    assert {m[1] for m in modules} == set(_source.SCALAR_TYPES.values())
    assert {m[3] for m in modules} == {"int", "long long"}
    served = {_source.sg_template(i) for i in range(_surrogates.SURROGATE_COUNT)}
    assert served == {m[2] for m in modules} == set(_source.SG_TEMPLATES)


def test_assembled_sources_are_self_contained():
    for filename in _source.SOURCES:
        text = _source.assemble(filename)
        assert '#include "' not in text
        assert "psn_surrogate_eval" in text


def test_surrogate_ids_match_the_device_code():
    header = (_source.KERNEL_DIR / "psn_common.cuh").read_text()
    macros = {
        "ATan": "ATAN", "Sigmoid": "SIGMOID", "PiecewiseQuadratic": "PIECEWISE_QUADRATIC",
        "PiecewiseExp": "PIECEWISE_EXP", "SoftSign": "SOFT_SIGN", "SuperSpike": "SUPER_SPIKE",
        "NonzeroSignLogAbs": "NONZERO_SIGN_LOG_ABS", "Erf": "ERF",
        "PiecewiseLeakyReLU": "PIECEWISE_LEAKY_RELU",
        "SquarewaveFourierSeries": "SQUAREWAVE_FOURIER_SERIES", "S2NN": "S2NN",
        "QPseudoSpike": "Q_PSEUDO_SPIKE", "LeakyKReLU": "LEAKY_K_RELU",
        "FakeNumericalGradient": "FAKE_NUMERICAL_GRADIENT", "LogTailedReLU": "LOG_TAILED_RELU",
        "Rect": "RECT", "DeterministicPass": "DETERMINISTIC_PASS",
    }  # fmt: skip
    assert set(macros) == set(_surrogates.SURROGATES)
    for name, (sg, _, _) in _surrogates.SURROGATES.items():
        assert f"#define PSN_SG_{macros[name]} {sg}\n" in header, name
    assert f"#define PSN_SG_COUNT {_surrogates.SURROGATE_COUNT}\n" in header
