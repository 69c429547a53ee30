// The atomic writer under every file the project writes (src/io/atomic_file.cpp). Private to src/io/.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace nvfp4::io {

// Writes `chunks` back to back into `path` atomically (see write_file_atomic in
// nvfp4/safetensors.hpp); errors are nvfp4::Error naming the path, the target left unchanged.
void write_chunks_atomic(const std::string& path, std::span<const std::span<const uint8_t>> chunks);

}  // namespace nvfp4::io
