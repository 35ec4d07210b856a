"""flashjit.jax: tracing, lowering and export of the custom calls (forward,
and backward under jax.grad) on any backend (no GPU needed), errors at
trace time, the FFI handlers' attribute decoding on the CPU, and on a GPU
results and gradients against float64 references and
jax.nn.dot_product_attention, under jit, vmap and grad."""

import numpy as np
import pytest

from conftest import assert_within_2x, requires_jax

pytestmark = requires_jax

if True:  # imports that need jax, after the skip mark
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp
    from flashjit.jax import (BACKWARD_TARGET, TARGET, flash_attention,
                              flash_attention_varlen)


def gpu_available() -> bool:
    try:
        return bool(jax.devices("cuda"))
    except RuntimeError:
        return False


requires_jax_gpu = pytest.mark.skipif(not gpu_available(), reason="jax has no CUDA device")


def shapes(b=2, sq=64, sk=80, h=8, hkv=2, d=72, dv=None, dtype=jnp.bfloat16):
    return (jax.ShapeDtypeStruct((b, sq, h, d), dtype),
            jax.ShapeDtypeStruct((b, sk, hkv, d), dtype),
            jax.ShapeDtypeStruct((b, sk, hkv, dv or d), dtype))


def lowered_text(f, *args):
    return jax.jit(f).lower(*args).as_text()


# ---- any backend: trace, lower, export ------------------------------------------------------
def test_jit_lowers_to_the_custom_call():
    f = lambda q, k, v: flash_attention(q, k, v, causal=True, softcap=20.0)
    text = lowered_text(f, *shapes())
    assert f'custom_call @{TARGET}' in text or f'call_target_name = "{TARGET}"' in text
    assert "2x64x8x72xbf16" in text


def test_result_shapes():
    q, k, v = shapes(d=192, dv=128)
    out, lse = jax.eval_shape(lambda *a: flash_attention(*a, return_lse=True), q, k, v)
    assert out.shape == (2, 64, 8, 128) and out.dtype == jnp.bfloat16
    assert lse.shape == (2, 8, 64) and lse.dtype == jnp.float32


def test_vmap_makes_leading_dimensions_batches():
    q, k, v = (jax.ShapeDtypeStruct((3,) + s.shape, s.dtype) for s in shapes())
    f = jax.vmap(lambda q, k, v: flash_attention(q, k, v, causal=True))
    assert jax.eval_shape(f, q, k, v).shape == (3, 2, 64, 8, 72)
    # broadcast_all: the custom call sees the vmapped dimension in front.
    assert "3x2x64x8x72xbf16" in lowered_text(f, q, k, v)
    # Only some operands mapped: the others are broadcast to them.
    g = jax.vmap(lambda q: flash_attention(q, jnp.zeros(k.shape[1:], k.dtype),
                                           jnp.zeros(v.shape[1:], v.dtype)))
    assert jax.eval_shape(g, q).shape == (3, 2, 64, 8, 72)


def test_key_lengths_and_alibi_are_operands():
    q, k, v = shapes()
    f = lambda q, k, v, n, s: flash_attention(q, k, v, key_value_seq_lengths=n,
                                              alibi_slopes=s)
    text = lowered_text(f, q, k, v, jax.ShapeDtypeStruct((2,), jnp.int32),
                        jax.ShapeDtypeStruct((8,), jnp.float32))
    assert "tensor<2xi32>" in text and "tensor<2x8xf32>" in text


def test_varlen_lowers():
    q = jax.ShapeDtypeStruct((300, 8, 64), jnp.float16)
    cu = jax.ShapeDtypeStruct((4,), jnp.int32)
    f = lambda q, k, v, cq, ck: flash_attention_varlen(q, k, v, cq, ck, 120, 150,
                                                      return_lse=True)
    out, lse = jax.eval_shape(f, q, q, q, cu, cu)
    assert out.shape == (300, 8, 64) and lse.shape == (8, 300)
    assert TARGET in lowered_text(f, q, q, q, cu, cu)


