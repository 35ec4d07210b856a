//===- TileAttrFuzz.cpp - The tile dialect's attributes as a fuzz target --===//
//
// Built without RTTI, as MLIR is. Whatever text parses and verifies must be
// a spec (and tile config) that validates, and must print and parse back.
//
//===----------------------------------------------------------------------===//
#include "FuzzTargets.h"

#include "flashjit/Dialect/Tile/TileDialect.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"
#include "llvm/Support/raw_ostream.h"

namespace flashjit::fuzz {

Finding fuzzTileAttributes(const uint8_t *data, size_t size) {
  static mlir::MLIRContext *context = [] {
    auto *ctx = new mlir::MLIRContext(mlir::MLIRContext::Threading::DISABLED);
    ctx->loadDialect<tile::TileDialect>();
    return ctx;
  }();
  mlir::ScopedDiagnosticHandler quiet(
      context, [](mlir::Diagnostic &) { return mlir::success(); });
  // MLIR's lexer reads up to a terminating NUL (an embedded one in an open
  // string literal included): it needs the copy's terminator, which raw
  // fuzz bytes do not have.
  const std::string text(reinterpret_cast<const char *>(data), size);
  mlir::OwningOpRef<mlir::ModuleOp> module =
      mlir::parseSourceString<mlir::ModuleOp>(text, context);
  if (!module)
    return "";
  Finding finding;
  module->walk([&](tile::AttentionFwdOp op) {
    const AttentionSpec spec = op.getAttentionSpec();
    if (Status s = validate(spec); !s) {
      finding = "a verified op holds an invalid spec: " + s.message();
      return;
    }
    auto arch = parseArch(op.getArch().str());
    if (!arch) {
      finding = "a verified op names an unknown arch";
      return;
    }
    if (auto config = op.getConfig())
      if (Status s = validate(tile::fromAttr(*config), spec, *arch); !s)
        finding = "a verified op holds an invalid config: " + s.message();
  });
  if (!finding.empty())
    return finding;
  std::string printed;
  llvm::raw_string_ostream os(printed);
  module->print(os);
  os.flush();
  mlir::OwningOpRef<mlir::ModuleOp> again =
      mlir::parseSourceString<mlir::ModuleOp>(printed, context);
  if (!again)
    return "a verified module does not parse back from its printed form:\n" +
           printed;
  return "";
}

} // namespace flashjit::fuzz
