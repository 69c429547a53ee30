// The block-level helpers of src/format/: NVFP4 tensor and block scales, MXFP4 block exponents
// (both rules), FP8 scales from an amax, the 128x4 scale swizzle, and the 16- and 32-point RHT —
// against hand-computed values from docs/numerics.md and naive reference arithmetic. Bit-exact
// comparisons; random inputs use fixed seeds. (Scalar codecs: test_codecs.cpp.)
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "format/codec_test_util.hpp"
#include "format/fp8.hpp"
#include "format/mxfp4.hpp"
#include "format/nvfp4.hpp"
#include "format/rht.hpp"
#include "format/scalar.hpp"
#include "format/swizzle.hpp"
#include "support/mismatches.hpp"

namespace {

using nvfp4::test_support::hex32;
using nvfp4::test_support::Mismatches;
using namespace nvfp4::codec_test;
using namespace nvfp4::fmt;

// ---------------------------------------------------------------------------------------
// NVFP4 tensor / block scales (docs/numerics.md §2)
// ---------------------------------------------------------------------------------------
TEST(CodecNvfp4Scale, TensorScaleEdgeCases) {
  const float inv6 = 1.0f / 6.0f;
  const Nvfp4TensorScale z = nvfp4_tensor_scale(0.0f);
  EXPECT_EQ(z.s_enc, FLT_MAX) << "amax 0 -> S_enc = FLT_MAX";
  EXPECT_EQ(bits_of(z.s_dec), bits_of(1.0f / FLT_MAX));
  EXPECT_EQ(bits_of(z.mult), bits_of(FLT_MAX * inv6));
  const Nvfp4TensorScale inf = nvfp4_tensor_scale(INFINITY);
  EXPECT_EQ(inf.s_enc, 1.0f) << "amax +Inf -> S_enc = 1";
  EXPECT_EQ(inf.s_dec, 1.0f);
  EXPECT_EQ(bits_of(inf.mult), bits_of(inv6));
  const Nvfp4TensorScale one = nvfp4_tensor_scale(2688.0f);
  EXPECT_EQ(one.s_enc, 1.0f);
  EXPECT_EQ(one.s_dec, 1.0f);
  EXPECT_EQ(one.amax, 2688.0f);
  const Nvfp4TensorScale t1 = nvfp4_tensor_scale(1.0f);
  EXPECT_EQ(t1.s_enc, 2688.0f);
  EXPECT_EQ(bits_of(t1.s_dec), bits_of(1.0f / 2688.0f));
  EXPECT_EQ(bits_of(t1.mult), bits_of(2688.0f * inv6));
  // fp32(1/6) is the correctly rounded 1/6.
  EXPECT_EQ(bits_of(inv6), 0x3E2AAAABu);
  // Tiny amax: 2688 / amax overflows FP32 -> clamped to FLT_MAX.
  EXPECT_EQ(nvfp4_tensor_scale(1e-36f).s_enc, FLT_MAX);
  EXPECT_EQ(nvfp4_tensor_scale(1e-45f).s_enc, FLT_MAX);
  EXPECT_LT(nvfp4_tensor_scale(1e-35f).s_enc, FLT_MAX);
  EXPECT_EQ(nvfp4_tensor_decode_factor(2688.0f), 1.0f);
}

TEST(CodecNvfp4Scale, FoldOrderAndExactReciprocalFollowTe) {
  // docs/numerics.md §2 fixes the order of every FP32 operation: mult = S_enc * fp32(1/6) (fold
  // first), e_b = 1 / (fp32(s_b) * S_dec) (exact reciprocal of the rounded product). The
  // "obvious" S_enc / 6 and S_enc / s_b differ in the last bit for some inputs; the counters
  // prove this sweep contains such inputs, so a change of order cannot pass unnoticed.
  const float inv6 = 1.0f / 6.0f;
  std::mt19937_64 rng(0x0D'E4);
  std::uniform_real_distribution<double> lg(-100.0, 120.0);
  std::uniform_int_distribution<int> code(1, 0x7E);
  int mult_differs = 0, factor_differs = 0;
  Mismatches m;
  for (int i = 0; i < 200'000; ++i) {
    const float amax = static_cast<float>(std::exp2(lg(rng)));
    const Nvfp4TensorScale t = nvfp4_tensor_scale(amax);
    const float s_enc = std::min(2688.0f / amax, FLT_MAX);
    if (bits_of(t.s_enc) != bits_of(s_enc) || bits_of(t.s_dec) != bits_of(1.0f / s_enc) ||
        bits_of(t.mult) != bits_of(s_enc * inv6) || bits_of(t.amax) != bits_of(amax)) {
      m.add("tensor scale of amax " + describe(amax));
    }
    mult_differs += bits_of(s_enc / 6.0f) != bits_of(t.mult) ? 1 : 0;
    const uint8_t c = static_cast<uint8_t>(code(rng));
    const float f = nvfp4_block_encode_factor(c, t);
    if (bits_of(f) != bits_of(std::min(1.0f / (e4m3_decode(c) * t.s_dec), FLT_MAX))) {
      m.add("encode factor of code " + std::to_string(c) + " amax " + describe(amax));
    }
    factor_differs += bits_of(std::min(t.s_enc / e4m3_decode(c), FLT_MAX)) != bits_of(f) ? 1 : 0;
    const float bamax = amax * std::ldexp(1.0f, -static_cast<int>(rng() % 12));
    if (nvfp4_block_scale(bamax, t) != e4m3_encode(std::min(bamax * t.mult, FLT_MAX))) {
      m.add("block scale of " + describe(bamax) + " amax " + describe(amax));
    }
  }
  EXPECT_EQ(m.count, 0u) << m.first;
  EXPECT_GT(mult_differs, 0) << "no input where S_enc / 6 != S_enc * fp32(1/6): the sweep proves nothing";
  EXPECT_GT(factor_differs, 0) << "no input where S_enc / s_b != 1 / (s_b * S_dec): the sweep proves nothing";
}

TEST(CodecNvfp4Scale, BlockWithTensorAmaxGetsScale448) {
  // A block whose amax is the tensor amax maps to 6 * 448 = 2688: scale code 0x7E, for every
  // amax for which S_enc is not clamped (amax >= 2688 / FLT_MAX ~ 7.9e-36).
  std::mt19937_64 rng(0x7E'448);
  std::uniform_real_distribution<double> log2_amax(-115.0, 127.9);
  Mismatches m;
  for (int i = 0; i < 300'000; ++i) {
    float amax;
    if (i % 2 == 0) {
      amax = static_cast<float>(std::exp2(log2_amax(rng)));
    } else {  // random bit patterns of positive finite floats above the clamp threshold
      amax = float_of(static_cast<uint32_t>(rng()) & 0x7FFFFFFFu);
      if (!(amax >= 1e-35f) || !std::isfinite(amax)) continue;
    }
    const Nvfp4TensorScale t = nvfp4_tensor_scale(amax);
    const uint8_t s = nvfp4_block_scale(amax, t);
    if (s != 0x7E) m.add("amax " + describe(amax) + " -> scale code " + std::to_string(s));
    // And the block's largest element lands on the E2M1 maximum.
    const float e = nvfp4_block_encode_factor(s, t);
    if (nvfp4_encode_rne(amax, e) != 7 || nvfp4_encode_rne(-amax, e) != 15) m.add("amax " + describe(amax) + " not -> +-6");
  }
  for (float amax : {1e-35f, 1.0f, 2688.0f, 448.0f, 6.0f, FLT_MAX, std::nextafter(FLT_MAX, 0.0f), 1e30f, 3.0e-20f}) {
    const Nvfp4TensorScale t = nvfp4_tensor_scale(amax);
    if (nvfp4_block_scale(amax, t) != 0x7E) m.add("amax " + describe(amax));
  }
  EXPECT_EQ(m.count, 0u) << m.first;
}

TEST(CodecNvfp4Scale, BlockScaleUnderflowAndEncodeFactor) {
  // Block scale underflows E4M3 (below 2^-10) -> code 0 -> encode factor 1/0 = Inf -> FLT_MAX;
  // every nonzero value saturates to +-6 and the block decodes to 0 through its zero scale.
  const Nvfp4TensorScale t = nvfp4_tensor_scale(1e6f);
  const uint8_t s = nvfp4_block_scale(1e-3f, t);  // 1e-3 * 2688/1e6 / 6 = 4.5e-7
  EXPECT_EQ(s, 0);
  EXPECT_EQ(nvfp4_block_encode_factor(0, t), FLT_MAX);
  EXPECT_EQ(nvfp4_encode_rne(1e-3f, FLT_MAX), 7);
  EXPECT_EQ(nvfp4_encode_rne(-1e-3f, FLT_MAX), 15);
  EXPECT_EQ(nvfp4_encode_rne(0.0f, FLT_MAX), 0);
  EXPECT_EQ(nvfp4_decode(7, 0, nvfp4_tensor_decode_factor(1e6f)), 0.0f);
  // An all-zero tensor: S_enc = FLT_MAX, block scale 0, factor FLT_MAX, codes 0.
  const Nvfp4TensorScale z = nvfp4_tensor_scale(0.0f);
  EXPECT_EQ(nvfp4_block_scale(0.0f, z), 0);
  EXPECT_EQ(nvfp4_block_encode_factor(0, z), FLT_MAX);
  EXPECT_EQ(nvfp4_encode_rne(0.0f, nvfp4_block_encode_factor(0, z)), 0);
  // Block amax * mult beyond FLT_MAX is clamped before the E4M3 saturation: still 448.
  EXPECT_EQ(nvfp4_block_scale(FLT_MAX, z), 0x7E);
  // Smallest nonzero block scale: a subnormal E4M3 code; factor = 1 / (2^-9 * S_dec), exact here.
  const Nvfp4TensorScale u = nvfp4_tensor_scale(2688.0f);  // S_enc = S_dec = 1
  EXPECT_EQ(nvfp4_block_scale(6.0f * 0.001953125f, u), 0x01);
  EXPECT_EQ(nvfp4_block_encode_factor(0x01, u), 512.0f);
  // Hand case, S_enc = 1: block amax 6 -> 6 * fp32(1/6) = 1.0000000298 -> fp32 1.0 -> code 0x38.
  EXPECT_EQ(nvfp4_block_scale(6.0f, u), 0x38);
  EXPECT_EQ(nvfp4_block_encode_factor(0x38, u), 1.0f);
  EXPECT_EQ(nvfp4_encode_rne(2.5f, 1.0f), 4);
  EXPECT_EQ(nvfp4_encode_rne(-7.0f, 1.0f), 15) << "x * e_b is clamped to [-6, 6]";
  EXPECT_EQ(nvfp4_decode(5, 0x38, nvfp4_tensor_decode_factor(2688.0f)), 3.0f);
}

TEST(CodecMxfp4, BlockExponentBothRules) {
  using R = MxScaleRule;
  struct Case {
    float amax;
    int round_up, ocp;
  };
  const Case cases[] = {
      {6.0f, 0, 0},            // 6/6 = 1 = 2^0; floor(log2 6) - 2 = 0
      {6.0001f, 1, 0},         // just above 6: round up to 2^1
      {0.0f, -127, -127},      // all-zero block
      {-0.0f, -127, -127},     //
      {1e-40f, -127, -127},    // FP32 subnormal: ceil(log2(1.7e-41)) = -135, floor(log2 1e-40) - 2 = -135; clamped
      {3.0f, -1, -1},          // 0.5 -> -1; floor(log2 3) = 1 -> -1
      {7.0f, 1, 0},            // 7/6 -> 1; OCP: 7 saturates to 6 with scale 1
      {12.0f, 1, 1},           // 2 -> 1; floor(log2 12) = 3 -> 1
      {1.0f, -2, -2},          // log2(1/6) = -2.58 -> -2; 0 - 2
      {0.75f, -3, -3},         // 0.75/6 = 0.125 exactly -> -3; floor(log2 0.75) = -1 -> -3
      {448.0f, 7, 6},          // 74.67 -> 7; 8 - 2
      {FLT_MAX, 126, 125},     // log2(FLT_MAX/6) = 125.4 -> 126; 127 - 2
      {6.0f * 1.17549435e-38f, -126, -126},  // 6 * 2^-126: /6 = 2^-126 exactly; floor(log2(1.5 * 2^-124)) - 2
      {1.2e-37f, -125, -125},  // /6 = 2e-38: log2 = -125.2 -> -125; floor(log2 1.2e-37) = -123 -> -125
  };
  for (const Case& c : cases) {
    EXPECT_EQ(mxfp4_block_exponent(c.amax, R::round_up), c.round_up) << "round_up amax " << describe(c.amax);
    EXPECT_EQ(mxfp4_block_exponent(c.amax, R::ocp_floor), c.ocp) << "ocp amax " << describe(c.amax);
  }
  EXPECT_EQ(mxfp4_block_exponent(NAN, R::round_up), -127);
  EXPECT_EQ(mxfp4_e8m0_code(-127), 0);
  EXPECT_EQ(mxfp4_e8m0_code(0), 127);
  EXPECT_EQ(mxfp4_e8m0_code(127), 254);
  EXPECT_EQ(mxfp4_encode_factor(1), 0.5f);
  EXPECT_EQ(mxfp4_encode_factor(-127), 1.7014118346046923e38f);  // 2^127
  EXPECT_EQ(mxfp4_encode_factor(127), std::ldexp(1.0f, -127));
  // Round-up never saturates; OCP may (7 -> 6 * 2^0 = 6).
  std::mt19937_64 rng(0x3F);
  std::uniform_real_distribution<double> lg(-120.0, 126.0);
  for (int i = 0; i < 100'000; ++i) {
    const float amax = static_cast<float>(std::exp2(lg(rng)));
    const int eu = mxfp4_block_exponent(amax, R::round_up);
    EXPECT_LE(amax * mxfp4_encode_factor(eu), 6.0f) << describe(amax);
    EXPECT_GT(amax * mxfp4_encode_factor(eu), 3.0f) << describe(amax);  // and it is the smallest such 2^e
    const int eo = mxfp4_block_exponent(amax, R::ocp_floor);
    EXPECT_EQ(eo, ref_floor_log2(amax) - 2) << describe(amax);
    if (HasFailure()) break;
  }
  EXPECT_EQ(mxfp4_encode_rne(7.0f, mxfp4_encode_factor(0)), 7);
  EXPECT_EQ(mxfp4_decode(7, mxfp4_e8m0_code(3)), 48.0f);
}

TEST(CodecFp8Scale, ScaleFromAmax) {
  EXPECT_EQ(fp8_scale_from_amax(0.0f, Fp8Kind::e4m3), 1.0f) << "all-zero tensor -> scale 1";
  EXPECT_EQ(fp8_scale_from_amax(0.0f, Fp8Kind::e5m2), 1.0f);
  EXPECT_EQ(fp8_scale_from_amax(448.0f, Fp8Kind::e4m3), 1.0f);
  EXPECT_EQ(fp8_scale_from_amax(57344.0f, Fp8Kind::e5m2), 1.0f);
  EXPECT_EQ(fp8_scale_from_amax(1.0f, Fp8Kind::e4m3), 448.0f);
  EXPECT_EQ(fp8_scale_from_amax(2.0f, Fp8Kind::e5m2), 28672.0f);
  EXPECT_EQ(bits_of(fp8_scale_from_amax(3.0f, Fp8Kind::e4m3)), bits_of(448.0f / 3.0f));
  EXPECT_EQ(fp8_scale_from_amax(1e-40f, Fp8Kind::e4m3), FLT_MAX) << "448 / 1e-40 overflows -> FLT_MAX";
  EXPECT_EQ(fp8_max(Fp8Kind::e4m3), 448.0f);
  EXPECT_EQ(fp8_max(Fp8Kind::e5m2), 57344.0f);
  // amax itself maps onto fp8_max: encode(amax * scale) is the max code.
  std::mt19937_64 rng(0xF8);
  std::uniform_real_distribution<double> lg(-100.0, 120.0);
  for (int i = 0; i < 50'000; ++i) {
    const float amax = static_cast<float>(std::exp2(lg(rng)));
    EXPECT_EQ(fp8_encode_scaled(amax, fp8_scale_from_amax(amax, Fp8Kind::e4m3), Fp8Kind::e4m3), 0x7E) << describe(amax);
    EXPECT_EQ(fp8_encode_scaled(-amax, fp8_scale_from_amax(amax, Fp8Kind::e5m2), Fp8Kind::e5m2), 0xFB) << describe(amax);
    if (HasFailure()) break;
  }
  EXPECT_EQ(fp8_decode(0x7E, Fp8Kind::e4m3), 448.0f);
  EXPECT_EQ(fp8_decode(0x7B, Fp8Kind::e5m2), 57344.0f);
}

TEST(CodecFp8Scale, NonFiniteAmaxGivesScaleOneLikeTe) {
  // TE's FP8 current scaling (transformer_engine/common/recipe/recipe_common.cuh,
  // compute_scale_from_amax): "if (isinf(amax) || amax == 0.f) return 1.f;" and a NaN scale
  // becomes 1. nvfp4_tensor_scale follows TE here (amax +Inf -> S_enc 1); the FP8 helper must
  // too, or x * scale turns every finite value into 0 and the Inf itself into NaN.
  EXPECT_EQ(fp8_scale_from_amax(NAN, Fp8Kind::e4m3), 1.0f);
  EXPECT_EQ(fp8_scale_from_amax(INFINITY, Fp8Kind::e4m3), 1.0f) << "448 / Inf = 0 must be replaced by 1, as TE does";
  EXPECT_EQ(fp8_scale_from_amax(INFINITY, Fp8Kind::e5m2), 1.0f) << "57344 / Inf = 0 must be replaced by 1, as TE does";
}

// ---------------------------------------------------------------------------------------
// 128x4 scale swizzle
// ---------------------------------------------------------------------------------------
TEST(CodecSwizzle, OffsetIsABijectionOntoTheSwizzledBuffer) {
  const std::pair<int64_t, int64_t> shapes[] = {{1, 1},   {128, 4},  {129, 5},  {256, 8},  {300, 7},
                                                {33, 1},  {127, 3},  {512, 1},  {1000, 13}, {128, 64}, {7, 300}};
  for (const auto& [rows, cols] : shapes) {
    const int64_t rp = (rows + 127) / 128 * 128, cp = (cols + 3) / 4 * 4;
    const int64_t bytes = swizzled_scale_bytes(rows, cols);
    ASSERT_EQ(bytes, rp * cp) << rows << "x" << cols;
    std::vector<uint8_t> hit(static_cast<size_t>(bytes), 0);
    bool ok = true;
    for (int64_t r = 0; r < rp && ok; ++r) {
      for (int64_t c = 0; c < cp && ok; ++c) {
        const int64_t off = swizzled_scale_offset(r, c, cols);
        if (off < 0 || off >= bytes || hit[static_cast<size_t>(off)]++) {
          ADD_FAILURE() << rows << "x" << cols << ": (" << r << ", " << c << ") -> " << off << " out of range or repeated";
          ok = false;
        }
      }
    }
    EXPECT_TRUE(std::all_of(hit.begin(), hit.end(), [](uint8_t h) { return h == 1; })) << rows << "x" << cols;
  }
}

TEST(CodecSwizzle, HandComputedOffsets) {
  EXPECT_EQ(round_up(0, 128), 0);
  EXPECT_EQ(round_up(1, 128), 128);
  EXPECT_EQ(round_up(128, 128), 128);
  EXPECT_EQ(swizzled_scale_bytes(1, 1), 512);
  EXPECT_EQ(swizzled_scale_bytes(129, 5), 256 * 8);
  // cols = 8 (C'/4 = 2 column groups).
  EXPECT_EQ(swizzled_scale_offset(0, 0, 8), 0);
  EXPECT_EQ(swizzled_scale_offset(0, 1, 8), 1);
  EXPECT_EQ(swizzled_scale_offset(0, 3, 8), 3);
  EXPECT_EQ(swizzled_scale_offset(0, 4, 8), 512);
  EXPECT_EQ(swizzled_scale_offset(1, 0, 8), 16);
  EXPECT_EQ(swizzled_scale_offset(31, 0, 8), 496);
  EXPECT_EQ(swizzled_scale_offset(32, 0, 8), 4);
  EXPECT_EQ(swizzled_scale_offset(33, 0, 8), 20);
  EXPECT_EQ(swizzled_scale_offset(96, 3, 8), 15);
  EXPECT_EQ(swizzled_scale_offset(127, 3, 8), 511);
  EXPECT_EQ(swizzled_scale_offset(127, 7, 8), 1023);
  EXPECT_EQ(swizzled_scale_offset(128, 0, 8), 1024);
  // cols = 6 pads to 8: (130, 5) -> ((1*2)+1)*512 + 2*16 + 0*4 + 1 = 1569.
  EXPECT_EQ(swizzled_scale_offset(130, 5, 6), 1569);
  // cols = 3 pads to 4: (200, 2) -> (1*1+0)*512 + (200%32=8)*16 + ((200%128)/32=2)*4 + 2 = 650.
  EXPECT_EQ(swizzled_scale_offset(200, 2, 3), 650);
}

// ---------------------------------------------------------------------------------------
// RHT (docs/numerics.md §4)
// ---------------------------------------------------------------------------------------
int sylvester(int i, int j) { return (std::popcount(static_cast<unsigned>(i & j)) & 1) ? -1 : 1; }

TEST(CodecRht, TeSignMaskMatchesNumericsMd) {
  const char* te = "+ + + - + - - - - - - + - + - -";  // docs/numerics.md §4, element 0 first
  uint16_t mask = 0;
  int i = 0;
  for (const char* p = te; *p; ++p) {
    if (*p == ' ') continue;
    if (*p == '-') mask = static_cast<uint16_t>(mask | (1u << i));
    ++i;
  }
  ASSERT_EQ(i, 16);
  EXPECT_EQ(kTeRhtSignMask, mask);
}

TEST(CodecRht, MaskZeroIsSylvesterHadamardOverFour) {
  // Sylvester's recursive construction H_2n = [[H, H], [H, -H]] equals (-1)^popcount(i & j).
  std::array<std::array<int, 16>, 16> h{};
  h[0][0] = 1;
  for (int n = 1; n < 16; n *= 2) {
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < n; ++j) {
        h[i][j + n] = h[i][j];
        h[i + n][j] = h[i][j];
        h[i + n][j + n] = -h[i][j];
      }
    }
  }
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) ASSERT_EQ(h[i][j], sylvester(i, j)) << i << "," << j;
  for (int i = 0; i < 16; ++i) {
    float v[16] = {};
    v[i] = 1.0f;
    rht16(v, 0);
    for (int j = 0; j < 16; ++j) EXPECT_EQ(v[j], 0.25f * static_cast<float>(h[i][j])) << "row " << i << " col " << j;
  }
}

