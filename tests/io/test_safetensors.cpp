// safetensors reading/writing (src/io/safetensors.cpp): round trips over every dtype, every
// validation error on hand-built malformed files, atomic writes, sharded checkpoints and the
// golden reference file.
#include <gtest/gtest.h>

#include "support/test_support.hpp"
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nvfp4/dtype.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/safetensors.hpp"
#include "nvfp4/tensor.hpp"

namespace {

namespace fs = std::filesystem;
using nvfp4::DType;
using nvfp4::Error;
namespace io = nvfp4::io;

// ---- helpers ------------------------------------------------------------------------------

std::vector<uint8_t> read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_raw(const fs::path& p, const std::vector<uint8_t>& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "could not write " << p;
}

void write_text(const fs::path& p, const std::string& s) {
  write_raw(p, std::vector<uint8_t>(s.begin(), s.end()));
}

std::vector<uint8_t> le64(uint64_t v) {
  std::vector<uint8_t> b(8);
  for (int i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
  return b;
}

// A file image built by hand: 8-byte length (the JSON's, unless overridden), JSON, data.
std::vector<uint8_t> image(const std::string& header, size_t data_bytes = 0,
                           std::optional<uint64_t> length = std::nullopt) {
  // Sized up front and filled by index (vector::insert here trips a GCC 12 -Warray-bounds false positive).
  std::vector<uint8_t> out(8 + header.size() + data_bytes);
  const std::vector<uint8_t> len = le64(length.value_or(header.size()));
  std::copy(len.begin(), len.end(), out.begin());
  for (size_t i = 0; i < header.size(); ++i) out[8 + i] = static_cast<uint8_t>(header[i]);
  for (size_t i = 0; i < data_bytes; ++i) out[8 + header.size() + i] = static_cast<uint8_t>(i * 7 + 1);
  return out;
}

std::vector<uint8_t> random_bytes(std::mt19937_64& rng, size_t n) {
  std::vector<uint8_t> b(n);
  for (auto& x : b) x = static_cast<uint8_t>(rng());
  return b;
}

size_t nbytes_of(DType d, const std::vector<int64_t>& shape) {
  return static_cast<size_t>(nvfp4::shape_numel(shape)) * nvfp4::dtype_size(d);
}

using nvfp4::test::error_of;

std::string parse_error(const std::vector<uint8_t>& img, const std::string& file = "bad.safetensors") {
  return error_of([&] { io::parse_header(img, file); });
}

using nvfp4::test::temp_files_in;

// A fresh folder per test, removed afterwards.
inline constexpr char kIoPrefix[] = "nvfp4_test_io_";
using SafetensorsTest = nvfp4::test::ScratchDirTest<kIoPrefix>;

// ---- round trips --------------------------------------------------------------------------

TEST_F(SafetensorsTest, RoundTripEveryDtypeAndShape) {
  const std::vector<std::vector<int64_t>> shapes = {{}, {1}, {7}, {3, 5}, {2, 0, 4}, {0}, {2, 3, 4}};
  std::mt19937_64 rng(20261123);
  std::vector<io::TensorRef> refs;
  std::vector<std::vector<uint8_t>> storage;
  storage.reserve(nvfp4::dtype_table().size() * shapes.size());
  for (const auto& info : nvfp4::dtype_table()) {
    for (size_t s = 0; s < shapes.size(); ++s) {
      storage.push_back(random_bytes(rng, nbytes_of(info.dtype, shapes[s])));
      refs.push_back({std::string(info.name) + ".s" + std::to_string(s), info.dtype, shapes[s], storage.back()});
    }
  }
  const fs::path p = dir_ / "all.safetensors";
  io::write_file(p.string(), refs);

  const auto f = io::SafetensorsFile::open(p.string());
  ASSERT_EQ(f.tensors().size(), refs.size());
  for (const auto& r : refs) {
    SCOPED_TRACE(r.name);
    const io::TensorInfo* t = f.find(r.name);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->dtype, r.dtype);
    EXPECT_EQ(t->shape, r.shape);
    EXPECT_EQ(t->nbytes(), r.bytes.size());
    EXPECT_EQ(t->numel(), nvfp4::shape_numel(r.shape));
    const auto view = f.bytes(*t);
    EXPECT_TRUE(std::equal(view.begin(), view.end(), r.bytes.begin(), r.bytes.end()));
    const nvfp4::Tensor loaded = f.load(r.name);
    EXPECT_EQ(loaded.dtype, r.dtype);
    EXPECT_EQ(loaded.shape, r.shape);
    EXPECT_EQ(loaded.data, std::vector<uint8_t>(r.bytes.begin(), r.bytes.end()));
  }
  // Written in the given order, contiguously: the stored offsets follow the input order.
  uint64_t offset = 0;
  for (size_t i = 0; i < refs.size(); ++i) {
    const io::TensorInfo& t = f.at(refs[i].name);
    EXPECT_EQ(t.begin, offset) << refs[i].name;
    offset += refs[i].bytes.size();
  }
  EXPECT_EQ(f.header().data_bytes, offset);
}

TEST_F(SafetensorsTest, RoundTripOwnedTensors) {
  const fs::path p = dir_ / "owned.safetensors";
  const nvfp4::Tensor a = nvfp4::Tensor::from_f32({1.f, -2.f, 3.5f, 0.f, 1e-3f, 7.f}, {2, 3});
  const nvfp4::Tensor b = nvfp4::Tensor::from_f32_as_bf16({0.5f, 0.25f}, {2});
  io::write_file(p.string(), std::vector<std::pair<std::string, nvfp4::Tensor>>{{"a", a}, {"b", b}});
  const auto f = io::SafetensorsFile::open(p.string());
  EXPECT_EQ(f.load("a").to_f32(), a.to_f32());
  EXPECT_EQ(f.load("b").data, b.data);
  EXPECT_EQ(f.load("b").dtype, DType::BF16);
}

TEST_F(SafetensorsTest, MetadataRoundTripAndFormatPt) {
  const std::vector<uint8_t> x = {1, 2, 3, 4};
  const fs::path p = dir_ / "meta.safetensors";
  const std::map<std::string, std::string> meta = {
      {"producer", "nvfp4 test"}, {"json", "{\"a\": [1, 2]}"}, {"unicode", "\xc3\xa9\xe2\x82\xac"}, {"empty", ""}};
  io::write_file(p.string(), {{"x", DType::U8, {4}, x}}, meta);
  auto f = io::SafetensorsFile::open(p.string());
  auto expected = meta;
  expected["format"] = "pt";
  EXPECT_EQ(f.metadata(), expected);

  // A caller's own "format" is kept.
  io::write_file(p.string(), {{"x", DType::U8, {4}, x}}, {{"format", "np"}});
  f = io::SafetensorsFile::open(p.string());
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "np"}}));
}

