// Scalar codecs of src/format/ (E2M1, E4M3, E5M2, E8M0, BF16, FP16) and the exactness of their
// products (the scale helpers, swizzle and RHT: test_block_codecs.cpp).
//
// What this is: a cross-check of our header-only codecs against an INDEPENDENT implementation,
// NVIDIA's own host-side conversions in the CUDA toolkit headers (cuda_fp8.h, cuda_fp4.h,
// cuda_bf16.h, cuda_fp16.h), plus hand-computed tables from docs/numerics.md. Everything here is
// deterministic, so every comparison is bit-exact (style.md #10); random inputs use fixed seeds.
// What this is not: the end-to-end quantizer tests (test_quantize, test_golden) or the SR
// statistics (test_philox_sr.cpp).
//
// Differences between NVIDIA's host conversions and our codecs, found and pinned here:
//   * cuda_fp4.h __nv_cvt_float_to_fp4(-0.0f) gives code 8 (-0); docs/numerics.md §1 (TE) says -0.0 -> 0.
//   * cuda_fp4.h __nv_cvt_float_to_fp4(NaN) gives code 7 (+6, sign dropped); ours gives 0
//     (our policy: callers reject non-finite input before quantizing; docs/numerics.md §2).
//   * cuda_fp8.h decodes the E4M3 NaN codes 0x7F and 0xFF both to a POSITIVE NaN (sign dropped);
//     ours keeps the sign (0xFF -> -NaN). Both are NaN; only NaN-ness is compared.
//   * cuda_fp8.h host encode canonicalises every NaN input to 0x7FFFFFFF first, so NaN of either
//     sign encodes to 0x7F for E4M3 and E5M2, exactly as ours does: no difference.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
// cuda_fp4.hpp (CUDA 13.0) has unused parameters that -Wextra reports; not our code.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <cuda_fp4.h>
#pragma GCC diagnostic pop

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "format/fp8.hpp"
#include "format/mxfp4.hpp"
#include "format/nvfp4.hpp"
#include "format/rht.hpp"
#include "format/scalar.hpp"
#include "format/swizzle.hpp"

#include "format/codec_test_util.hpp"
#include "support/mismatches.hpp"

namespace {

using nvfp4::test_support::hex32;
using nvfp4::test_support::Mismatches;
using namespace nvfp4::codec_test;

using namespace nvfp4::fmt;



// ---------------------------------------------------------------------------------------
// NVIDIA's host conversions (independent implementations)
// ---------------------------------------------------------------------------------------
uint8_t cuda_fp8_encode(float x, __nv_fp8_interpretation_t k) {
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, k));
}
float cuda_fp8_decode(uint8_t c, __nv_fp8_interpretation_t k) {
  return __half2float(__half(__nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(c), k)));
}
uint8_t cuda_e2m1_encode(float x) {
  return static_cast<uint8_t>(__nv_cvt_float_to_fp4(x, __NV_E2M1, cudaRoundNearest) & 0xFu);
}
float cuda_e2m1_decode(uint8_t c) {
  return __half2float(__half(__nv_cvt_fp4_to_halfraw(static_cast<__nv_fp4_storage_t>(c), __NV_E2M1)));
}
uint16_t cuda_bf16_encode(float x) { return static_cast<__nv_bfloat16_raw>(__float2bfloat16_rn(x)).x; }
float cuda_bf16_decode(uint16_t h) {
  __nv_bfloat16_raw r;
  r.x = h;
  return __bfloat162float(__nv_bfloat16(r));
}
uint16_t cuda_fp16_encode(float x) { return static_cast<__half_raw>(__float2half_rn(x)).x; }
float cuda_fp16_decode(uint16_t h) {
  __half_raw r;
  r.x = h;
  return __half2float(__half(r));
}

// ---------------------------------------------------------------------------------------
// FP8: one description per format, the tests iterate both.
// ---------------------------------------------------------------------------------------
struct Fp8Codec {
  const char* name;
  __nv_fp8_interpretation_t interp;
  uint8_t (*encode)(float);
  float (*decode)(uint8_t);
  float max_finite;      // 448 / 57344
  float next_above_max;  // the value the next code would have without saturation: 480 / 65536
  float min_normal;      // 2^-6 / 2^-14
  uint8_t max_code;      // 0x7E / 0x7B
  int nan_codes;         // 2 / 6
  int inf_codes;         // 0 / 2
};

const Fp8Codec kE4M3{"E4M3", __NV_E4M3, e4m3_encode, e4m3_decode, 448.0f, 480.0f, 0.015625f, 0x7E, 2, 0};
const Fp8Codec kE5M2{"E5M2", __NV_E5M2, e5m2_encode, e5m2_decode, 57344.0f, 65536.0f, 6.103515625e-05f, 0x7B, 6, 2};
const Fp8Codec* const kFp8Codecs[] = {&kE4M3, &kE5M2};

