"""
    FlashJIT

flashjit's attention kernels on CuArrays, through `ccall` into libflashjit.so
(the C API of `flashjit.h`). Arrays are Julia's column-major view of
flash-attn's layout: q `(head_dim, heads, seqlen, batch)`, taken by pointer,
no copies; kernels run on CUDA.jl's task-local stream. Gradients: a
ChainRulesCore `rrule` (Zygote, Flux, Lux) over `flash_attention_backward`.

The library is `ENV["FLASHJIT_LIBRARY"]` when set, else the one inside the
Python package (`python3 -c "import flashjit; print(flashjit.library_path())"`),
else `libflashjit` on the loader's path (a `cmake --install` prefix).
"""
module FlashJIT

using BFloat16s: BFloat16
using ChainRulesCore
using CUDA
using Libdl

export flash_attention, flash_attention_backward, FlashJITError

# ---- flashjit.h, mirrored -----------------------------------------------------
# Names, order and types are the C ones. No Julia runs in flashjit's CI:
# tests/julia/check_layout.py compares every field's offset and size, and
# every constant, with the header as a C compiler lays it out. The structs
# are immutable (isbits) so that BackwardArgs holds its ForwardArgs inline,
# as C does; `with` makes changed copies.
const FLASHJIT_API_VERSION = 3

const FLASHJIT_SUCCESS = Int32(0)
const FLASHJIT_ERROR_INVALID_ARGUMENT = Int32(1)

const FLASHJIT_FP16 = Int32(0)
const FLASHJIT_BF16 = Int32(1)

const FLASHJIT_MASK_NONE = Int32(0)
const FLASHJIT_MASK_CAUSAL = Int32(1)
const FLASHJIT_MASK_WINDOW = Int32(2)

const FLASHJIT_BIAS_NONE = Int32(0)
const FLASHJIT_BIAS_TENSOR = Int32(1)
const FLASHJIT_BIAS_ALIBI = Int32(2)

"flashjit_forward_args: from flashjit_forward_args_init, then changed with `with`."
struct ForwardArgs
    struct_size::UInt64
    q::Ptr{Cvoid}
    k::Ptr{Cvoid}
    v::Ptr{Cvoid}
    o::Ptr{Cvoid}
    lse::Ptr{Cfloat}
    dtype::Int32
    mask::Int32
    batch::Int64
    heads_q::Int64
    heads_kv::Int64
    seqlen_q::Int64
    seqlen_k::Int64
    head_dim_qk::Int64
    head_dim_v::Int64
    q_strides::NTuple{3,Int64}
    k_strides::NTuple{3,Int64}
    v_strides::NTuple{3,Int64}
    o_strides::NTuple{3,Int64}
    lse_strides::NTuple{2,Int64}
    softmax_scale::Float64
    block_m::Int32
    block_n::Int32
    warps::Int32
    stages::Int32
    pack_gqa::Int32
    window_left::Int64
    window_right::Int64
    softcap::Float64
    bias_mode::Int32
    bias::Ptr{Cvoid}
    bias_batch::Int64
    bias_heads::Int64
    bias_strides::NTuple{3,Int64}
    alibi_slopes::Ptr{Cfloat}
    alibi_batch_stride::Int64
    cu_seqlens_q::Ptr{Int32}
    cu_seqlens_k::Ptr{Int32}
    cu_seqlens_q_host::Ptr{Int32}
    cu_seqlens_k_host::Ptr{Int32}
    total_q::Int64
    total_k::Int64
    key_lengths::Ptr{Int32}
    key_lengths_host::Ptr{Int32}
    trust_device_lengths::Int32
    full_kernel::Int32
    block_table::Ptr{Int32}
    block_table_host::Ptr{Int32}
    num_pages::Int64
    page_size::Int64
    max_pages_per_seq::Int64
    k_new::Ptr{Cvoid}
    v_new::Ptr{Cvoid}
    new_keys::Int64
    k_new_strides::NTuple{3,Int64}
    v_new_strides::NTuple{3,Int64}
    num_splits::Int32
    reserved_decode::Int32
    workspace::Ptr{Cvoid}
    workspace_bytes::UInt64
end

"flashjit_backward_args: the forward call's ForwardArgs inline, then the gradients."
struct BackwardArgs
    struct_size::UInt64
    forward::ForwardArgs
    dout::Ptr{Cvoid}
    dq::Ptr{Cvoid}
    dk::Ptr{Cvoid}
    dv::Ptr{Cvoid}
    dout_strides::NTuple{3,Int64}
    dq_strides::NTuple{3,Int64}
    dk_strides::NTuple{3,Int64}
    dv_strides::NTuple{3,Int64}
    deterministic::Int32
    bias_grad::Int32
    dbias::Ptr{Cvoid}
    dbias_strides::NTuple{3,Int64}
