/*===- flashjit.h - flashjit's plain C API ---------------------------------===*
 *
 * For foreign function interfaces: Python (ctypes), Julia (ccall), JAX (FFI).
 * An opaque runtime handle, plain structs of fixed-width fields, status codes
 * and a per-thread last-error string. No call throws or aborts; every failure
 * is a status code plus flashjit_last_error().
 *
 *   flashjit_runtime *rt;
 *   if (flashjit_runtime_create(0, &rt) != FLASHJIT_SUCCESS)
 *     fprintf(stderr, "%s\n", flashjit_last_error());
 *   flashjit_forward_args a;
 *   flashjit_forward_args_init(&a, sizeof a);
 *   a.dtype = FLASHJIT_BF16; a.batch = 4; ...; a.q = q_ptr; ...
 *   flashjit_attention_forward(rt, &a, stream);
 *   flashjit_runtime_destroy(rt);
 *
 * ABI: libflashjit.so exports only the flashjit_* symbols (LLVM inside is
 * hidden, so that a process may hold another LLVM). Each struct a caller
 * fills starts with its struct_size, which the init function sets from the
 * size the caller passes and which every call checks: a binding built
 * against another version of this header fails with a message saying so,
 * never reads or writes past its struct. FLASHJIT_API_VERSION changes with
 * every such struct or signature change; flashjit_api_version() reports the
 * library's.
 *
 *===----------------------------------------------------------------------===*/
#ifndef FLASHJIT_FLASHJIT_H
#define FLASHJIT_FLASHJIT_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The version of this API (structs and signatures); see the ABI note. */
#define FLASHJIT_API_VERSION 3

typedef enum flashjit_status {
  FLASHJIT_SUCCESS = 0,
  /** An argument is out of range; the message names it and the range. */
  FLASHJIT_ERROR_INVALID_ARGUMENT = 1,
  /** libcuda.so.1 is missing, too old or failed to initialise. */
  FLASHJIT_ERROR_NO_DRIVER = 2,
  /** No such device, an unsupported GPU, or its context failed. */
  FLASHJIT_ERROR_DEVICE = 3,
  /** Generating, JIT-compiling or loading the kernel failed. */
  FLASHJIT_ERROR_COMPILE = 4,
  /** The launch failed (or an earlier asynchronous error surfaced). */
  FLASHJIT_ERROR_LAUNCH = 5,
  /** Out of memory or another unexpected failure inside flashjit. */
  FLASHJIT_ERROR_INTERNAL = 6
} flashjit_status;

typedef enum flashjit_dtype {
  FLASHJIT_FP16 = 0,
  FLASHJIT_BF16 = 1
} flashjit_dtype;
typedef enum flashjit_mask {
  FLASHJIT_MASK_NONE = 0,
  FLASHJIT_MASK_CAUSAL = 1,
  /** Sliding window: window_left / window_right (bottom-right aligned). */
  FLASHJIT_MASK_WINDOW = 2
} flashjit_mask;
typedef enum flashjit_bias {
  FLASHJIT_BIAS_NONE = 0,
  /** An additive tensor: `bias`, `bias_batch`, `bias_heads`, `bias_strides`. */
  FLASHJIT_BIAS_TENSOR = 1,
  /** ALiBi from float32 `alibi_slopes` (-slope * |i + sk - sq - j|). */
  FLASHJIT_BIAS_ALIBI = 2
} flashjit_bias;

typedef struct flashjit_runtime flashjit_runtime;

/** One forward call. Sizes and strides count elements; the last dimension of
 *  q, k, v, o is contiguous and each *_strides array is {batch, head, row}.
 *  Q is [batch, heads_q, seqlen_q, head_dim_qk], K [.., heads_kv, seqlen_k,
 *  head_dim_qk], V [.., heads_kv, seqlen_k, head_dim_v], O like Q with
 *  head_dim_v; LSE (optional, float32, natural log) [batch, heads_q,
 *  seqlen_q] with lse_strides {batch, head}. Causal masks are aligned to the
 *  bottom-right corner. Call flashjit_forward_args_init first: zero fields
 *  mean "default" where noted. */
