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
/// --mask, --bias, --softcap, --heads-q, --heads-kv, --no-lse, --align,
/// --block-m, --block-n, --warps, --stages, --pack-gqa, --family,
/// --pingpong, --overlap, --scalar; for compile also
/// --arch, --varlen and --key-lengths (run derives those
/// from its data). Strings are parsed by resolve() so that every
/// bad value gets one message naming the option and the accepted values.
struct SpecOptions {
  int headDim = 128;
  std::optional<int> headDimV;
  std::string dtype = "bf16";
  std::string mask = "none";
  std::string bias = "none";
  /// > 0: softcap the scores (compile: any positive value turns it on).
  double softcap = 0;
  bool varlen = false;     ///< compile only
  bool keyLengths = false; ///< compile only
  int headsQ = 1;
  /// Unset: headsQ (plain multi-head attention, as frameworks infer from
  /// tensor shapes); fewer is GQA/MQA.
  std::optional<int> headsKV;
  bool noLse = false;
  int align = 8;
  std::optional<int> blockM, blockN, warps, stages;
  std::optional<std::string> packGqa; ///< "on" or "off"
  bool quick = false;
  std::optional<std::string> family;            ///< sm80 or sm90
  std::optional<std::string> pingpong, overlap; ///< "on" or "off"
  std::optional<std::string> scalar;            ///< "on" or "off"
  std::string arch = "sm_90a";
  /// forward, or backward (the backward's kernels: compile --direction,
  /// run/bench --backward).
  std::string direction = "forward";
  bool deterministic = false; ///< backward: dQ without float atomics
  bool biasGrad = false;      ///< backward: also dBias of a bias tensor

  /// Registers the options on `cmd`. `forCompile` adds --arch, --varlen and
  /// --key-lengths (run uses the GPU's own arch and has data for the rest).
  void addTo(CLI::App &cmd, bool forCompile);

  /// Parses and validates; on failure returns the message for the user.
  Status resolve(AttentionSpec &spec, Arch &arch) const;
  /// --heads-kv, or --heads-q when it was not given.
  int kvHeads() const { return headsKV.value_or(headsQ); }
  /// True when any tile option was given.
  bool hasTileOptions() const {
    return blockM || blockN || warps || stages || packGqa || quick || family ||
           pingpong || overlap || scalar;
  }
  /// The explicit tile options over `defaults` (the arch's default), then
  /// validated for the spec and arch.
  Status resolveTile(const AttentionSpec &spec, Arch arch,
                     TileConfig &config) const;
};

} // namespace flashjit::cli

#endif