def test_export_names_the_custom_call():
    export = pytest.importorskip("jax.export")
    f = jax.jit(lambda q, k, v: flash_attention(q, k, v, causal=True))
    exported = export.export(
        f, platforms=["cuda"],
        disabled_checks=[export.DisabledSafetyCheck.custom_call(TARGET)])(*shapes())
    text = exported.mlir_module()
    assert TARGET in text
    assert exported.platforms == ("cuda",)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(q=jax.ShapeDtypeStruct((2, 64, 8, 72), jnp.float32)), "q: expected float16 or bfloat16, got float32"),
        (dict(k=jax.ShapeDtypeStruct((2, 80, 3, 72), jnp.bfloat16),
              v=jax.ShapeDtypeStruct((2, 80, 3, 72), jnp.bfloat16)), "k: heads_kv (3) must divide q's heads (8)"),
        (dict(v=jax.ShapeDtypeStruct((2, 81, 2, 72), jnp.bfloat16)), "v: shape (2, 81, 2, 72)"),
        (dict(q=jax.ShapeDtypeStruct((64, 8, 72), jnp.bfloat16)), "q: expected 4 dimensions"),
    ],
)
def test_bad_arguments_are_named_at_trace_time(change, message):
    args = dict(zip("qkv", shapes()))
    args.update(change)
    with pytest.raises(ValueError) as e:
        jax.eval_shape(flash_attention, args["q"], args["k"], args["v"])
    assert message in str(e.value)


def test_options_are_checked_at_trace_time():
    with pytest.raises(ValueError, match="window_size: left must be >= 0"):
        jax.eval_shape(lambda *a: flash_attention(*a, window_size=(-3, 0)), *shapes())
    with pytest.raises(ValueError, match="alibi_slopes: expected float32"):
        jax.eval_shape(lambda *a: flash_attention(*a, alibi_slopes=jnp.ones(3)), *shapes())


def loss(**kw):
    return lambda q, k, v: flash_attention(q, k, v, **kw).astype(jnp.float32).sum()


def grad_text(f, *args):
    return lowered_text(jax.grad(f, argnums=(0, 1, 2)), *args)


def test_grad_lowers_to_both_custom_calls():
    text = grad_text(loss(causal=True, deterministic=True), *shapes(d=192, dv=128))
    assert f"custom_call @{TARGET}" in text and f"custom_call @{BACKWARD_TARGET}" in text
    backward = next(l for l in text.splitlines() if f"@{BACKWARD_TARGET}" in l)
    assert "deterministic = true" in backward
    # dq, dk, dv like q, k, v (GQA 8:2, Dv != Dqk).
    assert ("(tensor<2x64x8x192xbf16>, tensor<2x80x2x192xbf16>, tensor<2x80x2x128xbf16>)"
            in backward)


def test_grad_shapes_and_dtypes():
    q, k, v = shapes(d=100, dv=64, dtype=jnp.float16)
    grads = jax.eval_shape(jax.grad(loss(window_size=(16, 0)), argnums=(0, 1, 2)), q, k, v)
    for g, x in zip(grads, (q, k, v)):
        assert g.shape == x.shape and g.dtype == x.dtype


def test_vmap_of_grad_makes_leading_dimensions_batches():
    q, k, v = (jax.ShapeDtypeStruct((3,) + s.shape, s.dtype) for s in shapes())
    text = lowered_text(jax.vmap(jax.grad(loss(causal=True), argnums=(0, 1, 2))), q, k, v)
    backward = next(l for l in text.splitlines() if f"@{BACKWARD_TARGET}" in l)
    assert "tensor<3x2x64x8x72xbf16>" in backward and "tensor<3x2x8x64xf32>" in backward


def test_grad_with_key_lengths_alibi_and_varlen():
    q, k, v = shapes()
    n, slopes = jax.ShapeDtypeStruct((2,), jnp.int32), jax.ShapeDtypeStruct((8,), jnp.float32)
    f = lambda q, k, v, n, s: flash_attention(q, k, v, key_value_seq_lengths=n,
                                              alibi_slopes=s).astype(jnp.float32).sum()
    text = lowered_text(jax.grad(f, argnums=(0, 1, 2)), q, k, v, n, slopes)
    backward = next(l for l in text.splitlines() if f"@{BACKWARD_TARGET}" in l)
    assert "alibi = true" in backward and "key_lengths = true" in backward
    qv, cu = jax.ShapeDtypeStruct((300, 8, 64), jnp.float16), jax.ShapeDtypeStruct((4,), jnp.int32)
    g = lambda q, k, v, cq, ck: flash_attention_varlen(q, k, v, cq, ck, 120, 150).astype(
        jnp.float32).sum()
    text = lowered_text(jax.grad(g, argnums=(0, 1, 2)), qv, qv, qv, cu, cu)
    backward = next(l for l in text.splitlines() if f"@{BACKWARD_TARGET}" in l)
    assert "varlen = true" in backward