typedef struct flashjit_forward_args {
  /** sizeof(flashjit_forward_args) in the caller's header; set by init. */
  uint64_t struct_size;
  const void *q, *k, *v;
  void *o;
  float *lse;    /**< NULL: no LSE is written */
  int32_t dtype; /**< flashjit_dtype */
  int32_t mask;  /**< flashjit_mask */
  int64_t batch, heads_q;
  int64_t heads_kv; /**< 0: heads_q (multi-head attention) */
  int64_t seqlen_q, seqlen_k;
  int64_t head_dim_qk;
  int64_t head_dim_v; /**< 0: head_dim_qk */
  int64_t q_strides[3], k_strides[3], v_strides[3], o_strides[3];
  int64_t lse_strides[2];
  /** 0: 1/sqrt(head_dim_qk). */
  double softmax_scale;
  /** Tile override; 0 fields take the per-architecture default. */
  int32_t block_m, block_n, warps, stages;
  /** Tile override for GQA: 1 packs a K/V group's query heads into one
   *  CTA, -1 does not, 0 takes the default. */
  int32_t pack_gqa;

  /* ---- features; flashjit_forward_args_init leaves them off ---- */
  /** FLASHJIT_MASK_WINDOW: query i sees keys j with i + sk - sq - left <= j
   *  <= i + sk - sq + right; -1 (the init value) is unbounded. */
  int64_t window_left, window_right;
  /** > 0: scores become softcap * tanh(scores / softcap). */
  double softcap;
  int32_t bias_mode; /**< flashjit_bias */
  /** FLASHJIT_BIAS_TENSOR: dtype of q, [bias_batch, bias_heads, seqlen_q,
   *  seqlen_k] with bias_batch in {1, batch} and bias_heads in {1, heads_q}
   *  (1 broadcasts), bias_strides {batch, head, row}, columns contiguous. */
  const void *bias;
  int64_t bias_batch, bias_heads;
  int64_t bias_strides[3];
  /** FLASHJIT_BIAS_ALIBI: float32 slopes[b * alibi_batch_stride + h]. */
  const float *alibi_slopes;
  int64_t alibi_batch_stride;
  /** Varlen (cu_seqlens_q non-NULL): q/k/v/o are packed [total, heads, dim]
   *  (batch strides ignored), seqlen_q/k are the largest lengths, LSE is
   *  [heads_q, total_q] (lse_strides[0] ignored). Device int32 prefix sums
   *  of batch + 1 entries; the *_host copies are what is validated before
   *  the launch. Without them see trust_device_lengths. */
  const int32_t *cu_seqlens_q, *cu_seqlens_k;
  const int32_t *cu_seqlens_q_host, *cu_seqlens_k_host;
  int64_t total_q, total_k; /**< rows of the packed q/o and k/v buffers */
  /** Padded batches (non-NULL): only the first key_lengths[b] keys of batch
   *  b are real. Device int32 [batch]; host copy as for cu_seqlens. */
  const int32_t *key_lengths;
  const int32_t *key_lengths_host;

  /* ---- for frameworks; flashjit_forward_args_init sets them to 0 ---- */
  /** Where a host copy (cu_seqlens_*_host, key_lengths_host) is NULL: 0
   *  reads the values from the device, which synchronises `stream`, and
   *  checks them; 1 trusts the device values unread (nothing synchronises:
   *  CUDA-graph capture, framework ops): seqlen_q / seqlen_k must bound
   *  every sequence and total_q / total_k the packed rows, as FlashAttention
   *  trusts max_seqlen_q / max_seqlen_k. */
  int32_t trust_device_lengths;
  /** 1: launch only the full kernel: a cold miss waits for it instead of
   *  launching the quick form (benchmarks, CUDA-graph capture). 0: the
   *  runtime's quick_first option decides. */
  int32_t full_kernel;

  /* ---- decode (API version 3); flashjit_forward_args_init leaves them
   *      off: no paged cache, no append, splits chosen by the runtime ---- */
  /** Paged KV cache (block_table non-NULL): k and v are pages, [num_pages,
   *  page_size, heads_kv, dim] when dense, k_strides / v_strides {page,
   *  head, row}. Key j of sequence b is row j % page_size of page
   *  block_table[b * max_pages_per_seq + j / page_size]; key_lengths (then
   *  required) are the cache lengths, each at most seqlen_k, and seqlen_k at
   *  most max_pages_per_seq * page_size. page_size in [1, 2^20], a run-time
   *  value (no kernel per page size). Device int32 [batch,
   *  max_pages_per_seq]; block_table_host as for cu_seqlens: every entry of
   *  a page that holds keys must be in [0, num_pages), checked before any
   *  launch; the other entries are never read. Works with varlen queries
   *  (cu_seqlens_k is then unused and may be NULL). */
  const int32_t *block_table, *block_table_host;
  int64_t num_pages, page_size, max_pages_per_seq;
  /** Append (paged caches, new_keys > 0): k_new / v_new (dtype of q,
   *  [batch, new_keys, heads_kv, dim] by k_new_strides / v_new_strides
   *  {batch, head, row}) are written to cache rows key_lengths[b] ..
   *  key_lengths[b] + new_keys - 1 of their pages before the attention,
   *  which then sees key_lengths[b] + new_keys keys (key_lengths are the
   *  lengths before the append, as FlashAttention's cache_seqlens). */
  const void *k_new, *v_new;
  int64_t new_keys;
  int64_t k_new_strides[3], v_new_strides[3];
  /** Split-KV (flash-decoding): 0 the runtime chooses for decode-like and
   *  paged problems from the SM count (deterministic per shape and GPU), 1
   *  no split, n in [2, 128] that many splits; results differ by float32
   *  rounding only. */
  int32_t num_splits;
  int32_t reserved_decode; /**< 0 */

  /* ---- scratch (API version 3), forward and backward ---- */
  /** Device scratch of this call's kernels (a split forward's partials,
   *  the backward's arrays): workspace_bytes of it, at least what
   *  flashjit_forward_workspace_size() (0 for a forward that does not
   *  split) or flashjit_backward_workspace_size() report, 16-byte aligned,
   *  used by the call's kernels only. NULL (init): the runtime keeps one
   *  per stream (growing it synchronises the stream, which CUDA-graph
   *  capture refuses: pass one there). */
  void *workspace;
  uint64_t workspace_bytes;
} flashjit_forward_args;

