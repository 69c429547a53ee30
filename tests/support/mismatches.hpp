// Test support shared by the host and device suites: readable reports of large sweeps.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace nvfp4::test_support {

inline std::string hex32(uint32_t u) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", u);
  return buf;
}

// Counts mismatches over a large sweep and keeps the first few for the failure message, so a
// broken codec produces one readable failure instead of millions.
struct Mismatches {
  size_t count = 0;
  std::string first;
  void add(const std::string& what) {
    if (count++ < 8) first += "\n  " + what;
  }
};

}  // namespace nvfp4::test_support
