//===- FamilySm90.cpp - The sm90 family behind the KernelFamily interface -===//
#include "flashjit/kernels/LayoutSm90.h"
#include "forward/FamilyRegistry.h"
#include "forward/sm90/ForwardSm90.h"

namespace flashjit {
namespace {

class Sm90Family final : public KernelFamily {
public:
  Family id() const override { return Family::Sm90; }
  Status supports(const AttentionSpec &spec, Arch arch) const override {
    return supportsSm90(spec, arch);
  }
  TileConfig defaultConfig(const AttentionSpec &spec, Arch arch) const override {
    return defaultTileConfigSm90(spec, arch);
  }
  Status validate(const TileConfig &config, const AttentionSpec &spec,
                  Arch arch) const override {
    return validateSm90(config, spec, arch);
  }
  std::optional<TileLimit> exceededLimit(const TileConfig &config,
                                         const AttentionSpec &spec,
                                         Arch arch) const override {
    return exceededLimitSm90(config, spec, arch);
  }
  LaunchFacts launchFacts(const AttentionSpec &spec,
                          const TileConfig &config) const override {
    return launchFactsSm90(spec, config);
  }
  Status build(mlir::OpBuilder &builder, mlir::Operation *gpuModule,
               std::string_view name, const AttentionSpec &spec,
               const TileConfig &config) const override {
    auto module = llvm::cast<mlir::gpu::GPUModuleOp>(gpuModule);
    if (mlir::failed(buildForwardSm90(builder, module,
                                      llvm::StringRef(name.data(), name.size()),
                                      spec, config)))
      return Status::error("the sm90 family could not build " +
                           std::string(name));
    return Status::ok();
  }
};

} // namespace

std::unique_ptr<KernelFamily> makeSm90Family() {
  return std::make_unique<Sm90Family>();
}

} // namespace flashjit