/** Sets struct_size, zeroes the rest, then dtype = FLASHJIT_BF16 and
 *  window_left = window_right = -1 (mask none, no bias, no softcap, no
 *  varlen, defaults for every field documented with one). Sizes, pointers
 *  and strides remain to be set. `struct_size` is sizeof(*args) as the
 *  caller compiled it; another size than this library's writes nothing and
 *  fails (FLASHJIT_ERROR_INVALID_ARGUMENT): the binding was built against
 *  another flashjit.h. */
flashjit_status flashjit_forward_args_init(flashjit_forward_args *args,
                                           uint64_t struct_size);

/** One backward call: the gradients dq, dk, dv of sum(O * dO) for the
 *  forward call `forward` (its q, k, v, mask, scale, bias, softcap, varlen
 *  and key lengths; its o and lse, the forward's outputs, are read and lse
 *  is required). dout is like o, dq like q, dk like k, dv like v, each with
 *  its own {batch, head, row} strides (last dimension contiguous; under
 *  varlen packed like their tensors, batch strides ignored). dk and dv of
 *  a K/V head sum its GQA group's query heads; key padding rows (past
 *  key_lengths) get zero gradients. forward's tile override fields (block_m,
 *  block_n, warps, stages) override the backward's tiles; pack_gqa and
 *  full_kernel do not apply; forward.workspace / workspace_bytes are the
 *  backward's scratch; the decode fields (block_table, new_keys,
 *  num_splits above 1) are refused: the backward takes contiguous K/V.
 *  The sm80 kernels run on every arch (sm_90a too: no Hopper backward
 *  yet). API version 3 moved its scratch into forward (the version 2
 *  struct's own workspace field is gone). Call flashjit_backward_args_init
 *  first. */