TEST(CodecRht, OrthogonalAndSignedRowsMatchNaiveProduct) {
  std::mt19937_64 rng(0x4D7);
  std::uniform_int_distribution<int> small(-64, 64);
  std::uniform_int_distribution<int> mask_dist(0, 0xFFFF);
  for (int iter = 0; iter < 20'000; ++iter) {
    float x[16], y[16];
    for (float& xi : x) xi = static_cast<float>(small(rng));
    const uint16_t mask = iter < 5'000 ? kTeRhtSignMask : static_cast<uint16_t>(mask_dist(rng));
    // Naive y = x * diag(s) * H16 / 4 in double: row i of H16 multiplied by s_i.
    double ref[16];
    for (int j = 0; j < 16; ++j) {
      double acc = 0.0;
      for (int i = 0; i < 16; ++i) acc += static_cast<double>(x[i]) * ((mask >> i) & 1 ? -1.0 : 1.0) * sylvester(i, j);
      ref[j] = acc / 4.0;
    }
    std::copy(std::begin(x), std::end(x), std::begin(y));
    rht16(y, mask);
    for (int j = 0; j < 16; ++j) ASSERT_EQ(static_cast<double>(y[j]), ref[j]) << "mask " << mask << " col " << j;
    // Inverse of diag(s) H16/4 is (H16/4) diag(s): applying mask 0 then the signs returns x.
    rht16(y, 0);
    for (int i = 0; i < 16; ++i) {
      const float back = ((mask >> i) & 1) ? -y[i] : y[i];
      ASSERT_EQ(back, x[i]) << "mask " << mask << " element " << i;
    }
    // With mask 0 the transform is its own inverse.
    std::copy(std::begin(x), std::end(x), std::begin(y));
    rht16(y, 0);
    rht16(y, 0);
    for (int i = 0; i < 16; ++i) ASSERT_EQ(y[i], x[i]) << "mask 0 twice, element " << i;
  }
}

