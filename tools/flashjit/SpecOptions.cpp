//===- SpecOptions.cpp - Kernel options shared by subcommands ---------------===//
#include "SpecOptions.h"
#include "flashjit/kernels/Backward.h"
#include "flashjit/kernels/Forward.h"

#include <CLI/CLI.hpp>

#include <cmath>
#include <cstring>
#include <tuple>
#include <utility>

namespace flashjit::cli {

void SpecOptions::addTo(CLI::App &cmd, bool forCompile) {
  cmd.add_option("--head-dim", headDim,
                 "Head dimension of Q and K (1..256, any value)")
      ->capture_default_str();
  cmd.add_option("--head-dim-v", headDimV,
                 "Head dimension of V and O (1..256; default: --head-dim)");
  cmd.add_option("--dtype", dtype, "Element type of Q, K, V, O: " + dtypeChoices())
      ->capture_default_str();
  cmd.add_option("--mask", mask,
                 "Mask: none; causal; or window (a sliding window, see "
                 "--window-left/--window-right). Causal and window align to "
                 "the bottom-right corner when seqlen_q != seqlen_k")
      ->capture_default_str();
  cmd.add_option("--bias", bias,
                 "Added to the scores: none; tensor (a [batch or 1, heads_q or "
                 "1, seqlen_q, seqlen_k] tensor in --dtype); or alibi "
                 "(-slope[h] * |i + seqlen_k - seqlen_q - j|, float32 slopes)")
      ->capture_default_str();
  cmd.add_option("--softcap", softcap,
                 "Cap the scores: softcap * tanh(scores / softcap) (Gemma 2); "
                 "0: off")
      ->capture_default_str();
  cmd.add_option("--heads-q", headsQ, "Query heads (a multiple of --heads-kv)")
      ->capture_default_str();
  cmd.add_option("--heads-kv", headsKV,
                 "Key/value heads (default: --heads-q, multi-head attention; "
                 "fewer: GQA/MQA, heads_q / heads_kv query heads per K/V "
                 "head)");
  cmd.add_flag("--no-lse", noLse,
               "Do not write the log-sum-exp of each query row");
  cmd.add_option("--align", align,
                 "Elements by which pointers and strides are aligned: 8, 4, "
                 "2 or 1 (16-byte copies need 8)")
      ->capture_default_str();
  cmd.add_option("--block-m", blockM,
                 "Query rows per CTA (multiple of 16 * warps; default: the "
                 "arch's table)");
  cmd.add_option("--block-n", blockN,
                 "Key rows per K/V tile (multiple of 16; default: table)");
  cmd.add_option("--warps", warps, "Warps per CTA (1..16, power of two)");
  cmd.add_option("--stages", stages,
                 "K/V shared-memory buffers of the cp.async pipeline (1..4)");
  cmd.add_option("--pack-gqa", packGqa,
                 "on: one CTA takes the query rows of every head of a K/V "
                 "group, so each K/V tile is read once per group (GQA only; "
                 "default: on when heads_q > heads_kv)");
  cmd.add_flag("--quick", quick,
               "The quick-to-compile form of the kernel (the runtime's first "
               "tier on a cold compile): 16-key slices in run-time loops, "
               "results bitwise those of the full kernel");
  cmd.add_option("--family", family,
                 "Kernel family: " + familyChoices() +
                     " (default: sm90 on sm_90a where TMA can address the "
                     "tensors, else sm80)");
  cmd.add_option("--pingpong", pingpong,
                 "sm90: two consumer warpgroups take turns, one's softmax "
                 "under the other's GEMMs (on|off)");
  cmd.add_option("--overlap", overlap,
                 "sm90: issue the next tile's Q K^T before this tile's "
                 "softmax (on|off)");
  cmd.add_option("--scalar", scalar,
                 "Backward: the main kernel's products as float32 FMA loops "
                 "(the first version, to check the mma.sync kernel against) "
                 "or mma.sync (on|off; default: the arch's table)");
  cmd.add_flag("--deterministic", deterministic,
               "Backward: accumulate dQ without float atomics (the same "
               "bits on every run)");
  cmd.add_flag("--bias-grad", biasGrad,
               "Backward with --bias tensor: also write dBias (the bias "
               "must be full: --bias-shape batch,heads_q)");
  if (!forCompile)
    return;
  cmd.add_option("--direction", direction,
                 "Which kernels: " + directionChoices() +
                     " (backward: the module of the backward's three "
                     "kernels, D = rowsum(dO * O), dK/dV/dQ, dQ conversion)")
      ->capture_default_str();
  cmd.add_option("--arch", arch, "Target GPU: " + archChoices())
      ->capture_default_str();
  cmd.add_flag("--varlen", varlen,
               "Packed variable-length sequences: the kernel reads "
               "cu_seqlens_q/cu_seqlens_k (int32 prefix sums) at run time");
  cmd.add_flag("--key-lengths", keyLengths,
               "Padded batches: the kernel reads per-batch key lengths "
               "(int32) at run time and masks the keys past them");
}

Status SpecOptions::resolve(AttentionSpec &spec, Arch &outArch) const {
  auto d = parseDType(dtype);
  if (!d)
    return Status::error("--dtype must be one of " + dtypeChoices() +
                         ", got '" + dtype + "'");
  auto m = parseMaskMode(mask);
  if (!m)
    return Status::error("--mask must be one of " + maskChoices() + ", got '" +
                         mask + "'");
  auto b = parseBiasMode(bias);
  if (!b)
    return Status::error("--bias must be one of " + biasChoices() + ", got '" +
                         bias + "'");
  if (!(softcap >= 0) || !std::isfinite(softcap))
    return Status::error("--softcap must be finite and >= 0 (0: off), got " +
                         std::to_string(softcap));
  auto a = parseArch(arch);
  if (!a)
    return Status::error("--arch must be one of " + archChoices() + ", got '" +
                         arch + "'");
  if (headDim < kMinHeadDim || headDim > kMaxHeadDim)
    return Status::error("--head-dim must be in [1, 256], got " +
                         std::to_string(headDim));
  int dv = headDimV.value_or(headDim);
  if (dv < kMinHeadDim || dv > kMaxHeadDim)
    return Status::error("--head-dim-v must be in [1, 256], got " +
                         std::to_string(dv));
  if (headsQ < 1)
    return Status::error("--heads-q must be >= 1, got " +
                         std::to_string(headsQ));
  const int kv = kvHeads();
  if (kv < 1)
    return Status::error("--heads-kv must be >= 1, got " + std::to_string(kv));
  if (headsQ % kv != 0)
    return Status::error("--heads-q must be a positive multiple of --heads-kv (" +
                         std::to_string(kv) + "), got " +
                         std::to_string(headsQ));
  if (headsQ / kv > 1024)
    return Status::error("--heads-q / --heads-kv (the GQA group) must be in "
                         "[1, 1024], got " + std::to_string(headsQ / kv));
  auto dir = parseDirection(direction);
  if (!dir)
    return Status::error("--direction must be one of " + directionChoices() +
                         ", got '" + direction + "'");
  if (*dir == Direction::Backward && noLse)
    return Status::error("--no-lse does not apply to the backward (it reads "
                         "the forward's LSE)");
  if (*dir == Direction::Forward && deterministic)
    return Status::error("--deterministic applies to the backward only");
  spec.direction = *dir;
  if (*dir == Direction::Forward && biasGrad)
    return Status::error("--bias-grad applies to the backward only");
  spec.deterministic = deterministic;
  spec.biasGrad = biasGrad;
  spec.dtype = *d;
  spec.mask = *m;
  spec.headDimQK = headDim;
  spec.headDimV = dv;
  spec.gqaGroup = headsQ / kv;
  spec.writeLse = !noLse;
  spec.globalAlignElems = align;
  spec.bias = *b;
  spec.softcap = softcap > 0;
  spec.varlen = varlen;
  spec.keyLengths = keyLengths;
  outArch = *a;
  if (Status s = validate(spec); !s)
    return Status::error("--" + s.message());
  return Status::ok();
}

Status SpecOptions::resolveTile(const AttentionSpec &spec, Arch a,
                                TileConfig &config) const {
  if (family) {
    auto f = parseFamily(*family);
    if (!f)
      return Status::error("--family must be one of " + familyChoices() +
                           ", got '" + *family + "'");
    config = defaultTileConfig(spec, a, *f);
  } else {
    // The quick form is the sm80 family's.
    config = quick ? defaultTileConfig(spec, a, Family::Sm80)
                   : defaultTileConfig(spec, a);
  }
  if (scalar) {
    if (*scalar != "on" && *scalar != "off")
      return Status::error("--scalar must be on or off, got '" + *scalar +
                           "'");
    if (spec.direction != Direction::Backward)
      return Status::error("--scalar applies to the backward only "
                           "(--direction backward, or run/bench --backward)");
    // The chosen kernel's own default tiles, under the options below.
    config = defaultBackwardConfigSm80(spec, a, *scalar == "on");
  }
  if (blockM)
    config.blockM = *blockM;
  if (blockN)
    config.blockN = *blockN;
  if (warps)
    config.warps = *warps;
  if (stages)
    config.stages = *stages;
  if (packGqa) {
    if (*packGqa != "on" && *packGqa != "off")
      return Status::error("--pack-gqa must be on or off, got '" + *packGqa +
                           "'");
    config.packGqa = *packGqa == "on";
  }
  config.quick = quick;
  for (auto [option, value, field] :
       {std::tuple{"--pingpong", &pingpong, &config.pingpong},
        std::tuple{"--overlap", &overlap, &config.overlap}}) {
    if (!*value)
      continue;
    if (**value != "on" && **value != "off")
      return Status::error(std::string(option) + " must be on or off, got '" +
                           **value + "'");
    *field = **value == "on";
  }
  Status s = validate(config, spec, a);
  if (s)
    return s;
  // Name the options the user typed, not the config's fields.
  std::string message = s.message();
  for (auto [field, option] : {std::pair{"block_m", "--block-m"},
                               {"block_n", "--block-n"},
                               {"warps", "--warps"},
                               {"stages", "--stages"},
                               {"pack_gqa", "--pack-gqa"},
                               {"pingpong", "--pingpong"},
                               {"overlap", "--overlap"}}) {
    for (size_t at = message.find(field); at != std::string::npos;
         at = message.find(field, at + std::strlen(option)))
      message.replace(at, std::strlen(field), option);
  }
  return Status::error(message);
}

} // namespace flashjit::cli
