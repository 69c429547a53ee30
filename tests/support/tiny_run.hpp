// The short training run the CUDA test suites compare across devices and recipes: the tiny
// preset on the tiny corpus, 30 steps of 8 x 64 tokens, validation every 10 steps.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>

#include "support/tiny_corpus.hpp"
#include "train/trainer.hpp"

namespace nvfp4::test {

inline train::TrainOptions tiny_run(const std::string& device, const std::string& out) {
  train::TrainOptions o;
  o.data_dir = tiny_corpus_dir();
  o.out_dir = out;
  o.device = device;
  o.model = train::model_preset("tiny");
  o.model.seq_len = 64;
  o.batch = 8;
  o.steps = 30;
  o.schedule = train::parse_schedule("cosine", 3e-3, 3, 30);
  o.val_every = 10;
  o.val_batches = 2;
  o.progress = false;
  return o;
}

// A fresh (removed if present) folder name under the temporary directory, unique per process.
inline std::string fresh_run_dir(const std::string& prefix, const std::string& name) {
  const auto p = std::filesystem::temp_directory_path() / (prefix + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  return p.string();
}

}  // namespace nvfp4::test
