"""flashjit.torch: the custom ops' registration on CPU (opcheck with the
autograd tests, torch.compile of forward and backward over the fake
kernels, argument errors, the gradients of the CPU kernels against float64
autograd) and, on a GPU, its results and gradients against a float64
reference (torch autograd of the float64 math) and SDPA, varlen,
deterministic backward, torch.compile, CUDA graphs and streams."""

import math

import pytest

from conftest import assert_within_2x, requires_cuda, requires_torch

pytestmark = requires_torch

if True:  # imports that need torch, after the skip mark
    torch = pytest.importorskip("torch")
    from flashjit import _reference
    from torch.utils._python_dispatch import TorchDispatchMode

    from flashjit.torch import (attention_backward, attention_forward,
                                flash_attn_func, flash_attn_varlen_func, prepare)


def qkv(b=2, sq=64, sk=80, h=4, hkv=2, d=40, dv=None, dtype=torch.bfloat16,
        device="cpu", seed=0, grad=False):
    g = torch.Generator(device="cpu").manual_seed(seed)
    make = lambda *shape: torch.randn(*shape, generator=g).to(dtype).to(device).requires_grad_(grad)
    return make(b, sq, h, d), make(b, sk, hkv, d), make(b, sk, hkv, dv or d)


def op_args(q, k, v, *, alibi=None, cu_q=None, cu_k=None, used=None, max_q=0,
            max_k=0, scale=None, causal=False, left=-1, right=-1, softcap=0.0,
            lse=False, deterministic=False):
    return (q, k, v, alibi, cu_q, cu_k, used, max_q, max_k, scale, causal,
            left, right, softcap, lse, deterministic)


def varlen_inputs(lengths_q, lengths_k, h=4, hkv=2, d=40, dv=None,
                  dtype=torch.bfloat16, device="cpu", grad=False):
    cu = lambda ls: torch.tensor([0, *torch.tensor(ls).cumsum(0).tolist()],
                                 dtype=torch.int32, device=device)
    g = torch.Generator().manual_seed(1)
    make = lambda *s: torch.randn(*s, generator=g).to(dtype).to(device).requires_grad_(grad)
    q = make(sum(lengths_q), h, d)
    k, v = make(sum(lengths_k), hkv, d), make(sum(lengths_k), hkv, dv or d)
    return q, k, v, cu(lengths_q), cu(lengths_k)


def backward_args(forward_args, seed=2):
    """attention_backward's arguments for attention_forward's `forward_args`:
    a random dout, the forward's out and lse (computed with return_lse)."""
    (q, k, v, alibi, cu_q, cu_k, used, max_q, max_k, scale, causal, left, right,
     softcap, _, deterministic) = forward_args
    with torch.no_grad():
        out, lse = attention_forward(*forward_args[:14], True, deterministic)
    g = torch.Generator().manual_seed(seed)
    dout = torch.randn(out.shape, generator=g).to(out.dtype).to(out.device)
    return (dout, q.detach(), k.detach(), v.detach(), out, lse, alibi, cu_q, cu_k,
            used, max_q, max_k, scale, causal, left, right, softcap, deterministic)


# ---- CPU: registration, fake kernel, compile, errors -------------------------------
OPCHECK_CASES = {
    "dense": lambda: op_args(*qkv(grad=True)),
    "causal_lse_fp16": lambda: op_args(*qkv(dtype=torch.float16, grad=True), causal=True, lse=True),
    "window_softcap": lambda: op_args(*qkv(grad=True), left=16, right=0, softcap=20.0, scale=0.3),
    "alibi_dv": lambda: op_args(*qkv(dv=24, grad=True), alibi=torch.rand(2, 4), lse=True),
    "gqa_deterministic": lambda: op_args(*qkv(h=8, hkv=2, grad=True), causal=True, lse=True,
                                         deterministic=True),
    "no_grad": lambda: op_args(*qkv(), lse=True),
    "varlen": lambda: (lambda q, k, v, cq, ck: op_args(
        q, k, v, cu_q=cq, cu_k=ck, max_q=30, max_k=40, causal=True, lse=True))(
        *varlen_inputs([30, 7, 12], [40, 7, 3], dv=24, grad=True)),
    "seqused_k": lambda: (lambda q, k, v, cq, ck: op_args(
        q, k, v, cu_q=cq, cu_k=ck, max_q=30, max_k=40,
        used=torch.tensor([33, 0, 3], dtype=torch.int32)))(
        *varlen_inputs([30, 7, 12], [40, 7, 3], grad=True)),
}


