// Training utilities: learning-rate schedules (src/train/schedule.cpp), checkpoints
// (src/io/checkpoint.cpp), the metrics log and the progress bar (src/train/metrics.cpp).
#include <gtest/gtest.h>

#include "support/test_support.hpp"
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <map>
#include <numbers>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nvfp4/checkpoint.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/safetensors.hpp"
#include "train/metrics.hpp"
#include "train/schedule.hpp"

namespace {

namespace fs = std::filesystem;
namespace io = nvfp4::io;
namespace train = nvfp4::train;
using nvfp4::Error;
using train::LrSchedule;

// ---- helpers ------------------------------------------------------------------------------------

using nvfp4::test::error_of;

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320, as zlib), bit by bit: an independent
// check of the checkpoint's CRC table.
uint32_t crc32_ref(const uint8_t* p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return c ^ 0xFFFFFFFFu;
}

std::string hex8(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%08x", v);
  return buf;
}

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_all(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << p;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) {
      out.push_back(text.substr(pos));
      break;
    }
    out.push_back(text.substr(pos, nl - pos));
    pos = nl + 1;
  }
  return out;
}

using nvfp4::test::temp_files_in;

// A fresh folder per test, removed afterwards.
inline constexpr char kTrainPrefix[] = "nvfp4_test_train_";
class TrainUtilTest : public nvfp4::test::ScratchDirTest<kTrainPrefix> {
 protected:
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
};

// ================================================================================================
// Learning-rate schedules
// ================================================================================================

LrSchedule make(LrSchedule::Kind kind, double peak, int64_t warmup, int64_t total, double min_frac = 0.1,
                double decay_frac = 0.2) {
  LrSchedule s;
  s.kind = kind;
  s.peak_lr = peak;
  s.warmup_steps = warmup;
  s.total_steps = total;
  s.min_lr_fraction = min_frac;
  s.decay_fraction = decay_frac;
  return s;
}

TEST(Schedule, CosineValuesAtKeySteps) {
  const double peak = 1e-3, min = 1e-4;
  const LrSchedule s = make(LrSchedule::cosine, peak, 10, 110);
  EXPECT_DOUBLE_EQ(train::lr_at(s, 0), peak / 10);       // first warmup step: peak/W (llm.c)
  EXPECT_DOUBLE_EQ(train::lr_at(s, 4), peak * 5 / 10);
  EXPECT_EQ(train::lr_at(s, 9), peak);                   // end of warmup: exactly peak
  // First decay step: p = 1/100, just under peak.
  EXPECT_DOUBLE_EQ(train::lr_at(s, 10), min + (peak - min) * 0.5 * (1 + std::cos(std::numbers::pi / 100)));
  EXPECT_LT(train::lr_at(s, 10), peak);
  EXPECT_NEAR(train::lr_at(s, 59), (peak + min) / 2, 1e-15);  // middle of the decay: p = 1/2
  EXPECT_DOUBLE_EQ(train::lr_at(s, 109), min);                 // last step: exactly min
  EXPECT_DOUBLE_EQ(train::lr_at(s, 110), min);                 // past the end: stays at min
  EXPECT_DOUBLE_EQ(train::lr_at(s, 1000000), min);

  // No warmup: decay from the first step, still ending at min.
  const LrSchedule s0 = make(LrSchedule::cosine, peak, 0, 100, 0.0);
  EXPECT_DOUBLE_EQ(train::lr_at(s0, 0), peak * 0.5 * (1 + std::cos(std::numbers::pi / 100)));
  EXPECT_DOUBLE_EQ(train::lr_at(s0, 99), 0.0);
  // Warmup covering the whole run: never decays.
  const LrSchedule sw = make(LrSchedule::cosine, peak, 5, 5);
  EXPECT_DOUBLE_EQ(train::lr_at(sw, 0), peak / 5);
  EXPECT_EQ(train::lr_at(sw, 4), peak);
  EXPECT_EQ(train::lr_at(sw, 9), peak);
}

TEST(Schedule, WsdPlateauThenLinearDecay) {
  const double peak = 2e-3, min = 2e-4;
  const LrSchedule s = make(LrSchedule::wsd, peak, 10, 100);  // D = 20 decay steps: 80..99
  EXPECT_EQ(train::wsd_decay_steps(s), 20);
  EXPECT_DOUBLE_EQ(train::lr_at(s, 0), peak / 10);
  EXPECT_EQ(train::lr_at(s, 9), peak);
  for (int64_t step = 10; step < 80; ++step) EXPECT_EQ(train::lr_at(s, step), peak) << "plateau step " << step;
  EXPECT_DOUBLE_EQ(train::lr_at(s, 80), peak - (peak - min) / 20);  // first decay step
  EXPECT_DOUBLE_EQ(train::lr_at(s, 89), peak - (peak - min) * 10 / 20);
  EXPECT_DOUBLE_EQ(train::lr_at(s, 99), min);  // last step
  EXPECT_DOUBLE_EQ(train::lr_at(s, 150), min);
  // Linear: equal decrements over the decay.
  for (int64_t step = 81; step < 100; ++step) {
    EXPECT_NEAR(train::lr_at(s, step - 1) - train::lr_at(s, step), (peak - min) / 20, 1e-15) << step;
  }
  // decay_fraction 0: constant after warmup.
  const LrSchedule flat = make(LrSchedule::wsd, peak, 0, 50, 0.1, 0.0);
  EXPECT_EQ(train::lr_at(flat, 0), peak);
  EXPECT_EQ(train::lr_at(flat, 49), peak);
  // Rounding of the decay length: llround(0.2 * 1005) = 201.
  EXPECT_EQ(train::wsd_decay_steps(make(LrSchedule::wsd, peak, 0, 1005)), 201);
}

