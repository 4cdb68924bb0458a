"""What runs is what CI compiles: every kernel module compiles with NVRTC, through the launcher's
own compile function and options, for sm_80 and sm_90, and the options keep IEEE semantics (no
flush of subnormals to zero).

NVRTC needs no GPU when given an explicit -arch.
"""

from __future__ import annotations

import contextlib

import pytest

from spikingjelly_psn.ops import surrogates
from spikingjelly_psn.ops.cupy import _compile, _launch, _source

nvrtc = pytest.importorskip("cupy_backends.cuda.libs.nvrtc", reason="CuPy is not installed")

from cupy_support import nvrtc_programs  # noqa: E402  (compiles with NVRTC)

ARCHS = nvrtc_programs.ARCHS


@pytest.fixture(scope="module")
def programs() -> dict[str, dict[_source.Module, _compile.Program]]:
    return nvrtc_programs.programs()


# ---------------------------------------------------------------- compile


@pytest.mark.parametrize("arch", ARCHS)
def test_every_instantiation_compiles(programs, arch):
    compiled = programs[arch]
    assert set(compiled) == set(_source.all_modules())
    for module, program in compiled.items():
        assert set(program.lowered) == set(_source.module_names(module))
        assert all(mangled.startswith("_Z") for mangled in program.lowered.values())
        assert program.binary[:4] == b"\x7fELF"  # a cubin for that architecture


def test_instantiations_cover_every_dtype_window_and_variant():
    modules = _source.all_modules()
    conv = [m for m in modules if m.filename == _source.CONV]
    assert {m.scalar for m in modules} == set(_source.SCALAR_TYPES.values())
    assert {m.window for m in conv} == {*_source.WINDOWS, _source.GENERIC_K}
    names = _source.all_names(_source.CONV)
    assert len(names) == 3 * 4 * 5  # dtypes x windows x (fwd float/pow2, bwd fire/stats, stats)
    for k in (1, 4, 5, 8, 9, 16, 17, 64):
        assert _source.window(k) == next((w for w in _source.WINDOWS if k <= w), 0)


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
    assert set(macros) == set(surrogates.SURROGATES)
    for name, (sg, _, _) in surrogates.SURROGATES.items():
        assert f"#define PSN_SG_{macros[name]} {sg}\n" in header, name
    assert f"#define PSN_SG_COUNT {surrogates.SURROGATE_COUNT}\n" in header


# ---------------------------------------------------------------- options: IEEE, no FTZ


def test_runtime_options_are_ieee():
    assert _compile.nvrtc_options("sm_90") == (
        "-std=c++17", "-ftz=false", "-prec-div=true", "-prec-sqrt=true", "-fmad=false",
        "-arch=sm_90",
    )  # fmt: skip


def _ptx(module: _source.Module, names: list[str] | None = None) -> str:
    names = names or _source.module_names(module)
    source = _source.assemble(module.filename)
    return _compile.compile_program(source, module.filename, names, "compute_90").binary.decode()


def test_generated_code_never_flushes_subnormals():
    """The options reach code generation: no arithmetic, comparison or conversion flushes
    subnormals, and the spike kernels have neither .ftz nor fused multiply-adds. .ftz appears
    only on two approximate steps of surrogate derivatives (gradients): libdevice's expf, which
    rescales around its ex2.approx, and the __fdividef of ATan/Sigmoid (a derivative below
    2^-126 becomes 0)."""
    for module in (
        _source.Module(_source.CONV, "float", 4),
        _source.Module(_source.DENSE, "float"),
    ):
        ptx = _ptx(module)
        flushing = {line.split()[0] for line in ptx.splitlines() if ".ftz" in line}
        assert flushing <= {"ex2.approx.ftz.f32", "rcp.approx.ftz.f32"}, flushing
        assert "mul.rn.f32" in ptx and "setp.ltu.f32" in ptx  # products, spike comparisons
    for pow2 in (False, True):
        ptx = _ptx(
            _source.Module(_source.CONV, "float", 4), [_source.conv_fwd_name("float", 4, pow2)]
        )
        assert ".ftz" not in ptx and "fma.rn.f32" not in ptx


class _FakeNvrtc:
    """Records what the launcher asks NVRTC for."""

    class NVRTCError(Exception):
        pass

    def __init__(self):
        self.options: list[list[str]] = []

    def createProgram(self, source, name, headers, include_names):
        return {"names": []}

    def addNameExpression(self, prog, name):
        prog["names"].append(name)

    def compileProgram(self, prog, options):
        self.options.append(list(options))

    def getCUBIN(self, prog):
        return b"\x7fELF fake"

    def getLoweredName(self, prog, name):
        return "_Z" + str(abs(hash(name)))

    def getProgramLog(self, prog):
        return ""

    def destroyProgram(self, prog):
        pass

    def getVersion(self):
        return (13, 0)

    def getSupportedArchs(self):
        return (80, 90)


class _FakeCupy:
    """Just enough of CuPy for _launch.kernel to load a module."""

    def __init__(self):
        fake = self

        class Module:
            def load(self, binary):
                fake.loaded = binary

            def get_function(self, name):
                return ("function", name)

        self.loaded = None
        self.cuda = type("cuda", (), {})()
        self.cuda.Device = lambda index: contextlib.nullcontext()
        self.cuda.function = type("function", (), {"Module": Module})()


def test_the_launcher_compiles_with_exactly_these_options(monkeypatch, tmp_path):
    fake_nvrtc, fake_cupy = _FakeNvrtc(), _FakeCupy()
    monkeypatch.setattr(_compile, "_nvrtc", lambda: fake_nvrtc)
    monkeypatch.setattr(_launch, "require_cupy", lambda: fake_cupy)
    monkeypatch.setattr(_launch, "_arch", lambda device: "sm_90")
    monkeypatch.setattr(_launch, "_kernels", {})
    monkeypatch.setenv("SPIKINGJELLY_PSN_CACHE", str(tmp_path))
    module = _source.Module(_source.CONV, "float", 4)
    name = _source.conv_fwd_name("float", 4, True)
    fn = _launch.kernel(module, name, 0)
    assert fake_nvrtc.options == [list(_compile.nvrtc_options("sm_90"))]
    assert fn == ("function", fake_nvrtc.getLoweredName(None, name))
    assert fake_cupy.loaded == b"\x7fELF fake"
    # every kernel of the module is now at hand: no second compile, no lookup per launch
    for other in _source.module_names(module):
        _launch.kernel(module, other, 0)
    assert len(fake_nvrtc.options) == 1
    # a new process finds the binary in the on-disk cache
    monkeypatch.setattr(_launch, "_kernels", {})
    _launch.kernel(module, name, 0)
    assert len(fake_nvrtc.options) == 1


def test_device_arch_falls_back_to_ptx_for_an_unknown_gpu(monkeypatch):
    monkeypatch.setattr(_compile, "_nvrtc", lambda: _FakeNvrtc())
    assert _compile.device_arch((9, 0)) == "sm_90"
    assert _compile.device_arch((12, 0)) == "compute_90"