@pytest.mark.parametrize("case", sorted(OPCHECK_CASES))
def test_opcheck_on_cpu(case):
    # With inputs that require grad: the autograd registration and the
    # backward through aot_autograd (fake kernels) against eager.
    torch.library.opcheck(attention_forward, OPCHECK_CASES[case]())


@pytest.mark.parametrize("case", sorted(set(OPCHECK_CASES) - {"no_grad"}))
def test_opcheck_backward_on_cpu(case):
    torch.library.opcheck(attention_backward, backward_args(OPCHECK_CASES[case]()))


def test_cpu_kernel_is_the_reference():
    q, k, v = qkv()
    out, lse = flash_attn_func(q, k, v, causal=True, return_lse=True)
    ref, ref_lse = _reference.attention(q, k, v, causal=True)
    assert out.dtype == q.dtype and out.shape == (2, 64, 4, 40)
    assert lse.shape == (2, 4, 64)
    torch.testing.assert_close(out.double(), ref, atol=2e-2, rtol=0)
    torch.testing.assert_close(lse.double(), ref_lse, atol=1e-4, rtol=1e-4)


def test_reference_masks_rows_without_keys():
    # seqlen_q > seqlen_k, causal bottom-right: the first rows see no key.
    q, k, v = qkv(sq=8, sk=4, h=2, hkv=2)
    out, lse = _reference.attention(q, k, v, causal=True)
    assert torch.all(out[:, :4] == 0) and torch.all(torch.isneginf(lse[:, :, :4]))
    assert torch.all(torch.isfinite(lse[:, :, 4:]))


@pytest.mark.parametrize("dynamic", [False, True])
def test_compile_fullgraph_over_the_fake_kernel(dynamic):
    def f(q, k, v):
        return flash_attn_func(q, k, v, causal=True, window_size=(32, 0), softcap=10.0)

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager", dynamic=dynamic)
    for sq in (64, 48):  # a second shape: dynamic or a recompile, never a break
        q, k, v = qkv(sq=sq)
        torch.testing.assert_close(compiled(q, k, v), f(q, k, v))


def test_compile_varlen_fullgraph():
    q, k, v, cq, ck = varlen_inputs([30, 7], [40, 9])
    f = lambda *a: flash_attn_varlen_func(*a, 30, 40, causal=True, return_lse=True)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    for got, want in zip(compiled(q, k, v, cq, ck), f(q, k, v, cq, ck)):
        torch.testing.assert_close(got, want)


