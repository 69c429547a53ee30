// A copy of a model folder with its tensors and config.json edited: what the PTQ suites use to make
// malformed and inconsistent checkpoints from a good one (test_import.cpp, test_kv_cache_scales.cpp).
#pragma once

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nvfp4/dtype.hpp"
#include "nvfp4/safetensors.hpp"
#include "nvfp4/token_shards.hpp"  // io::read_input_text

namespace nvfp4::test {

// A tensor as raw bytes, for editing.
struct RawTensor {
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

// Folder `from` copied to `to` (replaced) with its tensors passed through `edit` (name -> tensor;
// erase to drop) and config.json through `config`; hf_quant_config.json copied too when asked.
inline void rewrite_checkpoint(const std::filesystem::path& from, const std::filesystem::path& to,
                               const std::function<void(std::map<std::string, RawTensor>&)>& edit,
                               const std::function<void(nlohmann::json&)>& config, bool copy_hf_quant_config) {
  namespace fs = std::filesystem;
  fs::remove_all(to);
  fs::create_directories(to);
  const auto ck = io::Checkpoint::open(from.string());
  std::map<std::string, RawTensor> t;
  for (const auto& n : ck.names()) {
    const auto b = ck.bytes(n);
    t[n] = {ck.info(n).dtype, ck.info(n).shape, std::vector<uint8_t>(b.begin(), b.end())};
  }
  edit(t);
  std::vector<io::TensorRef> refs;
  for (const auto& [n, x] : t) refs.push_back({n, x.dtype, x.shape, x.bytes});
  io::write_file((to / "model.safetensors").string(), refs);
  auto j = nlohmann::json::parse(io::read_input_text((from / "config.json").string()));
  if (config) config(j);
  std::ofstream(to / "config.json") << j.dump(2);
  if (copy_hf_quant_config && fs::exists(from / "hf_quant_config.json")) {
    fs::copy_file(from / "hf_quant_config.json", to / "hf_quant_config.json");
  }
}

}  // namespace nvfp4::test
