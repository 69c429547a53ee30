// Pieces several test suites share: running the built CLI, a fresh scratch folder per test,
// and finding the temporary files an atomic write would leave behind.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "nvfp4/error.hpp"

namespace nvfp4::test {

// Runs fn, which must throw nvfp4::Error with `needle` in its message.
template <typename Fn>
void expect_error(Fn&& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected an error mentioning " << needle;
  } catch (const nvfp4::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

struct CliResult {
  int status = -1;     // exit status (-1: did not run or was killed)
  std::string output;  // stdout and stderr together
};

// Runs the nvfp4 binary this build made (NVFP4_BINARY) with `args` through the shell.
inline CliResult run_cli(const std::string& args) {
  CliResult r;
  const std::string cmd = std::string(NVFP4_BINARY) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

// Names of the "*.tmp.*" files in dir (what an interrupted atomic write would leave).
inline std::vector<std::string> temp_files_in(const std::filesystem::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (n.find(".tmp.") != std::string::npos) out.push_back(n);
  }
  return out;
}

// n values drawn from N(0, scale^2), deterministic in seed.
inline std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Runs fn, expects nvfp4::Error, and returns what() ("" and a test failure otherwise).
template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const nvfp4::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected nvfp4::Error, got another exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected nvfp4::Error, nothing was thrown";
  return "";
}

// A fresh folder per test (dir_), removed afterwards; Prefix names it in /tmp.
template <const char* Prefix>
class ScratchDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::temp_directory_path() /
           (std::string(Prefix) + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" + info->name());
    std::filesystem::remove_all(dir_);
    ASSERT_TRUE(std::filesystem::create_directories(dir_)) << dir_;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::filesystem::path dir_;
};

}  // namespace nvfp4::test
