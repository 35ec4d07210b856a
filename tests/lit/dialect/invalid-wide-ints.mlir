// RUN: flashjit-opt %s -split-input-file -verify-diagnostics
// 64-bit attribute fields that the 32-bit spec and tile config cannot hold
// are errors, never truncated into valid values (2^32 + 64 is not 64).

// expected-error @+1 {{head_dim_qk must fit in 32 bits, got 4294967360}}
flashjit.attention_fwd @k arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 4294967360, head_dim_v = 64, mask = "none", gqa_group = 1, lse = true, align = 8>

// -----

// expected-error @+1 {{head_dim_v must fit in 32 bits, got -4294967232}}
flashjit.attention_fwd @k arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = -4294967232, mask = "none", gqa_group = 1, lse = true, align = 8>

// -----

// expected-error @+1 {{gqa_group must fit in 32 bits, got 4294967297}}
flashjit.attention_fwd @k arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "none", gqa_group = 4294967297, lse = true, align = 8>

// -----

// expected-error @+1 {{align must fit in 32 bits, got 4294967304}}
flashjit.attention_fwd @k arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "none", gqa_group = 1, lse = true, align = 4294967304>

// -----

// expected-error @+1 {{block_m must fit in 32 bits, got 4294967424}}
flashjit.attention_fwd @k arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "none", gqa_group = 1, lse = true, align = 8> config = #flashjit.tile<block_m = 4294967424, block_n = 64, warps = 4, stages = 2>

// -----

// expected-error @+1 {{block_n must fit in 32 bits, got 4294967360}}
flashjit.attention_fwd @k arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "none", gqa_group = 1, lse = true, align = 8> config = #flashjit.tile<block_m = 128, block_n = 4294967360, warps = 4, stages = 2>

// -----

// expected-error @+1 {{warps must fit in 32 bits, got 4294967300}}
flashjit.attention_fwd @k arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "none", gqa_group = 1, lse = true, align = 8> config = #flashjit.tile<block_m = 128, block_n = 64, warps = 4294967300, stages = 2>

// -----

// expected-error @+1 {{stages must fit in 32 bits, got 4294967298}}
flashjit.attention_fwd @k arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "none", gqa_group = 1, lse = true, align = 8> config = #flashjit.tile<block_m = 128, block_n = 64, warps = 4, stages = 4294967298>