typedef struct flashjit_backward_args {
  /** sizeof(flashjit_backward_args) in the caller's header; set by init. */
  uint64_t struct_size;
  /** Initialised by flashjit_backward_args_init as by
   *  flashjit_forward_args_init. */
  flashjit_forward_args forward;
  const void *dout;
  void *dq, *dk, *dv;
  int64_t dout_strides[3], dq_strides[3], dk_strides[3], dv_strides[3];
  /** 1: dq accumulated without float atomics, the same bits on every run;
   *  0 (init): atomics, faster. */
  int32_t deterministic;
  /** 1: also write dbias, the gradient of a full [batch, heads_q, seqlen_q,
   *  seqlen_k] bias tensor (forward.bias_mode FLASHJIT_BIAS_TENSOR,
   *  bias_batch = batch, bias_heads = heads_q), dtype of q, dbias_strides
   *  {batch, head, row}, columns contiguous; pairs that no query reaches
   *  are 0. 0 (init): no dbias. */
  int32_t bias_grad;
  void *dbias;
  int64_t dbias_strides[3];
} flashjit_backward_args;

/** Sets struct_size (and forward's as flashjit_forward_args_init does),
 *  zeroes the rest; a `struct_size` other than this library's fails as for
 *  flashjit_forward_args_init. */
flashjit_status flashjit_backward_args_init(flashjit_backward_args *args,
                                            uint64_t struct_size);

/** How a runtime compiles and caches; flashjit_runtime_options_init sets
 *  the defaults that flashjit_runtime_create uses. Flags are 0 or 1. */
typedef struct flashjit_runtime_options {
  /** sizeof(flashjit_runtime_options) in the caller's header; set by init. */
  uint64_t struct_size;
  int32_t device; /**< CUDA device ordinal (init: 0) */
  /** 1 (init): keep compiled kernels on disk across processes. */
  int32_t disk_cache;
  /** The disk cache directory; NULL (init): $FLASHJIT_CACHE_DIR, else
   *  $XDG_CACHE_HOME/flashjit, else ~/.cache/flashjit. Copied at create. */
  const char *cache_dir;
  /** 1 (init): take tile configs from the tune database (tune.json in the
   *  cache directory, written by `flashjit tune`). */
  int32_t use_tuned;
  /** 1 (init): on a cold miss, launch the kernel's quick form (bitwise the
   *  same results, about half the compile time, about half the speed) while
   *  the full kernel compiles on another thread; later calls get the full
   *  kernel once it is loaded. 0: a cold miss waits for the full kernel. */
  int32_t quick_first;
} flashjit_runtime_options;

/** Sets struct_size and the defaults documented on each field; a
 *  `struct_size` other than this library's fails as for
 *  flashjit_forward_args_init. */
flashjit_status flashjit_runtime_options_init(flashjit_runtime_options *options,
                                              uint64_t struct_size);

/** Creates a runtime on CUDA device `device` with the default options;
 *  *out is NULL on failure. */
flashjit_status flashjit_runtime_create(int device, flashjit_runtime **out);
/** Creates a runtime with `options`; *out is NULL on failure. */
flashjit_status
flashjit_runtime_create_with_options(const flashjit_runtime_options *options,
                                     flashjit_runtime **out);
/** Destroys a runtime (NULL is ignored). Kernels it launched must be done. */
void flashjit_runtime_destroy(flashjit_runtime *rt);

