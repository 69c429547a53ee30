// Writes a tiny Llama-style model folder with random weights for the server's interop check
// (scripts/serve_check.sh): with TOKENIZER_DIR, that folder's tokenizer.json and
// tokenizer_config.json (a real tokenizer and its chat template; the vocabulary sized to it),
// otherwise nvfp4's byte tokenizer and a ChatML-style template written here.
//
//   make_serve_model OUT_DIR [TOKENIZER_DIR]
#include <filesystem>
#include <fstream>
#include <iostream>

#include "infer/tiny_hf_model.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/hf_tokenizer.hpp"
#include "nvfp4/tokenizer.hpp"

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::cerr << "usage: make_serve_model OUT_DIR [TOKENIZER_DIR]\n";
    return 2;
  }
  namespace fs = std::filesystem;
  try {
    const fs::path out = argv[1];
    auto c = nvfp4::test::tiny_config("llama");
    c.seq_len = 256;
    fs::create_directories(out);
    if (argc == 3) {
      const fs::path tok = argv[2];
      const auto t = nvfp4::io::HfTokenizer::load((tok / "tokenizer.json").string());
      c.vocab = t->vocab_size();
      fs::copy_file(tok / "tokenizer.json", out / "tokenizer.json", fs::copy_options::overwrite_existing);
      fs::copy_file(tok / "tokenizer_config.json", out / "tokenizer_config.json", fs::copy_options::overwrite_existing);
    } else {
      c.vocab = 257;
      std::ofstream(out / "nvfp4_tokenizer.json") << nvfp4::io::ByteTokenizer().describe() << "\n";
      const nlohmann::json cfg = {
          {"chat_template",
           "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] | trim + '<|im_end|>\\n' }}"
           "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"}};
      std::ofstream(out / "tokenizer_config.json") << cfg.dump(2) << "\n";
    }
    nvfp4::test::write_tiny_hf_model(out, "llama", c, 17);
    std::cout << out.string() << ": vocab " << c.vocab << "\n";
  } catch (const std::exception& e) {
    std::cerr << "make_serve_model: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
