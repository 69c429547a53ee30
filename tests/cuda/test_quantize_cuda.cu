// CUDA NVFP4 quantization kernels against the CPU reference, bit for bit.
//
// A declarative case list (style.md #10): shapes (odd multiples of 16, tall/skinny, sizes not
// multiples of the 64x64 CTA tile) x input dtypes x kernel configurations x data kinds. Every
// output byte is compared: codes, scales (unswizzled when swizzled), amax, and the outputs are
// poisoned first so an unwritten byte cannot pass. Plus the golden file, the non-finite
// counter, and the given-amax entry point. Skips cleanly without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "format/scalar.hpp"
#include "support/cuda_test.hpp"
#include "format/rht.hpp"
#include "format/swizzle.hpp"
#include "nvfp4/cuda_check.hpp"
#include "nvfp4/cuda_quantize.hpp"
#include "nvfp4/cuda_runtime_info.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/quantize.hpp"
#include "nvfp4/safetensors.hpp"
#include "cuda/quantize_test_util.hpp"

namespace {


using namespace nvfp4::quantize_test;

// Device copy of one orientation, poisoned.
struct DeviceCopy {
  DeviceBuffer<uint8_t> codes, scales;
  DeviceBuffer<float> amax;
  int64_t rows, cols;
  bool swizzled;
  DeviceCopy(int64_t r, int64_t c, bool sw)
      : codes(static_cast<size_t>(r * c / 2)),
        scales(static_cast<size_t>(sw ? nvfp4::fmt::swizzled_scale_bytes(r, c / 16) : r * c / 16)),
        amax(1),
        rows(r),
        cols(c),
        swizzled(sw) {
    nvfp4::cuda::check(cudaMemset(codes.ptr, 0xAB, std::max<size_t>(codes.n, 1)), "cudaMemset (codes)");
    nvfp4::cuda::check(cudaMemset(scales.ptr, 0xAB, std::max<size_t>(scales.n, 1)), "cudaMemset (scales)");
    nvfp4::cuda::check(cudaMemset(amax.ptr, 0xFF, sizeof(float)), "cudaMemset (amax)");
  }
  nvfp4::cuda::DeviceCopy view() { return {codes.ptr, scales.ptr, nullptr, amax.ptr}; }
  std::vector<uint8_t> plain_scales() const {
    const auto s = scales.download();
    return swizzled ? nvfp4::unswizzle_scales(s, rows, cols / 16) : s;
  }
};

// Runs the GPU quantizer on x (values already representable in dtype) and compares with CPU.
void check_against_cpu(const std::vector<float>& x, int64_t M, int64_t K, nvfp4::DType dtype, const Config& cfg,
                       uint64_t seed, bool given_amax = false) {
  nvfp4::QuantizeOptions o;
  o.block = nvfp4::BlockShape{cfg.tile_rows, 16};
  o.rowwise = cfg.row;
  o.columnwise = cfg.col;
  o.rht = cfg.rht;
  o.rht_sign_mask = cfg.sign_mask;
  o.rounding = cfg.sr ? nvfp4::Rounding::stochastic : nvfp4::Rounding::rne;
  o.sr_key = {seed, 3, 7, 2};
  const auto ref = nvfp4::quantize(x, M, K, o, dtype);

  const std::vector<uint8_t> host = input_bytes(x, dtype);
  DeviceBuffer<uint8_t> dx(host.size());
  CUDA_OK(cudaMemcpy(dx.ptr, host.data(), host.size(), cudaMemcpyHostToDevice));
  DeviceCopy row(M, K, cfg.swizzled), col(K, M, cfg.swizzled);
  DeviceBuffer<uint32_t> bad(1);
  CUDA_OK(cudaMemset(bad.ptr, 0, 4));
  // The same options drive the GPU quantizer (it writes the copies it is given pointers for).
  nvfp4::QuantizeOptions kc = o;
  kc.swizzled_scales = cfg.swizzled;
  auto rv = row.view();
  auto cv = col.view();
  if (given_amax) {
    nvfp4::cuda::nvfp4_amax(dx.ptr, dtype, M, K, kc, cfg.row ? rv.amax : nullptr, cfg.col ? cv.amax : nullptr, {bad.ptr},
                            nullptr);
    nvfp4::cuda::quantize(dx.ptr, dtype, M, K, kc, cfg.row ? &rv : nullptr, cfg.col ? &cv : nullptr, {bad.ptr},
                          nullptr, nvfp4::cuda::AmaxInput::given);
  } else {
    nvfp4::cuda::quantize(dx.ptr, dtype, M, K, kc, cfg.row ? &rv : nullptr, cfg.col ? &cv : nullptr, {bad.ptr},
                          nullptr);
  }
  CUDA_OK(cudaDeviceSynchronize());
  EXPECT_EQ(bad.download()[0], 0u) << "finite input flagged as non-finite";
  if (cfg.row) {
    EXPECT_EQ(nvfp4::fmt::f32_bits(row.amax.download()[0]), nvfp4::fmt::f32_bits(ref.row->amax)) << "row amax";
    EXPECT_EQ(first_diff(ref.row->codes, row.codes.download()), "") << "row codes";
    EXPECT_EQ(first_diff(ref.row->scales, row.plain_scales()), "") << "row scales";
  }
  if (cfg.col) {
    EXPECT_EQ(nvfp4::fmt::f32_bits(col.amax.download()[0]), nvfp4::fmt::f32_bits(ref.col->amax)) << "col amax";
    EXPECT_EQ(first_diff(ref.col->codes, col.codes.download()), "") << "col codes";
    EXPECT_EQ(first_diff(ref.col->scales, col.plain_scales()), "") << "col scales";
  }
}

TEST(CudaNvfp4, MatchesCpuOnEveryCase) {
  REQUIRE_GPU();
  uint64_t seed = 100;
  int cases = 0;
  for (const Config& cfg : kConfigs) {
    for (const Shape& s : kShapes) {
      for (Data d : kData) {
        for (nvfp4::DType dt : {nvfp4::DType::BF16, nvfp4::DType::F32}) {
          SCOPED_TRACE(std::string(cfg.name) + " " + std::to_string(s.M) + "x" + std::to_string(s.K) + " " + data_name(d) +
                       (dt == nvfp4::DType::BF16 ? " bf16" : " f32"));
          const auto x = make(d, s.M, s.K, ++seed, dt == nvfp4::DType::BF16);
          check_against_cpu(x, s.M, s.K, dt, cfg, seed);
          ++cases;
          if (HasFailure()) return;  // one readable failure, not hundreds
        }
      }
    }
  }
  EXPECT_EQ(cases, static_cast<int>(std::size(kConfigs)) * 8 * 4 * 2);
}

TEST(CudaNvfp4, GivenAmaxEntryPointMatchesToo) {
  REQUIRE_GPU();
  for (const Config& cfg : kConfigs) {
    SCOPED_TRACE(cfg.name);
    const auto x = make(Data::heavy, 272, 208, 7, true);
    check_against_cpu(x, 272, 208, nvfp4::DType::BF16, cfg, 7, /*given_amax=*/true);
  }
}

TEST(CudaNvfp4, LargeTensorMatchesCpu) {
  REQUIRE_GPU();
  const auto x = make(Data::gaussian, 2048, 3072, 9, true);
  check_against_cpu(x, 2048, 3072, nvfp4::DType::BF16, kConfigs[9], 9);  // RHT+SR swizzled
}

TEST(CudaNvfp4, GoldenVectorsBitExact) {
  REQUIRE_GPU();
  const int checked = for_each_golden_case("nvfp4", [](const nvfp4::io::SafetensorsFile& f, const std::string& name,
                                                      const nlohmann::json& spec, nvfp4::DType dtype,
                                                      const DeviceBuffer<uint8_t>& dx, int64_t M, int64_t K) {
    DeviceCopy row(M, K, false), col(K, M, false);
    nvfp4::QuantizeOptions kc;
    kc.block = nvfp4::BlockShape{spec.at("tile")[0].get<int>(), 16};
    kc.rht = spec.at("rht_on_columnwise").get<bool>();
    if (kc.rht) kc.rht_sign_mask = spec.at("rht_sign_mask").get<bool>() ? nvfp4::kTeRhtSignMask : 0;
    auto rv = row.view();
    auto cv = col.view();
    nvfp4::cuda::quantize(dx.ptr, dtype, M, K, kc, &rv, &cv, {}, nullptr);
    CUDA_OK(cudaDeviceSynchronize());
    auto bytes = [&](const std::string& n) { return tensor_bytes(f, n); };
    EXPECT_EQ(first_diff(bytes(name + ".row.q"), row.codes.download()), "") << "row codes";
    EXPECT_EQ(first_diff(bytes(name + ".row.s"), row.scales.download()), "") << "row scales";
    EXPECT_EQ(first_diff(bytes(name + ".col.q"), col.codes.download()), "") << "col codes";
    EXPECT_EQ(first_diff(bytes(name + ".col.s"), col.scales.download()), "") << "col scales";
    const auto ra = row.amax.download()[0], ca = col.amax.download()[0];
    float want_r, want_c;
    std::memcpy(&want_r, bytes(name + ".row.amax").data(), 4);
    std::memcpy(&want_c, bytes(name + ".col.amax").data(), 4);
    EXPECT_EQ(nvfp4::fmt::f32_bits(ra), nvfp4::fmt::f32_bits(want_r));
    EXPECT_EQ(nvfp4::fmt::f32_bits(ca), nvfp4::fmt::f32_bits(want_c));
  });
  EXPECT_EQ(checked, 14);
}

TEST(CudaNvfp4, NonFiniteInputIsCountedOnBothEntryPoints) {
  REQUIRE_GPU();
  const int64_t M = 128, K = 256;
  std::vector<uint16_t> h(M * K, nvfp4::fmt::bf16_encode(0.5f));
  h[3] = 0x7FC0;             // NaN
  h[M * K - 1] = 0xFF80;     // -Inf
  h[77 * K + 100] = 0x7F80;  // +Inf
  DeviceBuffer<uint16_t> dx(h.size());
  CUDA_OK(cudaMemcpy(dx.ptr, h.data(), h.size() * 2, cudaMemcpyHostToDevice));
  DeviceCopy row(M, K, false), col(K, M, false);
  DeviceBuffer<uint32_t> bad(1);
  auto rv = row.view();
  auto cv = col.view();
  for (int given = 0; given < 2; ++given) {
    CUDA_OK(cudaMemset(bad.ptr, 0, 4));
    CUDA_OK(cudaMemset(rv.amax, 0, 4));
    CUDA_OK(cudaMemset(cv.amax, 0, 4));
    if (given) {
      nvfp4::cuda::quantize(dx.ptr, nvfp4::DType::BF16, M, K, {}, &rv, &cv, {bad.ptr}, nullptr,
                            nvfp4::cuda::AmaxInput::given);
    } else {
      nvfp4::cuda::quantize(dx.ptr, nvfp4::DType::BF16, M, K, {}, &rv, &cv, {bad.ptr}, nullptr);
    }
    CUDA_OK(cudaDeviceSynchronize());
    EXPECT_EQ(bad.download()[0], 3u) << (given ? "given amax" : "with amax pass");
  }
}

// MXFP4 (both scale rules, RNE and SR, row/col/both) vs the CPU reference.
TEST(CudaMxfp4, MatchesCpuOnEveryCase) {
  REQUIRE_GPU();
  const Shape shapes[] = {{32, 32}, {64, 96}, {96, 64}, {224, 160}, {256, 288}, {1024, 512}, {32, 4096}, {4096, 32}};
  uint64_t seed = 900;
  int cases = 0;
  for (nvfp4::Format f : {nvfp4::Format::mxfp4, nvfp4::Format::mxfp4_ocp}) {
    for (const Shape& s : shapes) {
      for (Data d : kData) {
        for (nvfp4::DType dt : {nvfp4::DType::BF16, nvfp4::DType::F32}) {
          for (int copies = 0; copies < 3; ++copies) {
            for (int sr = 0; sr < 2; ++sr) {
              const bool want_row = copies != 1, want_col = copies != 0;
              SCOPED_TRACE(std::string(nvfp4::format_traits(f).name) + " " + std::to_string(s.M) + "x" +
                           std::to_string(s.K) + " " + data_name(d) + (dt == nvfp4::DType::BF16 ? " bf16" : " f32") +
                           " copies " + std::to_string(copies) + (sr ? " SR" : ""));
              const auto x = make(d, s.M, s.K, ++seed, dt == nvfp4::DType::BF16);
              nvfp4::QuantizeOptions o;
              o.format = f;
              o.rowwise = want_row;
              o.columnwise = want_col;
              o.rounding = sr ? nvfp4::Rounding::stochastic : nvfp4::Rounding::rne;
              o.sr_key = {seed, 4, 5, 6};
              const auto ref = nvfp4::quantize(x, s.M, s.K, o, dt);
              const std::vector<uint8_t> host = input_bytes(x, dt);
              DeviceBuffer<uint8_t> dx(host.size()), rq(x.size() / 2), cq(x.size() / 2), rs(x.size() / 32),
                  cs(x.size() / 32);
              DeviceBuffer<uint32_t> bad(1);
              CUDA_OK(cudaMemcpy(dx.ptr, host.data(), host.size(), cudaMemcpyHostToDevice));
              for (auto* b : {&rq, &cq, &rs, &cs}) CUDA_OK(cudaMemset(b->ptr, 0xAB, b->n));
              CUDA_OK(cudaMemset(bad.ptr, 0, 4));
              nvfp4::cuda::DeviceCopy row{rq.ptr, rs.ptr}, col{cq.ptr, cs.ptr};
              nvfp4::cuda::quantize(dx.ptr, dt, s.M, s.K, o, want_row ? &row : nullptr, want_col ? &col : nullptr,
                                    {bad.ptr}, nullptr);
              CUDA_OK(cudaDeviceSynchronize());
              EXPECT_EQ(bad.download()[0], 0u);
              if (want_row) {
                EXPECT_EQ(first_diff(ref.row->codes, rq.download()), "") << "row codes";
                EXPECT_EQ(first_diff(ref.row->scales, rs.download()), "") << "row E8M0 scales";
              }
              if (want_col) {
                EXPECT_EQ(first_diff(ref.col->codes, cq.download()), "") << "col codes";
                EXPECT_EQ(first_diff(ref.col->scales, cs.download()), "") << "col E8M0 scales";
              }
              ++cases;
              if (HasFailure()) return;
            }
          }
        }
      }
    }
  }
  EXPECT_EQ(cases, 2 * 8 * 4 * 2 * 3 * 2);
}

TEST(CudaMxfp4, GoldenVectorsBitExact) {
  REQUIRE_GPU();
  const int checked = for_each_golden_case("mxfp4_scale_round_up", [](const nvfp4::io::SafetensorsFile& f,
                                                                     const std::string& name, const nlohmann::json&,
                                                                     nvfp4::DType dtype, const DeviceBuffer<uint8_t>& dx,
                                                                     int64_t M, int64_t K) {
    DeviceBuffer<uint8_t> q(M * K / 2), s(M * K / 32);
    nvfp4::cuda::DeviceCopy row{q.ptr, s.ptr};
    nvfp4::QuantizeOptions o;
    o.format = nvfp4::Format::mxfp4;
    nvfp4::cuda::quantize(dx.ptr, dtype, M, K, o, &row, nullptr, {}, nullptr);
    CUDA_OK(cudaDeviceSynchronize());
    EXPECT_EQ(first_diff(tensor_bytes(f, name + ".row.q"), q.download()), "") << "codes";
    EXPECT_EQ(first_diff(tensor_bytes(f, name + ".row.e8m0"), s.download()), "") << "E8M0 scales";
  });
  EXPECT_EQ(checked, 2);
}

// FP8 per-tensor cast + transpose vs the CPU reference, both entry points.
TEST(CudaFp8, CastAndTransposeMatchCpu) {
  REQUIRE_GPU();
  uint64_t seed = 500;
  int cases = 0;
  for (nvfp4::Format f : {nvfp4::Format::fp8_e4m3, nvfp4::Format::fp8_e5m2}) {
    for (const Shape& s : kShapes) {
      for (Data d : kData) {
        for (nvfp4::DType dt : {nvfp4::DType::BF16, nvfp4::DType::F32}) {
          for (int copies = 0; copies < 3; ++copies) {  // row, col, both
            for (int given = 0; given < 2; ++given) {
              const bool want_row = copies != 1, want_col = copies != 0;
              SCOPED_TRACE(std::string(nvfp4::format_traits(f).name) + " " + std::to_string(s.M) + "x" +
                           std::to_string(s.K) + " " + data_name(d) + (dt == nvfp4::DType::BF16 ? " bf16" : " f32") +
                           " copies " + std::to_string(copies) + (given ? " amax given" : ""));
              const auto x = make(d, s.M, s.K, ++seed, dt == nvfp4::DType::BF16);
              nvfp4::QuantizeOptions o;
              o.format = f;
              o.block = nvfp4::BlockShape{0, 0};
              o.rowwise = want_row;
              o.columnwise = want_col;
              const auto ref = nvfp4::quantize(x, s.M, s.K, o, dt);
              const std::vector<uint8_t> host = input_bytes(x, dt);
              DeviceBuffer<uint8_t> dx(host.size()), rq(x.size()), cq(x.size());
              DeviceBuffer<float> rs(1), cs(1), ra(1), ca(1);
              DeviceBuffer<uint32_t> bad(1);
              CUDA_OK(cudaMemcpy(dx.ptr, host.data(), host.size(), cudaMemcpyHostToDevice));
              CUDA_OK(cudaMemset(rq.ptr, 0xAB, x.size()));
              CUDA_OK(cudaMemset(cq.ptr, 0xAB, x.size()));
              CUDA_OK(cudaMemset(bad.ptr, 0, 4));
              nvfp4::cuda::DeviceCopy row{rq.ptr, nullptr, rs.ptr, ra.ptr}, col{cq.ptr, nullptr, cs.ptr, ca.ptr};
              if (given) {
                const float amax = (want_row ? ref.row : ref.col)->amax;
                CUDA_OK(cudaMemcpy(ra.ptr, &amax, 4, cudaMemcpyHostToDevice));
                CUDA_OK(cudaMemcpy(ca.ptr, &amax, 4, cudaMemcpyHostToDevice));
                nvfp4::cuda::quantize(dx.ptr, dt, s.M, s.K, o, want_row ? &row : nullptr, want_col ? &col : nullptr,
                                      {bad.ptr}, nullptr, nvfp4::cuda::AmaxInput::given);
              } else {
                nvfp4::cuda::quantize(dx.ptr, dt, s.M, s.K, o, want_row ? &row : nullptr, want_col ? &col : nullptr,
                                      {bad.ptr}, nullptr);
              }
              CUDA_OK(cudaDeviceSynchronize());
              EXPECT_EQ(bad.download()[0], 0u);
              if (want_row) {
                EXPECT_EQ(first_diff(ref.row->codes, rq.download()), "") << "row codes";
                EXPECT_EQ(nvfp4::fmt::f32_bits(rs.download()[0]), nvfp4::fmt::f32_bits(ref.row->scale_inv[0]));
                EXPECT_EQ(nvfp4::fmt::f32_bits(ra.download()[0]), nvfp4::fmt::f32_bits(ref.row->amax));
              }
              if (want_col) {
                EXPECT_EQ(first_diff(ref.col->codes, cq.download()), "") << "col codes";
                EXPECT_EQ(nvfp4::fmt::f32_bits(cs.download()[0]), nvfp4::fmt::f32_bits(ref.col->scale_inv[0]));
                EXPECT_EQ(nvfp4::fmt::f32_bits(ca.download()[0]), nvfp4::fmt::f32_bits(ref.col->amax));
              }
              ++cases;
              if (HasFailure()) return;
            }
          }
        }
      }
    }
  }
  EXPECT_EQ(cases, 2 * 8 * 4 * 2 * 3 * 2);
}

// multi_amax: every task's amax is the CPU's max |x| (more tasks than one launch takes, sizes
// from one block's worth to many, BF16 and FP32); a value already there larger stays.
TEST(CudaAmax, MultiAmaxMatchesCpu) {
  REQUIRE_GPU();
  uint64_t seed = 700;
  for (nvfp4::DType dt : {nvfp4::DType::BF16, nvfp4::DType::F32}) {
    const int count = 61;
    std::vector<uint8_t> all;  // the tensors one after another, each 16-byte aligned
    std::vector<size_t> at;
    std::vector<int64_t> sizes;
    std::vector<float> want;
    for (int i = 0; i < count; ++i) {
      const int64_t M = 16 * (1 + i % 7), K = 16 * (1 + (i * 37) % 300);
      const auto x = make(i % 3 == 0 ? Data::heavy : Data::gaussian, M, K, ++seed, dt == nvfp4::DType::BF16);
      float m = 0.0f;
      for (float v : x) m = std::max(m, std::fabs(v));
      want.push_back(m);
      const auto host = input_bytes(x, dt);
      at.push_back(all.size());
      sizes.push_back(M * K);
      all.insert(all.end(), host.begin(), host.end());
      all.resize((all.size() + 15) / 16 * 16);
    }
    DeviceBuffer<uint8_t> xs(all.size());
    CUDA_OK(cudaMemcpy(xs.ptr, all.data(), all.size(), cudaMemcpyHostToDevice));
    DeviceBuffer<float> amax(std::vector<float>(count, 0.0f));
    std::vector<nvfp4::cuda::AmaxTask> tasks;
    for (int i = 0; i < count; ++i) tasks.push_back({xs.ptr + at[i], sizes[i], amax.ptr + i});
    want[5] = 1e30f;
    CUDA_OK(cudaMemcpy(amax.ptr + 5, &want[5], 4, cudaMemcpyHostToDevice));
    nvfp4::cuda::multi_amax(tasks.data(), count, dt, nullptr);
    CUDA_OK(cudaDeviceSynchronize());
    const auto got = amax.download();
    for (int i = 0; i < count; ++i) {
      EXPECT_EQ(nvfp4::fmt::f32_bits(got[i]), nvfp4::fmt::f32_bits(want[i])) << "task " << i;
    }
    tasks[3].n = 12;  // not a multiple of 8
    EXPECT_THROW(nvfp4::cuda::multi_amax(tasks.data(), count, dt, nullptr), nvfp4::Error);
  }
}

// quantize_fp8_multi: each task's codes and scale_inv equal the CPU's for that tensor (more
// tasks than one launch takes; edge tiles; E4M3 and E5M2 mixed; BF16 and FP32; row, column or
// both copies); tasks asking for different copies are refused.
TEST(CudaFp8, MultiTensorCastMatchesCpu) {
  REQUIRE_GPU();
  uint64_t seed = 800;
  for (nvfp4::DType dt : {nvfp4::DType::BF16, nvfp4::DType::F32}) {
    for (int copies = 0; copies < 3; ++copies) {  // row, col, both
      const bool want_row = copies != 1, want_col = copies != 0;
      SCOPED_TRACE(std::string(dt == nvfp4::DType::BF16 ? "bf16" : "f32") + " copies " + std::to_string(copies));
      const int count = 30;
      std::vector<std::vector<float>> xs;
      std::vector<nvfp4::QuantizedTensor> refs;
      std::vector<uint8_t> all;
      std::vector<size_t> at, codes_at;
      std::vector<int64_t> Ms, Ks;
      size_t codes_bytes = 0;
      for (int i = 0; i < count; ++i) {
        const int64_t M = 16 * (1 + (i * 5) % 11), K = 16 * (1 + (i * 7) % 13);
        Ms.push_back(M);
        Ks.push_back(K);
        xs.push_back(make(i % 4 == 3 ? Data::heavy : Data::gaussian, M, K, ++seed, dt == nvfp4::DType::BF16));
        nvfp4::QuantizeOptions o;
        o.format = i % 3 == 0 ? nvfp4::Format::fp8_e5m2 : nvfp4::Format::fp8_e4m3;
        o.block = nvfp4::BlockShape{0, 0};
        o.rowwise = want_row;
        o.columnwise = want_col;
        refs.push_back(nvfp4::quantize(xs.back(), M, K, o, dt));
        const auto host = input_bytes(xs.back(), dt);
        at.push_back(all.size());
        all.insert(all.end(), host.begin(), host.end());
        all.resize((all.size() + 15) / 16 * 16);
        codes_at.push_back(codes_bytes);
        codes_bytes += (size_t(M * K) + 15) / 16 * 16;
      }
      DeviceBuffer<uint8_t> dx(all.size()), rq(codes_bytes), cq(codes_bytes);
      CUDA_OK(cudaMemcpy(dx.ptr, all.data(), all.size(), cudaMemcpyHostToDevice));
      DeviceBuffer<float> f(std::vector<float>(size_t(count) * 12, 0.0f));  // per task: amax, row and col scale_inv
      DeviceBuffer<uint32_t> bad(std::vector<uint32_t>(count, 0));
      std::vector<nvfp4::cuda::Fp8Task> tasks;
      for (int i = 0; i < count; ++i) {
        const auto& ref = refs[i];
        const float amax = (want_row ? ref.row : ref.col)->amax;
        CUDA_OK(cudaMemcpy(f.ptr + 12 * i, &amax, 4, cudaMemcpyHostToDevice));
        nvfp4::cuda::Fp8Task t;
        t.x = dx.ptr + at[i];
        t.M = Ms[i];
        t.K = Ks[i];
        t.format = ref.options.format;
        if (want_row) t.row = {rq.ptr + codes_at[i], nullptr, f.ptr + 12 * i + 4, f.ptr + 12 * i};
        if (want_col) t.col = {cq.ptr + codes_at[i], nullptr, f.ptr + 12 * i + 8, f.ptr + 12 * i};
        t.nonfinite_count = bad.ptr + i;
        tasks.push_back(t);
      }
      nvfp4::cuda::quantize_fp8_multi(tasks.data(), count, dt, nullptr);
      CUDA_OK(cudaDeviceSynchronize());
      const auto rcodes = rq.download(), ccodes = cq.download();
      const auto fs = f.download();
      for (int i = 0; i < count; ++i) {
        const auto& ref = refs[i];
        const size_t n = xs[i].size();
        if (want_row) {
          EXPECT_EQ(first_diff(ref.row->codes, std::vector<uint8_t>(rcodes.begin() + codes_at[i],
                                                                    rcodes.begin() + codes_at[i] + n)), "")
              << "task " << i << " row codes";
          EXPECT_EQ(nvfp4::fmt::f32_bits(fs[12 * i + 4]), nvfp4::fmt::f32_bits(ref.row->scale_inv[0])) << "task " << i;
        }
        if (want_col) {
          EXPECT_EQ(first_diff(ref.col->codes, std::vector<uint8_t>(ccodes.begin() + codes_at[i],
                                                                    ccodes.begin() + codes_at[i] + n)), "")
              << "task " << i << " col codes";
          EXPECT_EQ(nvfp4::fmt::f32_bits(fs[12 * i + 8]), nvfp4::fmt::f32_bits(ref.col->scale_inv[0])) << "task " << i;
        }
      }
      for (uint32_t b : bad.download()) EXPECT_EQ(b, 0u);
      if (copies == 2) {
        tasks[4].col.codes = nullptr;
        EXPECT_THROW(nvfp4::cuda::quantize_fp8_multi(tasks.data(), count, dt, nullptr), nvfp4::Error);
      }
    }
  }
}

// FP8 with 1x128 / 128x128 block scales vs the CPU reference: codes, every scale_inv, amax.
TEST(CudaFp8, BlockScaledCastAndTransposeMatchCpu) {
  REQUIRE_GPU();
  uint64_t seed = 900;
  int cases = 0;
  const nvfp4::BlockShape blocks[] = {{1, 128}, {128, 128}};
  for (nvfp4::Format f : {nvfp4::Format::fp8_e4m3, nvfp4::Format::fp8_e5m2}) {
    for (const nvfp4::BlockShape b : blocks) {
      for (const Shape& s : kShapes) {
        for (Data d : kData) {
          for (nvfp4::DType dt : {nvfp4::DType::BF16, nvfp4::DType::F32}) {
            for (int copies = 0; copies < 3; ++copies) {  // row, col, both
              const bool want_row = copies != 1, want_col = copies != 0;
              SCOPED_TRACE(std::string(nvfp4::format_traits(f).name) + " " + nvfp4::block_name(b) + " " +
                           std::to_string(s.M) + "x" + std::to_string(s.K) + " " + data_name(d) +
                           (dt == nvfp4::DType::BF16 ? " bf16" : " f32") + " copies " + std::to_string(copies));
              const auto x = make(d, s.M, s.K, ++seed, dt == nvfp4::DType::BF16);
              nvfp4::QuantizeOptions o;
              o.format = f;
              o.block = b;
              o.rowwise = want_row;
              o.columnwise = want_col;
              const auto ref = nvfp4::quantize(x, s.M, s.K, o, dt);
              const std::vector<uint8_t> host = input_bytes(x, dt);
              const int64_t rsn = want_row ? ref.row->scale_rows * ref.row->scale_cols : 1;
              const int64_t csn = want_col ? ref.col->scale_rows * ref.col->scale_cols : 1;
              DeviceBuffer<uint8_t> dx(host.size()), rq(x.size()), cq(x.size());
              DeviceBuffer<float> rs(rsn), cs(csn), ra(1), ca(1);
              DeviceBuffer<uint32_t> bad(1);
              CUDA_OK(cudaMemcpy(dx.ptr, host.data(), host.size(), cudaMemcpyHostToDevice));
              CUDA_OK(cudaMemset(rq.ptr, 0xAB, x.size()));
              CUDA_OK(cudaMemset(cq.ptr, 0xAB, x.size()));
              CUDA_OK(cudaMemset(rs.ptr, 0xFF, rsn * 4));
              CUDA_OK(cudaMemset(cs.ptr, 0xFF, csn * 4));
              CUDA_OK(cudaMemset(ra.ptr, 0xFF, 4));
              CUDA_OK(cudaMemset(ca.ptr, 0xFF, 4));
              CUDA_OK(cudaMemset(bad.ptr, 0, 4));
              nvfp4::cuda::DeviceCopy row{rq.ptr, nullptr, rs.ptr, ra.ptr}, col{cq.ptr, nullptr, cs.ptr, ca.ptr};
              nvfp4::cuda::quantize(dx.ptr, dt, s.M, s.K, o, want_row ? &row : nullptr, want_col ? &col : nullptr,
                                    {bad.ptr}, nullptr);
              CUDA_OK(cudaDeviceSynchronize());
              EXPECT_EQ(bad.download()[0], 0u);
              auto bits = [](const std::vector<float>& v) {
                std::vector<uint8_t> out(v.size() * 4);
                std::memcpy(out.data(), v.data(), out.size());
                return out;
              };
              if (want_row) {
                EXPECT_EQ(first_diff(ref.row->codes, rq.download()), "") << "row codes";
                EXPECT_EQ(first_diff(bits(ref.row->scale_inv), bits(rs.download())), "") << "row scale_inv";
                EXPECT_EQ(nvfp4::fmt::f32_bits(ra.download()[0]), nvfp4::fmt::f32_bits(ref.row->amax));
              }
              if (want_col) {
                EXPECT_EQ(first_diff(ref.col->codes, cq.download()), "") << "col codes";
                EXPECT_EQ(first_diff(bits(ref.col->scale_inv), bits(cs.download())), "") << "col scale_inv";
                EXPECT_EQ(nvfp4::fmt::f32_bits(ca.download()[0]), nvfp4::fmt::f32_bits(ref.col->amax));
              }
              ++cases;
              if (HasFailure()) return;
            }
          }
        }
      }
    }
  }
  EXPECT_EQ(cases, 2 * 2 * 8 * 4 * 2 * 3);
}

// The one quantize entry dispatches on format and block and explains what it cannot do.
TEST(CudaQuantize, DispatchErrorsAreExplained) {
  REQUIRE_GPU();
  DeviceBuffer<uint8_t> q(64 * 64), sc(64 * 4);
  DeviceBuffer<float> out(64 * 64), si(1);
  const nvfp4::QuantizeOptions mx = opts(nvfp4::Format::mxfp4);
  const nvfp4::cuda::DeviceCopy fp4{q.ptr, sc.ptr}, fp8{q.ptr, nullptr, si.ptr};
  DeviceBuffer<uint16_t> dx(64 * 64);
  expect_error([&] {
    nvfp4::cuda::quantize(dx.ptr, nvfp4::DType::BF16, 64, 64, opts(nvfp4::Format::fp8_e4m3, nvfp4::BlockShape{1, 64}),
                          &fp8, nullptr, {}, nullptr);
  }, "1x128");
  expect_error([&] {
    nvfp4::cuda::quantize(dx.ptr, nvfp4::DType::BF16, 64, 64, opts(nvfp4::Format::fp8_e4m3, nvfp4::BlockShape{1, 128}),
                          &fp8, nullptr, {}, nullptr, nvfp4::cuda::AmaxInput::given);
  }, "per-tensor scaling only");
  expect_error([&] { nvfp4::cuda::quantize(dx.ptr, nvfp4::DType::BF16, 64, 64, mx, &fp4, nullptr, {}, nullptr, nvfp4::cuda::AmaxInput::given); },
         "no per-tensor amax");
  nvfp4::QuantizeOptions mx_rht = mx;
  mx_rht.rht = true;
  expect_error([&] { nvfp4::cuda::quantize(dx.ptr, nvfp4::DType::BF16, 64, 64, mx_rht, nullptr, &fp4, {}, nullptr); },
         "needs scratch");
  expect_error([&] { nvfp4::cuda::quantize(dx.ptr, nvfp4::DType::BF16, 64, 64, opts(nvfp4::Format::mxfp4, nvfp4::BlockShape{1, 16}), &fp4, nullptr, {}, nullptr); },
         "block 1x16 is not 1x32");
}


TEST(CudaFp8, NonFiniteIsCountedAndBadFormatRejected) {
  REQUIRE_GPU();
  std::vector<uint16_t> h(64 * 64, nvfp4::fmt::bf16_encode(1.5f));
  h[10] = 0x7FC0;
  DeviceBuffer<uint16_t> dx(h.size());
  CUDA_OK(cudaMemcpy(dx.ptr, h.data(), h.size() * 2, cudaMemcpyHostToDevice));
  DeviceBuffer<uint8_t> q(h.size());
  DeviceBuffer<float> si(1), am(1);
  DeviceBuffer<uint32_t> bad(1);
  CUDA_OK(cudaMemset(bad.ptr, 0, 4));
  nvfp4::cuda::DeviceCopy row{q.ptr, nullptr, si.ptr, am.ptr};
  nvfp4::QuantizeOptions o;
  o.format = nvfp4::Format::fp8_e4m3;
  nvfp4::cuda::quantize(dx.ptr, nvfp4::DType::BF16, 64, 64, o, &row, nullptr, {bad.ptr}, nullptr);
  CUDA_OK(cudaDeviceSynchronize());
  EXPECT_EQ(bad.download()[0], 1u);
  o.format = nvfp4::Format::nvfp4;  // the FP8 copy has no byte scales for NVFP4's quantizer
  EXPECT_THROW(nvfp4::cuda::quantize(dx.ptr, nvfp4::DType::BF16, 64, 64, o, &row, nullptr, {}, nullptr), nvfp4::Error);
}

TEST(CudaNvfp4, BadArgumentsAreExplained) {
  REQUIRE_GPU();
  DeviceBuffer<uint16_t> dx(64 * 64);
  DeviceCopy row(64, 64, false);
  auto rv = row.view();
  expect_error([&] { nvfp4::cuda::quantize(dx.ptr, nvfp4::DType::BF16, 64, 40, {}, &rv, nullptr, {}, nullptr); }, "K = 40");
  expect_error([&] { nvfp4::cuda::quantize(dx.ptr, nvfp4::DType::BF16, 40, 64, {}, &rv, nullptr, {}, nullptr); }, "M = 40");
  expect_error([&] { nvfp4::cuda::quantize(dx.ptr, nvfp4::DType::F16, 64, 64, {}, &rv, nullptr, {}, nullptr); }, "F16");
  nvfp4::QuantizeOptions tile32;
  tile32.block = nvfp4::BlockShape{32, 16};
  expect_error([&] { nvfp4::cuda::quantize(dx.ptr, nvfp4::DType::BF16, 64, 64, tile32, &rv, nullptr, {}, nullptr); },
         "block 32x16");
  nvfp4::QuantizeOptions rht;
  rht.rht = true;
  expect_error([&] { nvfp4::cuda::quantize(dx.ptr, nvfp4::DType::BF16, 64, 64, rht, &rv, nullptr, {}, nullptr); },
         "column-wise");
  expect_error([&] { nvfp4::cuda::quantize(dx.ptr, nvfp4::DType::BF16, 64, 64, {}, nullptr, nullptr, {}, nullptr); },
         "neither");
  nvfp4::cuda::DeviceCopy misaligned{row.codes.ptr + 4, row.scales.ptr, nullptr, row.amax.ptr};
  expect_error([&] { nvfp4::cuda::quantize(dx.ptr, nvfp4::DType::BF16, 64, 64, {}, &misaligned, nullptr, {}, nullptr); },
         "8-byte aligned");
  expect_error([&] { nvfp4::cuda::quantize(dx.ptr + 1, nvfp4::DType::BF16, 64, 64, {}, &rv, nullptr, {}, nullptr); },
         "16-byte aligned");
}

}  // namespace