/** Launches attention forward on `stream` (a CUstream / cudaStream_t; NULL:
 *  the default stream). Compiles on first use of a specialisation. */
flashjit_status flashjit_attention_forward(flashjit_runtime *rt,
                                           const flashjit_forward_args *args,
                                           void *stream);

/** Launches the attention backward on `stream` (three kernels: D =
 *  rowsum(dO * O), dK/dV/dQ, dQ conversion). Compiles on first use of a
 *  specialisation. */
flashjit_status flashjit_attention_backward(flashjit_runtime *rt,
                                            const flashjit_backward_args *args,
                                            void *stream);
/** The workspace bytes (forward.workspace) a backward call with `args`
 *  needs on this runtime. Checks `args` as flashjit_attention_backward
 *  does, reading nothing through the pointers, and compiles and loads its
 *  kernels if need be (the backward's prepare). */
flashjit_status flashjit_backward_workspace_size(
    flashjit_runtime *rt, const flashjit_backward_args *args, uint64_t *bytes);

/** Compiles (or fetches from the memory or disk cache) and loads the full
 *  kernel that flashjit_attention_forward would launch for `args` on this
 *  runtime, without launching anything: the forward calls that follow, for
 *  the same specialisation and shapes, launch it at once. For a framework's
 *  compile stage, and before capturing a CUDA graph. Checks `args` as the
 *  forward call does, except that nothing is read through a pointer: only
 *  whether each is NULL and its alignment count, so a caller that has no
 *  buffers yet may pass any 256-byte aligned placeholder (a later call
 *  whose pointers are less aligned compiles its own kernel), and missing
 *  host copies of the sequence lengths are trusted. */
flashjit_status flashjit_prepare(flashjit_runtime *rt,
                                 const flashjit_forward_args *args);

/** The workspace bytes (the split-KV partials) a forward call with `args`
 *  needs on this runtime: 0 when it does not split. Checks `args` as
 *  flashjit_prepare does; compiles nothing. For callers that pass
 *  `workspace`. */
flashjit_status flashjit_forward_workspace_size(
    flashjit_runtime *rt, const flashjit_forward_args *args, uint64_t *bytes);

/** Waits until the full kernels compiling behind quick forms (quick_first)
 *  are loaded, so that the next calls launch them: before timing kernels. A
 *  background compile that failed is reported by the next forward call of
 *  its specialisation, which compiles it once more. */
flashjit_status flashjit_finish_compiles(flashjit_runtime *rt);

/** The PTX of the full kernel that a forward call with `args` launches on
 *  a GPU of target `arch` ("sm_80", "sm_86", "sm_87", "sm_89", "sm_90a",
 *  "sm_100", "sm_120"), with the target's default tile config or the args'
 *  tile override (not the tune database). Needs no GPU and no driver;
 *  pointers and host copies as for flashjit_prepare. On success *ptx is a
 *  NUL-terminated string to release with flashjit_free. */
flashjit_status flashjit_generate_ptx(const flashjit_forward_args *args,
                                      const char *arch, char **ptx);
/** Releases memory that flashjit returned (NULL is ignored). */
void flashjit_free(void *memory);

/** The CUDA device ordinal of the calling thread's current context (the
 *  one a framework made current), for bindings that run where the
 *  framework does. FLASHJIT_ERROR_DEVICE when the thread has none. */
flashjit_status flashjit_current_device(int32_t *device);

/** The message of the last failed call on this thread ("" if none). Valid
 *  until the next flashjit call on this thread. */
const char *flashjit_last_error(void);
/** A fixed name for a status code ("FLASHJIT_ERROR_COMPILE"). */
const char *flashjit_status_string(flashjit_status status);
/** The flashjit version ("0.1.0+cg12"). */
const char *flashjit_version(void);
/** FLASHJIT_API_VERSION of the library's own header. */
int32_t flashjit_api_version(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FLASHJIT_FLASHJIT_H */
