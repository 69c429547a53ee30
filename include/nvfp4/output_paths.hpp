// Where a command may write. Every command that writes a file derived from an input (qtensor,
// dequant, export-hf, ...) asks refuse_output_over_input() first, and every command that writes
// into an output folder asks require_output_folder(): an output never replaces its input, and a
// file named where a folder is wanted is a clear error, not a filesystem exception.
#pragma once

#include <string>
#include <vector>

namespace nvfp4::io {

// True when a and b name the same file: the same path once made absolute and normalized (with
// symlinked folders resolved), or, when both exist, the same file on disk (same device and
// inode: a hard link, a symlink, "./x" and "x").
bool same_file(const std::string& a, const std::string& b);

// Throws nvfp4::Error naming both paths when `output` is the same file as one of `inputs`
// (same_file): writing it would destroy the input. `inputs` may include files that do not
// exist; they never match a different path.
void refuse_output_over_input(const std::string& output, const std::vector<std::string>& inputs);

// Throws nvfp4::Error when `dir` exists and is not a folder ("--out X is a file; give a
// folder"). `option` names the option or argument in the message ("--out"). A missing `dir`
// is fine: the command creates it.
void require_output_folder(const std::string& option, const std::string& dir);

}  // namespace nvfp4::io