namespace {

// The 32-point RHT of MXFP4's column-wise copies: bit-identical to fmt::rht32 on the host, for
// BF16 and FP32 storage, with an odd column count.
TEST(CudaRht32, ColumnSegmentsMatchTheHostTransform) {
  REQUIRE_GPU();
  const int64_t M = 96, K = 37;
  std::mt19937 rng(32);
  std::normal_distribution<float> nd;
  std::vector<float> x(static_cast<size_t>(M * K));
  for (auto& v : x) v = nvfp4::fmt::bf16_round(nd(rng) * (rng() % 9 == 0 ? 30.0f : 1.0f));
  std::vector<float> want32 = x, want16 = x;
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t m0 = 0; m0 < M; m0 += 32) {
      float v[32];
      for (int j = 0; j < 32; ++j) v[j] = x[(m0 + j) * K + k];
      nvfp4::fmt::rht32(v, nvfp4::fmt::kRht32SignMask);
      for (int j = 0; j < 32; ++j) {
        want32[(m0 + j) * K + k] = v[j];
        want16[(m0 + j) * K + k] = nvfp4::fmt::bf16_round(v[j]);
      }
    }
  }
  DeviceBuffer<float> dx(x), dout(x.size());
  nvfp4::cuda::rht32_columns(dx.ptr, nvfp4::DType::F32, M, K, dout.ptr, nullptr);
  const auto got32 = dout.download();
  EXPECT_EQ(std::memcmp(got32.data(), want32.data(), x.size() * 4), 0);

  std::vector<uint16_t> xb(x.size());
  for (size_t i = 0; i < x.size(); ++i) xb[i] = nvfp4::fmt::bf16_encode(x[i]);
  DeviceBuffer<uint16_t> db(xb), dbo(xb.size());
  nvfp4::cuda::rht32_columns(db.ptr, nvfp4::DType::BF16, M, K, dbo.ptr, nullptr);
  const auto got16 = dbo.download();
  size_t bad = 0;
  for (size_t i = 0; i < x.size(); ++i) bad += nvfp4::fmt::bf16_decode(got16[i]) != want16[i];
  EXPECT_EQ(bad, 0u);
  EXPECT_THROW(nvfp4::cuda::rht32_columns(dx.ptr, nvfp4::DType::F32, 48, K, dout.ptr, nullptr), nvfp4::Error);
}

}  // namespace
