"""The flashjit package without any framework: import, the C library and
header it ships, the argument checks (messages name the argument), and
kernels generated as PTX through the C API (no GPU needed)."""

import os
import re
import subprocess
import sys

import pytest

import flashjit
from flashjit import _problem
from flashjit._problem import Tensor


def test_import_needs_no_framework():
    code = ("import sys, flashjit; "
            "print(sorted(m for m in ('torch', 'jax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True,
                         capture_output=True, text=True).stdout.strip()
    assert out == "[]"


def test_ships_the_library_and_its_header():
    assert re.fullmatch(r"\d+\.\d+\.\d+\+cg\d+", flashjit.__version__)
    assert os.path.isfile(flashjit.library_path())
    header = os.path.join(flashjit.include_dir(), "flashjit", "flashjit.h")
    text = open(header).read()
    assert "flashjit_prepare" in text
    version = int(re.search(r"#define FLASHJIT_API_VERSION (\d+)", text).group(1))
    assert flashjit._api_version() == version


def test_forward_args_mirror_the_c_struct():
    a = flashjit.ForwardArgs()
    assert a.struct_size > 0 and a.dtype == _problem.BF16
    assert (a.window_left, a.window_right, a.trust_device_lengths) == (-1, -1, 0)
    a.q_strides = (10, 20, 30)
    a.q = 1 << 40
    b = a.copy()
    a.q_strides = (1, 2, 3)
    assert b.q_strides == (10, 20, 30) and b.q == 1 << 40
    with pytest.raises(TypeError):
        a.q_strides = (1, 2)


def test_backward_args_mirror_the_c_struct():
    f = flashjit.ForwardArgs()
    f.q, f.head_dim_qk = 1 << 40, 72
    b = flashjit.BackwardArgs(f)
    assert b.struct_size > f.struct_size
    assert (b.deterministic, b.bias_grad, b.workspace, b.dq) == (0, 0, 0, 0)
    # The call's scratch is its forward's fields.
    b.workspace, b.workspace_bytes = 4096, 1024
    assert (b.forward.workspace, b.forward.workspace_bytes) == (4096, 1024)
    assert b.forward.q == 1 << 40 and b.forward.head_dim_qk == 72
    f.q = 7 << 40  # the backward holds a copy
    assert b.forward.q == 1 << 40
    fwd = b.forward  # a copy too: assign it back to change it
    fwd.head_dim_v = 64
    assert b.forward.head_dim_v == 0
    b.forward = fwd
    assert b.forward.head_dim_v == 64
    b.dq_strides, b.dout = (1, 2, 3), 1 << 41
    c = b.copy()
    b.dq_strides = (4, 5, 6)
    assert c.dq_strides == (1, 2, 3) and c.dout == 1 << 41


def dense(b=2, s=128, h=8, d=72, dtype="bfloat16"):
    return Tensor((b, s, h, d), dtype)


def ptx(problem, arch="sm_90a"):
    a = problem.args
    a.q, a.k, a.v, a.o = 256, 512, 768, 1024
    if problem.lse_shape != (0,):
        a.lse = 1280
    if a.bias_mode:
        a.alibi_slopes = 1536
    if a.total_q:
        a.cu_seqlens_q, a.cu_seqlens_k = 1792, 2048
    return flashjit.generate_ptx(a, arch)


@pytest.mark.parametrize("arch", ["sm_80", "sm_86", "sm_87", "sm_89", "sm_90a", "sm_100", "sm_120"])
def test_generates_ptx_for_every_target(arch):
    text = ptx(_problem.build(dense(), dense(), dense()), arch)
    assert f".target {arch}" in text
    assert re.search(r"\.entry fwd_bf16_hqk72_hv72_none_g1_a8_", text)


@pytest.mark.parametrize(
    "kwargs, names",
    [
        (dict(causal=True), ["_causal_"]),
        (dict(window_size=(256, 0)), ["_window_"]),
        (dict(causal=True, window_size=(128, -1)), ["_window_"]),
        (dict(softcap=30.0), ["_softcap"]),
        (dict(alibi_slopes=Tensor((8,), "float32")), ["_alibi"]),
        (dict(return_lse=True), ["_lse_"]),
    ],
)
def test_options_reach_the_kernel(kwargs, names):
    text = ptx(_problem.build(dense(), dense(), dense(), **kwargs))
    for name in names:
        assert name in text


def test_gqa_unequal_head_dims_and_fp16():
    q = dense(h=16, d=192, dtype="float16")
    k = dense(h=4, d=192, dtype="float16")
    v = dense(h=4, d=128, dtype="float16")
    problem = _problem.build(q, k, v)
    assert problem.out_shape == (2, 128, 16, 128)
    assert "fwd_fp16_hqk192_hv128_none_g4_" in ptx(problem)