def test_lse_is_not_differentiated():
    lse_only = lambda q, k, v: flash_attention(q, k, v, return_lse=True)[1].sum()
    assert BACKWARD_TARGET not in grad_text(lse_only, *shapes())
    both = lambda q, k, v: sum(x.astype(jnp.float32).sum()
                               for x in flash_attention(q, k, v, return_lse=True))
    assert BACKWARD_TARGET in grad_text(both, *shapes())


def test_alibi_slopes_are_not_differentiated():
    q, k, v = shapes()
    f = lambda s: flash_attention(q, k, v, alibi_slopes=s).astype(jnp.float32).sum()
    with pytest.raises(ValueError, match="alibi_slopes: flashjit does not differentiate"):
        jax.eval_shape(jax.grad(f), jax.ShapeDtypeStruct((8,), jnp.float32))
    # As a constant it is fine.
    g = lambda q, s: flash_attention(q, k, v, alibi_slopes=jax.lax.stop_gradient(s)).astype(
        jnp.float32).sum()
    assert jax.eval_shape(jax.grad(g), q, jax.ShapeDtypeStruct((8,), jnp.float32)).shape == q.shape


def test_export_of_grad_names_both_custom_calls():
    export = pytest.importorskip("jax.export")
    f = jax.jit(jax.grad(loss(causal=True), argnums=(0, 1, 2)))
    exported = export.export(
        f, platforms=["cuda"],
        disabled_checks=[export.DisabledSafetyCheck.custom_call(t)
                         for t in (TARGET, BACKWARD_TARGET)])(*shapes())
    text = exported.mlir_module()
    assert TARGET in text and BACKWARD_TARGET in text


@pytest.fixture
def cpu_probe(monkeypatch):
    """flashjit's FFI handlers registered for the CPU under another name: XLA
    runs their instantiate stage (attribute decoding, the call's checks)
    there too; execute then stops at the CUDA stream, which the CPU has not."""
    import flashjit.jax as fj
    from flashjit import _flashjit

    jax.ffi.register_ffi_target("flashjit_cpu_probe", _flashjit.xla_ffi_handlers(),
                                platform="cpu")
    monkeypatch.setattr(fj, "TARGET", "flashjit_cpu_probe")
    # On a machine with a GPU the arrays and the call would go there.
    with jax.default_device(jax.devices("cpu")[0]):
        yield


def test_ffi_handlers_decode_every_attribute(cpu_probe):
    q = jnp.zeros((2, 64, 8, 72), jnp.bfloat16)
    k = jnp.zeros((2, 80, 2, 72), jnp.bfloat16)
    slopes = jnp.ones((8,), jnp.float32)
    lengths = jnp.asarray([80, 3], jnp.int32)
    with pytest.raises(Exception) as e:
        flash_attention(q, k, k, causal=True, window_size=(8, 0), softcap=5.0,
                        alibi_slopes=slopes, key_value_seq_lengths=lengths,
                        return_lse=True)
    if "platform stream" not in str(e.value) and "GPU context" not in str(e.value):
        pytest.fail(f"the instantiate stage refused the call: {e.value}")


@pytest.fixture
def cpu_backward_probe(monkeypatch):
    """The backward's handlers registered for the CPU, as cpu_probe."""
    import flashjit.jax as fj
    from flashjit import _flashjit

    jax.ffi.register_ffi_target("flashjit_cpu_probe_backward",
                                _flashjit.xla_ffi_handlers("backward"), platform="cpu")
    monkeypatch.setattr(fj, "BACKWARD_TARGET", "flashjit_cpu_probe_backward")
    with jax.default_device(jax.devices("cpu")[0]):
        yield fj


