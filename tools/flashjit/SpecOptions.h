//===- SpecOptions.h - Spec, tile and arch options shared by subcommands ----===//
#ifndef FLASHJIT_TOOLS_SPECOPTIONS_H
#define FLASHJIT_TOOLS_SPECOPTIONS_H

#include "flashjit/compiler/AttentionSpec.h"

#include <optional>
#include <string>

namespace CLI {
class App;
}

namespace flashjit::cli {

/// The options that describe a kernel: --head-dim, --head-dim-v, --dtype,
/// --mask, --heads-q, --heads-kv, --no-lse, --align, --block-m, --block-n,
/// --warps, --stages, --arch. Strings are parsed by resolve() so that every
/// bad value gets one message naming the option and the accepted values.
struct SpecOptions {
  int headDim = 128;
  std::optional<int> headDimV;
  std::string dtype = "bf16";
  std::string mask = "none";
  int headsQ = 1;
  int headsKV = 1;
  bool noLse = false;
  int align = 8;
  std::optional<int> blockM, blockN, warps, stages;
  std::string arch = "sm_90a";

  /// Registers the options on `cmd`. `withArch` adds --arch (compile only;
  /// run uses the GPU's own).
  void addTo(CLI::App &cmd, bool withArch);

  /// Parses and validates; on failure returns the message for the user.
  Status resolve(AttentionSpec &spec, Arch &arch) const;
  /// The explicit tile options over `defaults` (the arch's default), then
  /// validated for the spec and arch.
  Status resolveTile(const AttentionSpec &spec, Arch arch,
                     TileConfig &config) const;
};

} // namespace flashjit::cli

#endif