TEST_F(SafetensorsTest, HeaderIsPaddedToEightAndFileIsExact) {
  std::mt19937_64 rng(1);
  for (int len = 1; len <= 9; ++len) {  // names of 9 lengths cover every padding remainder
    SCOPED_TRACE(len);
    const fs::path p = dir_ / "pad.safetensors";
    const std::vector<uint8_t> x = random_bytes(rng, 6);
    io::write_file(p.string(), {{std::string(static_cast<size_t>(len), 'n'), DType::F16, {3}, x}});
    const std::vector<uint8_t> raw = read_all(p);
    ASSERT_GE(raw.size(), 8u);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | raw[i];
    EXPECT_EQ(n % 8, 0u);
    ASSERT_EQ(raw.size(), 8 + n + x.size());
    const std::string header(raw.begin() + 8, raw.begin() + 8 + static_cast<ptrdiff_t>(n));
    EXPECT_EQ(header.front(), '{');
    const size_t last = header.find_last_not_of(' ');
    EXPECT_EQ(header[last], '}');
    EXPECT_LT(header.size() - 1 - last, 8u);  // at most 7 spaces of padding
    EXPECT_TRUE(std::equal(x.begin(), x.end(), raw.begin() + 8 + static_cast<ptrdiff_t>(n)));
    const auto j = nlohmann::json::parse(header);
    EXPECT_EQ(j.at("__metadata__").at("format"), "pt");
  }
}

TEST_F(SafetensorsTest, BytesViewIsTheWrittenBytes) {
  std::mt19937_64 rng(7);
  const auto a = random_bytes(rng, 4 * 12);
  const auto b = random_bytes(rng, 2 * 5);
  const fs::path p = dir_ / "view.safetensors";
  io::write_file(p.string(), {{"a", DType::F32, {3, 4}, a}, {"b", DType::BF16, {5}, b}});
  const auto f = io::SafetensorsFile::open(p.string());
  const std::vector<uint8_t> raw = read_all(p);
  const uint64_t data_start = 8 + f.header().header_bytes;
  for (const auto* want : {&a, &b}) {
    const auto& t = f.at(want == &a ? "a" : "b");
    const auto view = f.bytes(t);
    EXPECT_EQ(std::vector<uint8_t>(view.begin(), view.end()), *want);
    EXPECT_TRUE(std::equal(view.begin(), view.end(), raw.begin() + static_cast<ptrdiff_t>(data_start + t.begin)));
  }
}

TEST_F(SafetensorsTest, ZeroTensorFilesAreValid) {
  const fs::path p = dir_ / "empty.safetensors";
  io::write_file(p.string(), std::vector<io::TensorRef>{}, {{"k", "v"}});
  auto f = io::SafetensorsFile::open(p.string());
  EXPECT_TRUE(f.tensors().empty());
  EXPECT_EQ(f.header().data_bytes, 0u);
  EXPECT_EQ(f.metadata().at("k"), "v");

  const auto h = io::parse_header(image("{}"), "e.safetensors");
  EXPECT_TRUE(h.tensors.empty());
  EXPECT_TRUE(h.metadata.empty());
  EXPECT_EQ(h.header_bytes, 2u);
  // A file with only zero-size tensors also has an empty data section.
  const fs::path p2 = dir_ / "zero.safetensors";
  write_raw(p2, image(R"({"z":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]}})"));
  f = io::SafetensorsFile::open(p2.string());
  ASSERT_EQ(f.tensors().size(), 1u);
  EXPECT_TRUE(f.bytes(f.at("z")).empty());
  EXPECT_TRUE(f.load("z").data.empty());
}

TEST(SafetensorsParse, AcceptsZeroSizeTensorsBetweenOthersAndAnyKeyOrder) {
  const auto h = io::parse_header(
      image(R"({"b":{"data_offsets":[4,8],"shape":[1],"dtype":"I32"}, "z":{"dtype":"U8","shape":[0],"data_offsets":[4,4]},)"
            R"("a":{"dtype":"F32","shape":[],"data_offsets":[0,4]}, "__metadata__":{"m":"1"}}   )",
            8),
      "ok.safetensors");
  ASSERT_EQ(h.tensors.size(), 3u);
  EXPECT_EQ(h.tensors[0].name, "a");  // sorted by offset
  EXPECT_EQ(h.tensors[1].name, "z");
  EXPECT_EQ(h.tensors[2].name, "b");
  EXPECT_EQ(h.tensors[0].shape, std::vector<int64_t>{});
  EXPECT_EQ(h.metadata.at("m"), "1");
  EXPECT_EQ(h.data_bytes, 8u);
}

// ---- validation errors --------------------------------------------------------------------