// Finite codes (sign included) in increasing order of magnitude, positive side.
std::vector<uint8_t> fp8_positive_finite_codes(const Fp8Codec& f) {
  std::vector<uint8_t> codes;
  for (int c = 0; c <= f.max_code; ++c) codes.push_back(static_cast<uint8_t>(c));
  return codes;
}

// Every input class of the brief for the FP8 encoders: midpoints, +-1 ulp, code values, beyond
// max, zeros, subnormals, specials.
std::vector<float> fp8_edge_inputs(const Fp8Codec& f) {
  std::vector<float> xs;
  const auto codes = fp8_positive_finite_codes(f);
  for (size_t i = 0; i + 1 < codes.size(); ++i) {
    const float lo = f.decode(codes[i]), hi = f.decode(codes[i + 1]);
    const float mid = (lo + hi) * 0.5f;  // exact: both have few significant bits
    for (float x : {lo, mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY)}) {
      xs.push_back(x);
      xs.push_back(-x);
    }
  }
  const float over_mid = (f.max_finite + f.next_above_max) * 0.5f;  // 464 / 61440
  for (float x : {f.max_finite, std::nextafter(f.max_finite, INFINITY), over_mid, std::nextafter(over_mid, 0.0f),
                  std::nextafter(over_mid, INFINITY), f.next_above_max, 1000.0f, 1e6f, 1e30f, FLT_MAX, INFINITY,
                  0.0f, FLT_MIN, std::nextafter(0.0f, 1.0f), 1e-40f, f.min_normal, std::nextafter(f.min_normal, 0.0f)}) {
    xs.push_back(x);
    xs.push_back(-x);
  }
  return xs;
}

void expect_fp8_encode_matches_cuda(const Fp8Codec& f, const std::vector<float>& xs, const char* what) {
  Mismatches m;
  for (float x : xs) {
    const uint8_t ours = f.encode(x), theirs = cuda_fp8_encode(x, f.interp);
    if (ours != theirs) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "%s encode(%s): ours 0x%02x, cuda_fp8.h 0x%02x", f.name, describe(x).c_str(), ours,
                    theirs);
      m.add(buf);
    }
  }
  EXPECT_EQ(m.count, 0u) << f.name << " " << what << ": " << m.count << " of " << xs.size() << " differ" << m.first;
}

TEST(CodecFp8, DecodeEveryCodeMatchesCudaFp8) {
  for (const Fp8Codec* f : kFp8Codecs) {
    int nans = 0, infs = 0;
    for (int c = 0; c < 256; ++c) {
      const float ours = f->decode(static_cast<uint8_t>(c));
      const float theirs = cuda_fp8_decode(static_cast<uint8_t>(c), f->interp);
      EXPECT_TRUE(same_float(ours, theirs))
          << f->name << " code 0x" << std::hex << c << ": ours " << describe(ours) << ", cuda_fp8.h " << describe(theirs);
      nans += std::isnan(ours) ? 1 : 0;
      infs += std::isinf(ours) ? 1 : 0;
    }
    EXPECT_EQ(nans, f->nan_codes) << f->name;
    EXPECT_EQ(infs, f->inf_codes) << f->name;
    EXPECT_EQ(f->decode(f->max_code), f->max_finite) << f->name;
    EXPECT_EQ(f->decode(0x80), 0.0f) << f->name;
    EXPECT_TRUE(std::signbit(f->decode(0x80))) << f->name << ": code 0x80 is -0";
  }
  // Hand-checked values (docs/numerics.md §1): E4M3 min subnormal 2^-9, min normal 2^-6, 0x7F NaN.
  EXPECT_EQ(e4m3_decode(0x01), 0.001953125f);
  EXPECT_EQ(e4m3_decode(0x08), 0.015625f);
  EXPECT_EQ(e4m3_decode(0x7E), 448.0f);
  EXPECT_EQ(e4m3_decode(0xFE), -448.0f);
  EXPECT_TRUE(std::isnan(e4m3_decode(0x7F)));
  EXPECT_TRUE(std::isnan(e4m3_decode(0xFF)));
  EXPECT_EQ(e5m2_decode(0x01), 1.52587890625e-05f);  // 2^-16
  EXPECT_EQ(e5m2_decode(0x7B), 57344.0f);
  EXPECT_EQ(e5m2_decode(0x7C), INFINITY);
  EXPECT_EQ(e5m2_decode(0xFC), -INFINITY);
}