TEST(Schedule, ConstantAfterWarmup) {
  const LrSchedule s = make(LrSchedule::constant, 5e-4, 4, 20);
  EXPECT_DOUBLE_EQ(train::lr_at(s, 0), 5e-4 / 4);
  EXPECT_DOUBLE_EQ(train::lr_at(s, 2), 5e-4 * 3 / 4);
  for (int64_t step = 3; step < 30; ++step) EXPECT_EQ(train::lr_at(s, step), 5e-4) << step;
  const LrSchedule s0 = make(LrSchedule::constant, 5e-4, 0, 20);
  EXPECT_EQ(train::lr_at(s0, 0), 5e-4);
}

TEST(Schedule, MonotoneWhereExpected) {
  for (const auto kind : {LrSchedule::cosine, LrSchedule::wsd, LrSchedule::constant}) {
    const LrSchedule s = make(kind, 1e-3, 37, 1001, 0.05, 0.3);
    const double min = kind == LrSchedule::constant ? s.peak_lr : s.peak_lr * s.min_lr_fraction;
    for (int64_t step = 1; step < s.total_steps; ++step) {
      const double prev = train::lr_at(s, step - 1), cur = train::lr_at(s, step);
      if (step < s.warmup_steps) {
        EXPECT_GT(cur, prev) << train::schedule_kind_name(kind) << " warmup step " << step;
      } else {
        EXPECT_LE(cur, prev) << train::schedule_kind_name(kind) << " step " << step;
        EXPECT_GE(cur, min) << train::schedule_kind_name(kind) << " step " << step;
      }
      EXPECT_LE(cur, s.peak_lr);
    }
  }
}

TEST(Schedule, BadInputsRejectedWithMessages) {
  std::string e = error_of([] { train::parse_schedule("cosin", 1e-3, 0, 10); });
  EXPECT_TRUE(contains(e, "'cosin'")) << e;
  EXPECT_TRUE(contains(e, "cosine, wsd, constant")) << e;
  e = error_of([] { train::parse_schedule("Cosine", 1e-3, 0, 10); });  // exact, lower case
  EXPECT_TRUE(contains(e, "cosine, wsd, constant")) << e;

  e = error_of([] { train::parse_schedule("cosine", -1e-3, 0, 10); });
  EXPECT_TRUE(contains(e, "peak_lr is -0.001")) << e;
  e = error_of([] { train::parse_schedule("cosine", 0.0, 0, 10); });
  EXPECT_TRUE(contains(e, "peak_lr")) << e;
  e = error_of([] { train::parse_schedule("cosine", std::nan(""), 0, 10); });
  EXPECT_TRUE(contains(e, "peak_lr")) << e;
  e = error_of([] { train::parse_schedule("cosine", std::numeric_limits<double>::infinity(), 0, 10); });
  EXPECT_TRUE(contains(e, "peak_lr")) << e;
  e = error_of([] { train::parse_schedule("cosine", 1e-3, 11, 10); });
  EXPECT_TRUE(contains(e, "warmup_steps 11 is more than total_steps 10")) << e;
  e = error_of([] { train::parse_schedule("cosine", 1e-3, -1, 10); });
  EXPECT_TRUE(contains(e, "warmup_steps is -1")) << e;
  e = error_of([] { train::parse_schedule("cosine", 1e-3, 0, 0); });
  EXPECT_TRUE(contains(e, "total_steps is 0")) << e;
  e = error_of([] { train::parse_schedule("cosine", 1e-3, 0, 10, -0.1); });
  EXPECT_TRUE(contains(e, "min_lr_fraction is -0.1")) << e;
  EXPECT_TRUE(contains(e, "[0, 1]")) << e;
  e = error_of([] { train::parse_schedule("cosine", 1e-3, 0, 10, 1.5); });
  EXPECT_TRUE(contains(e, "min_lr_fraction is 1.5")) << e;
  e = error_of([] { train::parse_schedule("wsd", 1e-3, 0, 10, 0.1, std::nan("")); });
  EXPECT_TRUE(contains(e, "decay_fraction")) << e;
  e = error_of([] { train::parse_schedule("wsd", 1e-3, 0, 10, 0.1, 2.0); });
  EXPECT_TRUE(contains(e, "decay_fraction is 2")) << e;
  e = error_of([] { train::parse_schedule("wsd", 1e-3, 90, 100, 0.1, 0.2); });  // 90 + 20 > 100
  EXPECT_TRUE(contains(e, "warmup would run into the decay")) << e;
  EXPECT_NO_THROW(train::parse_schedule("wsd", 1e-3, 80, 100, 0.1, 0.2));  // exactly fits

  const LrSchedule ok = train::parse_schedule("cosine", 1e-3, 0, 10);
  e = error_of([&] { train::lr_at(ok, -1); });
  EXPECT_TRUE(contains(e, "step -1")) << e;
  LrSchedule broken = ok;
  broken.warmup_steps = 20;  // lr_at validates too
  e = error_of([&] { train::lr_at(broken, 0); });
  EXPECT_TRUE(contains(e, "warmup_steps 20")) << e;
}

TEST(Schedule, JsonRoundTripIsBitExact) {
  for (const auto kind : {LrSchedule::cosine, LrSchedule::wsd, LrSchedule::constant}) {
    // Values that a decimal print with too few digits would change.
    const LrSchedule s = make(kind, std::nextafter(3e-4, 1.0), 123, 456789, 1.0 / 3.0, 0.1 + 0.2);
    const std::string text = s.to_json_string();
    const LrSchedule back = LrSchedule::from_json_string(text);
    EXPECT_EQ(back, s) << text;
    EXPECT_EQ(std::memcmp(&back.peak_lr, &s.peak_lr, sizeof(double)), 0) << text;
    const auto j = nlohmann::json::parse(text);
    EXPECT_EQ(j.at("kind"), train::schedule_kind_name(kind));
    EXPECT_EQ(j.at("total_steps"), 456789);
  }
}

