// The fused NVFP4 kernels (include/nvfp4/cuda_gemm_nvfp4.hpp): the GEMV order of the codes and
// its inverse (host, runs without a GPU); cuda::nvfp4_gemv exact on one-term sums for every code
// and every block scale; nvfp4_gemv and nvfp4_gemm against FP64 dot products of the format core's
// decoded weights on declarative lists of shapes (odd OC, every n-tile count, tiles cut off, bias
// or not, W4A4's row scale, BF16 and F32 out), against decode-then-gemv_bf16, deterministic; the
// device repack and decode; the shapes they do not take are errors.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "cuda/test_ops_cuda_support.hpp"
#include "kernels/cuda/gemm/nvfp4_decode.cuh"
#include "nvfp4/cuda_gemm_nvfp4.hpp"

namespace {

using namespace cuda_ops_test;
using nvfp4::fmt::e2m1_decode;
using nvfp4::fmt::e4m3_decode;

// Element e of row o in checkpoint order: byte o * C/2 + e/2, low nibble for even e.
uint8_t code_at(const std::vector<uint8_t>& codes, int64_t C, int64_t o, int64_t e) {
  const uint8_t b = codes[static_cast<size_t>(o * (C / 2) + e / 2)];
  return (e & 1) ? b >> 4 : b & 15;
}

TEST(CudaNvfp4Gemv, GemvOrderPairsAdjacentElementsAndUnpacksBack) {
  constexpr int64_t OC = 3, C = 64;
  std::vector<uint8_t> src(OC * C / 2), packed(src.size()), back(src.size());
  std::mt19937 rng(7);
  for (auto& b : src) b = static_cast<uint8_t>(rng());
  cu::repack_nvfp4_codes_for_gemv(packed.data(), src.data(), OC, C);
  cu::unpack_nvfp4_codes_from_gemv(back.data(), packed.data(), OC, C);
  EXPECT_EQ(back, src);
  // gemv_pair_bits(word, j) is elements 2j (low half) and 2j + 1 (high half) of the word as the
  // BF16 bits of e2m1 × 2^-126, which the checkpoint-order route makes from the two nibbles.
  namespace gd = nvfp4::cuda::gemm_detail;
  for (int64_t o = 0; o < OC; ++o) {
    for (int64_t word = 0; word < C / 8; ++word) {
      uint32_t w = 0;
      std::memcpy(&w, packed.data() + o * (C / 2) + 4 * word, 4);
      for (int j = 0; j < 4; ++j) {
        const uint32_t lo = code_at(src, C, o, 8 * word + 2 * j), hi = code_at(src, C, o, 8 * word + 2 * j + 1);
        EXPECT_EQ(gd::gemv_pair_bits(w, j), gd::e2m1x2_times_2pow_minus126(lo | (hi << 16))) << o << " " << word << " " << j;
      }
    }
  }
}

// The kernels' register decode (nvfp4_decode.cuh, its host twin here: runs without a GPU): for
// every pair of codes in both halves of a word, every finite non-negative E4M3 scale and every
// pair position, the BF16 bits of e2m1 × scale × 2^-8 (the kernels' decoded weight, whose 2^8 the
// epilogue's factor carries) as the format core decodes them — by the BF16 route, the FP32 route,
// and from a checkpoint-order byte — and the scale pair is scale × 2^118.
TEST(CudaNvfp4Gemv, RegisterDecodeIsTheFormatCoresForEveryCodeAndScale) {
  namespace gd = nvfp4::cuda::gemm_detail;
  for (uint32_t s = 0; s < 0x7F; ++s) {
    const uint32_t s2 = gd::e4m3_to_bf16x2(s);
    ASSERT_EQ(bf16_decode(static_cast<uint16_t>(s2)), std::ldexp(e4m3_decode(static_cast<uint8_t>(s)), 118))
        << "scale 0x" << std::hex << s;
    ASSERT_EQ(s2 >> 16, s2 & 0xFFFFu);
    for (uint32_t lo = 0; lo < 16; ++lo) {
      for (uint32_t hi = 0; hi < 16; ++hi) {
        for (int j = 0; j < 4; ++j) {
          // A GEMV-order word whose elements 2j, 2j + 1 are lo, hi (the rest random-looking).
          const uint32_t ck = (0x9E3779B9u & ~(0xFFu << (8 * j))) | (lo << (8 * j)) | (hi << (8 * j + 4));
          uint32_t word = 0;
          cu::repack_nvfp4_codes_for_gemv(reinterpret_cast<uint8_t*>(&word), reinterpret_cast<const uint8_t*>(&ck), 1, 8);
          const uint32_t pair = gd::decode_pair(word, j, s2);
          ASSERT_EQ(gd::scale_pair_fp32(gd::gemv_pair_bits(word, j), s2), pair) << "the FP32 route (NVFP4_DECODE_VIA_FP32)";
          ASSERT_EQ(gd::decode_byte_pair(lo | (hi << 4), s2), pair) << "checkpoint order";
          const float scale = e4m3_decode(static_cast<uint8_t>(s));
          const uint16_t want_lo = bf16_encode(std::ldexp(e2m1_decode(static_cast<uint8_t>(lo)) * scale, -8));
          const uint16_t want_hi = bf16_encode(std::ldexp(e2m1_decode(static_cast<uint8_t>(hi)) * scale, -8));
          ASSERT_EQ(bf16_decode(want_lo) * 256.0f, e2m1_decode(static_cast<uint8_t>(lo)) * scale) << "exact";
          ASSERT_EQ(pair & 0xFFFFu, want_lo) << "code " << lo << " scale 0x" << std::hex << s;
          ASSERT_EQ(pair >> 16, want_hi) << "code " << hi << " scale 0x" << std::hex << s;
        }
      }
    }
  }
}

struct Nvfp4Case {
  std::vector<uint8_t> codes;   // checkpoint order
  std::vector<uint8_t> scales;  // (OC, C/16) e4m3
  float decode = 1.0f;
};

// The weight as the format core decodes it (without the tensor factor).
double weight(const Nvfp4Case& w, int64_t C, int64_t o, int64_t e) {
  return static_cast<double>(e2m1_decode(code_at(w.codes, C, o, e))) *
         e4m3_decode(w.scales[static_cast<size_t>(o * (C / 16) + e / 16)]);
}

struct DeviceNvfp4 {
  DeviceBuffer<uint8_t> codes, scales;
  DeviceBuffer<float> decode;
  DeviceNvfp4(const Nvfp4Case& w, int64_t OC, int64_t C)
      : codes(gemv_order(w.codes, OC, C)), scales(w.scales), decode(std::vector<float>{w.decode}) {}
  static std::vector<uint8_t> gemv_order(const std::vector<uint8_t>& c, int64_t OC, int64_t C) {
    std::vector<uint8_t> p(c.size());
    cu::repack_nvfp4_codes_for_gemv(p.data(), c.data(), OC, C);
    return p;
  }
  cu::Nvfp4Weight view() const { return {codes.ptr, scales.ptr, decode.ptr}; }
};

// Every E2M1 code (both zeros included) times every finite non-negative E4M3 scale (zero and the
// subnormals included), one term per row at a position that walks through every column of the
// 128-column step: the sum has one non-zero product, so the result must be exact.
TEST(CudaNvfp4Gemv, OneTermSumsAreExactForEveryCodeAndScale) {
  REQUIRE_GPU();
  constexpr int64_t C = 128;
  std::vector<std::pair<uint8_t, uint8_t>> terms;  // (code, scale)
  for (int code = 0; code < 16; ++code)
    for (int s = 0; s < 0x7F; ++s) terms.push_back({static_cast<uint8_t>(code), static_cast<uint8_t>(s)});
  const int64_t OC = static_cast<int64_t>(terms.size());
  Nvfp4Case w;
  w.codes.assign(static_cast<size_t>(OC * C / 2), 0);
  w.scales.assign(static_cast<size_t>(OC * C / 16), 0x38);  // 1.0 where the codes are 0
  std::vector<float> want(static_cast<size_t>(OC));
  for (int64_t o = 0; o < OC; ++o) {
    const int64_t e = (o * 37) % C;
    const auto [code, s] = terms[static_cast<size_t>(o)];
    uint8_t& b = w.codes[static_cast<size_t>(o * (C / 2) + e / 2)];
    b = static_cast<uint8_t>((e & 1) ? (b & 0x0F) | (code << 4) : (b & 0xF0) | code);
    w.scales[static_cast<size_t>(o * (C / 16) + e / 16)] = s;
    // The sum of one product and +0s: a -0 product (code 8, or a zero scale) sums to +0.
    want[static_cast<size_t>(o)] = e2m1_decode(code) * e4m3_decode(s) + 0.0f;
  }
  const DeviceNvfp4 d(w, OC, C);
  DeviceBuffer<uint16_t> x(std::vector<uint16_t>(C, bf16_encode(1.0f)));
  DeviceBuffer<float> out(OC);
  cu::nvfp4_gemv(out.ptr, nvfp4::DType::F32, x.ptr, d.view(), nullptr, 1, C, OC, nullptr);
  const auto got = out.download();
  int bad = 0;
  for (int64_t o = 0; o < OC; ++o) {
    if (f32_bits({got[static_cast<size_t>(o)]}) != f32_bits({want[static_cast<size_t>(o)]}) && bad++ < 5) {
      ADD_FAILURE() << "code " << int(terms[static_cast<size_t>(o)].first) << " scale 0x" << std::hex
                    << int(terms[static_cast<size_t>(o)].second) << std::dec << ": got " << got[static_cast<size_t>(o)]
                    << ", want " << want[static_cast<size_t>(o)];
    }
  }
  EXPECT_EQ(bad, 0);
}

// A random NVFP4 weight (every code; block scales from the max rule's range and a few tiny ones).
Nvfp4Case random_weight(int64_t OC, int64_t C, std::mt19937_64& rng) {
  Nvfp4Case w;
  w.codes.resize(static_cast<size_t>(OC * C / 2));
  for (auto& b : w.codes) b = static_cast<uint8_t>(rng());
  w.scales.resize(static_cast<size_t>(OC * C / 16));
  for (auto& s : w.scales) s = static_cast<uint8_t>(rng() % 8 == 0 ? rng() % 16 : 0x30 + rng() % 0x4E);  // to 448
  w.decode = 0.0123f;
  return w;
}

// out (N, OC) by `run` (the kernel under test: out, dtype, x, weight, bias, row scale) against FP64
// sums of the format core's decoded weights, for no bias, a bias, and a bias with W4A4's per-token
// row scale: within the FP32 accumulation bound (2^-20 of the sum of |products| per 16-element
// tensor-core step and per warp of a split — four FP32 roundings' worth, as the tensor cores'
// order of additions inside a step is not documented — plus the final rounding), the BF16 output
// the F32 one rounded once, the same bits run to run; for N <= 8 also against
// decode-then-gemv_bf16 up to twice that bound.
template <class Run>
void check_against_double(int64_t N, int64_t C, int64_t OC, uint64_t seed, Run&& run) {
  std::mt19937_64 rng(seed);
  const Nvfp4Case w = random_weight(OC, C, rng);
  const auto x = randn_bf16(static_cast<size_t>(N * C), seed + 1), b = randn_bf16(static_cast<size_t>(OC), seed + 2);
  const DeviceNvfp4 d(w, OC, C);
  DeviceBuffer<uint16_t> dx(to_bits(x)), db(to_bits(b)), out16(N * OC), again(N * OC);
  DeviceBuffer<float> out32(N * OC), dec32(N * OC);
  // W4A4's per-token decode factors (x would hold quantized values; any BF16 x tests the math).
  std::vector<float> rs(static_cast<size_t>(N));
  for (auto& r : rs) r = std::ldexp(1.0f + static_cast<float>(rng() % 1000) / 1000.0f, static_cast<int>(rng() % 9) - 4);
  DeviceBuffer<float> drs(rs);
  std::vector<double> dot(static_cast<size_t>(N * OC)), mag(dot.size());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < OC; ++o) {
      double sum = 0, m = 0;
      for (int64_t e = 0; e < C; ++e) {
        const double p = weight(w, C, o, e) * x[static_cast<size_t>(n * C + e)];
        sum += p, m += std::fabs(p);
      }
      dot[static_cast<size_t>(n * OC + o)] = sum, mag[static_cast<size_t>(n * OC + o)] = m;
    }
  // The decode-then-GEMV path (N <= 8): the weights e2m1 × scale in BF16 (exact), gemv_bf16 to F32.
  std::vector<float> wd(static_cast<size_t>(OC * C));
  for (int64_t o = 0; o < OC; ++o)
    for (int64_t e = 0; e < C; ++e) wd[static_cast<size_t>(o * C + e)] = static_cast<float>(weight(w, C, o, e));
  DeviceBuffer<uint16_t> dwd(to_bits(wd));
  for (const int variant : {0, 1, 2}) {  // plain, + bias, · row scale + bias
    const bool bias = variant > 0, rows = variant == 2;
    SCOPED_TRACE("N=" + std::to_string(N) + " C=" + std::to_string(C) + " OC=" + std::to_string(OC) +
                 (bias ? " bias" : "") + (rows ? " row_scale" : ""));
    std::vector<float> ref(dot.size());
    std::vector<double> extra(dot.size());
    for (int64_t n = 0; n < N; ++n)
      for (int64_t o = 0; o < OC; ++o) {
        const size_t i = static_cast<size_t>(n * OC + o);
        const double f = static_cast<double>(w.decode) * (rows ? rs[static_cast<size_t>(n)] : 1.0f);
        const double y = dot[i] * f + (bias ? b[static_cast<size_t>(o)] : 0.0);
        ref[i] = static_cast<float>(y);
        // C/16 steps and up to 8 warps' sums, each within 2^-20 of the |products| it adds.
        extra[i] = (static_cast<double>(C) / 16 + 8) * 4 * kReassoc * mag[i] * f + 0x1p-24 * std::fabs(y);
      }
    const uint16_t* bp = bias ? db.ptr : nullptr;
    const float* rp = rows ? drs.ptr : nullptr;
    run(out16.ptr, nvfp4::DType::BF16, dx.ptr, d.view(), bp, rp);
    run(out32.ptr, nvfp4::DType::F32, dx.ptr, d.view(), bp, rp);
    run(again.ptr, nvfp4::DType::BF16, dx.ptr, d.view(), bp, rp);
    EXPECT_TRUE(close("f32 out", out32.download(), ref, 0, extra));
    EXPECT_TRUE(close("bf16 out", download_bf16(out16), ref, 1, extra));
    EXPECT_EQ(first_diff(again.download(), out16.download()), -1) << "not deterministic";
    EXPECT_EQ(first_diff(out16.download(), to_bits(out32.download())), -1) << "BF16 out is not F32 out rounded once";
    if (N <= cu::kGemvMaxRows) {
      cu::gemv_bf16(dec32.ptr, nvfp4::DType::F32, dx.ptr, dwd.ptr, nullptr, N, C, OC, nullptr);
      auto dec = dec32.download();
      for (int64_t n = 0; n < N; ++n)
        for (int64_t o = 0; o < OC; ++o) {
          float& v = dec[static_cast<size_t>(n * OC + o)];
          const float bb = bias ? b[static_cast<size_t>(o)] : 0.0f;
          v = rows ? std::fmaf(v * w.decode, rs[static_cast<size_t>(n)], bb) : std::fmaf(v, w.decode, bb);
        }
      std::vector<double> twice(extra);
      for (auto& e : twice) e *= 2;
      EXPECT_TRUE(close("vs decode-then-gemv", out32.download(), dec, 0, twice));
    }
  }
}

