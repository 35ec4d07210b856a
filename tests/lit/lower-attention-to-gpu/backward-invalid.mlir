// RUN: not flashjit-opt %s --flashjit-lower-attention-to-gpu 2>&1 | FileCheck %s --check-prefix=BAD

// The sm90 family builds no backward kernels.
// BAD: the sm90 family builds no backward kernels
flashjit.attention_fwd @hopper arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "none", gqa_group = 1, lse = true, align = 8, direction = "backward"> config = #flashjit.tile<block_m = 128, block_n = 64, warps = 4, stages = 2, family = "sm90">
