//===- TileOps.td - flashjit tile-level ops -------------------*- tablegen -*-===//
#ifndef FLASHJIT_TILE_OPS
#define FLASHJIT_TILE_OPS

include "flashjit/Dialect/Tile/TileDialect.td"

def Tile_AttentionFwdOp : Op<Tile_Dialect, "attention_fwd", [Symbol]> {
  let summary = "A FlashAttention kernel at tile level";
  let description = [{
    Describes one kernel: O = softmax(Q K^T * scale + mask) V with the online
    softmax over K/V tiles of `block_n` rows, `block_m` query rows per CTA,
    for the target `arch`. When `config` is absent, the
    `flashjit-select-tile-config` pass fills in the arch's default. A spec
    with `direction = "backward"` describes the backward's kernels instead
    (one module: D = rowsum(dO * O), dK/dV/dQ with `block_n` keys per CTA
    and `block_m` query rows per step, the dQ conversion).

    ```mlir
    flashjit.attention_fwd @fwd_bf16_hqk80 arch = "sm_90a"
        spec = #flashjit.spec<dtype = "bf16", head_dim_qk = 80, head_dim_v = 80,
                              mask = "causal", gqa_group = 1, lse = true, align = 8>
        config = #flashjit.tile<block_m = 128, block_n = 64, warps = 8, stages = 2>
    ```
  }];
  let arguments = (ins SymbolNameAttr:$sym_name, StrAttr:$arch,
                       Tile_SpecAttr:$spec,
                       OptionalAttr<Tile_TileConfigAttr>:$config);
  let assemblyFormat = [{
    $sym_name `arch` `=` $arch `spec` `=` $spec (`config` `=` $config^)? attr-dict
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// The spec as the plain C++ struct the generators take.
    ::flashjit::AttentionSpec getAttentionSpec();
  }];
}

#endif // FLASHJIT_TILE_OPS