end

"A copy of the struct `a` with the fields named in `changes` replaced."
function with(a::T; changes...) where {T}
    T((haskey(changes, f) ? changes[f] : getfield(a, f) for f in fieldnames(T))...)
end

# ---- the library ------------------------------------------------------------------
struct Library
    handle::Ptr{Cvoid}
    forward_args_init::Ptr{Cvoid}
    backward_args_init::Ptr{Cvoid}
    runtime_create::Ptr{Cvoid}
    attention_forward::Ptr{Cvoid}
    attention_backward::Ptr{Cvoid}
    backward_workspace_size::Ptr{Cvoid}
    prepare::Ptr{Cvoid}
    last_error::Ptr{Cvoid}
    status_string::Ptr{Cvoid}
end

const LIBRARY = Ref{Union{Nothing,Library}}(nothing)
const RUNTIMES = Dict{Int,Ptr{Cvoid}}()
const LOCK = ReentrantLock()

function library_path()
    path = get(ENV, "FLASHJIT_LIBRARY", "")
    isempty(path) || return path
    python = Sys.which("python3")
    if python !== nothing
        found = try
            readchomp(`$python -c "import flashjit; print(flashjit.library_path())"`)
        catch
            ""
        end
        isempty(found) || return found
    end
    return "libflashjit"
end

function library()
    lib = LIBRARY[]
    lib === nothing || return lib
    lock(LOCK) do
        LIBRARY[] === nothing || return LIBRARY[]
        handle = Libdl.dlopen(library_path(), Libdl.RTLD_LOCAL | Libdl.RTLD_NOW)
        sym(name) = Libdl.dlsym(handle, name)
        api = ccall(sym(:flashjit_api_version), Int32, ())
        api == FLASHJIT_API_VERSION || error(
            "FlashJIT: libflashjit has C API $api, FlashJIT mirrors $FLASHJIT_API_VERSION")
        LIBRARY[] = Library(handle, sym(:flashjit_forward_args_init),
                            sym(:flashjit_backward_args_init),
                            sym(:flashjit_runtime_create),
                            sym(:flashjit_attention_forward),
                            sym(:flashjit_attention_backward),
                            sym(:flashjit_backward_workspace_size),
                            sym(:flashjit_prepare), sym(:flashjit_last_error),
                            sym(:flashjit_status_string))
    end
end

"A failed flashjit call: its status name and flashjit's message."
struct FlashJITError <: Exception
    status::String
    message::String
end
Base.showerror(io::IO, e::FlashJITError) = print(io, "flashjit: ", e.status, ": ", e.message)

function check(lib::Library, status::Int32)
    status == FLASHJIT_SUCCESS && return nothing
    message = unsafe_string(ccall(lib.last_error, Cstring, ()))
    status == FLASHJIT_ERROR_INVALID_ARGUMENT && throw(ArgumentError(message))
    throw(FlashJITError(unsafe_string(ccall(lib.status_string, Cstring, (Int32,), status)),
                        message))
end

"The runtime of CUDA device `ordinal` (0-based), created on first use."
function runtime(lib::Library, ordinal::Int)
    lock(LOCK) do
        get!(RUNTIMES, ordinal) do
            rt = Ref{Ptr{Cvoid}}(C_NULL)
            check(lib, ccall(lib.runtime_create, Int32, (Cint, Ptr{Ptr{Cvoid}}),
                             ordinal, rt))
            rt[]
        end
    end
end

# A CuPtr is a 64-bit device address: the C API takes it as a plain pointer.
address(a) = Ptr{Cvoid}(reinterpret(UInt, pointer(a)))
dtype_code(::Type{Float16}) = FLASHJIT_FP16
dtype_code(::Type{BFloat16}) = FLASHJIT_BF16

"flashjit's (batch, head, row) strides of a column-major (dim, heads, rows, batch) array."
function row_strides(name, a)
    stride(a, 1) == 1 || throw(ArgumentError(
        "$name: the head_dim dimension must be contiguous (stride 1), got strides $(strides(a))"))
    (stride(a, 4), stride(a, 2), stride(a, 3))
end

"The initialised C struct `T` (its init function `init`)."
function initialised(lib::Library, ::Type{T}, init::Ptr{Cvoid}) where {T}
    r = Ref{T}()
    check(lib, ccall(init, Int32, (Ref{T}, UInt64), r, sizeof(T)))
    r[]