TEST(CodecRht, ThirtyTwoPointTransformMatchesNaiveProductAndInverts) {
  // The sign vector: TE's 16 signs, then the same 16 negated.
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ((kRht32SignMask >> i) & 1u, (uint32_t{kTeRhtSignMask} >> i) & 1u) << i;
    EXPECT_NE((kRht32SignMask >> (16 + i)) & 1u, (uint32_t{kTeRhtSignMask} >> i) & 1u) << i;
  }
  EXPECT_EQ(kRht32Scale, static_cast<float>(1.0 / std::sqrt(32.0)));
  std::mt19937_64 rng(0x32);
  std::uniform_int_distribution<int> small(-64, 64);
  for (int iter = 0; iter < 5'000; ++iter) {
    float x[32], y[32];
    for (float& xi : x) xi = static_cast<float>(small(rng));
    // The butterflies on small integers are exact; only the final scale rounds, once.
    std::copy(std::begin(x), std::end(x), std::begin(y));
    rht32(y, kRht32SignMask);
    for (int j = 0; j < 32; ++j) {
      double acc = 0.0;
      for (int i = 0; i < 32; ++i) acc += x[i] * ((kRht32SignMask >> i) & 1 ? -1.0 : 1.0) * sylvester(i, j);
      ASSERT_EQ(y[j], static_cast<float>(acc) * kRht32Scale) << "col " << j;
      ASSERT_NEAR(y[j], acc / std::sqrt(32.0), 1e-6 * std::max(1.0, std::abs(acc))) << "col " << j;
    }
    rht32_inverse(y, kRht32SignMask);  // orthogonal: back to x up to the two scale roundings
    for (int i = 0; i < 32; ++i) ASSERT_NEAR(y[i], x[i], 1e-4 * std::max(1.0f, std::abs(x[i]))) << i;
  }
}

}  // namespace
