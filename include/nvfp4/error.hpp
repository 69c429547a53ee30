// Errors the library reports. Every message names the file, tensor or option involved and,
// where there is one, what the user can do about it (style.md #14).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace nvfp4 {

// Any user-facing failure: bad file, bad shape, bad option. what() is a complete sentence.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Input that contains NaN or Inf: never quantized silently (docs/numerics.md §2, non-finite input).
class NonFiniteError : public Error {
 public:
  NonFiniteError(const std::string& message, int64_t first_index, int64_t count)
      : Error(message), first_index_(first_index), count_(count) {}
  int64_t first_index() const { return first_index_; }  // flat index of the first NaN/Inf
  int64_t count() const { return count_; }              // how many elements are non-finite
 private:
  int64_t first_index_;
  int64_t count_;
};

}  // namespace nvfp4