TEST(Schedule, JsonErrorsNameTheKey) {
  const std::string good = make(LrSchedule::wsd, 1e-3, 1, 10).to_json_string();
  auto with = [&](const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j = nlohmann::json::parse(good);
    edit(j);
    return j.dump();
  };
  std::string e = error_of([&] { LrSchedule::from_json_string(with([](auto& j) { j.erase("total_steps"); })); });
  EXPECT_TRUE(contains(e, "\"total_steps\"")) << e;
  e = error_of([&] { LrSchedule::from_json_string(with([](auto& j) { j["warmup_steps"] = 1.5; })); });
  EXPECT_TRUE(contains(e, "\"warmup_steps\" is 1.5")) << e;
  e = error_of([&] { LrSchedule::from_json_string(with([](auto& j) { j["peak_lr"] = "fast"; })); });
  EXPECT_TRUE(contains(e, "\"peak_lr\"")) << e;
  e = error_of([&] { LrSchedule::from_json_string(with([](auto& j) { j["kind"] = "linear"; })); });
  EXPECT_TRUE(contains(e, "'linear'")) << e;
  e = error_of([&] { LrSchedule::from_json_string(with([](auto& j) { j["beta"] = 1; })); });
  EXPECT_TRUE(contains(e, "unknown key \"beta\"")) << e;
  e = error_of([&] { LrSchedule::from_json_string(with([](auto& j) { j["peak_lr"] = -1; })); });
  EXPECT_TRUE(contains(e, "peak_lr is -1")) << e;  // validated like parse_schedule
  e = error_of([] { LrSchedule::from_json_string("{\"kind\": "); });
  EXPECT_TRUE(contains(e, "does not parse")) << e;
  e = error_of([] { LrSchedule::from_json_string("[1, 2]"); });
  EXPECT_TRUE(contains(e, "expected a JSON object")) << e;
}

TEST(Schedule, DescribeNamesTheShape) {
  const std::string c = train::describe(make(LrSchedule::cosine, 3e-4, 100, 1000));
  EXPECT_EQ(c, "cosine: peak 0.0003, linear warmup over 100 steps, cosine decay to 3e-05 (0.1 x peak) at step 999; "
               "1000 steps");
  const std::string w = train::describe(make(LrSchedule::wsd, 1e-3, 0, 100));
  EXPECT_TRUE(contains(w, "wsd: peak 0.001, no warmup")) << w;
  EXPECT_TRUE(contains(w, "constant until step 79")) << w;
  EXPECT_TRUE(contains(w, "last 20 steps")) << w;
  const std::string k = train::describe(make(LrSchedule::constant, 1e-3, 5, 100));
  EXPECT_TRUE(contains(k, "then constant")) << k;
}

// ================================================================================================
// Checkpoints
// ================================================================================================

struct Fixture {
  std::vector<std::vector<float>> data;
  std::vector<io::CheckpointTensor> tensors;
};

// Parameters and AdamW moments of odd shapes, a scalar, an empty tensor, and special values
// (NaN payloads, -0, denormals, infinities) that a non-bit-exact path would change.
Fixture make_fixture() {
  Fixture f;
  const std::vector<std::pair<std::string, std::vector<int64_t>>> spec = {
      {"model.embed_tokens.weight", {7, 4}},
      {"model.layers.0.self_attn.q_proj.weight", {4, 4}},
      {"model.norm.weight", {4}},
      {"optimizer.m.model.layers.0.self_attn.q_proj.weight", {4, 4}},
      {"optimizer.v.model.layers.0.self_attn.q_proj.weight", {4, 4}},
      {"scalar", {}},
      {"empty", {0, 3}},
      {"cube", {2, 3, 5}},
  };
  f.data.reserve(spec.size());
  uint32_t x = 12345;
  for (const auto& [name, shape] : spec) {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& e : v) {
      x = x * 1664525u + 1013904223u;
      std::memcpy(&e, &x, 4);  // arbitrary bit patterns, NaNs included
    }
    f.data.push_back(std::move(v));
    f.tensors.push_back({name, shape, f.data.back().data()});
  }
  auto& specials = f.data[2];  // model.norm.weight
  const uint32_t bits[4] = {0x7fc00001u /* NaN with payload */, 0x80000000u /* -0 */, 0x00000001u /* denormal */,
                            0xff800000u /* -inf */};
  std::memcpy(specials.data(), bits, sizeof bits);
  f.tensors[6].data = nullptr;  // "empty": no data needed
  return f;
}

const std::map<std::string, std::string> kMeta = {
    {"nvfp4.model_config", R"({"hidden_size": 4, "num_hidden_layers": 1})"},
    {"nvfp4.train_state", R"({"step": 1000, "data": {"shard": 2, "offset": 4096, "epoch": 0}, "rng": "0x9e3779b97f4a7c15"})"},
    {"nvfp4.schedule", R"({"kind":"cosine"})"},
    {"note", "unicode ok: \xce\xbb"},
};

