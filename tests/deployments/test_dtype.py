"""`dtype: bfloat16-or-float32`: bf16 only where the hardware computes it natively."""

from __future__ import annotations

import pytest

from deployments.dtype import BF16_OR_FP32, cpu_has_native_bf16, resolve_dtype

# Abridged /proc/cpuinfo texts of the machines this was measured on.
AVX2_EPYC = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma f16c\n"
AMX_XEON = (
    "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\n"
    "flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
)
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"
ARM_OLD = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32\n"


@pytest.mark.parametrize(
    ("cpuinfo", "native"),
    [(AVX2_EPYC, False), (AMX_XEON, True), (ARM_BF16, True), (ARM_OLD, False), ("", False)],
)
def test_native_bf16_is_read_from_the_cpu_flags(cpuinfo, native):
    assert cpu_has_native_bf16(cpuinfo) is native


def test_this_machine_gives_an_answer():
    assert isinstance(cpu_has_native_bf16(), bool)


@pytest.mark.parametrize(
    ("cpuinfo", "cuda", "dtype"),
    [
        (AVX2_EPYC, False, "float32"),
        (AMX_XEON, False, "bfloat16"),
        (AVX2_EPYC, True, "bfloat16"),  # a bf16-capable GPU computes the model
    ],
)
def test_the_value_becomes_concrete(monkeypatch, cpuinfo, cuda, dtype):
    monkeypatch.setattr("deployments.dtype.Path.read_text", lambda self, **kw: cpuinfo)
    kwargs = {"max_model_len": 4096, "dtype": BF16_OR_FP32}
    assert resolve_dtype(kwargs, cuda=cuda) == {"max_model_len": 4096, "dtype": dtype}
    assert kwargs["dtype"] == BF16_OR_FP32  # the config's own dict is left as it was


@pytest.mark.parametrize("kwargs", [{"dtype": "bfloat16"}, {"dtype": "float32"}, {}])
def test_other_values_pass_unchanged(kwargs):
    assert resolve_dtype(kwargs, cuda=False) is kwargs
