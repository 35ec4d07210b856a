"""flashjit.torch: the custom op's registration on CPU (opcheck,
torch.compile over the fake kernel, argument errors, the backward's error)
and, on a GPU, its results against a float64 reference and SDPA, varlen,
torch.compile, CUDA graphs and streams."""

import math

import pytest

from conftest import assert_within_2x, requires_cuda, requires_torch

pytestmark = requires_torch

if True:  # imports that need torch, after the skip mark
    torch = pytest.importorskip("torch")
    from flashjit import _reference
    from flashjit.torch import (attention_forward, flash_attn_func,
                                flash_attn_varlen_func, prepare)


def qkv(b=2, sq=64, sk=80, h=4, hkv=2, d=40, dv=None, dtype=torch.bfloat16,
        device="cpu", seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    make = lambda *shape: torch.randn(*shape, generator=g).to(dtype).to(device)
    return make(b, sq, h, d), make(b, sk, hkv, d), make(b, sk, hkv, dv or d)


def op_args(q, k, v, *, alibi=None, cu_q=None, cu_k=None, used=None, max_q=0,
            max_k=0, scale=None, causal=False, left=-1, right=-1, softcap=0.0,
            lse=False):
    return (q, k, v, alibi, cu_q, cu_k, used, max_q, max_k, scale, causal,
            left, right, softcap, lse)


def varlen_inputs(lengths_q, lengths_k, h=4, hkv=2, d=40, dtype=torch.bfloat16,
                  device="cpu"):
    cu = lambda ls: torch.tensor([0, *torch.tensor(ls).cumsum(0).tolist()],
                                 dtype=torch.int32, device=device)
    g = torch.Generator().manual_seed(1)
    make = lambda *s: torch.randn(*s, generator=g).to(dtype).to(device)
    q = make(sum(lengths_q), h, d)
    k, v = make(sum(lengths_k), hkv, d), make(sum(lengths_k), hkv, d)
    return q, k, v, cu(lengths_q), cu(lengths_k)


# ---- CPU: registration, fake kernel, compile, errors -------------------------------
OPCHECK_CASES = {
    "dense": lambda: op_args(*qkv()),
    "causal_lse_fp16": lambda: op_args(*qkv(dtype=torch.float16), causal=True, lse=True),
    "window_softcap": lambda: op_args(*qkv(), left=16, right=0, softcap=20.0, scale=0.3),
    "alibi_dv": lambda: op_args(*qkv(dv=24), alibi=torch.rand(2, 4), lse=True),
    "varlen": lambda: (lambda q, k, v, cq, ck: op_args(
        q, k, v, cu_q=cq, cu_k=ck, max_q=30, max_k=40, causal=True, lse=True))(
        *varlen_inputs([30, 7, 12], [40, 7, 3])),
    "seqused_k": lambda: (lambda q, k, v, cq, ck: op_args(
        q, k, v, cu_q=cq, cu_k=ck, max_q=30, max_k=40,
        used=torch.tensor([33, 0, 3], dtype=torch.int32)))(
        *varlen_inputs([30, 7, 12], [40, 7, 3])),
}


@pytest.mark.parametrize("case", sorted(OPCHECK_CASES))
def test_opcheck_on_cpu(case):
    torch.library.opcheck(attention_forward, OPCHECK_CASES[case]())


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
    ],
)
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError) as e:
        call(*qkv())
    assert message in str(e.value)


def test_backward_says_it_is_not_there_yet():
    q, k, v = (t.requires_grad_() for t in qkv())
    out = flash_attn_func(q, k, v)
    with pytest.raises(NotImplementedError, match="flashjit_attention_backward"):
        out.sum().backward()


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