def test_ffi_backward_handlers_decode_every_attribute(cpu_backward_probe):
    fj = cpu_backward_probe
    q, k, v = (jnp.zeros(s.shape, s.dtype) for s in shapes(dv=40))
    out = jnp.zeros((2, 64, 8, 40), jnp.bfloat16)
    lse = jnp.zeros((2, 8, 64), jnp.float32)
    static = fj._Static(None, True, (8, 0), 5.0, False, False, 0, 0, True)
    with pytest.raises(Exception) as e:
        fj._backward(q, k, v, out, lse, out, jnp.ones((8,), jnp.float32), None, None,
                     jnp.asarray([80, 3], jnp.int32), static)
    if "platform stream" not in str(e.value) and "GPU context" not in str(e.value):
        pytest.fail(f"the instantiate stage refused the call: {e.value}")


def test_ffi_backward_instantiate_checks_the_call(cpu_backward_probe):
    q = jnp.zeros((2, 64, 8, 72), jnp.bfloat16)
    v = jnp.zeros((2, 63, 8, 72), jnp.bfloat16)  # k's seqlen is 64
    lse = jnp.zeros((2, 8, 64), jnp.float32)
    call = jax.ffi.ffi_call("flashjit_cpu_probe_backward",
                            [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in (q, q, v)])
    attrs = dict(PROBE_ATTRS, deterministic=True, v_shape=np.asarray(v.shape, np.int64))
    with pytest.raises(Exception) as e:
        call(q, q, v, q, lse, q, **attrs)
    if "platform stream" in str(e.value):
        pytest.skip("this XLA runs no FFI instantiate stage on the CPU")
    assert ("flashjit_attention_backward: q [2, 64, 8, 72], k [2, 64, 8, 72] and v "
            "[2, 63, 8, 72] do not agree") in str(e.value)


# A forward call's attributes as jax.py writes them (q, k, v [2, 64, 8, 72]).
PROBE_ATTRS = dict(
    mask=np.int64(0), window_left=np.int64(-1), window_right=np.int64(-1),
    softmax_scale=np.float64(0), softcap=np.float64(0), alibi=False, varlen=False,
    key_lengths=False, batch=np.int64(2), max_seqlen_q=np.int64(64),
    max_seqlen_k=np.int64(64), dtype=np.int64(1),
    q_shape=np.asarray([2, 64, 8, 72], np.int64), k_shape=np.asarray([2, 64, 8, 72], np.int64),
    v_shape=np.asarray([2, 64, 8, 72], np.int64))


def test_ffi_instantiate_checks_the_call(cpu_probe):
    q = jnp.zeros((2, 64, 8, 72), jnp.bfloat16)
    call = jax.ffi.ffi_call("flashjit_cpu_probe", jax.ShapeDtypeStruct(q.shape, q.dtype))
    attrs = dict(PROBE_ATTRS, return_lse=False,
                 k_shape=np.asarray([2, 64, 3, 72], np.int64))
    with pytest.raises(Exception) as e:
        call(q, q, q, **attrs)
    if "platform stream" in str(e.value):
        pytest.skip("this XLA runs no FFI instantiate stage on the CPU")
    assert "flashjit_attention_forward: q [2, 64, 8, 72], k [2, 64, 3, 72] and v" in str(e.value)


# ---- GPU -------------------------------------------------------------------------------------
def arrays(seed=0, **kw):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.standard_normal(s.shape, np.float32), s.dtype)
            for s in shapes(**kw)]


def torch_inputs(*arrays, **kw):
    """The arrays as torch CPU tensors of their dtype, and flash_attention's
    options as flashjit._reference's."""
    torch = pytest.importorskip("torch")  # flashjit._reference is torch math
    t = lambda x: torch.from_numpy(np.asarray(x, np.float32)).to(
        torch.bfloat16 if x.dtype == jnp.bfloat16 else torch.float16)
    kw = dict(kw)
    if "alibi_slopes" in kw:
        kw["alibi_slopes"] = torch.from_numpy(np.asarray(kw["alibi_slopes"]))
    if "key_value_seq_lengths" in kw:
        kw["seqused_k"] = torch.from_numpy(np.asarray(kw.pop("key_value_seq_lengths")))
    kw.pop("deterministic", None)
    return [t(x) for x in arrays], kw