TEST_F(TrainUtilTest, CheckpointRoundTripIsBitExact) {
  const Fixture f = make_fixture();
  const std::string p = path("ckpt_00001000.safetensors");
  io::write_checkpoint(p, f.tensors, kMeta);

  const auto r = io::CheckpointReader::open(p);
  EXPECT_EQ(r.path(), p);
  EXPECT_EQ(r.version(), "1");
  std::vector<std::string> want_names;
  for (const auto& t : f.tensors) want_names.push_back(t.name);
  EXPECT_EQ(r.names(), want_names);  // write order
  for (size_t i = 0; i < f.tensors.size(); ++i) {
    const auto& t = f.tensors[i];
    ASSERT_TRUE(r.has(t.name));
    EXPECT_EQ(r.shape(t.name), t.shape);
    std::vector<float> out(f.data[i].size(), 1.0f);
    r.read_into(t.name, out, t.shape);
    EXPECT_EQ(std::memcmp(out.data(), f.data[i].data(), out.size() * sizeof(float)), 0) << t.name;
  }
  EXPECT_FALSE(r.has("model.lm_head.weight"));
  for (const auto& [k, v] : kMeta) {
    EXPECT_TRUE(r.has_metadata(k));
    EXPECT_EQ(r.metadata(k), v) << k;
  }
  EXPECT_EQ(r.metadata(io::kCheckpointVersionKey), "1");
  EXPECT_TRUE(r.metadata(io::kCheckpointProducerKey).starts_with("nvfp4 ")) << r.metadata(io::kCheckpointProducerKey);
  EXPECT_NO_THROW(r.verify());
  EXPECT_TRUE(temp_files_in(dir_).empty());

  // The CRC table holds zlib's CRC-32 of each tensor's bytes.
  const auto crcs = nlohmann::json::parse(r.metadata(io::kCheckpointCrcKey));
  ASSERT_EQ(crcs.size(), f.tensors.size());
  for (size_t i = 0; i < f.tensors.size(); ++i) {
    const auto* b = reinterpret_cast<const uint8_t*>(f.data[i].data());
    EXPECT_EQ(crcs.at(f.tensors[i].name), hex8(crc32_ref(b, f.data[i].size() * sizeof(float)))) << f.tensors[i].name;
  }

  // The file is a plain safetensors file: F32 tensors, readable by the generic reader.
  const auto st = io::SafetensorsFile::open(p);
  EXPECT_EQ(st.find("cube")->dtype, nvfp4::DType::F32);

  // A caller's producer wins over the default.
  auto meta = kMeta;
  meta[io::kCheckpointProducerKey] = "my trainer 2.0";
  io::write_checkpoint(p, f.tensors, meta);
  EXPECT_EQ(io::CheckpointReader::open(p).metadata(io::kCheckpointProducerKey), "my trainer 2.0");
}

TEST_F(TrainUtilTest, CheckpointMissingMetadataNamesFileAndKey) {
  const Fixture f = make_fixture();
  const std::string p = path("ckpt_00000001.safetensors");
  io::write_checkpoint(p, f.tensors, kMeta);
  const auto r = io::CheckpointReader::open(p);
  EXPECT_FALSE(r.has_metadata("nvfp4.recipe"));
  const std::string e = error_of([&] { r.metadata("nvfp4.recipe"); });
  EXPECT_TRUE(contains(e, p)) << e;
  EXPECT_TRUE(contains(e, "'nvfp4.recipe'")) << e;
}

TEST_F(TrainUtilTest, CheckpointTruncatedOrCorruptNamesTheFile) {
  const Fixture f = make_fixture();
  const std::string p = path("ckpt_00000002.safetensors");
  io::write_checkpoint(p, f.tensors, kMeta);
  const std::string good = read_all(p);

  // Truncated (a copy cut short, a full disk): the structure check fails on open.
  for (const size_t cut : {good.size() - 1, good.size() / 2, size_t{12}, size_t{0}}) {
    write_all(p, good.substr(0, cut));
    const std::string e = error_of([&] { io::CheckpointReader::open(p); });
    EXPECT_TRUE(contains(e, p)) << "cut at " << cut << ": " << e;
  }
  // A damaged header.
  std::string bad = good;
  bad[8] = 'x';  // the header's opening brace
  write_all(p, bad);
  std::string e = error_of([&] { io::CheckpointReader::open(p); });
  EXPECT_TRUE(contains(e, p)) << e;

  // One flipped bit inside a tensor's data: the structure is fine, the CRC is not.
  write_all(p, good);
  uint64_t data_start = 0, begin = 0;
  {
    const auto st = io::SafetensorsFile::open(p);
    data_start = 8 + st.header().header_bytes;
    begin = st.at("cube").begin;
  }
  bad = good;
  bad[data_start + begin + 5] ^= 0x10;
  write_all(p, bad);
  const auto r = io::CheckpointReader::open(p);
  std::vector<float> out(30);
  e = error_of([&] { r.read_into("cube", out, {2, 3, 5}); });
  EXPECT_TRUE(contains(e, p)) << e;
  EXPECT_TRUE(contains(e, "'cube'")) << e;
  EXPECT_TRUE(contains(e, "CRC-32")) << e;
  e = error_of([&] { r.verify(); });
  EXPECT_TRUE(contains(e, "'cube'")) << e;
  std::vector<float> norm(4);
  EXPECT_NO_THROW(r.read_into("model.norm.weight", norm, {4}));  // other tensors still read

  // Missing file.
  e = error_of([&] { io::CheckpointReader::open(path("nope.safetensors")); });
  EXPECT_TRUE(contains(e, path("nope.safetensors"))) << e;
}