def recording_backend():
    """aot_eager that keeps the forward and backward graphs it compiled."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    graphs = []

    def keep(gm, _):
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    return aot_autograd(fw_compiler=keep, bw_compiler=keep), graphs


@pytest.mark.parametrize("dynamic", [False, True])
def test_compile_fullgraph_forward_and_backward(dynamic):
    def f(q, k, v):
        return flash_attn_func(q, k, v, causal=True, softcap=10.0, deterministic=True)

    torch._dynamo.reset()
    backend, graphs = recording_backend()
    compiled = torch.compile(f, fullgraph=True, backend=backend, dynamic=dynamic)
    q, k, v = qkv(h=8, hkv=2, dv=24, grad=True)
    dout = torch.randn(2, 64, 8, 24).to(torch.bfloat16)
    got = torch.autograd.grad(compiled(q, k, v), (q, k, v), dout)
    want = torch.autograd.grad(f(q, k, v), (q, k, v), dout)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=0, rtol=0)
    forward_graph, backward_graph = graphs
    assert "flashjit.attention_forward" in forward_graph.code
    assert "flashjit.attention_backward" in backward_graph.code


def test_compile_varlen_forward_and_backward():
    q, k, v, cq, ck = varlen_inputs([30, 7], [40, 9], grad=True)
    f = lambda *a: flash_attn_varlen_func(*a, 30, 40, causal=True)
    backend, graphs = recording_backend()
    compiled = torch.compile(f, fullgraph=True, backend=backend)
    got = torch.autograd.grad(compiled(q, k, v, cq, ck).float().sum(), (q, k, v))
    want = torch.autograd.grad(f(q, k, v, cq, ck).float().sum(), (q, k, v))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=0, rtol=0)
    assert "flashjit.attention_backward" in graphs[-1].code


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda q, k, v: flash_attn_func(q.float(), k, v), "q: expected float16 or bfloat16, got float32"),
        (lambda q, k, v: flash_attn_func(q, k[:, :, :1].expand(2, 80, 3, 40),
                                         v[:, :, :1].expand(2, 80, 3, 40)), "k: heads_kv (3) must divide"),
        (lambda q, k, v: flash_attn_func(q, k, v, 0.1), "dropout_p: flashjit has no dropout"),
        (lambda q, k, v: flash_attn_func(q, k, v, window_size=(-5, 0)), "window_size: left must be >= 0"),
        (lambda q, k, v: flash_attn_func(q, k, v, return_attn_probs=True), "return_attn_probs"),
        (lambda q, k, v: flash_attn_func(q[0], k, v), "q: expected 4 dimensions"),
        (lambda q, k, v: flash_attn_func(q, k, v, alibi_slopes=torch.ones(3)), "alibi_slopes: expected float32 of shape (4,)"),
        (lambda q, k, v: flash_attn_func(q, k, v, alibi_slopes=torch.ones(4, requires_grad=True)),
         "alibi_slopes: flashjit does not differentiate the ALiBi slopes"),
    ],
)
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError) as e:
        call(*qkv())
    assert message in str(e.value)


GRADIENT_CASES = [
    dict(causal=True),                                  # rows without keys (sq > sk)
    dict(window_size=(5, 2), softcap=3.0),
    dict(alibi_slopes="per batch", causal=True),
    dict(softmax_scale=0.2),
]


def gradient_case(c):
    c = dict(c)
    if c.get("alibi_slopes") == "per batch":
        c["alibi_slopes"] = torch.rand(2, 4, generator=torch.Generator().manual_seed(5))
    return c


@pytest.mark.parametrize("case", GRADIENT_CASES, ids=str)
def test_written_out_backward_is_float64_autograd(case):
    # The backward written out (the CPU kernel's algorithm, the GPU's
    # yardstick) against torch autograd of the float64 forward: GQA 4:2,
    # Dv != Dqk, seqlen_q > seqlen_k.
    kw = gradient_case(case)
    q, k, v = (t.double().requires_grad_() for t in qkv(sq=24, sk=16, d=12, dv=8))
    dout = torch.randn(2, 24, 4, 8, dtype=torch.float64)
    out, _ = _reference.attention(q, k, v, **kw)
    want = torch.autograd.grad(out, (q, k, v), dout)
    got = _reference.attention_backward(
        dout, q.detach(), k.detach(), v.detach(), out.detach(),
        compute_dtype=torch.float64, gpu_rounding=False, **kw)
    for name, g, w in zip(("dq", "dk", "dv"), got, want):
        assert torch.isfinite(w).all(), name
        torch.testing.assert_close(g, w, atol=1e-12, rtol=1e-10, msg=name)


def test_written_out_backward_varlen_is_float64_autograd():
    q, k, v, cq, ck = varlen_inputs([9, 1, 6], [7, 5, 0], d=12, dv=8)
    q, k, v = (t.double().requires_grad_() for t in (q, k, v))
    kw = dict(causal=True, cu_seqlens_q=cq, cu_seqlens_k=ck,
              seqused_k=torch.tensor([4, 5, 0], dtype=torch.int32))
    dout = torch.randn(16, 4, 8, dtype=torch.float64)
    out, _ = _reference.attention(q, k, v, **kw)
    want = torch.autograd.grad(out, (q, k, v), dout)
    got = _reference.attention_backward(dout, q.detach(), k.detach(), v.detach(),
                                        compute_dtype=torch.float64,
                                        gpu_rounding=False, **kw)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-12, rtol=1e-10)
    # Sequence 0 has keys 0..6, of which seqused_k keeps 4.
    assert torch.all(got[1][4:7] == 0) and torch.all(got[2][4:7] == 0)
    assert got[1][:4].abs().sum() > 0


def test_training_step_on_cpu():
    q, k, v = qkv(h=8, hkv=2, dv=24, grad=True)
    out = flash_attn_func(q, k, v, causal=True, softcap=15.0)
    dout = torch.randn_like(out)
    out.backward(dout)
    want = _reference.attention_backward(dout, q.detach(), k.detach(), v.detach(),
                                         out.detach(), causal=True, softcap=15.0)
    for t, w in zip((q, k, v), want):
        assert t.grad.dtype == t.dtype and t.grad.shape == t.shape
        torch.testing.assert_close(t.grad, w.to(t.dtype), atol=0, rtol=0)


def test_varlen_training_step_on_cpu():
    q, k, v, cq, ck = varlen_inputs([30, 7], [40, 9], grad=True)
    out = flash_attn_varlen_func(q, k, v, cq, ck, 30, 40, causal=True)
    out.float().square().sum().backward()
    assert all(t.grad is not None and t.grad.shape == t.shape for t in (q, k, v))
    assert q.grad.abs().sum() > 0


def test_lse_is_not_differentiated():
    q, k, v = qkv(grad=True)
    out, lse = flash_attn_func(q, k, v, return_lse=True)
    assert out.requires_grad and not lse.requires_grad


class CallLog(TorchDispatchMode):
    """The flashjit ops a region calls, with their arguments."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "flashjit":
            self.calls.append((func.__name__.split(".")[0], args))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("deterministic", [False, True])
