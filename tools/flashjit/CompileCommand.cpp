//===- CompileCommand.cpp - flashjit compile --------------------------------===//
#include "Commands.h"
#include "SpecOptions.h"
#include "flashjit/compiler/Pipeline.h"

#include <CLI/CLI.hpp>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>

namespace flashjit::cli {
namespace {
struct CompileOptions {
  SpecOptions spec;
  std::string emit = "ptx";
  std::string dumpDir;
  bool time = false;
};

int runCompile(const CompileOptions &o) {
  AttentionSpec spec;
  Arch arch;
  TileConfig config;
  auto stage = parseStage(o.emit);
  Status s = !stage ? Status::error("--emit must be one of " + stageChoices() +
                                    ", got '" + o.emit + "'")
                    : o.spec.resolve(spec, arch);
  if (s)
    s = o.spec.resolveTile(spec, arch, config);
  if (!s) {
    std::cerr << "flashjit compile: error: " << s.message() << "\n";
    return 2;
  }
  flashjit::CompileOptions options;
  options.stopAfter = o.dumpDir.empty() ? *stage : Stage::Ptx;
  options.keepAllStages = !o.dumpDir.empty();
  auto art = compile(spec, config, arch, options);
  if (!art) {
    std::cerr << "flashjit compile: error: " << art.message() << "\n";
    return 1;
  }
  if (o.time) {
    double total = 0;
    for (const auto &[st, ms] : art->stageMillis) {
      std::cerr << "  " << toString(st) << ": " << ms << " ms\n";
      total += ms;
    }
    std::cerr << "  total: " << total << " ms\n";
  }
  if (!o.dumpDir.empty()) {
    namespace fs = std::filesystem;
    std::error_code ec;
    fs::create_directories(o.dumpDir, ec);
    for (const auto &[st, text] : art->stageText) {
      fs::path path = fs::path(o.dumpDir) / stageFileName(st);
      std::ofstream out(path);
      out << text;
      if (!out) {
        std::cerr << "flashjit compile: error: cannot write " << path << "\n";
        return 1;
      }
    }
    std::cerr << "wrote " << art->stageText.size() << " stages of "
              << art->kernelName << " to " << o.dumpDir << "\n";
    return 0;
  }
  if (const std::string *text = art->text(*stage))
    std::cout << *text;
  return 0;
}
} // namespace

void addCompileCommand(CLI::App &app, int &exitCode) {
  auto opts = std::make_shared<CompileOptions>();
  CLI::App *cmd = app.add_subcommand(
      "compile", "Generate one attention kernel and print a pipeline stage "
                 "(no GPU needed)");
  opts->spec.addTo(*cmd, /*forCompile=*/true);
  cmd->add_option("--emit", opts->emit,
                  "Stage to print: " + stageChoices() +
                      " (tile: our dialect; gpu: gpu/nvgpu/scf; nvvm: "
                      "LLVM+NVVM dialects; llvm: LLVM IR; ptx)")
      ->capture_default_str();
  cmd->add_option("--dump-dir", opts->dumpDir,
                  "Write every stage (kernel.tile.mlir ... kernel.ptx) into "
                  "this directory instead of printing one");
  cmd->add_flag("--time", opts->time,
               "Print the time each pipeline stage took to stderr");
  cmd->callback([opts, &exitCode] { exitCode = runCompile(*opts); });
}

} // namespace flashjit::cli
