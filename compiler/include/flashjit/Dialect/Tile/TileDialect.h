//===- TileDialect.h - The flashjit tile-level dialect ------------*- C++ -*-===//
//
// Internal to the compiler (pulls in MLIR): public APIs use Pipeline.h.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_DIALECT_TILE_TILEDIALECT_H
#define FLASHJIT_DIALECT_TILE_TILEDIALECT_H

#include "flashjit/compiler/AttentionSpec.h"

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/SymbolTable.h"

#include "flashjit/Dialect/Tile/TileDialect.h.inc"

#define GET_ATTRDEF_CLASSES
#include "flashjit/Dialect/Tile/TileAttrs.h.inc"

#define GET_OP_CLASSES
#include "flashjit/Dialect/Tile/TileOps.h.inc"

namespace flashjit::tile {
/// Conversions between the attributes and the plain structs.
SpecAttr toAttr(mlir::MLIRContext *ctx, const AttentionSpec &spec);
TileConfigAttr toAttr(mlir::MLIRContext *ctx, const TileConfig &config);
TileConfig fromAttr(TileConfigAttr attr);
} // namespace flashjit::tile

#endif