end

"The forward call's arguments of q, k, v and the options, pointers unset."
function forward_args(lib::Library, q::CuArray{T,4}, k::CuArray{T,4}, v::CuArray{T,4};
                      causal::Bool, scale, window, softcap::Real) where {T}
    d, heads, sq, batch = size(q)
    dk, heads_kv, sk, batch_k = size(k)
    dv = size(v, 1)
    dk == d || throw(ArgumentError("k: head_dim $dk differs from q's $d"))
    batch_k == batch || throw(ArgumentError("k: batch $batch_k differs from q's $batch"))
    size(v)[2:4] == size(k)[2:4] || throw(ArgumentError(
        "v: size $(size(v)) must match k's $(size(k)) but in head_dim"))
    heads_kv >= 1 && heads % heads_kv == 0 || throw(ArgumentError(
        "k: heads_kv ($heads_kv) must divide q's heads ($heads)"))
    length(window) == 2 || throw(ArgumentError("window: expected (left, right), got $window"))
    left, right = Int64.(Tuple(window))
    right = causal ? Int64(0) : right
    mask = (left == -1 && right == -1) ? FLASHJIT_MASK_NONE :
           (causal && left == -1) ? FLASHJIT_MASK_CAUSAL : FLASHJIT_MASK_WINDOW
    a = initialised(lib, ForwardArgs, lib.forward_args_init)
    if mask == FLASHJIT_MASK_WINDOW
        a = with(a; window_left=left, window_right=right)
    end
    with(a; dtype=dtype_code(T), mask, batch=Int64(batch), heads_q=Int64(heads),
         heads_kv=Int64(heads_kv), seqlen_q=Int64(sq), seqlen_k=Int64(sk),
         head_dim_qk=Int64(d), head_dim_v=Int64(dv), q_strides=row_strides("q", q),
         k_strides=row_strides("k", k), v_strides=row_strides("v", v),
         softmax_scale=scale === nothing ? 0.0 : Float64(scale),
         softcap=Float64(softcap))
end

current_runtime(lib::Library) = runtime(lib, CUDA.deviceid(CUDA.device()))
current_stream() = reinterpret(Ptr{Cvoid}, CUDA.stream().handle)
lse_strides(lse) = (Int64(stride(lse, 3)), Int64(stride(lse, 2)))

"""
    flash_attention(q, k, v; causal=false, scale=nothing, window=(-1, -1),
                    softcap=0.0, return_lse=false, deterministic=false) -> o (or (o, lse))

softmax(scale * q k^T, mask) v on CuArrays of Float16 or BFloat16:
q `(head_dim, heads_q, seqlen_q, batch)`, k `(head_dim, heads_kv, seqlen_k,
batch)`, v `(head_dim_v, heads_kv, seqlen_k, batch)`, heads_kv dividing heads_q
(GQA), any head dims 1..256. `scale` defaults to 1/sqrt(head_dim); causal and
`window = (left, right)` (-1: unbounded) are aligned to the bottom-right
corner; `softcap > 0` caps the scores. Returns o `(head_dim_v, heads_q,
seqlen_q, batch)` and, with `return_lse`, the Float32 log-sum-exp
`(seqlen_q, heads_q, batch)`. Runs on CUDA.jl's task-local stream.
Differentiable in q, k, v through ChainRulesCore (the LSE is not);
`deterministic` is the backward's: dq without float atomics, the same bits
on every run.
"""
function flash_attention(q::CuArray{T,4}, k::CuArray{T,4}, v::CuArray{T,4};
                         causal::Bool=false, scale=nothing, window=(-1, -1),
                         softcap::Real=0.0, return_lse::Bool=false,
                         deterministic::Bool=false) where {T<:Union{Float16,BFloat16}}
    lib = library()
    a = forward_args(lib, q, k, v; causal, scale, window, softcap)
    _, heads, sq, batch = size(q)
    o = similar(q, T, (size(v, 1), heads, sq, batch))
    lse = return_lse ? CuArray{Float32}(undef, sq, heads, batch) : nothing
    GC.@preserve q k v o lse begin
        a = with(a; q=address(q), k=address(k), v=address(v), o=address(o),
                 o_strides=row_strides("o", o))
        if lse !== nothing
            a = with(a; lse=Ptr{Cfloat}(address(lse)), lse_strides=lse_strides(lse))
        end
        check(lib, ccall(lib.attention_forward, Int32,
                         (Ptr{Cvoid}, Ref{ForwardArgs}, Ptr{Cvoid}),
                         current_runtime(lib), a, current_stream()))
    end
    return return_lse ? (o, lse) : o
