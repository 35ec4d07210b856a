flashjit.attention_fwd @k arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "none", gqa_group = 4294967297, lse = true, align = 8>
