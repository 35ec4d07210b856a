//===- SelectTileConfig.cpp - Default tile config and resource check -------===//
#include "flashjit/Transforms/Passes.h"
#include "flashjit/compiler/KernelFamily.h"

namespace flashjit {
#define GEN_PASS_DEF_SELECTTILECONFIG
#include "flashjit/Transforms/Passes.h.inc"
} // namespace flashjit

using namespace mlir;
using namespace flashjit;

namespace {
struct SelectTileConfigPass
    : public flashjit::impl::SelectTileConfigBase<SelectTileConfigPass> {
  using SelectTileConfigBase::SelectTileConfigBase;
  void runOnOperation() override {
    std::optional<Family> forced;
    if (!family.empty()) {
      forced = parseFamily(family);
      if (!forced) {
        getOperation().emitError() << "family must be one of "
                                   << familyChoices() << ", got '" << family
                                   << "'";
        return signalPassFailure();
      }
    }
    auto result = getOperation().walk([&](tile::AttentionFwdOp op) {
      Arch arch = *parseArch(op.getArch().str()); // checked by the verifier
      AttentionSpec spec = op.getAttentionSpec();
      TileConfig config = op.getConfig() ? tile::fromAttr(*op.getConfig())
                          : forced       ? defaultTileConfig(spec, arch, *forced)
                                         : defaultTileConfig(spec, arch);
      if (Status s = validate(config, spec, arch); !s) {
        op.emitOpError() << s.message();
        return WalkResult::interrupt();
      }
      op.setConfigAttr(tile::toAttr(op.getContext(), config));
      return WalkResult::advance();
    });
    if (result.wasInterrupted())
      signalPassFailure();
  }
};
} // namespace
