// RUN: flashjit-opt %s --flashjit-select-tile-config=family=sm80 | FileCheck %s
// The per-arch rows are the arch's: sm_86's smaller tiles are not sm_90a's,
// and without the pass nothing is filled in.
// RUN: sed -e '/@d240sm86 /s/sm_86/sm_90a/' %s | flashjit-opt --flashjit-select-tile-config=family=sm80 | not FileCheck %s
// RUN: sed -e '/@d160sm86 /s/sm_86/sm_90a/' %s | flashjit-opt --flashjit-select-tile-config=family=sm80 | not FileCheck %s
// RUN: sed -e '/@d96causal /s/mask = "causal"/mask = "none"/' %s | flashjit-opt --flashjit-select-tile-config=family=sm80 | not FileCheck %s
// RUN: flashjit-opt %s | not FileCheck %s

// The per-arch table fills in missing configs; explicit ones are kept.
// CHECK-LABEL: @d64
// CHECK-SAME: config = <block_m = 128, block_n = 64, warps = 4, stages = 2>
flashjit.attention_fwd @d64 arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "none", gqa_group = 1, lse = true, align = 8>

// CHECK-LABEL: @d160
// CHECK-SAME: config = <block_m = 64, block_n = 128, warps = 4, stages = 1>
flashjit.attention_fwd @d160 arch = "sm_80" spec = #flashjit.spec<dtype = "fp16", head_dim_qk = 160, head_dim_v = 160, mask = "causal", gqa_group = 1, lse = true, align = 8>

// CHECK-LABEL: @d256
// CHECK-SAME: config = <block_m = 64, block_n = 64, warps = 4, stages = 1>
flashjit.attention_fwd @d256 arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 256, head_dim_v = 256, mask = "none", gqa_group = 1, lse = true, align = 8>

// sm_86 has less shared memory (99 KiB a block): the first smaller tile
// that fits (here one stage instead of two).
// CHECK-LABEL: @d240sm86
// CHECK-SAME: config = <block_m = 128, block_n = 32, warps = 8, stages = 1>
flashjit.attention_fwd @d240sm86 arch = "sm_86" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 240, head_dim_v = 240, mask = "none", gqa_group = 1, lse = true, align = 8>