def test_options_reach_the_backward(deterministic):
    q, k, v = qkv(grad=True)
    slopes = torch.rand(4)
    out = flash_attn_func(q, k, v, softmax_scale=0.3, window_size=(7, 3), softcap=9.0,
                          alibi_slopes=slopes, deterministic=deterministic)
    with CallLog() as log:
        out.sum().backward()
    (name, args), = log.calls
    assert name == "attention_backward"
    assert args[6] is slopes
    assert args[12:] == (0.3, False, 7, 3, 9.0, deterministic)


def test_direct_op_call_without_lse_recomputes_it():
    q, k, v = qkv(grad=True)
    out, lse = attention_forward(*op_args(q, k, v, causal=True))
    assert lse.numel() == 0
    with CallLog() as log:
        out.sum().backward()
    assert [name for name, _ in log.calls] == ["attention_forward", "attention_backward"]
    assert log.calls[0][1][14] is True  # return_lse
    assert q.grad.abs().sum() > 0


def test_no_grad_needs_no_lse():
    q, k, v = (t.requires_grad_() for t in qkv())
    with torch.no_grad():
        out = flash_attn_func(q, k, v)
    assert out.shape == (2, 64, 4, 40) and not out.requires_grad


# ---- GPU -----------------------------------------------------------------------------
def reference(q, k, v, **kw):
    """(float64 out, float32-accumulate out rounded like ours, float64 lse)."""
    out64, lse64 = _reference.attention(q, k, v, **kw)
    out32, _ = _reference.attention(q, k, v, compute_dtype=torch.float32, **kw)
    return out64, out32.to(q.dtype), lse64