// nvfp4_gemv: C % 128 = 0, 32, 64, 96 (a partial last step), one step to many, every n-tile count.
TEST(CudaNvfp4Gemv, MatchesDoubleDotProductsAndTheDecodedGemv) {
  REQUIRE_GPU();
  struct Shape {
    int64_t N, C, OC;
  };
  uint64_t seed = 1700;
  for (const auto& sh : {Shape{1, 128, 16}, Shape{1, 4096, 1000}, Shape{3, 256, 40}, Shape{8, 2048, 77},
                         Shape{9, 1024, 64}, Shape{16, 384, 33}, Shape{17, 512, 48}, Shape{32, 1280, 100},
                         Shape{33, 256, 16}, Shape{64, 2048, 130}, Shape{5, 14336, 24}, Shape{2, 32, 20},
                         Shape{4, 64, 17}, Shape{7, 96, 31}, Shape{12, 160, 8}, Shape{40, 224, 50}}) {
    check_against_double(sh.N, sh.C, sh.OC, seed += 10, [&](void* out, nvfp4::DType dt, const uint16_t* x,
                                                             const cu::Nvfp4Weight& w, const uint16_t* b, const float* r) {
      cu::nvfp4_gemv(out, dt, x, w, b, sh.N, sh.C, sh.OC, nullptr, r);
    });
  }
}

