//===- test_progress.cpp - The CLI's progress reporting --------------------===//
#include "Progress.h"

#include <gtest/gtest.h>

#include <pty.h>
#include <unistd.h>

#include <cstdio>
#include <string>

using flashjit::cli::Progress;

namespace {
std::string readAll(std::FILE *f) {
  std::rewind(f);
  std::string s;
  char buf[512];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0)
    s.append(buf, n);
  return s;
}
size_t count(const std::string &s, const std::string &part) {
  size_t n = 0;
  for (size_t at = s.find(part); at != std::string::npos;
       at = s.find(part, at + 1))
    ++n;
  return n;
}
} // namespace

TEST(Progress, PlainLinesWhenNotATerminal) {
  std::FILE *f = std::tmpfile();
  ASSERT_TRUE(f);
  {
    Progress p(f);
    p.update("compile", 0, 3);
    p.update("compile", 1, 3);
    p.update("compile", 3, 3);
    p.update("measure", 2, 4);
  }
  const std::string out = readAll(f);
  std::fclose(f);
  EXPECT_EQ(count(out, "\n"), 4u) << out;
  EXPECT_EQ(count(out, "\r"), 0u) << out;
  EXPECT_NE(out.find("compile 0/3 (0.0 s, about ? left)"), std::string::npos)
      << out;
  EXPECT_NE(out.find("compile 1/3"), std::string::npos) << out;
  EXPECT_NE(out.find("compile 3/3"), std::string::npos) << out;
  EXPECT_NE(out.find("measure 2/4"), std::string::npos) << out;
  EXPECT_NE(out.find("left)"), std::string::npos) << out;
}

TEST(Progress, ABarWithEtaOnATerminal) {
  int master = -1, slave = -1;
  ASSERT_EQ(::openpty(&master, &slave, nullptr, nullptr, nullptr), 0);
  std::FILE *tty = ::fdopen(slave, "w");
  ASSERT_TRUE(tty);
  {
    Progress p(tty);
    p.update("compile", 1, 2);
    p.update("compile", 2, 2);
    p.update("measure", 1, 2);
  }
  std::fclose(tty);
  std::string out;
  char buf[1024];
  ssize_t n;
  while ((n = ::read(master, buf, sizeof buf)) > 0)
    out.append(buf, size_t(n));
  ::close(master);
  // Redrawn in place ('\r'), one line per phase, a bar and an ETA.
  EXPECT_EQ(count(out, "\n"), 2u) << out;
  EXPECT_GE(count(out, "\r"), 3u) << out;
  EXPECT_NE(out.find("[###############...............] 1/2"), std::string::npos)
      << out;
  EXPECT_NE(out.find("ETA"), std::string::npos) << out;
}