GPU_CASES = [
    dict(d=72),
    dict(d=100, causal=True),
    dict(d=192, dv=128, causal=True),
    dict(d=128, h=16, hkv=4),                          # GQA 4:1
    dict(d=64, h=8, hkv=1, window_size=(48, 16)),       # MQA, sliding window
    dict(d=80, softcap=30.0, dtype=torch.float16),
    dict(d=96, alibi=True, causal=True),
    dict(d=33, sq=200, sk=77, causal=True),             # rows without keys
]


def gpu_case(c):
    c = dict(c)
    shape = {n: c.pop(n) for n in ("d", "dv", "h", "hkv", "sq", "sk", "dtype") if n in c}
    shape.setdefault("sq", 256)
    shape.setdefault("sk", 320)
    shape.setdefault("h", 8)
    shape.setdefault("hkv", shape["h"])
    q, k, v = qkv(b=2, device="cuda", **shape)
    if c.pop("alibi", False):
        c["alibi_slopes"] = torch.rand(2, shape["h"], device="cuda") * 0.5
    return q, k, v, c


@requires_cuda
@pytest.mark.parametrize("case", GPU_CASES, ids=[str(c) for c in GPU_CASES])
def test_gpu_matches_the_float64_reference(case):
    q, k, v, kw = gpu_case(case)
    out, lse = flash_attn_func(q, k, v, return_lse=True, **kw)
    out64, out_lowp, lse64 = reference(q, k, v, **kw)
    assert_within_2x(out, out64, out_lowp, str(case))
    finite = torch.isfinite(lse64)
    assert torch.equal(torch.isfinite(lse), finite)
    torch.testing.assert_close(lse.double()[finite], lse64[finite], atol=1e-3, rtol=1e-3)


@requires_cuda
@pytest.mark.parametrize("d, causal", [(64, False), (128, True), (72, True)])
def test_gpu_matches_sdpa(d, causal):
    q, k, v = qkv(b=2, sq=512, sk=512, h=8, hkv=2, d=d, device="cuda")
    out = flash_attn_func(q, k, v, causal=causal)
    t = lambda x: x.transpose(1, 2)
    ref = torch.nn.functional.scaled_dot_product_attention(
        t(q), t(k).repeat_interleave(4, 1), t(v).repeat_interleave(4, 1),
        is_causal=causal).transpose(1, 2)
    torch.testing.assert_close(out, ref, atol=2e-2, rtol=2e-2)


@requires_cuda
@pytest.mark.parametrize("used", [False, True])
def test_gpu_varlen(used):
    lq, lk = [300, 1, 77, 128], [280, 9, 77, 500]
    q, k, v, cq, ck = varlen_inputs(lq, lk, h=8, hkv=2, d=100, device="cuda")
    seqused = torch.tensor([200, 9, 0, 333], dtype=torch.int32, device="cuda") if used else None
    out, lse = flash_attn_varlen_func(q, k, v, cq, ck, max(lq), max(lk), causal=True,
                                      seqused_k=seqused, return_lse=True)
    kw = dict(causal=True, cu_seqlens_q=cq, cu_seqlens_k=ck, seqused_k=seqused)
    out64, out_lowp, lse64 = reference(q, k, v, **kw)
    assert out.shape == (sum(lq), 8, 100) and lse.shape == (8, sum(lq))
    assert_within_2x(out, out64, out_lowp, "varlen")
    finite = torch.isfinite(lse64)
    torch.testing.assert_close(lse.double()[finite], lse64[finite], atol=1e-3, rtol=1e-3)


@requires_cuda
def test_gpu_opcheck():
    q, k, v = qkv(device="cuda")
    torch.library.opcheck(attention_forward, op_args(q, k, v, causal=True, lse=True))