TEST_F(TrainUtilTest, CheckpointWrongShapeNamesTensorAndBothShapes) {
  const Fixture f = make_fixture();
  const std::string p = path("ckpt_00000003.safetensors");
  io::write_checkpoint(p, f.tensors, kMeta);
  const auto r = io::CheckpointReader::open(p);
  std::vector<float> out(28);
  std::string e = error_of([&] { r.read_into("model.embed_tokens.weight", out, {4, 7}); });
  EXPECT_TRUE(contains(e, p)) << e;
  EXPECT_TRUE(contains(e, "'model.embed_tokens.weight'")) << e;
  EXPECT_TRUE(contains(e, "expected [4, 7]")) << e;
  EXPECT_TRUE(contains(e, "found [7, 4]")) << e;
  // Same element count, other rank.
  e = error_of([&] { r.read_into("model.embed_tokens.weight", out, {28}); });
  EXPECT_TRUE(contains(e, "expected [28], found [7, 4]")) << e;
  // Destination of the wrong size.
  std::vector<float> small(27);
  e = error_of([&] { r.read_into("model.embed_tokens.weight", small, {7, 4}); });
  EXPECT_TRUE(contains(e, "'model.embed_tokens.weight'")) << e;
  EXPECT_TRUE(contains(e, "27")) << e;
  // A tensor that is not there.
  e = error_of([&] { r.read_into("model.layers.1.mlp.up_proj.weight", out, {7, 4}); });
  EXPECT_TRUE(contains(e, p)) << e;
  EXPECT_TRUE(contains(e, "'model.layers.1.mlp.up_proj.weight'")) << e;
  EXPECT_TRUE(contains(e, "not in this checkpoint")) << e;
  e = error_of([&] { r.shape("missing"); });
  EXPECT_TRUE(contains(e, "missing")) << e;
}

TEST_F(TrainUtilTest, CheckpointRejectsOtherFilesAndVersions) {
  const std::vector<float> v = {1, 2, 3};
  const std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(v.data()), 12);
  // A plain safetensors file (an HF export): no version entry.
  const std::string plain = path("model.safetensors");
  io::write_file(plain, {{"w", nvfp4::DType::F32, {3}, bytes}});
  std::string e = error_of([&] { io::CheckpointReader::open(plain); });
  EXPECT_TRUE(contains(e, plain)) << e;
  EXPECT_TRUE(contains(e, "not an nvfp4 training checkpoint")) << e;
  // A future version.
  const std::string v2 = path("v2.safetensors");
  io::write_file(v2, {{"w", nvfp4::DType::F32, {3}, bytes}},
                 {{io::kCheckpointVersionKey, "2"}, {io::kCheckpointCrcKey, R"({"w":"00000000"})"}});
  e = error_of([&] { io::CheckpointReader::open(v2); });
  EXPECT_TRUE(contains(e, v2)) << e;
  EXPECT_TRUE(contains(e, "version '2'")) << e;
  // Version 1 with a CRC table that does not cover the tensors.
  const std::string nocrc = path("nocrc.safetensors");
  io::write_file(nocrc, {{"w", nvfp4::DType::F32, {3}, bytes}},
                 {{io::kCheckpointVersionKey, "1"}, {io::kCheckpointCrcKey, "{}"}});
  e = error_of([&] { io::CheckpointReader::open(nocrc); });
  EXPECT_TRUE(contains(e, "'w'")) << e;
  EXPECT_TRUE(contains(e, "no CRC-32")) << e;
  // A non-F32 tensor in an otherwise valid checkpoint.
  const std::vector<uint8_t> b16 = {0, 0x3f, 0, 0x40, 0x40, 0x40};
  const std::string bf = path("bf16.safetensors");
  io::write_file(bf, {{"w", nvfp4::DType::BF16, {3}, b16}},
                 {{io::kCheckpointVersionKey, "1"},
                  {io::kCheckpointCrcKey, R"({"w":")" + hex8(crc32_ref(b16.data(), b16.size())) + "\"}"}});
  const auto r = io::CheckpointReader::open(bf);
  std::vector<float> out(3);
  e = error_of([&] { r.read_into("w", out, {3}); });
  EXPECT_TRUE(contains(e, "'w'")) << e;
  EXPECT_TRUE(contains(e, "BF16")) << e;
}

TEST_F(TrainUtilTest, CheckpointFailedWriteLeavesPreviousIntact) {
  const Fixture f = make_fixture();
  const std::string p = path("ckpt_00000010.safetensors");
  io::write_checkpoint(p, f.tensors, kMeta);
  const std::string before = read_all(p);

  // 1. An I/O failure part way through (RLIMIT_FSIZE makes write() fail with EFBIG; works as root,
  //    unlike a read-only folder).
  const std::vector<float> big(100000, 1.5f);
  const std::vector<io::CheckpointTensor> big_tensors = {{"model.big", {100000}, big.data()}};
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
  auto* old_handler = ::signal(SIGXFSZ, SIG_IGN);
  rlimit small = saved;
  small.rlim_cur = 4096;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  std::string e = error_of([&] { io::write_checkpoint(p, big_tensors, kMeta); });
  ::setrlimit(RLIMIT_FSIZE, &saved);
  ::signal(SIGXFSZ, old_handler);
  EXPECT_TRUE(contains(e, p)) << e;
  EXPECT_TRUE(contains(e, "left unchanged")) << e;
  EXPECT_EQ(read_all(p), before);
  EXPECT_TRUE(temp_files_in(dir_).empty());

  // 2. Invalid input is rejected before anything is written.
  auto dup = f.tensors;
  dup.push_back(dup[0]);
  e = error_of([&] { io::write_checkpoint(p, dup, kMeta); });
  EXPECT_TRUE(contains(e, "'model.embed_tokens.weight'") || contains(e, "model.embed_tokens.weight")) << e;
  auto null_data = f.tensors;
  null_data[0].data = nullptr;
  e = error_of([&] { io::write_checkpoint(p, null_data, kMeta); });
  EXPECT_TRUE(contains(e, "null")) << e;
  auto neg = f.tensors;
  neg[1].shape = {4, -4};
  e = error_of([&] { io::write_checkpoint(p, neg, kMeta); });
  EXPECT_TRUE(contains(e, "negative")) << e;
  for (const char* reserved : {io::kCheckpointVersionKey, io::kCheckpointCrcKey}) {
    auto meta = kMeta;
    meta[reserved] = "x";
    e = error_of([&] { io::write_checkpoint(p, f.tensors, meta); });
    EXPECT_TRUE(contains(e, reserved)) << e;
  }
  EXPECT_EQ(read_all(p), before);

  // 3. A folder that cannot hold the file: missing, or a regular file in the way.
  e = error_of([&] { io::write_checkpoint(path("no_such_dir/ckpt_00000010.safetensors"), f.tensors, kMeta); });
  EXPECT_TRUE(contains(e, "no_such_dir")) << e;
  write_all(dir_ / "a_file", "x");
  e = error_of([&] { io::write_checkpoint(path("a_file/ckpt_00000010.safetensors"), f.tensors, kMeta); });
  EXPECT_TRUE(contains(e, "a_file")) << e;

  EXPECT_EQ(read_all(p), before);
  EXPECT_NO_THROW(io::CheckpointReader::open(p).verify());
  EXPECT_TRUE(temp_files_in(dir_).empty());
}

