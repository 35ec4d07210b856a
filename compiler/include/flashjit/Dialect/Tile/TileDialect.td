//===- TileDialect.td - The flashjit tile-level attention dialect -*- tablegen -*-===//
#ifndef FLASHJIT_TILE_DIALECT
#define FLASHJIT_TILE_DIALECT

include "mlir/IR/OpBase.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/SymbolInterfaces.td"

def Tile_Dialect : Dialect {
  let name = "flashjit";
  let cppNamespace = "::flashjit::tile";
  let summary = "Tile-level description of FlashAttention kernels";
  let description = [{
    One op per kernel: what it computes (the attention spec) and how it is
    tiled (the tile config), for one target architecture. The
    `flashjit-lower-attention-to-gpu` pass expands it into a gpu.module of
    gpu/nvgpu/scf/vector/memref ops.
  }];
  let useDefaultAttributePrinterParser = 1;
}

class Tile_Attr<string name, string attrMnemonic, list<Trait> traits = []>
    : AttrDef<Tile_Dialect, name, traits> {
  let mnemonic = attrMnemonic;
}

def Tile_SpecAttr : Tile_Attr<"Spec", "spec"> {
  let summary = "Compile-time facts of an attention forward kernel";
  let description = [{
    `#flashjit.spec<dtype = "bf16", head_dim_qk = 80, head_dim_v = 80,
    mask = "causal", gqa_group = 1, lse = true, align = 8>`: every fact the
    kernel is specialised on (the cache key's spec half). The feature fields
    (`bias = "alibi"`, `softcap = true`, `varlen = true`,
    `key_lengths = true`, and the decode features `paged_kv = true`,
    `split_kv = true`) are optional and printed only when on, as are
    those of backward kernels: `direction = "backward"` (the backward's
    kernels: preprocess, dK/dV/dQ, dQ conversion), `deterministic = true`,
    `bias_grad = true`.
  }];
  let parameters = (ins
    StringRefParameter<"fp16 or bf16">:$dtype,
    "int64_t":$head_dim_qk,
    "int64_t":$head_dim_v,
    StringRefParameter<"none, causal or window">:$mask,
    "int64_t":$gqa_group,
    "bool":$lse,
    "int64_t":$align,
    StringRefParameter<"none, tensor or alibi", "\"none\"">:$bias,
    DefaultValuedParameter<"bool", "false">:$softcap,
    DefaultValuedParameter<"bool", "false">:$varlen,
    DefaultValuedParameter<"bool", "false">:$key_lengths,
    DefaultValuedParameter<"bool", "false">:$paged_kv,
    DefaultValuedParameter<"bool", "false">:$split_kv,
    StringRefParameter<"forward or backward", "\"forward\"">:$direction,
    DefaultValuedParameter<"bool", "false">:$deterministic,
    DefaultValuedParameter<"bool", "false">:$bias_grad
  );
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

def Tile_TileConfigAttr : Tile_Attr<"TileConfig", "tile"> {
  let summary = "Tiling of the forward kernel";
  let description = [{
    `#flashjit.tile<block_m = 128, block_n = 64, warps = 4, stages = 2>`:
    query rows per CTA, key rows per K/V tile, warps per CTA and K/V
    shared-memory buffers of the cp.async pipeline; `pack_gqa = true` (GQA
    only) packs the query heads of a K/V group into one CTA's rows;
    `quick = true` builds the quick-to-compile form (TileConfig::quick).
    `family = "sm90"` builds the kernel with the Hopper family (default
    "sm80"), whose knobs `pingpong` and `overlap` are printed when on.
    `scalar = true` (backward) builds the sm80 backward's main kernel with
    float32 FMA loops instead of mma.sync (TileConfig::scalar).
  }];
  let parameters = (ins "int64_t":$block_m, "int64_t":$block_n,
                        "int64_t":$warps, "int64_t":$stages,
                        DefaultValuedParameter<"bool", "false">:$pack_gqa,
                        DefaultValuedParameter<"bool", "false">:$quick,
                        StringRefParameter<"sm80 or sm90", "\"sm80\"">:$family,
                        DefaultValuedParameter<"bool", "false">:$pingpong,
                        DefaultValuedParameter<"bool", "false">:$overlap,
                        DefaultValuedParameter<"bool", "false">:$scalar);
  let genVerifyDecl = 1;
  let assemblyFormat = "`<` struct(params) `>`";
}

#endif // FLASHJIT_TILE_DIALECT
