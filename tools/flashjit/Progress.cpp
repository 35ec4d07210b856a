//===- Progress.cpp - A progress bar with ETA, or plain lines --------------===//
#include "Progress.h"

#include <unistd.h>

#include <cmath>

namespace flashjit::cli {

Progress::Progress(std::FILE *stream)
    : stream_(stream), terminal_(::isatty(::fileno(stream)) != 0) {}

void Progress::update(std::string_view phase, int done, int total) {
  const auto now = std::chrono::steady_clock::now();
  if (phase != phase_) {
    finish();
    phase_ = std::string(phase);
    phaseStart_ = now;
  }
  const double elapsed =
      std::chrono::duration<double>(now - phaseStart_).count();
  // The time left, from the rate so far (unknown before the first step).
  const std::string eta =
      done > 0 ? std::to_string(int(std::lround(elapsed * (total - done) /
                                                 done))) + " s"
               : std::string("?");
  if (!terminal_) {
    std::fprintf(stream_, "%s %d/%d (%.1f s, about %s left)\n",
                 phase_.c_str(), done, total, elapsed, eta.c_str());
    std::fflush(stream_);
    return;
  }
  constexpr int kWidth = 30;
  const int filled = total > 0 ? kWidth * done / total : kWidth;
  std::string bar(filled, '#');
  bar.resize(kWidth, '.');
  std::fprintf(stream_, "\r%-8s [%s] %d/%d  %.1f s, ETA %s  ",
               phase_.c_str(), bar.c_str(), done, total, elapsed, eta.c_str());
  std::fflush(stream_);
  barOpen_ = true;
}

void Progress::finish() {
  if (barOpen_)
    std::fputc('\n', stream_);
  barOpen_ = false;
}

} // namespace flashjit::cli