TEST(CodecFp8, FiniteCodesRoundTripAndNanEncodesTo0x7F) {
  for (const Fp8Codec* f : kFp8Codecs) {
    for (int c = 0; c < 256; ++c) {
      const float v = f->decode(static_cast<uint8_t>(c));
      if (std::isnan(v)) continue;  // NaN codes: checked below
      if (std::isinf(v)) {
        // E5M2 Inf codes: satfinite encoding maps +-Inf to +-max, as cuda_fp8.h does.
        EXPECT_EQ(f->encode(v), (c & 0x80) | f->max_code) << f->name << " Inf code 0x" << std::hex << c;
        continue;
      }
      EXPECT_EQ(f->encode(v), c) << f->name << " code 0x" << std::hex << c << " value " << describe(v);
    }
    // NaN of either sign, quiet or signalling, any payload -> 0x7F (our convention). cuda_fp8.h's
    // host path canonicalises NaN to +NaN first and agrees; pinned so a change is noticed.
    for (uint32_t nb : {0x7FC00000u, 0xFFC00000u, 0x7F800001u, 0xFF800001u, 0x7FFFFFFFu, 0xFFFFFFFFu, 0x7FA5A5A5u}) {
      const float nan = float_of(nb);
      EXPECT_EQ(f->encode(nan), 0x7F) << f->name << " NaN " << hex32(nb);
      EXPECT_EQ(cuda_fp8_encode(nan, f->interp), 0x7F) << f->name << " cuda_fp8.h NaN " << hex32(nb);
    }
    // Every NaN code decodes to a NaN that re-encodes to 0x7F.
    for (int c = 0; c < 256; ++c) {
      const float v = f->decode(static_cast<uint8_t>(c));
      if (std::isnan(v)) {
        EXPECT_EQ(f->encode(v), 0x7F) << f->name << " NaN code 0x" << std::hex << c;
      }
    }
  }
}

TEST(CodecFp8, EncodeMatchesCudaFp8AtMidpointsCodesAndSpecials) {
  for (const Fp8Codec* f : kFp8Codecs) {
    const auto xs = fp8_edge_inputs(*f);
    expect_fp8_encode_matches_cuda(*f, xs, "edge inputs");
    // The midpoints really are ties, and RNE sends them both ways (to the even code): this
    // proves the sweep above exercised the tie rule rather than only the easy cases.
    int up = 0, down = 0;
    const auto codes = fp8_positive_finite_codes(*f);
    for (size_t i = 0; i + 1 < codes.size(); ++i) {
      const float lo = f->decode(codes[i]), hi = f->decode(codes[i + 1]);
      const float mid = (lo + hi) * 0.5f;
      ASSERT_EQ(mid - lo, hi - mid) << f->name << " midpoint not exact at code " << int(codes[i]);
      const uint8_t c = f->encode(mid);
      ASSERT_TRUE(c == codes[i] || c == codes[i + 1]) << f->name << " tie " << describe(mid);
      EXPECT_EQ(c & 1, 0) << f->name << " tie " << describe(mid) << " must go to the even code";
      (c == codes[i] ? down : up)++;
      EXPECT_EQ(f->encode(std::nextafter(mid, 0.0f)), codes[i]) << f->name << " below tie " << describe(mid);
      EXPECT_EQ(f->encode(std::nextafter(mid, INFINITY)), codes[i + 1]) << f->name << " above tie " << describe(mid);
    }
    EXPECT_GT(up, 0) << f->name;
    EXPECT_GT(down, 0) << f->name;
    // Saturation (clamp first, then round): everything beyond max, Inf included, is +-max.
    for (float x : {std::nextafter(f->max_finite, INFINITY), f->next_above_max, FLT_MAX, INFINITY}) {
      EXPECT_EQ(f->encode(x), f->max_code) << f->name << " " << describe(x);
      EXPECT_EQ(f->encode(-x), 0x80 | f->max_code) << f->name << " " << describe(-x);
    }
    EXPECT_EQ(f->encode(0.0f), 0x00) << f->name;
    EXPECT_EQ(f->encode(-0.0f), 0x80) << f->name << ": -0 keeps its sign";
  }
}

