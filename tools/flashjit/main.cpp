//===- main.cpp - The flashjit command-line tool ----------------------------===//
#include "Commands.h"
#include "flashjit/kernels/Families.h"
#include "flashjit/compiler/Pipeline.h"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <new>

int flashjit::cli::failWith(const char *command, const std::string &message,
                            int exitCode) {
  std::fflush(stdout);
  std::fprintf(stderr, "flashjit %s: %s\n", command, message.c_str());
  return exitCode;
}

int main(int argc, char **argv) {
  flashjit::registerKernelFamilies();
  CLI::App app{"flashjit: JIT-compiled FlashAttention kernels, specialised per "
               "head size, dtype and mask"};
  app.set_version_flag("--version", "flashjit " + flashjit::flashjitVersion() +
                                        " (LLVM " + flashjit::llvmVersion() + ")");
  app.require_subcommand(1);
  int exitCode = 0;
  flashjit::cli::addCompileCommand(app, exitCode);
  flashjit::cli::addRunCommand(app, exitCode);
  flashjit::cli::addCacheCommand(app, exitCode);
  flashjit::cli::addInfoCommand(app, exitCode);
  flashjit::cli::addAutotuneCommand(app, exitCode);
  flashjit::cli::addBenchCommand(app, exitCode);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError &e) {
    // --help / --version exit 0; every usage error exits 2, like the
    // errors our own option checks report.
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const std::bad_alloc &) {
    // The subcommands run inside parse(): nothing escapes as an abort.
    return flashjit::cli::failWith("error", "out of memory (std::bad_alloc)");
  } catch (const std::exception &e) {
    return flashjit::cli::failWith("error", e.what());
  }
  return exitCode;
}
