//===- Commands.h - The flashjit CLI's subcommands --------------------------===//
//
// Each subcommand lives in its own file and registers itself on the CLI11
// app; its action stores the process exit code in `exitCode`.
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_TOOLS_COMMANDS_H
#define FLASHJIT_TOOLS_COMMANDS_H

#include <cstdint>
#include <string>

namespace CLI {
class App;
}

namespace flashjit::cli {

void addCompileCommand(CLI::App &app, int &exitCode);
void addRunCommand(CLI::App &app, int &exitCode);
void addCacheCommand(CLI::App &app, int &exitCode);
void addInfoCommand(CLI::App &app, int &exitCode);
void addAutotuneCommand(CLI::App &app, int &exitCode);
void addBenchCommand(CLI::App &app, int &exitCode);

struct ProblemOptions;
/// run --backward (and bench --backward per shape): the forward once for O
/// and LSE, then the backward's kernels on a random dO with poisoned
/// gradients, `repeats` timed runs after `warmup`; `check` compares dQ,
/// dK, dV with the float64 reference (2x rule each; deterministic: also
/// bit for bit over the runs). Returns the exit code.
int runBackward(const char *command, const ProblemOptions &problem,
                uint64_t seed, bool check, int checkSlices, int warmup,
                int repeats);
/// Prints "flashjit <command>: <message>" on stderr, after flushing stdout
/// so that a report and its error stay in order in one pipe, and returns
/// `exitCode` (1: failed; 2: usage error).
int failWith(const char *command, const std::string &message, int exitCode = 1);

} // namespace flashjit::cli

#endif
