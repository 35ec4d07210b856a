"""flashjit.jax: tracing, lowering and export of the custom call on any
backend (no GPU needed), errors at trace time, the backward's error, and on
a GPU its results against a float64 reference and
jax.nn.dot_product_attention, under jit and vmap."""

import numpy as np
import pytest

from conftest import assert_within_2x, requires_jax

pytestmark = requires_jax

if True:  # imports that need jax, after the skip mark
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp
    from flashjit.jax import TARGET, flash_attention, flash_attention_varlen


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


def test_gradient_says_the_backward_is_not_there_yet():
    q, k, v = shapes()
    loss = lambda q, k, v: flash_attention(q, k, v).astype(jnp.float32).sum()
    with pytest.raises(NotImplementedError, match="flashjit_attention_backward"):
        jax.eval_shape(jax.grad(loss), q, k, v)


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


def test_ffi_instantiate_checks_the_call(cpu_probe):
    import numpy as np

    q = jnp.zeros((2, 64, 8, 72), jnp.bfloat16)
    call = jax.ffi.ffi_call("flashjit_cpu_probe", jax.ShapeDtypeStruct(q.shape, q.dtype))
    attrs = dict(mask=np.int64(0), window_left=np.int64(-1), window_right=np.int64(-1),
                 softmax_scale=np.float64(0), softcap=np.float64(0), alibi=False,
                 varlen=False, key_lengths=False, return_lse=False, batch=np.int64(2),
                 max_seqlen_q=np.int64(64), max_seqlen_k=np.int64(64), dtype=np.int64(1),
                 q_shape=np.asarray([2, 64, 8, 72], np.int64),
                 k_shape=np.asarray([2, 64, 3, 72], np.int64),
                 v_shape=np.asarray([2, 64, 8, 72], np.int64))
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


def reference(q, k, v, **kw):
    torch = pytest.importorskip("torch")  # the float64 oracle
    from flashjit import _reference

    t = lambda x: torch.from_numpy(np.asarray(x, np.float32)).to(torch.bfloat16
                                                                 if x.dtype == jnp.bfloat16 else torch.float16)
    tq, tk, tv = t(q), t(k), t(v)
    if "alibi_slopes" in kw:
        kw["alibi_slopes"] = torch.from_numpy(np.asarray(kw["alibi_slopes"]))
    if "key_value_seq_lengths" in kw:
        kw["seqused_k"] = torch.from_numpy(np.asarray(kw.pop("key_value_seq_lengths")))
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