def test_varlen_and_key_lengths_are_trusted_device_values():
    q = Tensor((300, 8, 64), "bfloat16")
    lengths = Tensor((4,), "int32")
    problem = _problem.build(
        q, q, q, cu_seqlens_q=lengths, cu_seqlens_k=lengths, max_seqlen_q=120,
        max_seqlen_k=120, return_lse=True, seqused_k=Tensor((3,), "int32"))
    a = problem.args
    assert (a.batch, a.total_q, a.seqlen_q, a.trust_device_lengths) == (3, 300, 120, 1)
    assert problem.out_shape == (300, 8, 64) and problem.lse_shape == (8, 300)
    a.key_lengths = 2304
    assert "_varlen_klen_" in ptx(problem)


def test_strided_inputs_keep_their_strides():
    # q, k, v as views of one packed [b, s, 3, h, d] tensor.
    b, s, h, d = 2, 64, 4, 32
    strides = (s * 3 * h * d, 3 * h * d, d, 1)
    t = Tensor((b, s, h, d), "bfloat16", strides)
    a = _problem.build(t, t, t).args
    assert a.q_strides == (s * 3 * h * d, d, 3 * h * d)
    assert a.o_strides == (s * h * d, d, h * d)  # the output is dense


BAD_CALLS = [
    (dict(q=dense(dtype="float32")), "q: expected float16 or bfloat16, got float32"),
    (dict(k=dense(dtype="float16")), "k: dtype float16 differs from q's bfloat16"),
    (dict(k=Tensor((2, 128, 8), "bfloat16")), "k: expected 4 dimensions (batch, seqlen_k, heads_kv, head_dim)"),
    (dict(v=dense(b=3)), "k, v: batch 2, 3 must equal q's 2"),
    (dict(v=dense(s=64)), "v: shape (2, 64, 8, 72) (bfloat16) must match k's"),
    (dict(k=dense(d=64), v=dense(d=64)), "k: head_dim 64 differs from q's 72"),
    (dict(q=dense(d=300), k=dense(d=300), v=dense(d=300)), "q: head_dim must be in [1, 256], got 300"),
    (dict(k=dense(h=3), v=dense(h=3)), "k: heads_kv (3) must divide q's heads (8)"),
    (dict(q=Tensor((2, 128, 8, 72), "bfloat16", (73728, 576, 72, 2))), "q: the last dimension must be contiguous"),
    (dict(window_size=(-2, 0)), "window_size: left must be >= 0, or -1 for unbounded, got -2"),
    (dict(window_size=5), "window_size: expected (left, right)"),
    (dict(softmax_scale=-1.0), "softmax_scale: must be finite and > 0"),
    (dict(softcap=float("nan")), "softcap: must be finite and >= 0"),
    (dict(alibi_slopes=Tensor((8,), "bfloat16")), "alibi_slopes: expected float32 of shape (8,) or (2, 8)"),
    (dict(seqused_k=Tensor((3,), "int32")), "seqused_k: expected int32 of shape (2,)"),
    (dict(cu_seqlens_q=Tensor((3,), "int32")), "cu_seqlens_q and cu_seqlens_k: give both"),
    (dict(q=Tensor((2, 128, 8, 72), "bfloat16", device="cuda:0"),
          k=Tensor((2, 128, 8, 72), "bfloat16", device="cuda:1")), "k: on cuda:1, q on cuda:0"),
]


@pytest.mark.parametrize("change, message", BAD_CALLS, ids=[m[:40] for _, m in BAD_CALLS])
def test_bad_arguments_are_named(change, message):
    args = dict(q=dense(), k=dense(), v=dense())
    args.update(change)
    q, k, v = args.pop("q"), args.pop("k"), args.pop("v")
    with pytest.raises(ValueError) as e:
        _problem.build(q, k, v, **args)
    assert message in str(e.value)


def test_bad_varlen_arguments_are_named():
    q = Tensor((300, 8, 64), "bfloat16")
    cu = Tensor((4,), "int32")
    with pytest.raises(ValueError, match="max_seqlen_q: expected a positive int"):
        _problem.build(q, q, q, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_k=5)
    with pytest.raises(ValueError, match=r"cu_seqlens_k: expected int32 of shape \(4,\)"):
        _problem.build(q, q, q, cu_seqlens_q=cu, cu_seqlens_k=Tensor((4,), "int64"),
                       max_seqlen_q=5, max_seqlen_k=5)


def test_c_api_errors_become_python_exceptions():
    a = _problem.build(dense(), dense(), dense()).args
    with pytest.raises(ValueError, match="q must be a device pointer, got null"):
        flashjit.generate_ptx(a, "sm_80")
    a.q = a.k = a.v = a.o = 256
    with pytest.raises(ValueError, match="arch must be one of sm_80"):
        flashjit.generate_ptx(a, "sm_75")