def reference(q, k, v, **kw):
    torch = pytest.importorskip("torch")  # the float64 oracle
    from flashjit import _reference

    (tq, tk, tv), kw = torch_inputs(q, k, v, **kw)
    out64, lse64 = _reference.attention(tq, tk, tv, **kw)
    out32, _ = _reference.attention(tq, tk, tv, compute_dtype=torch.float32, **kw)
    return out64, out32.to(tq.dtype), lse64


def as_torch(x):
    import torch

    return torch.from_numpy(np.asarray(jnp.asarray(x, jnp.float32)))


@requires_jax_gpu
@pytest.mark.parametrize("kw", [
    dict(d=72), dict(d=100, causal=True), dict(d=192, dv=128, causal=True),
    dict(d=128, h=16, hkv=4), dict(d=64, window_size=(32, 8)), dict(d=80, softcap=25.0),
], ids=str)
def test_gpu_matches_the_float64_reference(kw):
    shape = {n: kw.pop(n) for n in ("d", "dv", "h", "hkv") if n in kw}
    q, k, v = arrays(**shape)
    out, lse = jax.jit(lambda *a: flash_attention(*a, return_lse=True, **kw))(q, k, v)
    out64, out_lowp, lse64 = reference(q, k, v, **kw)
    assert_within_2x(as_torch(out), out64, out_lowp, str(kw))
    finite = np.isfinite(lse64.numpy())
    np.testing.assert_allclose(np.asarray(lse)[finite], lse64.numpy()[finite], atol=1e-3, rtol=1e-3)


@requires_jax_gpu
@pytest.mark.parametrize("causal", [False, True])
def test_gpu_matches_dot_product_attention(causal):
    # seqlen_q == seqlen_k: jax's causal mask is aligned to the top-left corner.
    q, k, v = arrays(sq=96, sk=96, d=128, h=8, hkv=2)
    out = jax.jit(lambda *a: flash_attention(*a, causal=causal))(q, k, v)
    ref = jax.nn.dot_product_attention(q, k, v, is_causal=causal)
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref, np.float32),
                               atol=2e-2, rtol=2e-2)


@requires_jax_gpu
def test_gpu_vmap_equals_a_loop():
    qs, ks, vs = (jnp.stack(x) for x in zip(*(arrays(seed=s) for s in range(3))))
    f = lambda q, k, v: flash_attention(q, k, v, causal=True)
    batched = jax.jit(jax.vmap(f))(qs, ks, vs)
    for i in range(3):
        np.testing.assert_array_equal(np.asarray(batched[i]), np.asarray(f(qs[i], ks[i], vs[i])))


@requires_jax_gpu
def test_gpu_key_lengths_and_alibi():
    q, k, v = arrays(d=64)
    n = jnp.asarray([80, 17], jnp.int32)
    slopes = jnp.asarray(np.linspace(0.1, 0.8, 8), jnp.float32)
    out = jax.jit(lambda *a: flash_attention(*a, key_value_seq_lengths=n, alibi_slopes=slopes,
                                             causal=True))(q, k, v)
    out64, out_lowp, _ = reference(q, k, v, causal=True, key_value_seq_lengths=n,
                                   alibi_slopes=slopes)
    assert_within_2x(as_torch(out), out64, out_lowp, "key lengths + alibi")


@requires_jax_gpu
def test_gpu_varlen():
    torch = pytest.importorskip("torch")
    from flashjit import _reference

    lq, lk = [100, 3, 60], [90, 40, 60]
    rng = np.random.default_rng(2)
    q = jnp.asarray(rng.standard_normal((sum(lq), 8, 96)), jnp.bfloat16)
    k = jnp.asarray(rng.standard_normal((sum(lk), 2, 96)), jnp.bfloat16)
    v = jnp.asarray(rng.standard_normal((sum(lk), 2, 96)), jnp.bfloat16)
    cu = lambda ls: jnp.asarray(np.concatenate([[0], np.cumsum(ls)]), jnp.int32)
    out = jax.jit(lambda *a: flash_attention_varlen(*a, max(lq), max(lk), causal=True))(
        q, k, v, cu(lq), cu(lk))
    t = lambda x: as_torch(x).to(torch.bfloat16)
    kw = dict(causal=True, cu_seqlens_q=torch.tensor(np.asarray(cu(lq))),
              cu_seqlens_k=torch.tensor(np.asarray(cu(lk))))
    out64, _ = _reference.attention(t(q), t(k), t(v), **kw)
    out32, _ = _reference.attention(t(q), t(k), t(v), compute_dtype=torch.float32, **kw)
    assert_within_2x(as_torch(out), out64, out32.to(torch.bfloat16), "varlen")