@requires_cuda
def test_gpu_compile_fullgraph_inductor():
    f = lambda q, k, v: flash_attn_func(q * 2, k, v, causal=True) + 1
    compiled = torch.compile(f, fullgraph=True)
    q, k, v = qkv(b=2, sq=256, sk=256, h=8, hkv=8, d=80, device="cuda")
    # The kernel is the same; inductor may fuse the elementwise ops around it.
    torch.testing.assert_close(compiled(q, k, v), f(q, k, v))


@requires_cuda
def test_gpu_cuda_graph_after_prepare():
    q, k, v = qkv(b=2, sq=384, sk=384, h=8, hkv=8, d=72, device="cuda", seed=3)
    prepare(q, k, v, causal=True)  # the compile stays out of the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = flash_attn_func(q, k, v, causal=True)
    for seed in (4, 5):
        q2, k2, v2 = qkv(b=2, sq=384, sk=384, h=8, hkv=8, d=72, device="cuda", seed=seed)
        q.copy_(q2), k.copy_(k2), v.copy_(v2)
        graph.replay()
        torch.cuda.synchronize()
        torch.testing.assert_close(out, flash_attn_func(q2, k2, v2, causal=True),
                                   atol=0, rtol=0)


@requires_cuda
def test_gpu_honours_a_non_default_stream():
    q, k, v = qkv(b=1, sq=1024, sk=1024, h=8, hkv=8, d=128, device="cuda")
    want = flash_attn_func(q, k, v)
    q_late = torch.zeros_like(q)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        torch.cuda._sleep(200_000_000)  # ~0.1 s: a kernel on another stream would run first
        q_late.copy_(q)
        out = flash_attn_func(q_late, k, v)
    stream.synchronize()
    torch.testing.assert_close(out, want, atol=0, rtol=0)


# ---- GPU: gradients ------------------------------------------------------------------
def reference_gradients(dout, q, k, v, **kw):
    """(float64 dq, dk, dv by torch autograd of the float64 math; the float32
    yardstick's, rounded where the GPU kernel rounds)."""
    leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
    out64, _ = _reference.attention(*leaves, **kw)
    grads64 = torch.autograd.grad(out64, leaves, dout.double())
    yardstick = _reference.attention_backward(dout, *(t.detach() for t in (q, k, v)), **kw)
    return grads64, [g.to(q.dtype) for g in yardstick]


def assert_gradients(got, dout, q, k, v, what, **kw):
    grads64, yardstick = reference_gradients(dout, q, k, v, **kw)
    for name, g, t, w, y in zip(("dq", "dk", "dv"), got, (q, k, v), grads64, yardstick):
        assert g.shape == t.shape and g.dtype == t.dtype, name
        assert_within_2x(g, w, y, f"{name} {what}")


@requires_cuda
@pytest.mark.parametrize("case", GPU_CASES, ids=[str(c) for c in GPU_CASES])
def test_gpu_gradients_match_float64_autograd(case):
    q, k, v, kw = gpu_case(case)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    out = flash_attn_func(q, k, v, **kw)
    dout = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), dout)
    assert_gradients(got, dout, q, k, v, str(case), **kw)


@requires_cuda
@pytest.mark.parametrize("used", [False, True])
def test_gpu_varlen_gradients(used):
    lq, lk = [300, 1, 77, 128], [280, 9, 77, 500]
    q, k, v, cq, ck = varlen_inputs(lq, lk, h=8, hkv=2, d=100, dv=64, device="cuda",
                                    grad=True)
    seqused = torch.tensor([200, 9, 0, 333], dtype=torch.int32, device="cuda") if used else None
    out = flash_attn_varlen_func(q, k, v, cq, ck, max(lq), max(lk), causal=True,
                                 seqused_k=seqused)
    dout = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), dout)
    assert_gradients(got, dout, q, k, v, f"varlen used={used}", causal=True,
                     cu_seqlens_q=cq, cu_seqlens_k=ck, seqused_k=seqused)


