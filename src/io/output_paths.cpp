#include "nvfp4/output_paths.hpp"

#include <filesystem>

#include "nvfp4/error.hpp"

namespace nvfp4::io {

namespace fs = std::filesystem;

namespace {

// Absolute, normalized, symlinks resolved as far as the path exists ("a/./b" and "a/b" agree;
// a file that does not exist yet keeps its name under its resolved folder).
fs::path resolved(const std::string& p) {
  std::error_code ec;
  fs::path r = fs::weakly_canonical(fs::absolute(p, ec), ec);
  if (ec) r = fs::absolute(p, ec).lexically_normal();
  return r;
}

}  // namespace

bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec;
  if (fs::equivalent(a, b, ec) && !ec) return true;  // same device and inode
  return resolved(a) == resolved(b);
}

void refuse_output_over_input(const std::string& output, const std::vector<std::string>& inputs) {
  for (const auto& in : inputs) {
    if (!same_file(output, in)) continue;
    throw Error("the output " + output + " is the input " + in +
                (output == in ? "" : " (the same file)") +
                "; writing it would replace the input: choose another output file");
  }
}

void require_output_folder(const std::string& option, const std::string& dir) {
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) {
    throw Error(option + " " + dir + " is a file; give a folder (it is created if it does not exist)");
  }
}

}  // namespace nvfp4::io