# ---- GPU: gradients ------------------------------------------------------------------------
def x64():
    """float64 in JAX within a block (jax.enable_x64, or the older
    experimental one)."""
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64

    return enable_x64()


def jax_reference(q, k, v, *, softmax_scale=None, causal=False, window_size=(-1, -1),
                  softcap=0.0, alibi_slopes=None, key_value_seq_lengths=None,
                  deterministic=False):
    """flashjit's attention in jnp math, in the inputs' dtype (float64 under
    x64): bottom-right aligned masks, softcap, then ALiBi, GQA by repeat."""
    from flashjit._problem import mask_of

    mask, left, right = mask_of(causal, window_size)
    b, sq, h, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    k, v = jnp.repeat(k, h // hkv, axis=2), jnp.repeat(v, h // hkv, axis=2)
    scale = softmax_scale if softmax_scale is not None else d ** -0.5
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k) * scale
    if softcap > 0:
        s = softcap * jnp.tanh(s / softcap)
    keys = sk if key_value_seq_lengths is None else key_value_seq_lengths.reshape(b, 1, 1, 1)
    i, j = jnp.arange(sq).reshape(sq, 1), jnp.arange(sk).reshape(1, sk)
    diag = i + keys - sq
    if alibi_slopes is not None:
        slopes = jnp.broadcast_to(alibi_slopes, (b, h)).astype(s.dtype).reshape(b, h, 1, 1)
        s = s - slopes * jnp.abs(diag - j)
    visible = j < keys
    if mask == 1:
        visible = visible & (j <= diag)
    elif mask == 2:
        visible = visible & ((j >= diag - left) if left >= 0 else True)
        visible = visible & ((j <= diag + right) if right >= 0 else True)
    s = jnp.where(visible, s, -jnp.inf)
    # Softmax that writes 0 (and finite gradients) on a row without keys.
    m = jax.lax.stop_gradient(s.max(axis=-1, keepdims=True))
    e = jnp.exp(s - jnp.where(jnp.isfinite(m), m, 0))
    total = e.sum(axis=-1, keepdims=True)
    p = e / jnp.where(total > 0, total, 1)
    return jnp.einsum("bhqk,bkhd->bqhd", p, v)


def float64_vjp(f, primals, cotangent):
    """The float64 gradients of f (jnp math) on the CPU, as numpy arrays."""
    cpu = jax.devices("cpu")[0]
    with x64(), jax.default_device(cpu):
        as64 = lambda x: jnp.asarray(np.asarray(x, np.float64))
        _, vjp = jax.vjp(f, *(as64(x) for x in primals))
        return [np.asarray(g) for g in vjp(as64(cotangent))]


def assert_grads_within_2x(got, want64, yardstick, what):
    import torch

    for name, g, w, y in zip(("dq", "dk", "dv"), got, want64, yardstick):
        assert_within_2x(as_torch(g), torch.from_numpy(w), y, f"{name} {what}")


def torch_yardstick(dout, q, k, v, **kw):
    """The float32 yardstick's gradients (flashjit._reference, rounded where
    the GPU kernel rounds), in q's dtype."""
    from flashjit import _reference

    (tdo, tq, tk, tv), kw = torch_inputs(dout, q, k, v, **kw)
    return [g.to(tq.dtype) for g in _reference.attention_backward(tdo, tq, tk, tv, **kw)]


GRAD_CASES = [
    dict(d=72), dict(d=100, causal=True), dict(d=192, dv=128, causal=True),
    dict(d=128, h=16, hkv=4), dict(d=64, window_size=(32, 8), deterministic=True),
    dict(d=80, softcap=25.0), dict(d=96, causal=True, alibi=True, lengths=True),
]


