// RUN: flashjit-opt %s -split-input-file -verify-diagnostics

// expected-error @+1 {{head_dim_qk must be in [1, 256], got 300}}
flashjit.attention_fwd @k arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 300, head_dim_v = 64, mask = "none", gqa_group = 1, lse = true, align = 8>

// -----

// expected-error @+1 {{head_dim_v must be in [1, 256], got 0}}
flashjit.attention_fwd @k arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 0, mask = "none", gqa_group = 1, lse = true, align = 8>

// -----

// expected-error @+1 {{dtype must be one of fp16|bf16, got 'fp8'}}
flashjit.attention_fwd @k arch = "sm_90a" spec = #flashjit.spec<dtype = "fp8", head_dim_qk = 64, head_dim_v = 64, mask = "none", gqa_group = 1, lse = true, align = 8>

// -----

// expected-error @+1 {{mask must be one of none|causal|window, got 'sliding'}}
flashjit.attention_fwd @k arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "sliding", gqa_group = 1, lse = true, align = 8>

// -----

// expected-error @+1 {{align must be one of 1, 2, 4, 8 (elements), got 3}}
flashjit.attention_fwd @k arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "none", gqa_group = 1, lse = true, align = 3>

// -----

// expected-error @+1 {{arch must be one of sm_80|sm_86|sm_87|sm_89|sm_90|sm_90a|sm_100|sm_120, got 'sm_75'}}
flashjit.attention_fwd @k arch = "sm_75" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "none", gqa_group = 1, lse = true, align = 8>

// -----

// expected-error @+1 {{block_m must be a multiple of 16 * warps (128) in [16, 256], got 64}}
flashjit.attention_fwd @k arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "none", gqa_group = 1, lse = true, align = 8> config = #flashjit.tile<block_m = 64, block_n = 64, warps = 8, stages = 2>

// -----

// expected-error @+1 {{sm_86 allows at most 101376 per block}}
flashjit.attention_fwd @k arch = "sm_86" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 256, head_dim_v = 256, mask = "none", gqa_group = 1, lse = true, align = 8> config = #flashjit.tile<block_m = 128, block_n = 128, warps = 8, stages = 2>

// -----

// expected-error @+1 {{bias must be one of none|tensor|alibi, got 'relative'}}
flashjit.attention_fwd @k arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "none", gqa_group = 1, lse = true, align = 8, bias = "relative">

// -----

// expected-error @+1 {{pack_gqa needs a GQA group > 1 (heads_q / heads_kv), got 1}}
flashjit.attention_fwd @k arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "none", gqa_group = 1, lse = true, align = 8> config = #flashjit.tile<block_m = 128, block_n = 64, warps = 8, stages = 2, pack_gqa = true>

// -----

// expected-error @+1 {{a backward spec reads the forward's LSE: lse must be on}}
flashjit.attention_fwd @k arch = "sm_80" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "none", gqa_group = 1, lse = false, align = 8, direction = "backward">

// -----

// expected-error @+1 {{deterministic and bias_grad are facts of backward kernels}}
flashjit.attention_fwd @k arch = "sm_80" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "none", gqa_group = 1, lse = true, align = 8, deterministic = true>

// -----

// expected-error @+1 {{direction must be one of forward|backward, got 'sideways'}}
flashjit.attention_fwd @k arch = "sm_80" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "none", gqa_group = 1, lse = true, align = 8, direction = "sideways">