def test_runtime_without_a_driver_says_so():
    try:
        flashjit.Runtime.get(0)
    except flashjit.FlashjitError as e:
        assert re.match(r"FLASHJIT_ERROR_(NO_DRIVER|DEVICE): ", str(e)), str(e)
    else:
        pytest.skip("a CUDA device is present")


def test_backward_layout_follows_the_tensors():
    q, k, v = dense(h=16), dense(h=4), dense(h=4, d=40)
    problem = _problem.build(q, k, v, causal=True, return_lse=True)
    out = Tensor((2, 128, 16, 40), "bfloat16")
    lse = Tensor((2, 16, 128), "float32")
    # dout a view of a wider tensor: its own strides reach the C struct.
    dout = Tensor((2, 128, 16, 40), "bfloat16", (128 * 16 * 80, 16 * 80, 80, 1))
    b = _problem.build_backward(problem, q, k, v, out, lse, dout, deterministic=True)
    assert b.deterministic == 1
    assert b.dout_strides == (128 * 16 * 80, 80, 16 * 80)
    assert b.dq_strides == (128 * 16 * 72, 72, 16 * 72)
    assert b.dk_strides == b.forward.k_strides == (128 * 4 * 72, 72, 4 * 72)
    assert b.dv_strides == (128 * 4 * 40, 40, 4 * 40)
    assert b.forward.lse_strides == (16 * 128, 128)
    varlen = _problem.build(Tensor((300, 8, 64), "bfloat16"), Tensor((200, 2, 64), "bfloat16"),
                            Tensor((200, 2, 64), "bfloat16"), return_lse=True,
                            cu_seqlens_q=Tensor((4,), "int32"), cu_seqlens_k=Tensor((4,), "int32"),
                            max_seqlen_q=120, max_seqlen_k=90)
    b = _problem.build_backward(varlen, Tensor((300, 8, 64), "bfloat16"),
                                Tensor((200, 2, 64), "bfloat16"), Tensor((200, 2, 64), "bfloat16"),
                                Tensor((300, 8, 64), "bfloat16"), Tensor((8, 300), "float32"),
                                Tensor((300, 8, 64), "bfloat16"))
    assert b.forward.lse_strides == (0, 300) and b.dq_strides == (0, 64, 8 * 64)


@pytest.mark.parametrize("change, message", [
    (dict(dout=Tensor((2, 128, 8, 72), "float16")), "dout: expected bfloat16 of shape (2, 128, 8, 72)"),
    (dict(dout=Tensor((2, 64, 8, 72), "bfloat16")), "dout: expected bfloat16 of shape (2, 128, 8, 72)"),
    (dict(lse=Tensor((2, 8, 64), "float32")), "lse: expected float32 of shape (2, 8, 128)"),
    (dict(out=Tensor((2, 128, 8, 72), "bfloat16", (73728, 576, 72, 2))), "out: the last dimension must be contiguous"),
    (dict(return_lse=False), "lse: the backward needs the forward's LSE"),
])
def test_bad_backward_arguments_are_named(change, message):
    problem = _problem.build(dense(), dense(), dense(), return_lse=change.pop("return_lse", True))
    args = dict(out=dense(), lse=Tensor((2, 8, 128), "float32"), dout=dense())
    args.update(change)
    with pytest.raises(ValueError) as e:
        _problem.build_backward(problem, dense(), dense(), dense(), **args)
    assert message in str(e.value)


def test_names_tritons_ptxas_for_the_runtime(tmp_path):
    # A fake triton package holding backends/nvidia/bin/ptxas, imported by
    # nobody: flashjit finds it by spec and hands it to libflashjit.so.
    ptxas = tmp_path / "triton" / "backends" / "nvidia" / "bin" / "ptxas"
    ptxas.parent.mkdir(parents=True)
    (tmp_path / "triton" / "__init__.py").write_text("raise ImportError('never imported')\n")
    ptxas.write_text("#!/bin/sh\n")
    ptxas.chmod(0o755)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path)] + sys.path))
    env.pop("FLASHJIT_BUNDLED_PTXAS", None)
    code = "import os, flashjit; print(os.environ.get('FLASHJIT_BUNDLED_PTXAS'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == str(ptxas)
    # A caller's choice stands.
    env["FLASHJIT_BUNDLED_PTXAS"] = "/opt/mine/ptxas"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "/opt/mine/ptxas"
    # Not executable: not named.
    ptxas.chmod(0o644)
    env.pop("FLASHJIT_BUNDLED_PTXAS")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "None"