// Every split along C the kernel can take (1, 2, 4, 8 warps per 16-row block; 16 up to 8 tokens)
// within the bound; 16 above 8 tokens is an error.
TEST(CudaNvfp4Gemv, EverySplitMatchesDoubleDotProducts) {
  REQUIRE_GPU();
  for (const int split : {1, 2, 4, 8, 16}) {
    SCOPED_TRACE("split " + std::to_string(split));
    check_against_double(5, 1024, 50, 1900 + split, [&](void* out, nvfp4::DType dt, const uint16_t* x,
                                                         const cu::Nvfp4Weight& w, const uint16_t* b, const float* r) {
      cu::nvfp4_gemv(out, dt, x, w, b, 5, 1024, 50, nullptr, r, split);
    });
  }
  check_against_double(12, 1024, 50, 1920, [&](void* out, nvfp4::DType dt, const uint16_t* x, const cu::Nvfp4Weight& w,
                                                const uint16_t* b, const float* r) {
    nvfp4::test::expect_error([&] { cu::nvfp4_gemv(out, dt, x, w, b, 12, 1024, 50, nullptr, r, 16); }, "split = 16");
    cu::nvfp4_gemv(out, dt, x, w, b, 12, 1024, 50, nullptr, r, 8);
  });
}

// Every one-n-tile configuration (ring depth, accumulator sets, warps an SM) at every split (1-16
// warps along C), on a C with a partial last step for some splits and shapes off the 16-row tile;
// bad variants and splits are errors.
TEST(CudaNvfp4Gemv, EveryConfigurationMatchesDoubleDotProducts) {
  namespace gd = nvfp4::cuda::gemm_detail;
  ASSERT_GE(gd::nvfp4_gemv_variants(), 2);
  REQUIRE_GPU();
  for (int v = 0; v < gd::nvfp4_gemv_variants(); ++v) {
    for (const int split : {1, 2, 4, 8, 16}) {
      SCOPED_TRACE("variant " + std::to_string(v) + " (" + gd::nvfp4_gemv_variant_name(v) + ") split " +
                   std::to_string(split));
      for (const auto [N, C, OC] : {std::tuple<int64_t, int64_t, int64_t>{1, 2080, 37}, {8, 4096, 48}, {5, 160, 20},
                                    {13, 1056, 40}, {32, 512, 24}}) {
        if (N > gd::nvfp4_gemv_variant_max_rows(v)) {  // refused with a message, not run
          nvfp4::test::expect_error(
              [&] {
                gd::nvfp4_gemv_variant(v, split, nullptr, nvfp4::DType::F32, nullptr, {}, nullptr, N, C, OC, nullptr,
                                       nullptr);
              },
              "takes 1 <= N <=");
          continue;
        }
        check_against_double(N, C, OC, 2200 + 10 * v + split, [&](void* out, nvfp4::DType dt, const uint16_t* x,
                                                                 const cu::Nvfp4Weight& w, const uint16_t* b, const float* r) {
          gd::nvfp4_gemv_variant(v, split, out, dt, x, w, b, N, C, OC, nullptr, r);
        });
      }
    }
  }
  DeviceBuffer<float> out(8);
  DeviceBuffer<uint16_t> x(std::vector<uint16_t>(128, 0x3F80));
  Nvfp4Case wc;
  wc.codes.assign(64, 0x11);
  wc.scales.assign(8, 0x38);
  const DeviceNvfp4 d(wc, 1, 128);
  EXPECT_THROW(gd::nvfp4_gemv_variant(gd::nvfp4_gemv_variants(), 1, out.ptr, nvfp4::DType::F32, x.ptr, d.view(),
                                      nullptr, 1, 128, 1, nullptr, nullptr),
               nvfp4::Error);
  EXPECT_THROW(gd::nvfp4_gemv_variant(0, 3, out.ptr, nvfp4::DType::F32, x.ptr, d.view(), nullptr, 1, 128, 1, nullptr,
                                      nullptr),
               nvfp4::Error);
  EXPECT_THROW(gd::nvfp4_gemv_variant(0, 1, out.ptr, nvfp4::DType::F32, x.ptr, d.view(), nullptr, 9, 128, 1, nullptr,
                                      nullptr),
               nvfp4::Error);
}