end

"""
    flash_attention_backward(dout, q, k, v, o, lse; causal=false, scale=nothing,
                             window=(-1, -1), softcap=0.0, deterministic=false) -> (dq, dk, dv)

The gradients of sum(o .* dout) for `o, lse = flash_attention(q, k, v;
..., return_lse=true)` with the same options: dq, dk, dv like q, k, v
(dk and dv sum their GQA group's query heads). dout is like o. The
workspace comes from CUDA.jl's memory pool, on CUDA.jl's task-local stream.
"""
function flash_attention_backward(dout::CuArray{T,4}, q::CuArray{T,4}, k::CuArray{T,4},
                                  v::CuArray{T,4}, o::CuArray{T,4}, lse::CuArray{Float32,3};
                                  causal::Bool=false, scale=nothing, window=(-1, -1),
                                  softcap::Real=0.0,
                                  deterministic::Bool=false) where {T<:Union{Float16,BFloat16}}
    lib = library()
    a = forward_args(lib, q, k, v; causal, scale, window, softcap)
    _, heads, sq, batch = size(q)
    size(o) == (size(v, 1), heads, sq, batch) || throw(ArgumentError(
        "o: size $(size(o)) must be $((size(v, 1), heads, sq, batch))"))
    size(dout) == size(o) || throw(ArgumentError(
        "dout: size $(size(dout)) must equal o's $(size(o))"))
    size(lse) == (sq, heads, batch) || throw(ArgumentError(
        "lse: size $(size(lse)) must be $((sq, heads, batch))"))
    dq, dk, dv = similar(q), similar(k), similar(v)
    GC.@preserve dout q k v o lse dq dk dv begin
        a = with(a; q=address(q), k=address(k), v=address(v), o=address(o),
                 o_strides=row_strides("o", o), lse=Ptr{Cfloat}(address(lse)),
                 lse_strides=lse_strides(lse))
        b = with(initialised(lib, BackwardArgs, lib.backward_args_init);
                 forward=a, dout=address(dout), dq=address(dq), dk=address(dk),
                 dv=address(dv), dout_strides=row_strides("dout", dout),
                 dq_strides=row_strides("dq", dq), dk_strides=row_strides("dk", dk),
                 dv_strides=row_strides("dv", dv), deterministic=Int32(deterministic))
        rt = current_runtime(lib)
        bytes = Ref{UInt64}(0)
        check(lib, ccall(lib.backward_workspace_size, Int32,
                         (Ptr{Cvoid}, Ref{BackwardArgs}, Ref{UInt64}), rt, b, bytes))
        # CUDA.jl's pool is stream-ordered: freed after the launch, reused
        # only by work queued after the kernels.
        workspace = CuArray{UInt8}(undef, bytes[])
        GC.@preserve workspace begin
            b = with(b; forward=with(b.forward; workspace=address(workspace),
                                     workspace_bytes=bytes[]))
            check(lib, ccall(lib.attention_backward, Int32,
                             (Ptr{Cvoid}, Ref{BackwardArgs}, Ptr{Cvoid}),
                             rt, b, current_stream()))
        end
        CUDA.unsafe_free!(workspace)
    end
    return dq, dk, dv
end

# ---- gradients: ChainRulesCore --------------------------------------------------
function ChainRulesCore.rrule(::typeof(flash_attention), q::CuArray{T,4}, k::CuArray{T,4},
                              v::CuArray{T,4}; causal::Bool=false, scale=nothing,
                              window=(-1, -1), softcap::Real=0.0, return_lse::Bool=false,
                              deterministic::Bool=false) where {T<:Union{Float16,BFloat16}}
    # The backward reads the LSE: always written here.
    o, lse = flash_attention(q, k, v; causal, scale, window, softcap, return_lse=true)
    function flash_attention_pullback(ȳ)
        none = (NoTangent(), ZeroTangent(), ZeroTangent(), ZeroTangent())
        ō = unthunk(ȳ)
        ō isa AbstractZero && return none
        if return_lse
            unthunk(ō[2]) isa AbstractZero || throw(ArgumentError(
                "lse: flashjit does not differentiate the log-sum-exp output"))
            ō = unthunk(ō[1])
            ō isa AbstractZero && return none
        end
        dout = ō isa CuArray{T,4} ? ō : CuArray{T,4}(ō)
        dq, dk, dv = flash_attention_backward(dout, q, k, v, o, lse; causal, scale, window,
                                              softcap, deterministic)
        return NoTangent(), dq, dk, dv
    end
    return (return_lse ? (o, lse) : o), flash_attention_pullback
end

end # module
