// A small byte-level training corpus for tests: a few hundred English sentences built from
// phrases (enough structure for a tiny model to learn in a few dozen steps), 12 documents,
// tokenized once per test process by the real data pipeline into a temporary folder.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "nvfp4/token_shards.hpp"

namespace nvfp4::test {

// The folder lives as long as the process (removed at exit).
struct TinyCorpusFolder {
  std::filesystem::path root;
  std::string data;
  ~TinyCorpusFolder() {
    std::error_code ec;
    std::filesystem::remove_all(root, ec);
  }
};

inline const std::string& tiny_corpus_dir() {
  static const TinyCorpusFolder folder = [] {
    namespace fs = std::filesystem;
    const fs::path root = fs::temp_directory_path() / ("nvfp4_train_test_" + std::to_string(::getpid()));
    // A folder of this name may be left from an earlier process with the same pid (pids wrap at
    // pid_max, 32768 on the CI machine kind); the dataset builder refuses a non-empty --out.
    fs::remove_all(root);
    fs::create_directories(root / "text");
    const char* subjects[] = {"The model", "A small network", "Our quantizer", "The optimizer", "Every block"};
    const char* verbs[] = {"reads", "scales", "rounds", "stores", "learns"};
    const char* objects[] = {"the next token.", "sixteen values at a time.", "its weights in four bits.",
                             "a scale per block.", "the loss on real text."};
    for (int d = 0; d < 12; ++d) {
      std::ofstream f(root / "text" / ("doc" + std::to_string(d) + ".txt"));
      for (int i = 0; i < 400; ++i) {
        f << subjects[(i + d) % 5] << " " << verbs[(i * 3 + d) % 5] << " " << objects[(i * 7 + 2 * d) % 5]
          << ((i % 6 == 5) ? "\n\n" : " ");
      }
    }
    nvfp4::io::DataOptions o;
    o.inputs = {(root / "text").string()};
    o.out_dir = (root / "data").string();
    o.val_fraction = 0.2;
    nvfp4::io::build_token_dataset(o);
    return TinyCorpusFolder{root, o.out_dir};
  }();
  return folder.data;
}

}  // namespace nvfp4::test
