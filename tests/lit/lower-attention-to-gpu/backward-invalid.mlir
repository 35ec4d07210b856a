// RUN: not flashjit-opt %s --flashjit-lower-attention-to-gpu -split-input-file 2>&1 | FileCheck %s --check-prefix=BAD

// The sm90 backward takes 64 queries a step, 64 keys per warpgroup, and
// head dims to 128 (64 off 16-byte rows, 96 with varlen or a window); each
// refusal names the knob and what it accepts.
// BAD: backward block_m must be 64 in the sm90 family, got 128
flashjit.attention_fwd @hopper arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "none", gqa_group = 1, lse = true, align = 8, direction = "backward"> config = #flashjit.tile<block_m = 128, block_n = 64, warps = 4, stages = 2, family = "sm90">

// -----

// BAD: backward block_n must be 64 keys per warpgroup (128 for warps=8), got 64
flashjit.attention_fwd @keys arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "none", gqa_group = 1, lse = true, align = 8, direction = "backward"> config = #flashjit.tile<block_m = 64, block_n = 64, warps = 8, stages = 2, family = "sm90">

// -----

// BAD: backward block_n must be 64 past head dim 128 in the sm90 family (two warpgroups share the keys, each half the columns), got 128
flashjit.attention_fwd @wide arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 160, head_dim_v = 160, mask = "none", gqa_group = 1, lse = true, align = 8, direction = "backward"> config = #flashjit.tile<block_m = 64, block_n = 128, warps = 8, stages = 2, family = "sm90">

// -----

// BAD: the sm90 backward takes head dims past 160 only where the other is at most 128 (dK and dV of 128 columns a warpgroup leave too few registers), got 192/192; use the sm80 family
flashjit.attention_fwd @wider arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 192, head_dim_v = 192, mask = "none", gqa_group = 1, lse = true, align = 8, direction = "backward"> config = #flashjit.tile<block_m = 64, block_n = 64, warps = 8, stages = 1, family = "sm90">

// -----

// BAD: the sm90 backward takes head dims up to 64 where rows are not 16-byte aligned (copied by every thread, not TMA), got 72/72; use the sm80 family
flashjit.attention_fwd @copied arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 72, head_dim_v = 72, mask = "none", gqa_group = 1, lse = true, align = 4, direction = "backward"> config = #flashjit.tile<block_m = 64, block_n = 128, warps = 8, stages = 2, family = "sm90">

// -----

// BAD: the sm90 backward takes head dims up to 96 with varlen or a window mask (their bounds leave dK and dV too few registers), got 128/128; use the sm80 family
flashjit.attention_fwd @windowed arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 128, head_dim_v = 128, mask = "window", gqa_group = 1, lse = true, align = 8, direction = "backward"> config = #flashjit.tile<block_m = 64, block_n = 128, warps = 8, stages = 2, family = "sm90">