@requires_cuda
@pytest.mark.parametrize("d, dv", [(128, 128), (192, 128)])
def test_gpu_deterministic_backward_repeats_bitwise(d, dv):
    q, k, v = qkv(b=2, sq=512, sk=512, h=8, hkv=2, d=d, dv=dv, device="cuda", grad=True)
    out = flash_attn_func(q, k, v, causal=True, deterministic=True)
    dout = torch.randn_like(out)
    runs = [torch.autograd.grad(out, (q, k, v), dout, retain_graph=True) for _ in range(5)]
    for run in runs[1:]:
        for name, first, again in zip(("dq", "dk", "dv"), runs[0], run):
            assert torch.equal(first, again), name
    assert_gradients(runs[0], dout, q, k, v, "deterministic", causal=True)


@requires_cuda
@pytest.mark.parametrize("deterministic", [False, True])
def test_gpu_opcheck_with_autograd(deterministic):
    args = op_args(*qkv(h=8, hkv=2, device="cuda", grad=True), causal=True, lse=True,
                   deterministic=deterministic)
    # Default mode adds dq with atomics in any order: compare within rounding.
    torch.library.opcheck(attention_forward, args, atol=2e-2, rtol=2e-2)
    torch.library.opcheck(attention_backward, backward_args(args), atol=2e-2, rtol=2e-2)


@requires_cuda
def test_gpu_compile_fullgraph_backward_inductor():
    f = lambda q, k, v: flash_attn_func(q, k, v, causal=True, deterministic=True)
    compiled = torch.compile(f, fullgraph=True)
    q, k, v = qkv(b=2, sq=256, sk=256, h=8, hkv=2, d=80, device="cuda", grad=True)
    dout = torch.randn(2, 256, 8, 80, device="cuda", dtype=torch.bfloat16)
    got = torch.autograd.grad(compiled(q, k, v), (q, k, v), dout)
    want = torch.autograd.grad(f(q, k, v), (q, k, v), dout)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=0, rtol=0)


@requires_cuda
def test_gpu_cuda_graph_of_a_training_step_after_prepare():
    shape = dict(b=2, sq=384, sk=384, h=8, hkv=2, d=72, device="cuda")
    q, k, v = qkv(seed=3, grad=True, **shape)
    dout = torch.randn(2, 384, 8, 72, device="cuda", dtype=torch.bfloat16)

    def step(q, k, v):
        out = flash_attn_func(q, k, v, causal=True, deterministic=True)
        return torch.autograd.grad(out, (q, k, v), dout)

    prepare(q, k, v, causal=True, backward=True, deterministic=True)
    side = torch.cuda.Stream()  # autograd warms up before a capture
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step(q, k, v)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        grads = step(q, k, v)
    for seed in (4, 5):
        fresh = qkv(seed=seed, grad=True, **shape)
        with torch.no_grad():
            for t, f in zip((q, k, v), fresh):
                t.copy_(f)
        graph.replay()
        torch.cuda.synchronize()
        for g, w in zip(grads, step(*fresh)):
            torch.testing.assert_close(g, w, atol=0, rtol=0)


@requires_cuda
def test_gpu_backward_honours_a_non_default_stream():
    q, k, v = qkv(b=1, sq=1024, sk=1024, h=8, hkv=8, d=128, device="cuda", grad=True)
    dout = torch.randn(1, 1024, 8, 128, device="cuda", dtype=torch.bfloat16)
    want = torch.autograd.grad(flash_attn_func(q, k, v, deterministic=True), (q, k, v), dout)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        # The backward runs on its forward's stream: a kernel on another
        # stream would read dout_late before the copy.
        out = flash_attn_func(q, k, v, deterministic=True)
        dout_late = torch.zeros_like(dout)
        torch.cuda._sleep(200_000_000)  # ~0.1 s
        dout_late.copy_(dout)
        got = torch.autograd.grad(out, (q, k, v), dout_late)
    stream.synchronize()
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=0, rtol=0)