struct BadCase {
  const char* label;
  std::vector<uint8_t> img;
  std::vector<std::string> expect;  // substrings of what(), besides the file name
};

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  const std::string& offsets) {
  return "\"" + name + "\":{\"dtype\":" + dtype + ",\"shape\":" + shape + ",\"data_offsets\":" + offsets + "}";
}

TEST(SafetensorsParse, EveryMalformedHeaderIsAClearError) {
  const std::vector<BadCase> cases = {
      {"empty file", {}, {"too short"}},
      {"3 bytes", {1, 2, 3}, {"too short"}},
      {"7 bytes", {8, 0, 0, 0, 0, 0, 0}, {"too short"}},
      {"header length larger than file", image("{}", 0, 1000), {"header length 1000", "truncated"}},
      {"header length one past file", image("{}", 0, 3), {"header length 3"}},
      {"header length over 100 MB", image("{}", 0, 100'000'001), {"100000001", "limit"}},
      {"header length 2^64-1", image("{}", 0, ~uint64_t{0}), {"18446744073709551615", "limit"}},
      {"not JSON", image("{not json}"), {"not valid JSON"}},
      {"binary garbage", image(std::string("\xff\xfe\x00\x01", 4)), {"not valid JSON"}},
      {"empty header", image(""), {"not valid JSON"}},
      {"JSON array", image("[]"), {"array", "expected an object"}},
      {"JSON number", image("42"), {"number", "expected an object"}},
      {"JSON trailing garbage", image("{} x"), {"not valid JSON"}},
      {"duplicate tensor",
       image("{" + entry("w", "\"U8\"", "[1]", "[0,1]") + "," + entry("w", "\"U8\"", "[1]", "[1,2]") + "}", 2),
       {"'w'", "twice"}},
      {"duplicate key inside an entry",
       image(R"({"w":{"dtype":"U8","dtype":"I8","shape":[1],"data_offsets":[0,1]}})", 1),
       {"'w'", "'dtype'", "twice"}},
      {"duplicate __metadata__", image(R"({"__metadata__":{},"__metadata__":{}})"), {"'__metadata__'", "twice"}},
      {"unknown dtype", image("{" + entry("w", "\"F7\"", "[1]", "[0,1]") + "}", 1),
       {"tensor 'w'", "'F7'", "BF16", "F8_E4M3", "F8_E8M0"}},
      {"dtype not a string", image("{" + entry("w", "4", "[1]", "[0,4]") + "}", 4), {"tensor 'w'", "\"dtype\""}},
      {"dtype lower case", image("{" + entry("w", "\"f32\"", "[1]", "[0,4]") + "}", 4), {"tensor 'w'", "'f32'"}},
      {"missing dtype", image(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", 4), {"tensor 'w'", "no \"dtype\""}},
      {"missing shape", image(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", 4), {"tensor 'w'", "no \"shape\""}},
      {"missing offsets", image(R"({"w":{"dtype":"F32","shape":[1]}})", 4), {"tensor 'w'", "no \"data_offsets\""}},
      {"entry not an object", image(R"({"w":[1,2]})"), {"tensor 'w'", "expected an object"}},
      {"shape not an array", image("{" + entry("w", "\"F32\"", "4", "[0,16]") + "}", 16), {"tensor 'w'", "\"shape\""}},
      {"negative dim", image("{" + entry("w", "\"F32\"", "[-1,4]", "[0,16]") + "}", 16), {"tensor 'w'", "negative", "-1"}},
      {"non-integer dim", image("{" + entry("w", "\"F32\"", "[1.5]", "[0,4]") + "}", 4), {"tensor 'w'", "not an integer"}},
      {"integral float dim", image("{" + entry("w", "\"F32\"", "[2.0]", "[0,8]") + "}", 8), {"tensor 'w'", "not an integer"}},
      {"string dim", image("{" + entry("w", "\"F32\"", "[\"2\"]", "[0,8]") + "}", 8), {"tensor 'w'", "not an integer"}},
      {"dim above int64", image("{" + entry("w", "\"U8\"", "[9223372036854775808]", "[0,1]") + "}", 1),
       {"tensor 'w'", "9223372036854775808"}},
      {"numel overflow", image("{" + entry("w", "\"U8\"", "[4294967296,4294967296]", "[0,1]") + "}", 1),
       {"tensor 'w'", "more elements than fit"}},
      {"numel*size overflow", image("{" + entry("w", "\"F64\"", "[4611686018427387904]", "[0,1]") + "}", 1),
       {"tensor 'w'", "more bytes than fit"}},
      {"offsets reversed", image("{" + entry("w", "\"F32\"", "[1]", "[4,0]") + "}", 4), {"tensor 'w'", "reversed"}},
      {"offsets not two", image("{" + entry("w", "\"F32\"", "[1]", "[0,4,8]") + "}", 4), {"tensor 'w'", "two integers"}},
      {"offsets negative", image("{" + entry("w", "\"F32\"", "[1]", "[-4,0]") + "}", 4), {"tensor 'w'", "non-negative"}},
      {"offsets float", image("{" + entry("w", "\"F32\"", "[1]", "[0,4.0]") + "}", 4), {"tensor 'w'", "non-negative"}},
      {"numel*size mismatch", image("{" + entry("x.weight", "\"F32\"", "[4,4]", "[0,100]") + "}", 100),
       {"tensor 'x.weight'", "[0, 100]", "[4, 4]", "64 bytes"}},
      {"overlap",
       image("{" + entry("a", "\"F32\"", "[2]", "[0,8]") + "," + entry("b", "\"F32\"", "[2]", "[4,12]") + "}", 12),
       {"tensor 'b'", "overlap", "'a'"}},
      {"same offsets twice",
       image("{" + entry("a", "\"F32\"", "[1]", "[0,4]") + "," + entry("b", "\"F32\"", "[1]", "[0,4]") + "}", 4),
       {"tensor 'b'", "overlap", "'a'"}},
      {"gap",
       image("{" + entry("a", "\"F32\"", "[1]", "[0,4]") + "," + entry("b", "\"F32\"", "[1]", "[8,12]") + "}", 12),
       {"tensor 'b'", "gap of 4", "'a'"}},
      {"gap at the start", image("{" + entry("a", "\"F32\"", "[1]", "[4,8]") + "}", 8), {"tensor 'a'", "gap"}},
      {"out of range", image("{" + entry("a", "\"F32\"", "[2]", "[0,8]") + "}", 4), {"tensor 'a'", "past the end"}},
      {"offsets near 2^64",
       image("{" + entry("a", "\"U8\"", "[1]", "[18446744073709551614,18446744073709551615]") + "}", 1),
       {"tensor 'a'", "past the end"}},
      {"trailing bytes", image("{" + entry("a", "\"F32\"", "[1]", "[0,4]") + "}", 8), {"4 trailing bytes"}},
      {"trailing bytes, no tensors", image("{}", 3), {"3 trailing bytes"}},
      {"__metadata__ non-string value", image(R"({"__metadata__":{"k":1}})"), {"__metadata__", "'k'", "strings"}},
      {"__metadata__ nested object", image(R"({"__metadata__":{"k":{"a":"b"}}})"), {"'k'"}},
      {"__metadata__ not an object", image(R"({"__metadata__":"x"})"), {"__metadata__", "string"}},
      {"empty name", image("{" + entry("", "\"F32\"", "[1]", "[0,4]") + "}", 4), {"empty name"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.label);
    const std::string what = parse_error(c.img, "bad.safetensors");
    EXPECT_EQ(what.rfind("bad.safetensors: ", 0), 0u) << what;
    for (const auto& s : c.expect) EXPECT_NE(what.find(s), std::string::npos) << "missing '" << s << "' in: " << what;
  }
}

// Regression (docs/fuzzing.md): a million-deep array in "shape" once crashed the error path
// with a stack overflow (the message dumped the value recursively). Now every depth is an Error.
TEST(SafetensorsParse, DeeplyNestedJsonIsAnErrorNotACrash) {
  constexpr size_t kDepth = 1'000'000;
  const std::string arrays = std::string(kDepth, '[') + std::string(kDepth, ']');
  struct Case {
    std::string header;
    std::string expect;
  };
  std::string objects;
  for (size_t i = 0; i < kDepth / 2; ++i) objects += "{\"a\":";
  objects += "1" + std::string(kDepth / 2, '}');
  const std::vector<Case> cases = {
      {arrays, "array"},
      {R"({"t":{"dtype":"U8","shape":)" + arrays + R"(,"data_offsets":[0,0]}})", "tensor 't'"},
      {R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[)" + arrays + ",1]}}", "tensor 't'"},
      {R"({"__metadata__":{"k":)" + arrays + "}}", "'k'"},
      {objects, "tensor 'a'"},
      {R"({"t":)" + std::string(kDepth, '['), "not valid JSON"},  // never closed
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.expect);
    const std::string what = parse_error(image(c.header), "deep.safetensors");
    EXPECT_NE(what.find("deep.safetensors"), std::string::npos) << what.substr(0, 300);
    EXPECT_NE(what.find(c.expect), std::string::npos) << what.substr(0, 300);
    EXPECT_LT(what.size(), 1000u);  // messages quote at most a little of the input
  }
}

