// RUN: flashjit-opt %s | FileCheck %s
// RUN: flashjit-opt %s | flashjit-opt | FileCheck %s

// CHECK-LABEL: flashjit.attention_fwd @fwd80 arch = "sm_90a"
// Feature fields that are off are not printed.
// CHECK-SAME: spec = <dtype = "bf16", head_dim_qk = 80, head_dim_v = 80, mask = "causal", gqa_group = 4, lse = true, align = 8>
// CHECK-SAME: config = <block_m = 128, block_n = 64, warps = 8, stages = 2>
flashjit.attention_fwd @fwd80 arch = "sm_90a"
    spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 80, head_dim_v = 80, mask = "causal", gqa_group = 4, lse = true, align = 8>
    config = #flashjit.tile<block_m = 128, block_n = 64, warps = 8, stages = 2>

// A kernel without a config is valid: flashjit-select-tile-config fills it in.
// CHECK-LABEL: flashjit.attention_fwd @noconfig arch = "sm_80"
// CHECK-NOT: config
flashjit.attention_fwd @noconfig arch = "sm_80"
    spec = #flashjit.spec<dtype = "fp16", head_dim_qk = 33, head_dim_v = 33, mask = "none", gqa_group = 1, lse = false, align = 1>

// Every feature on: window mask, ALiBi, softcap, varlen, key lengths, and a
// tile that packs the GQA group.
// CHECK-LABEL: flashjit.attention_fwd @features arch = "sm_80"
// CHECK-SAME: spec = <dtype = "bf16", head_dim_qk = 128, head_dim_v = 64, mask = "window", gqa_group = 4, lse = true, align = 8, bias = "alibi", softcap = true, varlen = true, key_lengths = true>
// CHECK-SAME: config = <block_m = 128, block_n = 32, warps = 8, stages = 2, pack_gqa = true, quick = true>
flashjit.attention_fwd @features arch = "sm_80"
    spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 128, head_dim_v = 64, mask = "window", gqa_group = 4, lse = true, align = 8, bias = "alibi", softcap = true, varlen = true, key_lengths = true>
    config = #flashjit.tile<block_m = 128, block_n = 32, warps = 8, stages = 2, pack_gqa = true, quick = true>