// Tensors stacked by rows with their own factors (Nvfp4Weight::decode_per_row, the engine's q|k|v and
// gate|up groups): every row equals the row of its tensor run alone — the same bits from the GEMV
// (same split) and from the GEMMs whose row sums do not depend on the other rows (wgmma, mma.sync),
// within two BF16 roundings from split-K (its split count depends on the rows).
TEST(CudaNvfp4Gemv, StackedTensorsWithRowFactorsMatchEachAlone) {
  REQUIRE_GPU();
  constexpr int64_t C = 1024;
  const int64_t rows[3] = {160, 40, 40};
  const float factors[3] = {0.0123f, 0.5f, 3.0e-4f};
  std::mt19937_64 rng(2300);
  Nvfp4Case all;
  std::vector<Nvfp4Case> parts;
  std::vector<float> per_row;
  for (int j = 0; j < 3; ++j) {
    Nvfp4Case w = random_weight(rows[j], C, rng);
    w.decode = factors[j];
    all.codes.insert(all.codes.end(), w.codes.begin(), w.codes.end());
    all.scales.insert(all.scales.end(), w.scales.begin(), w.scales.end());
    per_row.insert(per_row.end(), static_cast<size_t>(rows[j]), factors[j]);
    parts.push_back(std::move(w));
  }
  const int64_t OC = rows[0] + rows[1] + rows[2];
  const DeviceNvfp4 d(all, OC, C);
  DeviceBuffer<float> drow(per_row);
  cu::Nvfp4Weight gw = d.view();
  gw.decode = drow.ptr;
  gw.decode_per_row = true;
  for (const int64_t N : {1, 5, 40, 64}) {
    SCOPED_TRACE("N=" + std::to_string(N));
    DeviceBuffer<uint16_t> x(to_bits(randn_bf16(static_cast<size_t>(N * C), 2301 + N)));
    const auto run_all = [&](auto&& f) {  // f(out, weight, rows): the group, then each part alone
      DeviceBuffer<uint16_t> out(N * OC);
      f(out.ptr, gw, OC);
      std::vector<std::vector<uint16_t>> alone;
      for (int j = 0; j < 3; ++j) {
        const DeviceNvfp4 p(parts[static_cast<size_t>(j)], rows[j], C);
        DeviceBuffer<uint16_t> o(N * rows[j]);
        f(o.ptr, p.view(), rows[j]);
        alone.push_back(o.download());
      }
      return std::make_pair(out.download(), alone);
    };
    const auto compare = [&](const char* what, bool exact, auto&& f) {
      const auto [grouped, alone] = run_all(f);
      // Split-K's FP32 sums in another order: one BF16 rounding apart, or near zero (cancellation)
      // within 2^-12 of the largest output.
      float largest = 0;
      for (const auto& a : alone)
        for (uint16_t v : a) largest = std::max(largest, std::fabs(bf16_decode(v)));
      int bad = 0;
      for (int64_t n = 0; n < N; ++n) {
        int64_t r0 = 0;
        for (int j = 0; j < 3; ++j) {
          for (int64_t r = 0; r < rows[j]; ++r) {
            const float g = bf16_decode(grouped[static_cast<size_t>(n * OC + r0 + r)]);
            const float a = bf16_decode(alone[static_cast<size_t>(j)][static_cast<size_t>(n * rows[j] + r)]);
            const bool ok = exact ? g == a : std::fabs(g - a) <= 0x1p-7f * std::fabs(a) + 0x1p-12f * largest;
            if (!ok && bad++ < 5) ADD_FAILURE() << what << " token " << n << " tensor " << j << " row " << r << ": " << g << " vs " << a;
          }
          r0 += rows[j];
        }
      }
    };
    if (N <= cu::kNvfp4GemvMaxRows) {
      compare("gemv", true, [&](uint16_t* out, const cu::Nvfp4Weight& w, int64_t oc) {
        cu::nvfp4_gemv(out, nvfp4::DType::BF16, x.ptr, w, nullptr, N, C, oc, nullptr, nullptr, 2);
      });
    }
    compare("wgmma", true, [&](uint16_t* out, const cu::Nvfp4Weight& w, int64_t oc) {
      cu::nvfp4_gemm(out, nvfp4::DType::BF16, x.ptr, w, nullptr, N, C, oc, nullptr, nullptr, cu::Nvfp4GemmKernel::wgmma);
    });
    compare("wgmma_ws", true, [&](uint16_t* out, const cu::Nvfp4Weight& w, int64_t oc) {
      cu::nvfp4_gemm(out, nvfp4::DType::BF16, x.ptr, w, nullptr, N, C, oc, nullptr, nullptr,
                     cu::Nvfp4GemmKernel::wgmma_ws);
    });
    compare("mma.sync", true, [&](uint16_t* out, const cu::Nvfp4Weight& w, int64_t oc) {
      cu::nvfp4_gemm(out, nvfp4::DType::BF16, x.ptr, w, nullptr, N, C, oc, nullptr, nullptr,
                     cu::Nvfp4GemmKernel::mma_sync);
    });
    compare("split-K", false, [&](uint16_t* out, const cu::Nvfp4Weight& w, int64_t oc) {
      cu::nvfp4_gemm(out, nvfp4::DType::BF16, x.ptr, w, nullptr, N, C, oc, nullptr, nullptr,
                     cu::Nvfp4GemmKernel::split_k);
    });
  }
}

