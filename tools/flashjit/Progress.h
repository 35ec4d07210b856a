//===- Progress.h - A progress bar with ETA, or plain lines ----------------===//
#ifndef FLASHJIT_TOOLS_PROGRESS_H
#define FLASHJIT_TOOLS_PROGRESS_H

#include <chrono>
#include <cstdio>
#include <string>
#include <string_view>

namespace flashjit::cli {

/// Reports steps of named phases on a stream: a bar redrawn in place with
/// the estimated time left when the stream is a terminal, one plain line per
/// step otherwise (logs and pipes).
class Progress {
public:
  explicit Progress(std::FILE *stream);
  ~Progress() { finish(); }
  void update(std::string_view phase, int done, int total);
  /// Ends the bar's line (terminal) so that later output starts clean.
  void finish();

private:
  std::FILE *stream_;
  bool terminal_;
  bool barOpen_ = false;
  std::string phase_;
  std::chrono::steady_clock::time_point phaseStart_;
};

} // namespace flashjit::cli

#endif
