// libFuzzer entry point for the safetensors header parser (docs/fuzzing.md).
//
// Built twice: into the libFuzzer binary `fuzz_safetensors_header` (tests/fuzz/CMakeLists.txt,
// clang, -fsanitize=fuzzer,address,undefined) and into the ordinary `test_io` GoogleTest binary,
// where test_fuzz_corpus.cpp replays the checked-in corpus through it on every CI run.
//
// Contract checked here: parse_header either returns a Header that satisfies every documented
// invariant or throws nvfp4::Error whose message starts with "<file>: ". Any other
// exception escapes and any broken invariant aborts, so the fuzzer reports both as crashes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string_view>
#include <vector>

#include "nvfp4/error.hpp"
#include "nvfp4/safetensors.hpp"

namespace {

constexpr std::string_view kFuzzFile = "fuzz.safetensors";

void require(bool ok) {
  if (!ok) std::abort();  // an invariant of a successfully parsed header does not hold
}

void check_header(const nvfp4::io::Header& h, size_t size) {
  require(h.header_bytes <= nvfp4::io::kMaxHeaderBytes);
  require(8 + h.header_bytes + h.data_bytes == size);
  uint64_t expected = 0;
  for (const auto& t : h.tensors) {
    require(!t.name.empty());
    require(t.begin == expected);  // sorted, contiguous, no gaps, no overlaps
    require(t.begin <= t.end);
    const uint64_t numel = static_cast<uint64_t>(t.numel());  // must not throw either
    require(t.nbytes() == numel * nvfp4::dtype_size(t.dtype));
    expected = t.end;
  }
  require(expected == h.data_bytes);  // no trailing bytes
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const nvfp4::io::Header h = nvfp4::io::parse_header(std::span<const uint8_t>(data, size), kFuzzFile);
    check_header(h, size);
  } catch (const nvfp4::Error& e) {
    const std::string_view what = e.what();
    require(what.substr(0, kFuzzFile.size() + 2) == "fuzz.safetensors: ");
  }
  return 0;
}

#ifdef NVFP4_LIBFUZZER
// Structure-aware mutation (libFuzzer binary only; set by tests/fuzz/CMakeLists.txt).
//
// A plain byte mutator mostly breaks the 8-byte length prefix as soon as it inserts or erases a
// byte of the JSON, so nearly every input would stop at the length check. Here the image is
// split into length, JSON and data; usually the JSON alone is mutated and the prefix rewritten
// to its new length, sometimes the data section is resized (to the largest end offset the
// JSON names, or at random), and sometimes the raw bytes are mutated to exercise the prefix.
#include <nlohmann/json.hpp>

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

namespace {

uint64_t le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Largest data_offsets end in a header, or 0 (a cheap scan; malformed JSON gives 0).
uint64_t largest_end(std::string_view header) {
  const auto j = nlohmann::json::parse(header.begin(), header.end(), nullptr, /*allow_exceptions=*/false);
  uint64_t end = 0;
  if (!j.is_object()) return 0;
  for (const auto& [k, v] : j.items()) {
    if (!v.is_object()) continue;
    const auto off = v.find("data_offsets");
    if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[1].is_number_unsigned()) continue;
    end = std::max<uint64_t>(end, (*off)[1].get<uint64_t>());
  }
  return end;
}

}  // namespace

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned int seed) {
  const unsigned choice = seed % 20;
  if (size < 8 || choice < 3) return LLVMFuzzerMutate(data, size, max_size);  // raw bytes, prefix included

  const uint64_t n = std::min<uint64_t>(le64(data), size - 8);
  std::vector<uint8_t> header(data + 8, data + 8 + n);
  size_t data_bytes = size - 8 - static_cast<size_t>(n);
  if (choice < 16) {  // mutate the JSON, keep the data section
    const size_t room = max_size > 8 + data_bytes ? max_size - 8 - data_bytes : 0;
    header.resize(std::max(room, header.size()));
    const size_t new_n = LLVMFuzzerMutate(header.data(), static_cast<size_t>(n), room);
    header.resize(std::min(new_n, room));
  } else if (choice < 19) {  // make the data section as long as the offsets say
    data_bytes = static_cast<size_t>(std::min<uint64_t>(
        largest_end({reinterpret_cast<const char*>(header.data()), header.size()}), max_size));
  } else {  // a random data size
    data_bytes = (seed / 20) % (2 * data_bytes + 17);
  }
  // size <= max_size and the JSON was mutated within its room, so 8 + header fits; trim the data.
  if (8 + header.size() + data_bytes > max_size) data_bytes = max_size - 8 - header.size();
  std::vector<uint8_t> old_data(data + 8 + n, data + size);
  const uint64_t len = header.size();
  for (int i = 0; i < 8; ++i) data[i] = static_cast<uint8_t>(len >> (8 * i));
  if (!header.empty()) std::memcpy(data + 8, header.data(), header.size());
  for (size_t i = 0; i < data_bytes; ++i) {
    data[8 + header.size() + i] = i < old_data.size() ? old_data[i] : static_cast<uint8_t>(i);
  }
  return 8 + header.size() + data_bytes;
}
#endif  // NVFP4_LIBFUZZER