// Regression (docs/fuzzing.md): nlohmann's callback parser, used at first for duplicate-key
// detection, is quadratic in the number of tensors (25k: 4 s, 50k: 37 s, 100k: 400 s). The
// SAX builder that replaced it parses 50k tensors in well under a second.
TEST(SafetensorsParse, LargeHeaderParsesInLinearTime) {
  constexpr uint64_t kTensors = 50'000;
  std::string header = "{";
  for (uint64_t i = kTensors; i-- > 0;) {  // reverse order: the parser must sort
    if (header.size() > 1) header += ',';
    header += "\"t" + std::to_string(i) + "\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[" +
              std::to_string(4 * i) + "," + std::to_string(4 * i + 4) + "]}";
  }
  header += '}';
  const auto img = image(header, 4 * kTensors);
  const auto t0 = std::chrono::steady_clock::now();
  const io::Header h = io::parse_header(img, "big.safetensors");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(h.tensors.size(), kTensors);
  for (uint64_t i = 0; i < kTensors; i += 9999) EXPECT_EQ(h.tensors[i].name, "t" + std::to_string(i));
  EXPECT_LT(seconds, 10.0) << "parsing " << kTensors << " tensors took " << seconds << " s: quadratic again?";
}

TEST_F(SafetensorsTest, TruncatedFilesAreRejectedAtEveryCut) {
  std::mt19937_64 rng(3);
  const auto a = random_bytes(rng, 16);
  const auto b = random_bytes(rng, 6);
  const fs::path p = dir_ / "whole.safetensors";
  io::write_file(p.string(), {{"a", DType::F32, {4}, a}, {"b", DType::I16, {3}, b}});
  const std::vector<uint8_t> whole = read_all(p);
  ASSERT_NO_THROW(io::parse_header(whole, "whole.safetensors"));
  const size_t n = whole.size();
  const size_t data_start = n - a.size() - b.size();
  // Cuts: inside the length, inside the JSON, right after it, inside 'a', between, inside 'b'.
  for (size_t cut : {size_t{0}, size_t{5}, size_t{8}, size_t{20}, data_start - 1, data_start, data_start + 3,
                     data_start + 16, n - 1}) {
    SCOPED_TRACE(cut);
    const std::vector<uint8_t> part(whole.begin(), whole.begin() + static_cast<ptrdiff_t>(cut));
    const std::string what = parse_error(part, "cut.safetensors");
    EXPECT_NE(what.find("cut.safetensors"), std::string::npos) << what;
    if (cut >= data_start) {
      // The header is intact: the error names the tensor that no longer fits.
      EXPECT_NE(what.find(cut >= data_start + 16 ? "'b'" : "'a'"), std::string::npos) << what;
      EXPECT_NE(what.find("past the end"), std::string::npos) << what;
    }
    // And through open(): the path is named.
    const fs::path q = dir_ / "cut.safetensors";
    write_raw(q, part);
    const std::string opened = error_of([&] { io::SafetensorsFile::open(q.string()); });
    EXPECT_NE(opened.find(q.string()), std::string::npos) << opened;
  }
}

