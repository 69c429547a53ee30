// A rule of the CUDA test sources, checked by reading them (it runs on any machine, GPU or
// not): every CUDA runtime call in tests/cuda/ and tests/support/ has its result checked, so a
// failed allocation or a kernel that faulted fails its test instead of leaving a buffer whose
// contents happen to pass (an all-zeros case, a poisoned buffer compared with itself).
//
// Checked means the call is the direct argument of CUDA_OK(...), of nvfp4::cuda::check(...)
// (cuda::check(...)), or of EXPECT_EQ / ASSERT_EQ (compared with cudaSuccess), or it is the
// `return` of a function declared to return cudaError_t (whose callers check it). Kernels
// launched by a test are followed by a checked cudaGetLastError / cudaDeviceSynchronize, and
// DeviceBuffer::download() checks the synchronize. cudaGetErrorString/Name are pure lookups.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

// The source with comments and string literals blanked (same length, same line breaks).
std::string code_only(const std::string& s) {
  std::string out = s;
  enum { kCode, kLine, kBlock, kStr, kChr } st = kCode;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i], n = i + 1 < s.size() ? s[i + 1] : '\0';
    switch (st) {
      case kCode:
        if (c == '/' && n == '/') st = kLine;
        else if (c == '/' && n == '*') st = kBlock;
        else if (c == '"') st = kStr;
        else if (c == '\'') st = kChr;
        else continue;
        if (st == kLine || st == kBlock) out[i] = ' ';
        break;
      case kLine:
        if (c == '\n') st = kCode;
        else out[i] = ' ';
        break;
      case kBlock:
        if (c == '*' && n == '/') {
          out[i] = out[i + 1] = ' ';
          ++i;
          st = kCode;
        } else if (c != '\n') {
          out[i] = ' ';
        }
        break;
      case kStr:
      case kChr:
        if (c == '\\') {
          out[i] = ' ';
          if (i + 1 < s.size()) out[++i] = ' ';
        } else if (c == (st == kStr ? '"' : '\'')) {
          st = kCode;
        } else if (c != '\n') {
          out[i] = ' ';
        }
        break;
    }
  }
  return out;
}

// "file:line: call" for every unchecked CUDA runtime call in `text`.
std::vector<std::string> unchecked_calls(const std::string& name, const std::string& text) {
  static const std::regex call(R"(\bcuda[A-Z]\w*\s*\()");
  static const std::regex checked_prefix(R"((\bCUDA_OK|\bcuda::check|\bEXPECT_EQ|\bASSERT_EQ)\s*\(\s*$)");
  static const std::regex return_prefix(R"(\breturn\s+$)");
  static const std::regex returns_error(R"(\bcudaError_t\s+[\w:]+\s*\([^;{]*\)\s*(const\s*)?\{)");
  const std::string code = code_only(text);
  std::vector<std::string> bad;
  for (auto it = std::sregex_iterator(code.begin(), code.end(), call); it != std::sregex_iterator(); ++it) {
    const size_t at = static_cast<size_t>(it->position());
    const std::string fn = it->str().substr(0, it->str().find_first_of(" \t("));
    if (fn == "cudaGetErrorString" || fn == "cudaGetErrorName") continue;
    const size_t line_start = code.rfind('\n', at) == std::string::npos ? 0 : code.rfind('\n', at) + 1;
    // What stands before the call: this line, or the previous one when the call starts a line.
    std::string before = code.substr(line_start, at - line_start);
    if (before.find_first_not_of(" \t") == std::string::npos && line_start > 1) {
      const size_t prev = code.rfind('\n', line_start - 2);
      const size_t prev_start = prev == std::string::npos ? 0 : prev + 1;
      before = code.substr(prev_start, line_start - 1 - prev_start);
    }
    if (std::regex_search(before, checked_prefix)) continue;
    if (std::regex_search(before, return_prefix)) {
      // The enclosing function: the last function head before the call.
      const std::string head = code.substr(0, at);
      const size_t open = head.rfind('{');
      const size_t from = head.rfind('\n', head.rfind('(', open == std::string::npos ? 0 : open));
      const std::string decl = head.substr(from == std::string::npos ? 0 : from);
      if (std::regex_search(decl, returns_error)) continue;
    }
    const long line = 1 + std::count(code.begin(), code.begin() + static_cast<long>(at), '\n');
    bad.push_back(name + ":" + std::to_string(line) + ": " + fn);
  }
  return bad;
}

std::string read(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += "\n  " + x;
  return s;
}

TEST(SourceRules, EveryCudaCallInTheCudaTestsIsChecked) {
  std::vector<std::string> bad;
  int files = 0;
  for (const char* dir : {"cuda", "support"}) {
    for (const auto& e : fs::directory_iterator(fs::path(NVFP4_TESTS_DIR) / dir)) {
      const std::string ext = e.path().extension().string();
      if (ext != ".cu" && ext != ".cpp" && ext != ".hpp" && ext != ".cuh") continue;
      if (e.path().filename() == "test_cuda_calls_checked.cpp") continue;  // this file's own examples
      ++files;
      for (auto& b : unchecked_calls(std::string(dir) + "/" + e.path().filename().string(), read(e.path())))
        bad.push_back(std::move(b));
    }
  }
  EXPECT_GE(files, 5) << "tests/cuda not found under " << NVFP4_TESTS_DIR;
  EXPECT_TRUE(bad.empty()) << bad.size() << " CUDA call(s) whose result nobody checks (wrap each in CUDA_OK(...) "
                           << "or nvfp4::cuda::check(...)):" << join(bad);
}

// The rule itself: what it must reject and what it must let pass.
TEST(SourceRules, TheCheckRejectsUncheckedCallsAndAcceptsCheckedOnes) {
  const auto n = [](const std::string& src) { return unchecked_calls("x", src).size(); };
  EXPECT_EQ(n("void f() { cudaMemset(p, 0, 4); }"), 1u);
  EXPECT_EQ(n("void f() {\n  cudaDeviceSynchronize();\n  if (n) cudaMemcpy(h, p, n, cudaMemcpyDeviceToHost);\n}"), 2u);
  EXPECT_EQ(n("~B() { cudaFree(ptr); }"), 1u);
  EXPECT_EQ(n("int f() { return cudaFree(p); }"), 1u);
  EXPECT_EQ(n("void f() { CUDA_OK(cudaMemset(p, 0, 4)); CUDA_OK(\n    cudaDeviceSynchronize()); }"), 0u);
  EXPECT_EQ(n("void f() { nvfp4::cuda::check(cudaMalloc(&p, 4), \"cudaMalloc\"); }"), 0u);
  EXPECT_EQ(n("void f() { EXPECT_EQ(cudaFree(p), cudaSuccess); }"), 0u);
  EXPECT_EQ(n("cudaError_t alloc(size_t n) {\n  n_ = n;\n  return cudaMalloc(&p, n);\n}"), 0u);
  EXPECT_EQ(n("// cudaMemset(p, 0, 4) in a comment\nconst char* s = \"cudaFree(p)\";"), 0u);
  EXPECT_EQ(n("void f() { std::puts(cudaGetErrorString(e)); }"), 0u);
}

}  // namespace