// Causal takes the same rows; 64-row K/V tiles, two stages up to d=112
// (three at d=96; 8-byte copies from d=97 take 48-row tiles of one stage)
// and one at 113 <= d <= 128 (two at d=128 without a mask); unaligned
// (scalar-copy) kernels have their own rows.
// CHECK-LABEL: @d64causal
// CHECK-SAME: config = <block_m = 128, block_n = 64, warps = 4, stages = 2>
flashjit.attention_fwd @d64causal arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "causal", gqa_group = 1, lse = true, align = 8>
// d=96 with 16-byte copies takes three stages without a mask (sm_86's
// 100 KB hold them too), two with causal.
// CHECK-LABEL: @d96none
// CHECK-SAME: config = <block_m = 128, block_n = 64, warps = 4, stages = 3>
flashjit.attention_fwd @d96none arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 96, head_dim_v = 96, mask = "none", gqa_group = 1, lse = true, align = 8>
// CHECK-LABEL: @d96causal
// CHECK-SAME: config = <block_m = 128, block_n = 64, warps = 4, stages = 2>
flashjit.attention_fwd @d96causal arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 96, head_dim_v = 96, mask = "causal", gqa_group = 1, lse = true, align = 8>
// CHECK-LABEL: @d96sm86
// CHECK-SAME: config = <block_m = 128, block_n = 64, warps = 4, stages = 3>
flashjit.attention_fwd @d96sm86 arch = "sm_86" spec = #flashjit.spec<dtype = "fp16", head_dim_qk = 96, head_dim_v = 96, mask = "none", gqa_group = 1, lse = true, align = 8>
// Where the preferred tile does not fit (d=160's 64x128: 100 KiB, sm_86 has
// 99), the first smaller one that does: fewer stages, then 32-key tiles.
// CHECK-LABEL: @d160sm86
// CHECK-SAME: config = <block_m = 64, block_n = 32, warps = 4, stages = 2>
flashjit.attention_fwd @d160sm86 arch = "sm_86" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 160, head_dim_v = 160, mask = "none", gqa_group = 1, lse = true, align = 8>
// CHECK-LABEL: @d96align4
// CHECK-SAME: config = <block_m = 128, block_n = 64, warps = 4, stages = 2>
flashjit.attention_fwd @d96align4 arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 96, head_dim_v = 96, mask = "none", gqa_group = 1, lse = true, align = 4>
// CHECK-LABEL: @d100align4
// CHECK-SAME: config = <block_m = 128, block_n = 48, warps = 4, stages = 1>
flashjit.attention_fwd @d100align4 arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 100, head_dim_v = 100, mask = "causal", gqa_group = 1, lse = true, align = 4>
// CHECK-LABEL: @d128causal
// CHECK-SAME: config = <block_m = 128, block_n = 64, warps = 4, stages = 1>
flashjit.attention_fwd @d128causal arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 128, head_dim_v = 128, mask = "causal", gqa_group = 1, lse = true, align = 8>
// CHECK-LABEL: @d128
// CHECK-SAME: config = <block_m = 128, block_n = 64, warps = 4, stages = 2>
flashjit.attention_fwd @d128 arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 128, head_dim_v = 128, mask = "none", gqa_group = 1, lse = true, align = 8>
// CHECK-LABEL: @d120
// CHECK-SAME: config = <block_m = 128, block_n = 64, warps = 4, stages = 1>
flashjit.attention_fwd @d120 arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 120, head_dim_v = 120, mask = "none", gqa_group = 1, lse = true, align = 8>
// CHECK-LABEL: @d112
// CHECK-SAME: config = <block_m = 128, block_n = 64, warps = 4, stages = 2>
flashjit.attention_fwd @d112 arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 112, head_dim_v = 112, mask = "causal", gqa_group = 1, lse = true, align = 8>
// CHECK-LABEL: @d192causal
// CHECK-SAME: config = <block_m = 128, block_n = 128, warps = 8, stages = 1>
flashjit.attention_fwd @d192causal arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 192, head_dim_v = 192, mask = "causal", gqa_group = 1, lse = true, align = 8>
// 8-byte copies keep 128x32 tiles with 8 warps from d=129.
// CHECK-LABEL: @d148align4
// CHECK-SAME: config = <block_m = 128, block_n = 32, warps = 8, stages = 2>
flashjit.attention_fwd @d148align4 arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 148, head_dim_v = 148, mask = "none", gqa_group = 1, lse = true, align = 4>
// CHECK-LABEL: @d33align1
// CHECK-SAME: config = <block_m = 128, block_n = 32, warps = 8, stages = 1>
flashjit.attention_fwd @d33align1 arch = "sm_90a" spec = #flashjit.spec<dtype = "fp16", head_dim_qk = 33, head_dim_v = 33, mask = "none", gqa_group = 1, lse = true, align = 1>

// GQA packs the group's query heads into one CTA by default; feature
// kernels (bias, softcap, windows, varlen, packed GQA) take 32-row K/V tiles
// and, past d=64, one m16 tile per warp.
// CHECK-LABEL: @gqa4
// CHECK-SAME: config = <block_m = 128, block_n = 32, warps = 4, stages = 2, pack_gqa = true>
flashjit.attention_fwd @gqa4 arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 64, head_dim_v = 64, mask = "none", gqa_group = 4, lse = true, align = 8>
// CHECK-LABEL: @bias80
// CHECK-SAME: config = <block_m = 128, block_n = 32, warps = 8, stages = 2>
flashjit.attention_fwd @bias80 arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 80, head_dim_v = 80, mask = "none", gqa_group = 1, lse = true, align = 8, bias = "tensor">

// CHECK-LABEL: @explicit
// CHECK-SAME: config = <block_m = 64, block_n = 16, warps = 4, stages = 3>
flashjit.attention_fwd @explicit arch = "sm_90a" spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 72, head_dim_v = 72, mask = "none", gqa_group = 1, lse = true, align = 8> config = #flashjit.tile<block_m = 64, block_n = 16, warps = 4, stages = 3>