// nvfp4_gemm, both kernels: one stage to many, token and row counts off the 128 tiles, a single token.
TEST(CudaNvfp4Gemm, MatchesDoubleDotProductsAndTheDecodedGemv) {
  REQUIRE_GPU();
  struct Shape {
    int64_t M, C, OC;
  };
  uint64_t seed = 1800;
  // (64, 4096, 256) and (17, 2048, 384): few row tiles and a long C, so split_k splits C over a
  // cluster (8 and 4 CTAs on an H100).
  for (const auto& sh : {Shape{128, 64, 128}, Shape{200, 512, 300}, Shape{65, 192, 40}, Shape{1, 256, 17},
                         Shape{8, 128, 130}, Shape{300, 1024, 64}, Shape{129, 2048, 129}, Shape{513, 64, 7},
                         Shape{64, 4096, 256}, Shape{17, 2048, 384}}) {
    seed += 10;
    for (const auto kernel : {cu::Nvfp4GemmKernel::wgmma, cu::Nvfp4GemmKernel::wgmma_wide, cu::Nvfp4GemmKernel::mma_sync,
                              cu::Nvfp4GemmKernel::split_k, cu::Nvfp4GemmKernel::wgmma_ws}) {
      SCOPED_TRACE(kernel == cu::Nvfp4GemmKernel::wgmma        ? "wgmma"
                   : kernel == cu::Nvfp4GemmKernel::wgmma_wide ? "wgmma_wide"
                   : kernel == cu::Nvfp4GemmKernel::mma_sync   ? "mma.sync"
                   : kernel == cu::Nvfp4GemmKernel::split_k    ? "split_k"
                                                               : "wgmma_ws");
      check_against_double(sh.M, sh.C, sh.OC, seed, [&](void* out, nvfp4::DType dt, const uint16_t* x,
                                                        const cu::Nvfp4Weight& w, const uint16_t* b, const float* r) {
        cu::nvfp4_gemm(out, dt, x, w, b, sh.M, sh.C, sh.OC, nullptr, r, kernel);
      });
    }
  }
}

