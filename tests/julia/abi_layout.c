/* Prints flashjit.h's struct layouts and constants as a C compiler sees
 * them, one fact a line, for check_layout.py to compare with the Julia mirror
 * (julia/FlashJIT/src/FlashJIT.jl):
 *   field <struct> <name> <offset> <size> <align>
 *   sizeof <struct> <size> <align>
 *   const <NAME> <value>
 */
#include "flashjit/flashjit.h"

#include <stddef.h>
#include <stdio.h>

#define FIELD(s, f)                                                            \
  printf("field %s %s %zu %zu %zu\n", #s, #f, offsetof(s, f),                  \
         sizeof(((s *)0)->f), _Alignof(__typeof__(((s *)0)->f)))
#define CONST(c) printf("const %s %d\n", #c, (int)(c))

int main(void) {
  FIELD(flashjit_forward_args, struct_size);
  FIELD(flashjit_forward_args, q);
  FIELD(flashjit_forward_args, k);
  FIELD(flashjit_forward_args, v);
  FIELD(flashjit_forward_args, o);
  FIELD(flashjit_forward_args, lse);
  FIELD(flashjit_forward_args, dtype);
  FIELD(flashjit_forward_args, mask);
  FIELD(flashjit_forward_args, batch);
  FIELD(flashjit_forward_args, heads_q);
  FIELD(flashjit_forward_args, heads_kv);
  FIELD(flashjit_forward_args, seqlen_q);
  FIELD(flashjit_forward_args, seqlen_k);
  FIELD(flashjit_forward_args, head_dim_qk);
  FIELD(flashjit_forward_args, head_dim_v);
  FIELD(flashjit_forward_args, q_strides);
  FIELD(flashjit_forward_args, k_strides);
  FIELD(flashjit_forward_args, v_strides);
  FIELD(flashjit_forward_args, o_strides);
  FIELD(flashjit_forward_args, lse_strides);
  FIELD(flashjit_forward_args, softmax_scale);
  FIELD(flashjit_forward_args, block_m);
  FIELD(flashjit_forward_args, block_n);
  FIELD(flashjit_forward_args, warps);
  FIELD(flashjit_forward_args, stages);
  FIELD(flashjit_forward_args, pack_gqa);
  FIELD(flashjit_forward_args, window_left);
  FIELD(flashjit_forward_args, window_right);
  FIELD(flashjit_forward_args, softcap);
  FIELD(flashjit_forward_args, bias_mode);
  FIELD(flashjit_forward_args, bias);
  FIELD(flashjit_forward_args, bias_batch);
  FIELD(flashjit_forward_args, bias_heads);
  FIELD(flashjit_forward_args, bias_strides);
  FIELD(flashjit_forward_args, alibi_slopes);
  FIELD(flashjit_forward_args, alibi_batch_stride);
  FIELD(flashjit_forward_args, cu_seqlens_q);
  FIELD(flashjit_forward_args, cu_seqlens_k);
  FIELD(flashjit_forward_args, cu_seqlens_q_host);
  FIELD(flashjit_forward_args, cu_seqlens_k_host);
  FIELD(flashjit_forward_args, total_q);
  FIELD(flashjit_forward_args, total_k);
  FIELD(flashjit_forward_args, key_lengths);
  FIELD(flashjit_forward_args, key_lengths_host);
  FIELD(flashjit_forward_args, trust_device_lengths);
  FIELD(flashjit_forward_args, full_kernel);
  FIELD(flashjit_forward_args, block_table);
  FIELD(flashjit_forward_args, block_table_host);
  FIELD(flashjit_forward_args, num_pages);
  FIELD(flashjit_forward_args, page_size);
  FIELD(flashjit_forward_args, max_pages_per_seq);
  FIELD(flashjit_forward_args, k_new);
  FIELD(flashjit_forward_args, v_new);
  FIELD(flashjit_forward_args, new_keys);
  FIELD(flashjit_forward_args, k_new_strides);
  FIELD(flashjit_forward_args, v_new_strides);
  FIELD(flashjit_forward_args, num_splits);
  FIELD(flashjit_forward_args, reserved_decode);
  FIELD(flashjit_forward_args, workspace);
  FIELD(flashjit_forward_args, workspace_bytes);
  printf("sizeof flashjit_forward_args %zu %zu\n",
         sizeof(flashjit_forward_args), _Alignof(flashjit_forward_args));
  FIELD(flashjit_backward_args, struct_size);
  FIELD(flashjit_backward_args, forward);
  FIELD(flashjit_backward_args, dout);
  FIELD(flashjit_backward_args, dq);
  FIELD(flashjit_backward_args, dk);
  FIELD(flashjit_backward_args, dv);
  FIELD(flashjit_backward_args, dout_strides);
  FIELD(flashjit_backward_args, dq_strides);
  FIELD(flashjit_backward_args, dk_strides);
  FIELD(flashjit_backward_args, dv_strides);
  FIELD(flashjit_backward_args, deterministic);
  FIELD(flashjit_backward_args, bias_grad);
  FIELD(flashjit_backward_args, dbias);
  FIELD(flashjit_backward_args, dbias_strides);
  printf("sizeof flashjit_backward_args %zu %zu\n",
         sizeof(flashjit_backward_args), _Alignof(flashjit_backward_args));
  CONST(FLASHJIT_API_VERSION);
  CONST(FLASHJIT_SUCCESS);
  CONST(FLASHJIT_ERROR_INVALID_ARGUMENT);
  CONST(FLASHJIT_FP16);
  CONST(FLASHJIT_BF16);
  CONST(FLASHJIT_MASK_NONE);
  CONST(FLASHJIT_MASK_CAUSAL);
  CONST(FLASHJIT_MASK_WINDOW);
  CONST(FLASHJIT_BIAS_NONE);
  CONST(FLASHJIT_BIAS_TENSOR);
  CONST(FLASHJIT_BIAS_ALIBI);
  return 0;
}