TEST_F(TrainUtilTest, CheckpointNamesAndSteps) {
  EXPECT_EQ(io::checkpoint_file_name(0), "ckpt_00000000.safetensors");
  EXPECT_EQ(io::checkpoint_file_name(1234), "ckpt_00001234.safetensors");
  EXPECT_EQ(io::checkpoint_file_name(123456789), "ckpt_123456789.safetensors");
  EXPECT_EQ(io::checkpoint_path("/runs/a", 5), "/runs/a/ckpt_00000005.safetensors");
  EXPECT_EQ(io::checkpoint_step("ckpt_00001234.safetensors"), 1234);
  EXPECT_EQ(io::checkpoint_step("ckpt_123456789.safetensors"), 123456789);
  EXPECT_EQ(io::checkpoint_step("ckpt_5.safetensors"), std::nullopt);  // not the canonical spelling
  EXPECT_EQ(io::checkpoint_step("ckpt_0000123a.safetensors"), std::nullopt);
  EXPECT_EQ(io::checkpoint_step(".ckpt_00000001.safetensors.tmp.12.0"), std::nullopt);
  EXPECT_EQ(io::checkpoint_step("ckpt_00000001.safetensors.bak"), std::nullopt);
  EXPECT_EQ(io::checkpoint_step("ckpt_99999999999999999999999.safetensors"), std::nullopt);  // overflow
  EXPECT_EQ(io::checkpoint_step("ckpt_.safetensors"), std::nullopt);
  EXPECT_TRUE(contains(error_of([] { io::checkpoint_file_name(-1); }), "-1"));
}

TEST_F(TrainUtilTest, LatestAndPrune) {
  EXPECT_EQ(io::latest_checkpoint(path("missing")), "");
  EXPECT_EQ(io::latest_checkpoint(dir_.string()), "");
  for (const int64_t step : {5, 100, 20, 100000000, 9}) write_all(io::checkpoint_path(dir_.string(), step), "x");
  // Look-alikes that are not checkpoints, and one with a larger number.
  for (const char* other : {"ckpt_7.safetensors", ".ckpt_00000200.safetensors.tmp.1.0", "ckpt_00000300.safetensors.bak",
                            "notes.txt", "ckpt_999999999.json"}) {
    write_all(dir_ / other, "y");
  }
  fs::create_directory(dir_ / "ckpt_999999998.safetensors");  // a folder, not a file

  EXPECT_EQ(io::latest_checkpoint(dir_.string()), io::checkpoint_path(dir_.string(), 100000000));
  const auto all = io::list_checkpoints(dir_.string());
  ASSERT_EQ(all.size(), 5u);
  const std::vector<int64_t> steps = {all[0].first, all[1].first, all[2].first, all[3].first, all[4].first};
  EXPECT_EQ(steps, (std::vector<int64_t>{5, 9, 20, 100, 100000000}));  // by number, not by name

  const auto deleted = io::prune_checkpoints(dir_.string(), 2);
  EXPECT_EQ(deleted, (std::vector<std::string>{io::checkpoint_path(dir_.string(), 5), io::checkpoint_path(dir_.string(), 9),
                                               io::checkpoint_path(dir_.string(), 20)}));
  EXPECT_FALSE(fs::exists(io::checkpoint_path(dir_.string(), 20)));
  EXPECT_TRUE(fs::exists(io::checkpoint_path(dir_.string(), 100)));
  EXPECT_TRUE(fs::exists(io::checkpoint_path(dir_.string(), 100000000)));
  for (const char* other : {"ckpt_7.safetensors", ".ckpt_00000200.safetensors.tmp.1.0", "ckpt_00000300.safetensors.bak",
                            "notes.txt", "ckpt_999999999.json"}) {
    EXPECT_TRUE(fs::exists(dir_ / other)) << other;
  }
  EXPECT_TRUE(io::prune_checkpoints(dir_.string(), 5).empty());  // nothing beyond the limit
  EXPECT_EQ(io::prune_checkpoints(dir_.string(), 1).size(), 1u);
  EXPECT_EQ(io::latest_checkpoint(dir_.string()), io::checkpoint_path(dir_.string(), 100000000));  // newest kept
  EXPECT_TRUE(io::prune_checkpoints(dir_.string(), 1).empty());
  EXPECT_TRUE(fs::exists(io::checkpoint_path(dir_.string(), 100000000)));
  const std::string e = error_of([&] { io::prune_checkpoints(dir_.string(), 0); });
  EXPECT_TRUE(contains(e, "keep_last_n is 0")) << e;
  EXPECT_TRUE(fs::exists(io::checkpoint_path(dir_.string(), 100000000)));

  // A path that is a file, not a folder.
  const std::string e2 = error_of([&] { io::latest_checkpoint(path("notes.txt")); });
  EXPECT_TRUE(contains(e2, "notes.txt")) << e2;
}