// W4A4 with both operands NVFP4 in checkpoint order (the training recipe's GEMMs), against FP64:
// out = alpha · a · bᵀ for shapes off the 128 tiles (one stage to many), BF16 and F32 out, and with
// accumulate (F32 out += …) on random contents; the same bits run to run, and from both kernels
// (wgmma, wgmma_ws); bad shapes are errors.
TEST(CudaNvfp4Gemm, BothOperandsNvfp4MatchDoubleDotProducts) {
  REQUIRE_GPU();
  struct Shape {
    int64_t M, N, K;
  };
  uint64_t seed = 2000;
  for (const auto& sh : {Shape{128, 128, 64}, Shape{200, 300, 512}, Shape{1, 17, 128}, Shape{300, 40, 1024},
                         Shape{129, 129, 2048}, Shape{64, 513, 192}}) {
    const int64_t M = sh.M, N = sh.N, K = sh.K;
    SCOPED_TRACE("M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K));
    std::mt19937_64 rng(seed += 10);
    const Nvfp4Case a = random_weight(M, K, rng), b = random_weight(N, K, rng);
    DeviceBuffer<uint8_t> ac(a.codes), as(a.scales), bc(b.codes), bs(b.scales);
    const float alpha_h = 0.37f;
    DeviceBuffer<float> alpha(std::vector<float>{alpha_h});
    std::vector<float> ref(static_cast<size_t>(M * N));
    std::vector<double> dot(ref.size()), mag(ref.size());
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double sum = 0, mg = 0;
        for (int64_t e = 0; e < K; ++e) {
          const double p = weight(a, K, m, e) * weight(b, K, n, e);
          sum += p, mg += std::fabs(p);
        }
        dot[static_cast<size_t>(m * N + n)] = sum, mag[static_cast<size_t>(m * N + n)] = mg;
      }
    const std::vector<float> before = randn_f32(static_cast<size_t>(M * N), seed + 1);
    for (const bool accumulate : {false, true}) {
      std::vector<double> extra(ref.size());
      for (size_t i = 0; i < ref.size(); ++i) {
        const double y = dot[i] * alpha_h + (accumulate ? before[i] : 0.0);
        ref[i] = static_cast<float>(y);
        extra[i] = (static_cast<double>(K) / 16 + 2) * 4 * kReassoc * mag[i] * alpha_h + 0x1p-23 * std::fabs(y);
      }
      std::vector<float> first;  // the default kernel's F32 result: the warp-specialized one's bits
      for (const auto kernel : {cu::Nvfp4GemmNtKernel::wgmma, cu::Nvfp4GemmNtKernel::wgmma_ws}) {
        SCOPED_TRACE(kernel == cu::Nvfp4GemmNtKernel::wgmma ? "wgmma" : "wgmma_ws");
        DeviceBuffer<float> out32(accumulate ? before : std::vector<float>(ref.size(), 0.0f));
        DeviceBuffer<uint16_t> out16(M * N), again(M * N);
        const cu::Nvfp4Operand ao{ac.ptr, as.ptr}, bo{bc.ptr, bs.ptr};
        cu::nvfp4_gemm_nt(out32.ptr, nvfp4::DType::F32, ao, bo, M, N, K, alpha.ptr, accumulate, nullptr, kernel);
        const std::vector<float> got = out32.download();
        EXPECT_TRUE(close(accumulate ? "nt f32 accumulate" : "nt f32", got, ref, 0, extra));
        if (first.empty()) first = got;
        else EXPECT_EQ(first_diff(got, first), -1) << "not the default kernel's bits";
        if (!accumulate) {
          cu::nvfp4_gemm_nt(out16.ptr, nvfp4::DType::BF16, ao, bo, M, N, K, alpha.ptr, false, nullptr, kernel);
          cu::nvfp4_gemm_nt(again.ptr, nvfp4::DType::BF16, ao, bo, M, N, K, alpha.ptr, false, nullptr, kernel);
          EXPECT_TRUE(close("nt bf16", download_bf16(out16), ref, 1, extra));
          EXPECT_EQ(first_diff(again.download(), out16.download()), -1) << "not deterministic";
        }
      }
    }
  }
  DeviceBuffer<uint8_t> c(64 * 64), sc(64 * 8);
  DeviceBuffer<float> alpha(std::vector<float>{1.0f}), o(64 * 64);
  const cu::Nvfp4Operand op{c.ptr, sc.ptr};
  EXPECT_FALSE(cu::nvfp4_gemm_nt_supported(op, op, 96));
  EXPECT_THROW(cu::nvfp4_gemm_nt(o.ptr, nvfp4::DType::F32, op, op, 4, 4, 96, alpha.ptr, false, nullptr), nvfp4::Error);
  EXPECT_THROW(cu::nvfp4_gemm_nt(o.ptr, nvfp4::DType::F32, op, op, 4, 4, 128, nullptr, false, nullptr), nvfp4::Error);
}

