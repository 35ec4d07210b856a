"""
    FlashJIT

flashjit's attention kernels on CuArrays, through `ccall` into libflashjit.so
(the C API of `flashjit.h`). Arrays are Julia's column-major view of
flash-attn's layout: q `(head_dim, heads, seqlen, batch)`, taken by pointer,
no copies; kernels run on CUDA.jl's task-local stream.

The library is `ENV["FLASHJIT_LIBRARY"]` when set, else the one inside the
Python package (`python3 -c "import flashjit; print(flashjit.library_path())"`),
else `libflashjit` on the loader's path (a `cmake --install` prefix).
"""
module FlashJIT

using BFloat16s: BFloat16
using CUDA
using Libdl

export flash_attention, FlashJITError

# ---- flashjit.h, mirrored -----------------------------------------------------
# Names, order and types are the C ones. No Julia runs in flashjit's CI:
# tests/julia/check_layout.py compares every field's offset and size, and
# every constant, with the header as a C compiler lays it out.
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

"flashjit_forward_args: filled by flashjit_forward_args_init, then by us."
mutable struct ForwardArgs
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
    ForwardArgs() = new()
end

# ---- the library ------------------------------------------------------------------
struct Library
    handle::Ptr{Cvoid}
    forward_args_init::Ptr{Cvoid}
    runtime_create::Ptr{Cvoid}
    attention_forward::Ptr{Cvoid}
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
                            sym(:flashjit_runtime_create),
                            sym(:flashjit_attention_forward),
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

"""
    flash_attention(q, k, v; causal=false, scale=nothing, window=(-1, -1),
                    softcap=0.0, return_lse=false) -> o (or (o, lse))

softmax(scale * q k^T, mask) v on CuArrays of Float16 or BFloat16:
q `(head_dim, heads_q, seqlen_q, batch)`, k `(head_dim, heads_kv, seqlen_k,
batch)`, v `(head_dim_v, heads_kv, seqlen_k, batch)`, heads_kv dividing heads_q
(GQA), any head dims 1..256. `scale` defaults to 1/sqrt(head_dim); causal and
`window = (left, right)` (-1: unbounded) are aligned to the bottom-right
corner; `softcap > 0` caps the scores. Returns o `(head_dim_v, heads_q,
seqlen_q, batch)` and, with `return_lse`, the Float32 log-sum-exp
`(seqlen_q, heads_q, batch)`. Runs on CUDA.jl's task-local stream.
"""
function flash_attention(q::CuArray{T,4}, k::CuArray{T,4}, v::CuArray{T,4};
                         causal::Bool=false, scale=nothing, window=(-1, -1),
                         softcap::Real=0.0, return_lse::Bool=false) where {T<:Union{Float16,BFloat16}}
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
    left, right = Int64.(window)
    right = causal ? Int64(0) : right
    mask = (left == -1 && right == -1) ? FLASHJIT_MASK_NONE :
           (causal && left == -1) ? FLASHJIT_MASK_CAUSAL : FLASHJIT_MASK_WINDOW

    lib = library()
    o = similar(q, T, (dv, heads, sq, batch))
    lse = return_lse ? CuArray{Float32}(undef, sq, heads, batch) : nothing
    a = ForwardArgs()
    check(lib, ccall(lib.forward_args_init, Int32, (Ref{ForwardArgs}, UInt64), a,
                     sizeof(ForwardArgs)))
    a.dtype = dtype_code(T)
    a.mask = mask
    if mask == FLASHJIT_MASK_WINDOW
        a.window_left, a.window_right = left, right
    end
    a.batch, a.heads_q, a.heads_kv = batch, heads, heads_kv
    a.seqlen_q, a.seqlen_k = sq, sk
    a.head_dim_qk, a.head_dim_v = d, dv
    a.q_strides = row_strides("q", q)
    a.k_strides = row_strides("k", k)
    a.v_strides = row_strides("v", v)
    a.o_strides = row_strides("o", o)
    a.softmax_scale = scale === nothing ? 0.0 : Float64(scale)
    a.softcap = Float64(softcap)
    GC.@preserve q k v o lse begin
        a.q, a.k, a.v, a.o = address(q), address(k), address(v), address(o)
        if lse !== nothing
            a.lse = Ptr{Cfloat}(address(lse))
            a.lse_strides = (stride(lse, 3), stride(lse, 2))
        end
        rt = runtime(lib, CUDA.deviceid(CUDA.device()))
        stream = reinterpret(Ptr{Cvoid}, CUDA.stream().handle)
        check(lib, ccall(lib.attention_forward, Int32,
                         (Ptr{Cvoid}, Ref{ForwardArgs}, Ptr{Cvoid}), rt, a, stream))
    end
    return return_lse ? (o, lse) : o
end

end # module