// ================================================================================================
// Metrics log
// ================================================================================================

TEST_F(TrainUtilTest, MetricsLinesParseAsJsonWithStepFirst) {
  const std::string p = path("metrics.jsonl");
  {
    train::MetricsLog log(p);
    EXPECT_EQ(log.path(), p);
    log.log({{"loss", 3.5}, {"step", 0}, {"lr", 1e-4}});  // step moved to the front
    log.log({{"step", 1}, {"loss", 3.25}, {"note", "warm \xce\xbb"}});
    nlohmann::json sorted = {{"a", 1}, {"step", 2}, {"z", nullptr}};  // a plain json converts
    log.log(sorted);
    log.log({{"event", "eval"}});  // no step: allowed
  }
  {
    train::MetricsLog again(p);  // appends, never truncates
    again.log({{"step", 3}, {"loss", 3.0}});
  }
  const std::string text = read_all(p);
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  const auto lines = split_lines(text);
  ASSERT_EQ(lines.size(), 5u) << text;
  const std::vector<int> steps = {0, 1, 2, -1, 3};
  for (size_t i = 0; i < lines.size(); ++i) {
    const auto j = nlohmann::ordered_json::parse(lines[i]);
    ASSERT_TRUE(j.is_object()) << lines[i];
    if (steps[i] >= 0) {
      EXPECT_EQ(j.begin().key(), "step") << lines[i];
      EXPECT_EQ(j.at("step"), steps[i]);
    } else {
      EXPECT_FALSE(j.contains("step"));
    }
  }
  EXPECT_EQ(lines[0], R"({"step":0,"loss":3.5,"lr":0.0001})");
  EXPECT_EQ(nlohmann::json::parse(lines[1]).at("note"), "warm \xce\xbb");
}

TEST_F(TrainUtilTest, MetricsRejectsBadRecordsAndPaths) {
  const std::string p = path("metrics.jsonl");
  train::MetricsLog log(p);
  log.log({{"step", 0}});
  const std::string before = read_all(p);
  std::string e = error_of([&] { log.log(nlohmann::ordered_json::array({1, 2})); });
  EXPECT_TRUE(contains(e, p)) << e;
  EXPECT_TRUE(contains(e, "object")) << e;
  e = error_of([&] { log.log({{"step", 1.5}}); });
  EXPECT_TRUE(contains(e, "\"step\"")) << e;
  e = error_of([&] { log.log({{"step", 2}, {"bad", std::string("\xff\xfe")}}); });
  EXPECT_TRUE(contains(e, "UTF-8")) << e;
  EXPECT_EQ(read_all(p), before);  // nothing of a rejected record reached the file

  e = error_of([&] { train::MetricsLog bad(path("no_such_dir/metrics.jsonl")); });
  EXPECT_TRUE(contains(e, "no_such_dir/metrics.jsonl")) << e;
}

TEST_F(TrainUtilTest, TruncateAfterStepKeepsExactlyTheEarlierRecords) {
  const std::string p = path("metrics.jsonl");
  {
    train::MetricsLog log(p);
    log.log({{"run", "header"}});
    for (int s = 0; s < 10; ++s) log.log({{"step", s}, {"loss", 10.0 - s}});
    log.log({{"event", "crash soon"}});
  }
  // A crash mid-record after step 9: a torn last line without '\n'.
  {
    std::ofstream out(p, std::ios::binary | std::ios::app);
    out << R"({"step":10,"lo)";
  }
  const auto before = split_lines(read_all(p));
  EXPECT_EQ(train::truncate_after_step(p, 5), 5);  // steps 6..9 and the torn line
  const std::string text = read_all(p);
  EXPECT_EQ(text.back(), '\n');
  const auto lines = split_lines(text);
  std::vector<std::string> want;
  for (const auto& l : before) {
    const auto j = nlohmann::json::parse(l, nullptr, false);
    if (j.is_discarded()) continue;
    if (!j.contains("step") || j.at("step").get<int64_t>() <= 5) want.push_back(l);
  }
  EXPECT_EQ(lines, want);  // byte for byte, in order
  ASSERT_EQ(lines.size(), 8u);  // header, steps 0..5, the step-less event
  EXPECT_EQ(lines.front(), R"({"run":"header"})");
  EXPECT_TRUE(temp_files_in(dir_).empty());

  // Nothing after the step: the file is not rewritten.
  const auto mtime = fs::last_write_time(p);
  EXPECT_EQ(train::truncate_after_step(p, 100), 0);
  EXPECT_EQ(read_all(p), text);
  EXPECT_EQ(fs::last_write_time(p), mtime);
  // Step -1 (resume from nothing): every stepped record goes.
  EXPECT_EQ(train::truncate_after_step(p, -1), 6);
  EXPECT_EQ(split_lines(read_all(p)).size(), 2u);
  // Appending after a truncation continues on a fresh line.
  {
    train::MetricsLog log(p);
    log.log({{"step", 0}, {"loss", 9.5}});
  }
  EXPECT_EQ(split_lines(read_all(p)).back(), R"({"step":0,"loss":9.5})");

  // A missing file stays missing.
  EXPECT_EQ(train::truncate_after_step(path("absent.jsonl"), 3), 0);
  EXPECT_FALSE(fs::exists(path("absent.jsonl")));
}