TEST_F(SafetensorsTest, OpenErrorsNameThePath) {
  const fs::path missing = dir_ / "missing.safetensors";
  std::string what = error_of([&] { io::SafetensorsFile::open(missing.string()); });
  EXPECT_NE(what.find(missing.string()), std::string::npos) << what;
  EXPECT_NE(what.find("No such file"), std::string::npos) << what;

  const fs::path empty = dir_ / "empty.safetensors";
  write_raw(empty, {});
  what = error_of([&] { io::SafetensorsFile::open(empty.string()); });
  EXPECT_NE(what.find(empty.string()), std::string::npos) << what;
  EXPECT_NE(what.find("empty"), std::string::npos) << what;

  what = error_of([&] { io::SafetensorsFile::open(dir_.string()); });
  EXPECT_NE(what.find(dir_.string()), std::string::npos) << what;
  EXPECT_NE(what.find("folder"), std::string::npos) << what;
}

TEST_F(SafetensorsTest, AtNamesFileAndTensorAndSuggestsInspect) {
  const fs::path p = dir_ / "m.safetensors";
  const std::vector<uint8_t> x = {1, 2};
  io::write_file(p.string(), {{"present", DType::U8, {2}, x}});
  const auto f = io::SafetensorsFile::open(p.string());
  EXPECT_EQ(f.find("absent"), nullptr);
  ASSERT_NE(f.find("present"), nullptr);
  for (const std::string& what : {error_of([&] { f.at("absent"); }), error_of([&] { f.load("absent"); })}) {
    EXPECT_NE(what.find(p.string()), std::string::npos) << what;
    EXPECT_NE(what.find("'absent'"), std::string::npos) << what;
    EXPECT_NE(what.find("nvfp4 inspect " + p.string()), std::string::npos) << what;
  }
}

TEST_F(SafetensorsTest, FilesAreMovable) {
  const fs::path p1 = dir_ / "one.safetensors", p2 = dir_ / "two.safetensors";
  const std::vector<uint8_t> x = {1, 2, 3, 4}, y = {9, 8};
  io::write_file(p1.string(), {{"x", DType::U8, {4}, x}});
  io::write_file(p2.string(), {{"y", DType::I8, {2}, y}});
  auto a = io::SafetensorsFile::open(p1.string());
  io::SafetensorsFile b(std::move(a));
  EXPECT_EQ(b.path(), p1.string());
  EXPECT_EQ(b.load("x").data, x);
  b = io::SafetensorsFile::open(p2.string());  // the first mapping is released
  EXPECT_EQ(b.path(), p2.string());
  EXPECT_EQ(b.load("y").data, y);
  std::vector<io::SafetensorsFile> v;
  v.push_back(std::move(b));
  v.push_back(io::SafetensorsFile::open(p1.string()));
  EXPECT_EQ(v[0].load("y").data, y);
  EXPECT_EQ(v[1].load("x").data, x);
}

// ---- writing --------------------------------------------------------------------------------