// The device repack equals the host's; decoding GEMV-order codes gives the format core's
// e2m1 × scale in BF16 bit for bit (every code and scale byte but NaN appear).
TEST(CudaNvfp4Gemv, DeviceRepackAndDecodeMatchTheHost) {
  REQUIRE_GPU();
  constexpr int64_t OC = 70, C = 272;
  std::mt19937_64 rng(1750);
  Nvfp4Case w;
  w.codes.resize(static_cast<size_t>(OC * C / 2));
  for (auto& b : w.codes) b = static_cast<uint8_t>(rng());
  w.scales.resize(static_cast<size_t>(OC * C / 16));
  for (size_t i = 0; i < w.scales.size(); ++i) w.scales[i] = static_cast<uint8_t>(i % 0x7F);
  DeviceBuffer<uint8_t> raw(w.codes);
  cu::repack_nvfp4_codes_for_gemv_device(raw.ptr, OC, C, nullptr);
  EXPECT_EQ(raw.download(), DeviceNvfp4::gemv_order(w.codes, OC, C));
  const DeviceNvfp4 d(w, OC, C);
  DeviceBuffer<uint16_t> out(OC * C);
  cu::nvfp4_decode_gemv_order(out.ptr, d.view(), OC, C, nullptr);
  const auto got = out.download();
  int bad = 0;
  for (int64_t o = 0; o < OC; ++o)
    for (int64_t e = 0; e < C; ++e) {
      const uint16_t want = bf16_encode(static_cast<float>(weight(w, C, o, e)));
      if (got[static_cast<size_t>(o * C + e)] != want && bad++ < 5)
        ADD_FAILURE() << "row " << o << " element " << e << ": 0x" << std::hex << got[static_cast<size_t>(o * C + e)]
                      << ", want 0x" << want;
    }
  EXPECT_EQ(bad, 0);
}