@requires_jax_gpu
@pytest.mark.parametrize("case", GRAD_CASES, ids=str)
def test_gpu_grad_matches_float64(case):
    kw = dict(case)
    shape = {n: kw.pop(n) for n in ("d", "dv", "h", "hkv") if n in kw}
    if kw.pop("alibi", False):
        kw["alibi_slopes"] = jnp.asarray(np.linspace(0.1, 0.8, 8), jnp.float32)
    if kw.pop("lengths", False):
        kw["key_value_seq_lengths"] = jnp.asarray([80, 17], jnp.int32)
    q, k, v = arrays(**shape)
    dout = jnp.asarray(np.random.default_rng(7).standard_normal(
        q.shape[:-1] + (v.shape[-1],)), q.dtype)
    step = jax.jit(lambda q, k, v, do: jax.vjp(
        lambda q, k, v: flash_attention(q, k, v, **kw), q, k, v)[1](do))
    got = step(q, k, v, dout)
    ref_kw = {n: x for n, x in kw.items() if n != "deterministic"}
    want = float64_vjp(lambda q, k, v: jax_reference(q, k, v, **ref_kw), (q, k, v), dout)
    assert_grads_within_2x(got, want, torch_yardstick(dout, q, k, v, **kw), str(case))


@requires_jax_gpu
def test_gpu_grad_of_varlen_matches_float64():
    lq, lk = [100, 3, 60], [90, 40, 60]
    rng = np.random.default_rng(2)
    q = jnp.asarray(rng.standard_normal((sum(lq), 8, 96)), jnp.bfloat16)
    k = jnp.asarray(rng.standard_normal((sum(lk), 2, 96)), jnp.bfloat16)
    v = jnp.asarray(rng.standard_normal((sum(lk), 2, 64)), jnp.bfloat16)
    dout = jnp.asarray(rng.standard_normal((sum(lq), 8, 64)), jnp.bfloat16)
    cq, ck = (np.concatenate([[0], np.cumsum(ls)]).astype(np.int32) for ls in (lq, lk))
    f = lambda q, k, v: flash_attention_varlen(q, k, v, jnp.asarray(cq), jnp.asarray(ck),
                                               max(lq), max(lk), causal=True)
    got = jax.jit(lambda q, k, v, do: jax.vjp(f, q, k, v)[1](do))(q, k, v, dout)

    def packed_reference(q, k, v):  # one sequence at a time
        return jnp.concatenate([
            jax_reference(q[None, cq[b]:cq[b + 1]], k[None, ck[b]:ck[b + 1]],
                          v[None, ck[b]:ck[b + 1]], causal=True)[0]
            for b in range(len(lq))])

    want = float64_vjp(packed_reference, (q, k, v), dout)
    yardstick = torch_yardstick(dout, q, k, v, causal=True,
                                cu_seqlens_q=pytest.importorskip("torch").from_numpy(cq),
                                cu_seqlens_k=pytest.importorskip("torch").from_numpy(ck))
    assert_grads_within_2x(got, want, yardstick, "varlen")


@requires_jax_gpu
def test_gpu_vmap_of_grad_equals_a_loop():
    qs, ks, vs = (jnp.stack(x) for x in zip(*(arrays(seed=s) for s in range(3))))
    f = lambda q, k, v: flash_attention(q, k, v, causal=True, deterministic=True).astype(
        jnp.float32).sum()
    grad = jax.grad(f, argnums=(0, 1, 2))
    batched = jax.jit(jax.vmap(grad))(qs, ks, vs)
    for i in range(3):
        for b, g in zip(batched, jax.jit(grad)(qs[i], ks[i], vs[i])):
            np.testing.assert_array_equal(np.asarray(b[i]), np.asarray(g))


@requires_jax_gpu
def test_gpu_deterministic_grad_repeats_bitwise():
    q, k, v = arrays(d=192, dv=128, sq=256, sk=256)
    f = lambda q, k, v: flash_attention(q, k, v, causal=True, deterministic=True).astype(
        jnp.float32).sum()
    grad = jax.jit(jax.grad(f, argnums=(0, 1, 2)))
    first = [np.asarray(g) for g in grad(q, k, v)]
    for _ in range(4):
        for a, b in zip(first, grad(q, k, v)):
            np.testing.assert_array_equal(a, np.asarray(b))