TEST_F(SafetensorsTest, WriteRejectsBadTensorsAndLeavesTargetUntouched) {
  const fs::path p = dir_ / "target.safetensors";
  const std::vector<uint8_t> x = {1, 2, 3, 4};
  io::write_file(p.string(), {{"old", DType::U8, {4}, x}});
  const std::vector<uint8_t> before = read_all(p);

  struct Case {
    const char* label;
    std::vector<io::TensorRef> refs;
    std::vector<std::string> expect;
  };
  const std::vector<Case> cases = {
      {"duplicate name", {{"w", DType::U8, {4}, x}, {"w", DType::U8, {4}, x}}, {"'w'", "twice"}},
      {"empty name", {{"", DType::U8, {4}, x}}, {"empty name"}},
      {"reserved name", {{"__metadata__", DType::U8, {4}, x}}, {"'__metadata__'", "reserved"}},
      {"size mismatch", {{"w", DType::F32, {2}, x}}, {"'w'", "4 bytes", "needs 8"}},
      {"negative dim", {{"w", DType::U8, {-4}, x}}, {"'w'", "negative"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.label);
    const std::string what = error_of([&] { io::write_file(p.string(), c.refs); });
    EXPECT_NE(what.find(p.string()), std::string::npos) << what;
    for (const auto& s : c.expect) EXPECT_NE(what.find(s), std::string::npos) << "missing '" << s << "' in: " << what;
    EXPECT_EQ(read_all(p), before);
    EXPECT_TRUE(temp_files_in(dir_).empty());
  }
}

TEST_F(SafetensorsTest, AtomicWriteReplacesOrLeavesTheOldFile) {
  const fs::path p = dir_ / "f.bin";
  const std::vector<uint8_t> v1 = {1, 2, 3}, v2 = {4, 5, 6, 7, 8};
  io::write_file_atomic(p.string(), v1);
  EXPECT_EQ(read_all(p), v1);
  fs::permissions(p, fs::perms::owner_read | fs::perms::owner_write);
  io::write_file_atomic(p.string(), v2);
  EXPECT_EQ(read_all(p), v2);
  EXPECT_TRUE(temp_files_in(dir_).empty());
  // Replacing a file keeps its permission bits.
  EXPECT_EQ(fs::status(p).permissions() & fs::perms::mask, fs::perms::owner_read | fs::perms::owner_write);

  // Target folder missing: a clear error naming the path, nothing created.
  const fs::path nowhere = dir_ / "no_such_dir" / "f.bin";
  const std::string what = error_of([&] { io::write_file_atomic(nowhere.string(), v1); });
  EXPECT_NE(what.find(nowhere.string()), std::string::npos) << what;
  EXPECT_NE(what.find("No such file or directory"), std::string::npos) << what;
  EXPECT_FALSE(fs::exists(dir_ / "no_such_dir"));

  // The target is a folder: rename fails, the temp file is removed, the folder is intact.
  const fs::path sub = dir_ / "sub";
  fs::create_directory(sub);
  write_raw(sub / "keep", v1);
  const std::string what2 = error_of([&] { io::write_file_atomic(sub.string(), v2); });
  EXPECT_NE(what2.find(sub.string()), std::string::npos) << what2;
  EXPECT_EQ(read_all(sub / "keep"), v1);
  EXPECT_TRUE(temp_files_in(dir_).empty());
  EXPECT_EQ(read_all(p), v2);
}

TEST_F(SafetensorsTest, AtomicWriteFailingMidwayRemovesTheTempFile) {
  // RLIMIT_FSIZE makes write() fail with EFBIG part way through (SIGXFSZ ignored).
  const fs::path p = dir_ / "big.safetensors";
  const std::vector<uint8_t> old = {42, 43};
  io::write_file_atomic(p.string(), old);
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
  if (saved.rlim_max != RLIM_INFINITY && saved.rlim_max < 4096) GTEST_FAIL() << "RLIMIT_FSIZE hard limit too low";
  auto* old_handler = ::signal(SIGXFSZ, SIG_IGN);
  rlimit small = saved;
  small.rlim_cur = 4096;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  const std::vector<uint8_t> big(100000, 7);
  const std::string what = error_of([&] { io::write_file(p.string(), {{"big", DType::U8, {100000}, big}}); });
  ::setrlimit(RLIMIT_FSIZE, &saved);
  ::signal(SIGXFSZ, old_handler);
  EXPECT_NE(what.find(p.string()), std::string::npos) << what;
  EXPECT_NE(what.find("write"), std::string::npos) << what;
  EXPECT_NE(what.find("left unchanged"), std::string::npos) << what;
  EXPECT_EQ(read_all(p), old);
  EXPECT_TRUE(temp_files_in(dir_).empty());
}

// ---- sharded checkpoints ------------------------------------------------------------------

struct Model {
  std::vector<std::vector<uint8_t>> storage;
  std::vector<io::TensorRef> refs;
};

// 7 tensors of 64, 64, 64, 32, 32, 0 and 4 bytes (260 in all), odd shapes included.
Model make_model() {
  Model m;
  std::mt19937_64 rng(11);
  const std::vector<std::tuple<std::string, DType, std::vector<int64_t>>> spec = {
      {"layers.0.weight", DType::BF16, {4, 8}},   {"layers.0.scale", DType::F8_E4M3, {64}},
      {"layers.1.weight", DType::F32, {16}},      {"layers.1.bias", DType::F16, {16}},
      {"layers.1.codes", DType::U8, {2, 16}},     {"empty", DType::F32, {0, 5}},
      {"global_scale", DType::F32, {}},
  };
  m.storage.reserve(spec.size());
  for (const auto& [name, dt, shape] : spec) {
    m.storage.push_back(random_bytes(rng, nbytes_of(dt, shape)));
    m.refs.push_back({name, dt, shape, m.storage.back()});
  }
  return m;
}

void expect_checkpoint_equals(const io::Checkpoint& ck, const Model& m) {
  std::vector<std::string> want;
  for (const auto& r : m.refs) want.push_back(r.name);
  std::sort(want.begin(), want.end());
  EXPECT_EQ(ck.names(), want);
  for (const auto& r : m.refs) {
    SCOPED_TRACE(r.name);
    const auto& t = ck.info(r.name);
    EXPECT_EQ(t.dtype, r.dtype);
    EXPECT_EQ(t.shape, r.shape);
    const auto b = ck.bytes(r.name);
    EXPECT_EQ(std::vector<uint8_t>(b.begin(), b.end()), std::vector<uint8_t>(r.bytes.begin(), r.bytes.end()));
    const auto loaded = ck.load(r.name);
    EXPECT_EQ(loaded.data, std::vector<uint8_t>(r.bytes.begin(), r.bytes.end()));
    EXPECT_EQ(loaded.shape, r.shape);
  }
}

TEST_F(SafetensorsTest, ShardedWriteAndCheckpointReadBack) {
  const Model m = make_model();  // 64 + 64 + 64 + 32 + 32 + 0 + 4 bytes
  const fs::path ck_dir = dir_ / "ckpt";  // created by write_sharded
  const auto paths = io::write_sharded(ck_dir.string(), m.refs, 128, {{"producer", "test"}});
  // Greedy in order with 128 bytes: {64,64} {64,32,32,0} {4}.
  ASSERT_EQ(paths.size(), 4u);
  EXPECT_EQ(fs::path(paths[0]).filename().string(), "model-00001-of-00003.safetensors");
  EXPECT_EQ(fs::path(paths[1]).filename().string(), "model-00002-of-00003.safetensors");
  EXPECT_EQ(fs::path(paths[2]).filename().string(), "model-00003-of-00003.safetensors");
  EXPECT_EQ(fs::path(paths[3]).filename().string(), "model.safetensors.index.json");
  for (const auto& p : paths) EXPECT_TRUE(fs::is_regular_file(p)) << p;
  EXPECT_FALSE(fs::exists(ck_dir / "model.safetensors"));

  const auto index = nlohmann::json::parse(read_all(ck_dir / "model.safetensors.index.json"));
  EXPECT_EQ(index.at("metadata").at("total_size"), 260u);
  EXPECT_EQ(index.at("weight_map").size(), m.refs.size());
  EXPECT_EQ(index.at("weight_map").at("layers.0.weight"), "model-00001-of-00003.safetensors");
  EXPECT_EQ(index.at("weight_map").at("layers.1.codes"), "model-00002-of-00003.safetensors");
  EXPECT_EQ(index.at("weight_map").at("global_scale"), "model-00003-of-00003.safetensors");

  for (const std::string& open_as : {ck_dir.string(), (ck_dir / "model.safetensors.index.json").string()}) {
    SCOPED_TRACE(open_as);
    const auto ck = io::Checkpoint::open(open_as);
    EXPECT_EQ(ck.shards().size(), 3u);
    expect_checkpoint_equals(ck, m);
    EXPECT_EQ(ck.metadata().at("producer"), "test");
    EXPECT_EQ(ck.metadata().at("format"), "pt");
    EXPECT_EQ(ck.metadata().count("total_size"), 0u);  // not a string: left out
    const std::string what = error_of([&] { ck.info("nope"); });
    EXPECT_NE(what.find("'nope'"), std::string::npos) << what;
    EXPECT_NE(what.find(open_as), std::string::npos) << what;
  }
  // A shard file on its own is a checkpoint too.
  const auto one = io::Checkpoint::open(paths[2]);
  EXPECT_EQ(one.names(), std::vector<std::string>{"global_scale"});
}

TEST_F(SafetensorsTest, ShardedSingleShardIsModelSafetensors) {
  const Model m = make_model();
  const fs::path ck_dir = dir_ / "single";
  // A stale index from an earlier sharded write is removed so it cannot shadow the new file.
  io::write_sharded(ck_dir.string(), m.refs, 64);
  ASSERT_TRUE(fs::exists(ck_dir / "model.safetensors.index.json"));
  const auto paths = io::write_sharded(ck_dir.string(), m.refs, 1 << 20, {{"k", "v"}});
  ASSERT_EQ(paths.size(), 1u);
  EXPECT_EQ(fs::path(paths[0]).filename().string(), "model.safetensors");
  EXPECT_FALSE(fs::exists(ck_dir / "model.safetensors.index.json"));
  const auto ck = io::Checkpoint::open(ck_dir.string());
  EXPECT_EQ(ck.shards().size(), 1u);
  expect_checkpoint_equals(ck, m);
  EXPECT_EQ(ck.metadata().at("k"), "v");
  const auto direct = io::Checkpoint::open(paths[0]);
  expect_checkpoint_equals(direct, m);
}

TEST_F(SafetensorsTest, ShardedTensorLargerThanLimitGetsItsOwnShard) {
  const Model m = make_model();
  const auto paths = io::write_sharded((dir_ / "tiny").string(), m.refs, 1);
  // Every non-empty tensor alone; the zero-byte tensor joins the shard before it.
  ASSERT_EQ(paths.size(), 7u);
  EXPECT_EQ(fs::path(paths[0]).filename().string(), "model-00001-of-00006.safetensors");
  expect_checkpoint_equals(io::Checkpoint::open((dir_ / "tiny").string()), m);
}

TEST_F(SafetensorsTest, ShardedRejectsDuplicateNamesAcrossShards) {
  const std::vector<uint8_t> x(64, 1);
  const fs::path d = dir_ / "dup";
  const std::string what =
      error_of([&] { io::write_sharded(d.string(), {{"w", DType::U8, {64}, x}, {"w", DType::U8, {64}, x}}, 64); });
  EXPECT_NE(what.find("'w'"), std::string::npos) << what;
  EXPECT_FALSE(fs::exists(d / "model-00001-of-00002.safetensors"));
}

class CheckpointErrors : public SafetensorsTest {
 protected:
  void SetUp() override {
    SafetensorsTest::SetUp();
    model_ = make_model();
    ck_ = dir_ / "ck";
    io::write_sharded(ck_.string(), model_.refs, 128);
    index_ = ck_ / "model.safetensors.index.json";
    json_ = nlohmann::json::parse(read_all(index_));
  }
  void rewrite_index() { write_text(index_, json_.dump(2)); }
  std::string open_error() { return error_of([&] { io::Checkpoint::open(ck_.string()); }); }

  Model model_;
  fs::path ck_, index_;
  nlohmann::json json_;
};

TEST_F(CheckpointErrors, IndexNamesAMissingTensor) {
  json_["weight_map"]["ghost.weight"] = "model-00002-of-00003.safetensors";
  rewrite_index();
  const std::string what = open_error();
  EXPECT_NE(what.find(index_.string()), std::string::npos) << what;
  EXPECT_NE(what.find("'ghost.weight'"), std::string::npos) << what;
  EXPECT_NE(what.find("'model-00002-of-00003.safetensors'"), std::string::npos) << what;
}

TEST_F(CheckpointErrors, IndexNamesAMissingShardFile) {
  fs::remove(ck_ / "model-00003-of-00003.safetensors");
  const std::string what = open_error();
  EXPECT_NE(what.find(index_.string()), std::string::npos) << what;
  EXPECT_NE(what.find("model-00003-of-00003.safetensors"), std::string::npos) << what;
  EXPECT_NE(what.find("No such file"), std::string::npos) << what;
}

TEST_F(CheckpointErrors, ShardTensorNotInWeightMap) {
  json_["weight_map"].erase("layers.1.bias");
  rewrite_index();
  const std::string what = open_error();
  EXPECT_NE(what.find(index_.string()), std::string::npos) << what;
  EXPECT_NE(what.find("'layers.1.bias'"), std::string::npos) << what;
  EXPECT_NE(what.find("does not list"), std::string::npos) << what;
}

TEST_F(CheckpointErrors, TensorInTwoShards) {
  // Replace shard 3 by one that also holds layers.0.weight (which the index maps to shard 1).
  const auto& r0 = model_.refs[0];
  const auto& rs = model_.refs.back();
  io::write_file((ck_ / "model-00003-of-00003.safetensors").string(), {rs, r0});
  const std::string what = open_error();
  EXPECT_NE(what.find("'layers.0.weight'"), std::string::npos) << what;
  EXPECT_NE(what.find("two shards"), std::string::npos) << what;
  EXPECT_NE(what.find("model-00001-of-00003.safetensors"), std::string::npos) << what;
  EXPECT_NE(what.find("model-00003-of-00003.safetensors"), std::string::npos) << what;
}

TEST_F(CheckpointErrors, CorruptShardIsNamedWithTheIndex) {
  const fs::path shard = ck_ / "model-00002-of-00003.safetensors";
  std::vector<uint8_t> raw = read_all(shard);
  raw.pop_back();
  write_raw(shard, raw);
  const std::string what = open_error();
  EXPECT_NE(what.find(index_.string()), std::string::npos) << what;
  EXPECT_NE(what.find(shard.string()), std::string::npos) << what;
}

TEST_F(CheckpointErrors, MalformedIndex) {
  write_text(index_, R"({"weight_map": {"a": "x.safetensors", "a": "y.safetensors"}})");
  std::string what = open_error();
  EXPECT_NE(what.find(index_.string()), std::string::npos) << what;
  EXPECT_NE(what.find("twice"), std::string::npos) << what;

  write_text(index_, R"({"metadata": {}})");
  what = open_error();
  EXPECT_NE(what.find("weight_map"), std::string::npos) << what;

  write_text(index_, R"({"weight_map": {"a": 3}})");
  what = open_error();
  EXPECT_NE(what.find("'a'"), std::string::npos) << what;

  write_text(index_, R"({"weight_map": {"a": "/etc/passwd"}})");
  what = open_error();
  EXPECT_NE(what.find("absolute"), std::string::npos) << what;

  write_text(index_, R"({"metadata": [1], "weight_map": {}})");
  what = open_error();
  EXPECT_NE(what.find("\"metadata\""), std::string::npos) << what;

  write_text(index_, "not json");
  what = open_error();
  EXPECT_NE(what.find("not valid JSON"), std::string::npos) << what;
}

TEST_F(SafetensorsTest, CheckpointOpenErrors) {
  std::string what = error_of([&] { io::Checkpoint::open((dir_ / "nothing").string()); });
  EXPECT_NE(what.find((dir_ / "nothing").string()), std::string::npos) << what;
  EXPECT_NE(what.find("does not exist"), std::string::npos) << what;
  what = error_of([&] { io::Checkpoint::open(dir_.string()); });  // an empty folder
  EXPECT_NE(what.find("model.safetensors"), std::string::npos) << what;
  EXPECT_NE(what.find(dir_.string()), std::string::npos) << what;
}

// ---- golden file --------------------------------------------------------------------------

TEST(SafetensorsGolden, ReadsTheReferenceFile) {
  const fs::path p = NVFP4_GOLDEN_DIR "/nvfp4_te_reference.safetensors";
  // Must fail, not skip: without the golden file the bit-exactness tests prove nothing.
  ASSERT_TRUE(fs::is_regular_file(p)) << "golden file not found; looked for " << p
                                      << " (set -DNVFP4_GOLDEN_DIR=<folder> when configuring)";
  const auto f = io::SafetensorsFile::open(p.string());
  EXPECT_EQ(f.tensors().size(), 107u);
  for (const char* key : {"torch", "seed", "producer", "cases"}) EXPECT_EQ(f.metadata().count(key), 1u) << key;
  EXPECT_EQ(f.metadata().at("seed"), "20261123");
  const auto cases = nlohmann::json::parse(f.metadata().at("cases"));
  EXPECT_TRUE(cases.contains("bf16_1d_normal"));

  const auto& x = f.at("bf16_1d_normal.x");
  EXPECT_EQ(x.dtype, DType::BF16);
  EXPECT_EQ(x.shape, (std::vector<int64_t>{128, 128}));
  const auto& q = f.at("bf16_1d_normal.row.q");
  EXPECT_EQ(q.dtype, DType::U8);
  EXPECT_EQ(q.shape, (std::vector<int64_t>{128, 64}));
  const auto& s = f.at("bf16_1d_normal.row.s");
  EXPECT_EQ(s.dtype, DType::F8_E4M3);
  EXPECT_EQ(s.shape, (std::vector<int64_t>{128, 8}));
  const auto amax = f.load("bf16_1d_normal.row.amax").to_f32();
  ASSERT_EQ(amax.size(), 1u);
  EXPECT_GT(amax[0], 0.f);

  // Same through Checkpoint, and a write/read round trip of every tensor is byte-identical.
  const auto ck = io::Checkpoint::open(p.string());
  EXPECT_EQ(ck.names().size(), 107u);
  std::vector<io::TensorRef> refs;
  for (const auto& t : f.tensors()) refs.push_back({t.name, t.dtype, t.shape, f.bytes(t)});
  const fs::path out = fs::temp_directory_path() / ("nvfp4_golden_copy_" + std::to_string(::getpid()) + ".safetensors");
  io::write_file(out.string(), refs, f.metadata());
  const auto g = io::SafetensorsFile::open(out.string());
  auto want_meta = f.metadata();
  want_meta.emplace("format", "pt");  // the golden file has none; write_file adds it
  EXPECT_EQ(g.metadata(), want_meta);
  ASSERT_EQ(g.tensors().size(), 107u);
  for (const auto& t : f.tensors()) {
    const auto a = f.bytes(t);
    const auto b = g.bytes(g.at(t.name));
    EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin(), b.end())) << t.name;
  }
  fs::remove(out);
}

}  // namespace