TEST(CudaNvfp4Gemv, ShapesItDoesNotTakeAreErrors) {
  REQUIRE_GPU();
  DeviceBuffer<uint16_t> x(128 * 65);
  DeviceBuffer<uint8_t> codes(64 * 64), scales(64 * 8);
  DeviceBuffer<float> decode(std::vector<float>{1.0f}), out(65 * 64);
  const cu::Nvfp4Weight w{codes.ptr, scales.ptr, decode.ptr};
  EXPECT_TRUE(cu::nvfp4_gemv_supported(x.ptr, w, 64, 128));
  EXPECT_FALSE(cu::nvfp4_gemv_supported(x.ptr, w, 65, 128));
  EXPECT_TRUE(cu::nvfp4_gemv_supported(x.ptr, w, 1, 96));
  EXPECT_FALSE(cu::nvfp4_gemv_supported(x.ptr, w, 1, 48));
  EXPECT_FALSE(cu::nvfp4_gemv_supported(x.ptr + 1, w, 1, 128));
  nvfp4::test::expect_error([&] { cu::nvfp4_gemv(out.ptr, nvfp4::DType::F32, x.ptr, w, nullptr, 1, 48, 4, nullptr); },
                            "C a positive multiple of 32");
  EXPECT_THROW(cu::nvfp4_gemv(out.ptr, nvfp4::DType::F32, x.ptr, w, nullptr, 65, 128, 4, nullptr), nvfp4::Error);
  EXPECT_THROW(cu::nvfp4_gemv(out.ptr, nvfp4::DType::F16, x.ptr, w, nullptr, 1, 128, 4, nullptr), nvfp4::Error);
  const cu::Nvfp4Weight no_decode{codes.ptr, scales.ptr, nullptr};
  EXPECT_THROW(cu::nvfp4_gemv(out.ptr, nvfp4::DType::F32, x.ptr, no_decode, nullptr, 1, 128, 4, nullptr), nvfp4::Error);
  EXPECT_THROW(cu::nvfp4_gemv(out.ptr, nvfp4::DType::F32, x.ptr, w, nullptr, 1, 128, 4, nullptr, nullptr, 3),
               nvfp4::Error);
  EXPECT_TRUE(cu::nvfp4_gemm_supported(x.ptr, w, 65, 128));
  EXPECT_FALSE(cu::nvfp4_gemm_supported(x.ptr, w, 65, 96));
  nvfp4::test::expect_error([&] { cu::nvfp4_gemm(out.ptr, nvfp4::DType::F32, x.ptr, w, nullptr, 65, 96, 4, nullptr); },
                            "C a positive multiple of 64");
  EXPECT_THROW(cu::nvfp4_gemm(out.ptr, nvfp4::DType::F32, x.ptr, no_decode, nullptr, 65, 128, 4, nullptr), nvfp4::Error);
}

}  // namespace