TEST_F(TrainUtilTest, TruncateAfterStepRejectsAMalformedMiddleLine) {
  const std::string p = path("metrics.jsonl");
  const std::string text = "{\"step\":0}\nnot json\n{\"step\":1}\n";
  write_all(p, text);
  std::string e = error_of([&] { train::truncate_after_step(p, 0); });
  EXPECT_TRUE(contains(e, p)) << e;
  EXPECT_TRUE(contains(e, "line 2")) << e;
  EXPECT_EQ(read_all(p), text);  // left unchanged
  write_all(p, "{\"step\":0}\n{\"step\":\"7\"}\n");
  e = error_of([&] { train::truncate_after_step(p, 0); });
  EXPECT_TRUE(contains(e, "line 2")) << e;
  EXPECT_TRUE(contains(e, "\"step\"")) << e;
}

TEST_F(TrainUtilTest, MetricsLogAfterATornLineStartsAFreshLine) {
  const std::string p = path("metrics.jsonl");
  write_all(p, "{\"step\":0}\n{\"step\":1,\"lo");
  {
    train::MetricsLog log(p);
    log.log({{"step", 2}});
    log.log({{"step", 3}});
  }
  const auto lines = split_lines(read_all(p));
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[2], R"({"step":2})");
  EXPECT_EQ(lines[3], R"({"step":3})");
}

// ================================================================================================
// Progress bar
// ================================================================================================

std::string read_stream(std::FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string s;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  return s;
}

TEST(ProgressBar, LineFormat) {
  EXPECT_EQ(train::ProgressBar::format_line(120, 1000, 3.4123, 41234, 133),
            "[===>" + std::string(26, ' ') + "] 120/1000 12% loss 3.412 41.2k tok/s ETA 02:13");
  EXPECT_EQ(train::ProgressBar::format_line(1000, 1000, 2.0, 1.5e6, 0),
            "[" + std::string(30, '=') + "] 1000/1000 100% loss 2.000 1.5M tok/s ETA 00:00");
  EXPECT_EQ(train::ProgressBar::format_line(0, 10, std::nan(""), 512, -1),
            "[>" + std::string(29, ' ') + "] 0/10 0% loss nan 512 tok/s ETA --:--");
  EXPECT_EQ(train::ProgressBar::format_line(5, 10, 1.0, -1, 3725),
            "[===============>" + std::string(14, ' ') + "] 5/10 50% loss 1.000 ETA 1:02:05");
  EXPECT_EQ(train::ProgressBar::format_line(7, 0, 1.0, 2e9, 1), "step 7 loss 1.000 2.0G tok/s");
}

TEST(ProgressBar, NonTtyOutputIsShort) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  {
    train::ProgressBar bar(f);  // detect: a regular file is not a terminal
    EXPECT_FALSE(bar.redraws());
    for (int64_t s = 1; s <= 1000; ++s) bar.update(s, 1000, 5.0 - s * 0.001, 1000.0);
    bar.finish();
    bar.finish();  // idempotent
  }
  const std::string out = read_stream(f);
  std::fclose(f);
  const auto lines = split_lines(out);
  EXPECT_EQ(out.find('\r'), std::string::npos);
  EXPECT_LE(lines.size(), 12u) << out;  // first update + one per decile
  EXPECT_GE(lines.size(), 10u) << out;
  EXPECT_TRUE(contains(lines.front(), " 1/1000 0%")) << out;
  EXPECT_TRUE(contains(lines.back(), "1000/1000 100%")) << out;
  EXPECT_TRUE(contains(out, " 500/1000 50%")) << out;
}

TEST(ProgressBar, NonTtyFinishShowsAnUnprintedLastState) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  train::ProgressBar bar(f, train::ProgressBar::Style::lines);
  bar.update(1, 1000, 4.0, 10);
  bar.update(2, 1000, 3.0, 10);  // same decile, within the interval: not printed yet
  bar.finish();
  const auto lines = split_lines(read_stream(f));
  std::fclose(f);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_TRUE(contains(lines[1], " 2/1000 0% loss 3.000")) << lines[1];
}

TEST(ProgressBar, RedrawStyleUsesCarriageReturns) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  train::ProgressBar bar(f, train::ProgressBar::Style::redraw);
  EXPECT_TRUE(bar.redraws());
  for (int64_t s = 1; s <= 100; ++s) bar.update(s, 100, 1.0, 100.0);
  bar.finish();
  const std::string out = read_stream(f);
  std::fclose(f);
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out.front(), '\r');
  EXPECT_EQ(out.back(), '\n');
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1);  // one line, redrawn
  const std::string last = out.substr(out.rfind('\r') + 1);
  EXPECT_TRUE(contains(last, "100/100 100%")) << last;
}

TEST(ProgressBar, PipeIsNotATerminal) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  std::FILE* w = ::fdopen(fds[1], "w");
  ASSERT_NE(w, nullptr);
  {
    train::ProgressBar bar(w);
    EXPECT_FALSE(bar.redraws());
    bar.update(1, 2, 1.0, 1.0);
    bar.finish();
  }
  std::fclose(w);
  char buf[512];
  const ssize_t n = ::read(fds[0], buf, sizeof buf);
  ::close(fds[0]);
  ASSERT_GT(n, 0);
  const std::string out(buf, static_cast<size_t>(n));
  EXPECT_EQ(out.find('\r'), std::string::npos);
  EXPECT_EQ(out.back(), '\n');
}

}  // namespace