TEST(CodecFp8, EncodeMatchesCudaFp8OnRandomInputs) {
  std::mt19937_64 rng(0xF8F8'0001);
  for (const Fp8Codec* f : kFp8Codecs) {
    std::vector<float> xs;
    xs.reserve(4'000'000);
    while (xs.size() < 2'000'000) {  // random FP32 bit patterns, finite only
      const uint64_t r = rng();
      for (uint32_t b : {static_cast<uint32_t>(r), static_cast<uint32_t>(r >> 32)}) {
        if (is_finite(float_of(b))) xs.push_back(float_of(b));
      }
    }
    std::uniform_real_distribution<float> wide(-1000.0f, 1000.0f);
    for (int i = 0; i < 1'000'000; ++i) xs.push_back(wide(rng));
    std::uniform_real_distribution<float> subnormal(-f->min_normal, f->min_normal);
    for (int i = 0; i < 1'000'000; ++i) xs.push_back(subnormal(rng));
    expect_fp8_encode_matches_cuda(*f, xs, "random inputs");
  }
}

// ---------------------------------------------------------------------------------------
// E2M1
// ---------------------------------------------------------------------------------------
constexpr float kE2M1Grid[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

// Independent reference per docs/numerics.md §1: nearest grid magnitude by distance, ties to the even
// code, saturating at 6; negative values (not -0.0) get the sign bit, also when they round to 0.
uint8_t ref_e2m1_rne(float v) {
  const uint8_t sign = v < 0.0f ? 8 : 0;
  const double a = std::min(std::fabs(static_cast<double>(v)), 6.0);
  int best = 0;
  for (int k = 1; k < 8; ++k) {
    const double dk = std::fabs(kE2M1Grid[k] - a), db = std::fabs(kE2M1Grid[best] - a);
    if (dk < db || (dk == db && (k & 1) == 0)) best = k;
  }
  return static_cast<uint8_t>(sign | best);
}

TEST(CodecE2M1, DecodeTableMatchesNumericsMdAndCudaFp4) {
  for (int c = 0; c < 16; ++c) {
    const float expect = (c & 8) ? -kE2M1Grid[c & 7] : kE2M1Grid[c & 7];
    const float ours = e2m1_decode(static_cast<uint8_t>(c));
    EXPECT_EQ(bits_of(ours), bits_of(expect)) << "code " << c << ": " << describe(ours);
    EXPECT_EQ(bits_of(cuda_e2m1_decode(static_cast<uint8_t>(c))), bits_of(expect)) << "cuda_fp4.h code " << c;
  }
  EXPECT_TRUE(std::signbit(e2m1_decode(8))) << "code 8 is -0";
}

// The encoder computes the RNE code arithmetically; the rule it must equal is the list of
// midpoint thresholds in docs/numerics.md §1. Every FP32 value in [0, 6] (about 1.08e9) is checked.
TEST(CodecE2M1, MagnitudeCodeEqualsThresholdRuleOnEveryFloat) {
  auto rule = [](float a) {
    return static_cast<uint32_t>(a > 0.25f) + (a >= 0.75f) + (a > 1.25f) + (a >= 1.75f) + (a > 2.5f) + (a >= 3.5f) +
           (a > 5.0f);
  };
  Mismatches m;
  const uint32_t last = bits_of(6.0f);
  for (uint32_t u = 0; u <= last; ++u) {
    const float a = float_of(u);
    if (e2m1_magnitude_code_rne(a) != rule(a)) m.add(describe(a));
  }
  EXPECT_EQ(e2m1_magnitude_code_rne(-0.0f), 0u);
  EXPECT_EQ(m.count, 0u) << m.first;
}

TEST(CodecE2M1, ExponentFormEqualsThresholdRuleOnEveryFloat) {
  // The device encoder's form (integer ops on the exponent); the host compiles the same code.
  Mismatches m;
  const uint32_t last = bits_of(6.0f);
  for (uint32_t u = 0; u <= last; ++u) {
    const float a = float_of(u);
    if (e2m1_magnitude_code_rne_exponent(a) != e2m1_magnitude_code_rne(a)) m.add(describe(a));
  }
  EXPECT_EQ(e2m1_magnitude_code_rne_exponent(-0.0f), 0u);
  EXPECT_EQ(m.count, 0u) << m.first;
}

TEST(CodecE2M1, TiesAndTheirNeighboursFollowNumericsMd) {
  // docs/numerics.md §1: 0.25->0, 0.75->1, 1.25->1, 1.75->2, 2.5->2, 3.5->4, 5->4 (ties to even code).
  struct Tie {
    float v;
    uint8_t code;   // code of the tie itself
    uint8_t below;  // code of the value one ulp below (lower neighbour)
    uint8_t above;  // one ulp above (upper neighbour)
  };
  const Tie ties[] = {{0.25f, 0, 0, 1}, {0.75f, 2, 1, 2}, {1.25f, 2, 2, 3}, {1.75f, 4, 3, 4},
                      {2.5f, 4, 4, 5},  {3.5f, 6, 5, 6},  {5.0f, 6, 6, 7}};
  for (const Tie& t : ties) {
    const float lo = std::nextafter(t.v, 0.0f), hi = std::nextafter(t.v, INFINITY);
    EXPECT_EQ(e2m1_encode_rne(t.v), t.code) << describe(t.v);
    EXPECT_EQ(e2m1_encode_rne(lo), t.below) << describe(lo);
    EXPECT_EQ(e2m1_encode_rne(hi), t.above) << describe(hi);
    EXPECT_EQ(e2m1_encode_rne(-t.v), t.code | 8) << describe(-t.v);
    EXPECT_EQ(e2m1_encode_rne(-lo), t.below | 8) << describe(-lo);
    EXPECT_EQ(e2m1_encode_rne(-hi), t.above | 8) << describe(-hi);
  }
  // Grid values map to themselves, except code 8: its value is -0.0, which encodes to code 0.
  for (int c = 0; c < 16; ++c) {
    EXPECT_EQ(e2m1_encode_rne(e2m1_decode(static_cast<uint8_t>(c))), c == 8 ? 0 : c) << "code " << c;
  }
  // Above 5 -> 6, saturating; Inf too.
  for (float x : {std::nextafter(5.0f, INFINITY), 5.5f, 6.0f, 6.5f, 7.0f, 100.0f, FLT_MAX, INFINITY}) {
    EXPECT_EQ(e2m1_encode_rne(x), 7) << describe(x);
    EXPECT_EQ(e2m1_encode_rne(-x), 15) << describe(-x);
  }
  // [-0.25, 0) -> code 8 (-0); -0.0 itself -> code 0; +tiny -> 0.
  for (float x : {-0.25f, -0.2f, -0.1f, -FLT_MIN, -1e-45f}) EXPECT_EQ(e2m1_encode_rne(x), 8) << describe(x);
  EXPECT_EQ(e2m1_encode_rne(std::nextafter(-0.25f, -1.0f)), 9);
  EXPECT_EQ(e2m1_encode_rne(-0.0f), 0) << "numerics.md: -0.0 itself gives code 0";
  EXPECT_EQ(e2m1_encode_rne(0.0f), 0);
  EXPECT_EQ(e2m1_encode_rne(1e-45f), 0);
  // NaN -> 0: scalar.hpp's documented policy (callers reject non-finite input).
  EXPECT_EQ(e2m1_encode_rne(NAN), 0);
  EXPECT_EQ(e2m1_encode_rne(-NAN), 0);
}

TEST(CodecE2M1, EncodeMatchesCudaFp4AndReference) {
  std::vector<float> xs;
  for (int k = 0; k + 1 < 8; ++k) {
    const float mid = (kE2M1Grid[k] + kE2M1Grid[k + 1]) * 0.5f;
    for (float x : {kE2M1Grid[k], mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY)}) {
      xs.push_back(x);
      xs.push_back(-x);
    }
  }
  for (float x : {6.0f, 7.0f, 8.0f, 1e30f, INFINITY, FLT_MIN, 1e-45f, 0.0f}) {
    xs.push_back(x);
    xs.push_back(-x);
  }
  std::mt19937_64 rng(0xE2'41);
  std::uniform_real_distribution<float> u(-8.0f, 8.0f);
  for (int i = 0; i < 3'000'000; ++i) xs.push_back(u(rng));
  std::uniform_real_distribution<float> small(-0.5f, 0.5f);
  for (int i = 0; i < 200'000; ++i) xs.push_back(small(rng));

  Mismatches vs_cuda, vs_ref;
  size_t neg_zero_codes = 0;
  for (float x : xs) {
    const uint8_t ours = e2m1_encode_rne(x);
    const uint8_t ref = ref_e2m1_rne(x);
    if (ours != ref) vs_ref.add(describe(x) + ": ours " + std::to_string(ours) + ", reference " + std::to_string(ref));
    if (x == 0.0f && std::signbit(x)) continue;  // -0.0: a documented difference, checked below
    const uint8_t theirs = cuda_e2m1_encode(x);
    if (ours != theirs) vs_cuda.add(describe(x) + ": ours " + std::to_string(ours) + ", cuda_fp4.h " + std::to_string(theirs));
    neg_zero_codes += ours == 8 ? 1 : 0;
  }
  EXPECT_EQ(vs_ref.count, 0u) << vs_ref.count << " of " << xs.size() << " differ from the reference" << vs_ref.first;
  EXPECT_EQ(vs_cuda.count, 0u) << vs_cuda.count << " of " << xs.size() << " differ from cuda_fp4.h" << vs_cuda.first;
  EXPECT_GT(neg_zero_codes, 0u) << "the sweep must include values in [-0.25, 0)";

  // Documented differences: docs/numerics.md (TE) wins.
  // cuda_fp4.h's host path keeps the sign of -0.0 (code 8); TE and docs/numerics.md §1 give code 0.
  EXPECT_EQ(cuda_e2m1_encode(-0.0f), 8);
  EXPECT_EQ(e2m1_encode_rne(-0.0f), 0);
  // cuda_fp4.h maps NaN (either sign) to +6 (code 7); ours maps it to 0 (and callers reject it).
  EXPECT_EQ(cuda_e2m1_encode(NAN), 7);
  EXPECT_EQ(cuda_e2m1_encode(-NAN), 7);
  EXPECT_EQ(e2m1_encode_rne(NAN), 0);
  // Values in [-0.25, 0): both give code 8.
  EXPECT_EQ(cuda_e2m1_encode(-0.25f), 8);
  EXPECT_EQ(cuda_e2m1_encode(-1e-45f), 8);
}

// ---------------------------------------------------------------------------------------
// E8M0, floor_log2, ceil_log2, exp2_int
// ---------------------------------------------------------------------------------------
TEST(CodecE8M0, DecodeEveryCodeIsExactPowerOfTwo) {
  for (int c = 0; c < 255; ++c) {
    const float v = e8m0_decode(static_cast<uint8_t>(c));
    const float expect = std::ldexp(1.0f, c - 127);
    EXPECT_EQ(bits_of(v), bits_of(expect)) << "code " << c << ": " << describe(v);
  }
  EXPECT_EQ(bits_of(e8m0_decode(0)), 0x00400000u) << "code 0 is 2^-127, an FP32 subnormal";
  EXPECT_EQ(e8m0_decode(127), 1.0f);
  EXPECT_EQ(e8m0_decode(254), 1.7014118346046923e38f);  // 2^127
  EXPECT_TRUE(std::isnan(e8m0_decode(0xFF)));
  for (int e = -127; e <= 127; ++e) EXPECT_EQ(bits_of(exp2_int(e)), bits_of(std::ldexp(1.0f, e))) << "2^" << e;
}

TEST(CodecE8M0, FloorAndCeilLog2AreExact) {
  std::vector<float> xs;
  for (int e = -149; e <= 127; ++e) {
    const float p = std::ldexp(1.0f, e);
    for (float x : {p, std::nextafter(p, 0.0f), std::nextafter(p, INFINITY), p * 1.5f}) {
      if (x > 0.0f && std::isfinite(x)) xs.push_back(x);
    }
  }
  for (uint32_t b = 1; b < 64; ++b) xs.push_back(float_of(b));  // smallest subnormals
  for (uint32_t b : {0x007FFFFFu, 0x00400001u, 0x00000003u, 0x00000005u, 0x00800000u, 0x7F7FFFFFu}) xs.push_back(float_of(b));
  std::mt19937_64 rng(0xE8'00);
  while (xs.size() < 500'000) {
    const float x = float_of(static_cast<uint32_t>(rng()) & 0x7FFFFFFFu);
    if (x > 0.0f && std::isfinite(x)) xs.push_back(x);
  }
  Mismatches m;
  for (float x : xs) {
    if (floor_log2(x) != ref_floor_log2(x) || ceil_log2(x) != ref_ceil_log2(x)) {
      m.add(describe(x) + ": floor " + std::to_string(floor_log2(x)) + " (want " + std::to_string(ref_floor_log2(x)) +
            "), ceil " + std::to_string(ceil_log2(x)) + " (want " + std::to_string(ref_ceil_log2(x)) + ")");
    }
  }
  EXPECT_EQ(m.count, 0u) << m.first;
  // Hand-computed.
  EXPECT_EQ(floor_log2(1.0f), 0);
  EXPECT_EQ(ceil_log2(1.0f), 0);
  EXPECT_EQ(floor_log2(std::nextafter(1.0f, 2.0f)), 0);
  EXPECT_EQ(ceil_log2(std::nextafter(1.0f, 2.0f)), 1);
  EXPECT_EQ(floor_log2(std::nextafter(1.0f, 0.0f)), -1);
  EXPECT_EQ(ceil_log2(std::nextafter(1.0f, 0.0f)), 0);
  EXPECT_EQ(floor_log2(6.0f), 2);
  EXPECT_EQ(ceil_log2(6.0f), 3);
  EXPECT_EQ(floor_log2(FLT_MAX), 127);
  EXPECT_EQ(ceil_log2(FLT_MAX), 128);
  EXPECT_EQ(floor_log2(FLT_MIN), -126);
  EXPECT_EQ(ceil_log2(FLT_MIN), -126);
  EXPECT_EQ(floor_log2(float_of(0x007FFFFFu)), -127);  // largest subnormal
  EXPECT_EQ(ceil_log2(float_of(0x007FFFFFu)), -126);
  EXPECT_EQ(floor_log2(float_of(1)), -149);  // 2^-149
  EXPECT_EQ(ceil_log2(float_of(1)), -149);
  EXPECT_EQ(floor_log2(float_of(3)), -148);
  EXPECT_EQ(ceil_log2(float_of(3)), -147);
  EXPECT_EQ(floor_log2(-8.0f), 3) << "the sign is ignored";
}

// ---------------------------------------------------------------------------------------
// BF16 and FP16
// ---------------------------------------------------------------------------------------
std::vector<float> half_width_special_inputs() {
  std::vector<float> xs;
  for (float x : {0.0f, 1.0f, 1.5f, FLT_MAX, FLT_MIN, INFINITY, 1e-45f, 1e-40f, 65504.0f, 65519.99f, 65520.0f,
                  std::nextafter(65520.0f, 0.0f), std::nextafter(65520.0f, INFINITY), 65536.0f, 1e5f,
                  6.103515625e-05f, 6.0975552e-05f, 5.9604645e-08f, 2.9802322e-08f, 2.9802326e-08f, 8.9406967e-08f,
                  3.3961514e38f, 3.3961516e38f, 3.3895314e38f, float_of(0x7F7F8000u), float_of(0x7F7F7FFFu)}) {
    xs.push_back(x);
    xs.push_back(-x);
  }
  for (uint32_t nb : {0x7FC00000u, 0xFFC00000u, 0x7F800001u, 0xFF800001u, 0x7FFFFFFFu, 0x7F80FFFFu, 0x7FBFFFFFu})
    xs.push_back(float_of(nb));
  // Every BF16 midpoint and its neighbours (positive and negative, finite codes).
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    if ((h & 0x7F80u) == 0x7F80u) continue;
    const uint32_t base = h << 16;
    for (uint32_t d : {0x7FFFu, 0x8000u, 0x8001u}) xs.push_back(float_of(base | d));
  }
  // Every FP16 midpoint and its neighbours (exact in FP32).
  for (uint32_t h = 0; h < 0x7C00u; ++h) {
    const float lo = fp16_decode(static_cast<uint16_t>(h)), hi = fp16_decode(static_cast<uint16_t>(h + 1));
    const float mid = std::isinf(hi) ? 65520.0f : (lo + hi) * 0.5f;
    for (float x : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY)}) {
      xs.push_back(x);
      xs.push_back(-x);
    }
  }
  return xs;
}

void expect_half_width_encode_matches(const std::vector<float>& xs, const char* what) {
  Mismatches bf, fp;
  for (float x : xs) {
    const uint16_t ob = bf16_encode(x), tb = cuda_bf16_encode(x);
    const uint16_t of = fp16_encode(x), tf = cuda_fp16_encode(x);
    if (std::isnan(x)) {  // NaN: only NaN-ness (cuda_bf16.h returns a canonical NaN)
      if (!std::isnan(bf16_decode(ob)) || !std::isnan(cuda_bf16_decode(tb))) bf.add("NaN " + describe(x));
      if (!std::isnan(fp16_decode(of)) || !std::isnan(cuda_fp16_decode(tf))) fp.add("NaN " + describe(x));
      continue;
    }
    if (ob != tb) bf.add(describe(x) + ": ours " + hex32(ob) + ", cuda_bf16.h " + hex32(tb));
    if (of != tf) fp.add(describe(x) + ": ours " + hex32(of) + ", cuda_fp16.h " + hex32(tf));
  }
  EXPECT_EQ(bf.count, 0u) << "BF16 " << what << ": " << bf.count << " of " << xs.size() << bf.first;
  EXPECT_EQ(fp.count, 0u) << "FP16 " << what << ": " << fp.count << " of " << xs.size() << fp.first;
}

TEST(CodecHalfWidth, EncodeMatchesCudaOnSpecialsAndMidpoints) {
  const auto xs = half_width_special_inputs();
  expect_half_width_encode_matches(xs, "specials and midpoints");
  // Hand-checked: overflow to Inf (IEEE), ties to even, subnormals.
  EXPECT_EQ(fp16_encode(65504.0f), 0x7BFF);
  EXPECT_EQ(fp16_encode(std::nextafter(65520.0f, 0.0f)), 0x7BFF);
  EXPECT_EQ(fp16_encode(65520.0f), 0x7C00) << "the tie above 65504 rounds to even: Inf";
  EXPECT_EQ(fp16_encode(-INFINITY), 0xFC00);
  EXPECT_EQ(fp16_encode(5.9604645e-08f), 0x0001);  // 2^-24
  EXPECT_EQ(fp16_encode(2.9802322e-08f), 0x0000);  // 2^-25: tie -> even (0)
  EXPECT_EQ(fp16_encode(-0.0f), 0x8000);
  EXPECT_EQ(bf16_encode(FLT_MAX), 0x7F80) << "FLT_MAX rounds up to Inf in BF16";
  EXPECT_EQ(bf16_encode(float_of(0x3F808000u)), 0x3F80) << "tie to even (down)";
  EXPECT_EQ(bf16_encode(float_of(0x3F818000u)), 0x3F82) << "tie to even (up)";
  EXPECT_EQ(bf16_encode(-0.0f), 0x8000);
  EXPECT_TRUE(std::isnan(bf16_decode(bf16_encode(float_of(0x7F800001u))))) << "a signalling NaN must not become Inf";
}

TEST(CodecHalfWidth, EncodeMatchesCudaOnRandomBitPatterns) {
  std::mt19937_64 rng(0xBF16'F016);
  std::vector<float> xs;
  xs.reserve(8'000'000);
  for (int i = 0; i < 4'000'000; ++i) {
    const uint64_t r = rng();
    xs.push_back(float_of(static_cast<uint32_t>(r)));
    xs.push_back(float_of(static_cast<uint32_t>(r >> 32)));
  }
  expect_half_width_encode_matches(xs, "random bit patterns");
}

TEST(CodecHalfWidth, DecodeEveryCodeMatchesCuda) {
  Mismatches bf, fp;
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    const uint16_t c = static_cast<uint16_t>(h);
    if (!same_float(bf16_decode(c), cuda_bf16_decode(c))) bf.add("BF16 " + hex32(h));
    if (!same_float(fp16_decode(c), cuda_fp16_decode(c))) fp.add("FP16 " + hex32(h));
    // Every non-NaN code re-encodes to itself.
    if (!std::isnan(bf16_decode(c)) && bf16_encode(bf16_decode(c)) != c) bf.add("round trip " + hex32(h));
    if (!std::isnan(fp16_decode(c)) && fp16_encode(fp16_decode(c)) != c) fp.add("round trip " + hex32(h));
  }
  EXPECT_EQ(bf.count, 0u) << bf.first;
  EXPECT_EQ(fp.count, 0u) << fp.first;
}

// ---------------------------------------------------------------------------------------
// The exactness fact (docs/numerics.md §1)
// ---------------------------------------------------------------------------------------
bool exact_in_bf16(float p) { return bits_of(bf16_round(p)) == bits_of(p); }
bool exact_in_fp16(float p) { return bits_of(fp16_decode(fp16_encode(p))) == bits_of(p); }
bool in_product_range(float p) {
  const float a = std::fabs(p);
  return a == 0.0f || (a >= 0.0009765625f && a <= 2688.0f);  // [2^-10, 2688]
}

TEST(CodecExactness, E2M1TimesE4M3IsExactInBf16AndFp16) {
  int checked = 0;
  for (int a = 0; a < 16; ++a) {
    for (int b = 0; b < 256; ++b) {
      const float sb = e4m3_decode(static_cast<uint8_t>(b));
      if (std::isnan(sb)) continue;
      const double exact = static_cast<double>(e2m1_decode(static_cast<uint8_t>(a))) * static_cast<double>(sb);
      const float p = e2m1_decode(static_cast<uint8_t>(a)) * sb;
      ASSERT_EQ(static_cast<double>(p), exact) << "the FP32 product itself must be exact: a=" << a << " b=" << b;
      EXPECT_TRUE(exact_in_bf16(p)) << "a=" << a << " b=" << b << " p=" << describe(p);
      EXPECT_TRUE(exact_in_fp16(p)) << "a=" << a << " b=" << b << " p=" << describe(p);
      EXPECT_TRUE(in_product_range(p)) << "a=" << a << " b=" << b << " p=" << describe(p);
      ++checked;
    }
  }
  EXPECT_EQ(checked, 16 * 254);
  EXPECT_EQ(e2m1_decode(7) * e4m3_decode(0x7E), 2688.0f);
  EXPECT_EQ(e2m1_decode(1) * e4m3_decode(0x01), 0.0009765625f);
}

TEST(CodecExactness, CheckerDetectsNonRepresentableProducts) {
  // NOTE: docs/numerics.md §1 says the fact is "not true for FP8 E4M3". Precisely: an E4M3 x E4M3 product
  // has at most 8 significant bits, so it IS exact in BF16 (8-bit significand, wide range); it
  // fails for FP16 (448 * 448 = 200704 overflows 65504) and the [2^-10, 2688] range. The checks
  // below prove each checker can say "no".
  int fp16_fail = 0, range_fail = 0, bf16_fail = 0;
  for (int a = 0; a < 256; ++a) {
    for (int b = 0; b < 256; ++b) {
      const float sa = e4m3_decode(static_cast<uint8_t>(a)), sb = e4m3_decode(static_cast<uint8_t>(b));
      if (std::isnan(sa) || std::isnan(sb)) continue;
      const float p = sa * sb;
      fp16_fail += exact_in_fp16(p) ? 0 : 1;
      range_fail += in_product_range(p) ? 0 : 1;
      bf16_fail += exact_in_bf16(p) ? 0 : 1;
    }
  }
  EXPECT_GT(fp16_fail, 0) << "E4M3 x E4M3 must fail the FP16 check somewhere";
  EXPECT_GT(range_fail, 0) << "E4M3 x E4M3 must leave [2^-10, 2688] somewhere";
  EXPECT_FALSE(exact_in_fp16(448.0f * 448.0f));
  EXPECT_EQ(bf16_fail, 0) << "E4M3 x E4M3 has <= 8 significant bits: exact in BF16";
  // The BF16 checker itself rejects a 9-significant-bit value and a triple E4M3 product.
  EXPECT_FALSE(exact_in_bf16(1.0f + 1.0f / 256.0f));
  EXPECT_FALSE(exact_in_bf16(1.875f * 1.875f * 1.875f));  // 3375/512: 12 significant bits
  EXPECT_FALSE(exact_in_fp16(1.0f + 1.0f / 2048.0f));     // 12 significant bits
  EXPECT_FALSE(exact_in_fp16(1e-8f));                     // below FP16's subnormal grid
}

}  // namespace
