// Philox4x32-10 and stochastic rounding onto E2M1 (docs/numerics.md §3).
//
// What this is: known-answer vectors for the generator, the keying of sr_block_bits, the exact
// 8-bit rounding rule of e2m1_encode_sr (exhaustive over r8), and statistical checks with real
// Philox draws (style.md #10: SR is tested statistically, with fixed seeds so the tests are
// deterministic). What this is not: the NVFP4 quantizer's SR path end to end (test_quantize).
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "format/nvfp4.hpp"
#include "format/philox.hpp"
#include "format/scalar.hpp"

namespace {

using namespace nvfp4::fmt;

std::string describe_sr(float f) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g (0x%08x)", static_cast<double>(f), std::bit_cast<uint32_t>(f));
  return buf;
}

bool same_bits(const Philox4x32& a, const Philox4x32& b) {
  return a.v[0] == b.v[0] && a.v[1] == b.v[1] && a.v[2] == b.v[2] && a.v[3] == b.v[3];
}

constexpr double kGrid[8] = {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0};

// Grid neighbours of a magnitude a in [0, 6], computed independently of scalar.hpp:
// lo = largest grid value <= a, hi = smallest grid value >= a (equal on the grid).
void grid_neighbours(double a, double& lo, double& hi) {
  lo = 0.0;
  hi = 6.0;
  for (double g : kGrid) {
    if (g <= a) lo = g;
  }
  for (int k = 7; k >= 0; --k) {
    if (kGrid[k] >= a) hi = kGrid[k];
  }
}

// ---------------------------------------------------------------------------------------
// Philox4x32-10
// ---------------------------------------------------------------------------------------
TEST(Philox, Random123KnownAnswerVectors) {
  // Random123 (D. E. Shaw Research) tests/kat_vectors, "philox4x32 10" lines:
  //   counter, key -> output
  struct Kat {
    Philox4x32 ctr;
    uint32_t k0, k1;
    Philox4x32 out;
  };
  const Kat kats[] = {
      {{{0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u}},
       0x00000000u,
       0x00000000u,
       {{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}}},
      {{{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}},
       0xffffffffu,
       0xffffffffu,
       {{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}}},
      {{{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}},
       0xa4093822u,
       0x299f31d0u,
       {{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}}},
  };
  for (const Kat& k : kats) {
    const Philox4x32 got = philox4x32_10(k.ctr, k.k0, k.k1);
    for (int i = 0; i < 4; ++i) {
      EXPECT_EQ(got.v[i], k.out.v[i]) << "counter " << std::hex << k.ctr.v[0] << " word " << i;
    }
  }
}

TEST(Philox, SrByteMapsElementJToByteJ) {
  // Element j uses byte j % 4 of word j / 4 (little-endian within the word).
  const Philox4x32 bits{{0x03020100u, 0x07060504u, 0x0B0A0908u, 0x0F0E0D0Cu}};
  for (int j = 0; j < 16; ++j) EXPECT_EQ(sr_byte(bits, j), static_cast<uint32_t>(j)) << "element " << j;
}

TEST(Philox, SrBlockBitsDependOnEveryKeyField) {
  const SrKey base{0x0123456789ABCDEFull, 1000u, 7u, 3u};
  const uint64_t block = 0x0000000500000123ull;
  const Philox4x32 ref = sr_block_bits(base, block);
  EXPECT_TRUE(same_bits(ref, sr_block_bits(base, block))) << "same key and block -> same bits";
  const SrKey same_copy = base;
  EXPECT_TRUE(same_bits(ref, sr_block_bits(same_copy, block)));

  struct Variant {
    const char* what;
    SrKey key;
    uint64_t block;
  };
  const Variant variants[] = {
      {"seed low word", {base.seed ^ 1ull, base.step, base.layer, base.role}, block},
      {"seed high word", {base.seed ^ (1ull << 40), base.step, base.layer, base.role}, block},
      {"step", {base.seed, base.step + 1, base.layer, base.role}, block},
      {"layer", {base.seed, base.step, base.layer + 1, base.role}, block},
      {"layer high bit", {base.seed, base.step, base.layer | (1u << 23), base.role}, block},
      {"role", {base.seed, base.step, base.layer, base.role + 1}, block},
      {"role high bit", {base.seed, base.step, base.layer, base.role | 0x80u}, block},
      {"block low word", base, block + 1},
      {"block high word", base, block + (1ull << 32)},
  };
  for (const Variant& v : variants) {
    const Philox4x32 other = sr_block_bits(v.key, v.block);
    // Every one of the four words changes (Philox avalanches); a single equal word would be a
    // 2^-32 coincidence, so demanding all four differ cannot fail by chance in practice.
    for (int w = 0; w < 4; ++w) EXPECT_NE(other.v[w], ref.v[w]) << v.what << " word " << w;
  }
}

TEST(Philox, BytesAreUniform) {
  // Chi-square over 256 byte values from 2^16 blocks x 16 bytes (1M draws, fixed key): 255
  // degrees of freedom, mean 255, sd 22.6; the bound 400 is > 6 sd (fails only if biased).
  const SrKey key{42u, 3u, 1u, 2u};
  std::vector<double> hist(256, 0.0);
  const int blocks = 1 << 16;
  for (int b = 0; b < blocks; ++b) {
    const Philox4x32 bits = sr_block_bits(key, static_cast<uint64_t>(b));
    for (int j = 0; j < 16; ++j) hist[sr_byte(bits, j)] += 1.0;
  }
  const double expect = blocks * 16.0 / 256.0;
  double chi2 = 0.0;
  for (double h : hist) chi2 += (h - expect) * (h - expect) / expect;
  EXPECT_LT(chi2, 400.0);
  EXPECT_GT(chi2, 150.0) << "suspiciously uniform (> 4 sd below the mean): not random";
}

// ---------------------------------------------------------------------------------------
// e2m1_encode_sr: the exact 8-bit rule, exhaustively over r8
// ---------------------------------------------------------------------------------------
// For one v: checks all 256 r8 against the documented rule (up iff r8 < 256 * frac, frac =
// (|v| - lo) / step, after saturating |v| to 6), the sign, and the mean. Returns false on the
// first violation (with a gtest failure recorded).
bool check_sr_all_r8(float v) {
  const double a = std::min(std::fabs(static_cast<double>(v)), 6.0);
  double lo, hi;
  grid_neighbours(a, lo, hi);
  const double frac = hi > lo ? (a - lo) / (hi - lo) : 0.0;
  const int expect_up = static_cast<int>(std::ceil(256.0 * frac));  // exact: frac has few bits
  const uint8_t sign = v < 0.0f ? 8 : 0;                           // -0.0 -> no sign
  int up = 0;
  double sum = 0.0;
  for (uint32_t r8 = 0; r8 < 256; ++r8) {
    const uint8_t c = e2m1_encode_sr(v, r8);
    const double mag = std::fabs(static_cast<double>(e2m1_decode(c)));
    if ((c & 8) != sign) {
      ADD_FAILURE() << "v " << describe_sr(v) << " r8 " << r8 << ": code " << int(c) << " has the wrong sign";
      return false;
    }
    if (mag != lo && mag != hi) {
      ADD_FAILURE() << "v " << describe_sr(v) << " r8 " << r8 << ": " << mag << " is not a neighbour (" << lo << ", "
                    << hi << ")";
      return false;
    }
    const bool is_up = hi > lo && mag == hi;
    // Rounding up happens exactly for the smallest r8 values: up iff r8 < 256 * frac.
    if (is_up != (static_cast<double>(r8) < 256.0 * frac)) {
      ADD_FAILURE() << "v " << describe_sr(v) << " r8 " << r8 << ": up = " << is_up << ", rule says "
                    << (static_cast<double>(r8) < 256.0 * frac);
      return false;
    }
    up += is_up ? 1 : 0;
    sum += mag;
  }
  if (up != expect_up) {
    ADD_FAILURE() << "v " << describe_sr(v) << ": " << up << " of 256 up, want ceil(256 * " << frac << ") = " << expect_up;
    return false;
  }
  // Unbiased within the 8-bit resolution: mean in [a, a + step / 256).
  const double mean = sum / 256.0, step = hi - lo;
  const bool unbiased = step == 0.0 ? mean == a : (mean >= a && mean - a <= step / 256.0);
  if (!unbiased) {
    ADD_FAILURE() << "v " << describe_sr(v) << ": mean " << mean << " vs |v| " << a << " step " << step;
    return false;
  }
  return true;
}

TEST(StochasticRounding, ExhaustiveR8OnRandomAndSpecialValues) {
  std::vector<float> vs;
  for (double g : kGrid) {  // grid values never move
    vs.push_back(static_cast<float>(g));
    vs.push_back(-static_cast<float>(g));
  }
  for (int k = 0; k + 1 < 8; ++k) {  // midpoints, quarter points, and values one ulp from the grid
    const float lo = static_cast<float>(kGrid[k]), hi = static_cast<float>(kGrid[k + 1]);
    for (float x : {(lo + hi) * 0.5f, lo + (hi - lo) * 0.25f, lo + (hi - lo) * (1.0f / 256.0f),
                    lo + (hi - lo) * (255.0f / 256.0f), std::nextafter(lo, hi), std::nextafter(hi, lo)}) {
      vs.push_back(x);
      vs.push_back(-x);
    }
  }
  for (float x : {6.0f, 6.5f, 7.0f, 1e30f, FLT_MAX, INFINITY, 1e-45f, FLT_MIN, 0.0f}) {  // saturation, tiny
    vs.push_back(x);
    vs.push_back(-x);
  }
  std::mt19937_64 rng(0x5A'0001);
  std::uniform_real_distribution<float> u(-7.0f, 7.0f);
  for (int i = 0; i < 200'000; ++i) vs.push_back(u(rng));
  for (float v : vs) {
    if (!check_sr_all_r8(v)) break;
  }
  // Sign symmetry, spelled out: code(-v) == code(v) | 8 for v > 0.
  for (int i = 0; i < 20'000; ++i) {
    const float v = std::fabs(u(rng));
    if (v == 0.0f) continue;
    for (uint32_t r8 = 0; r8 < 256; r8 += 5) {
      ASSERT_EQ(e2m1_encode_sr(-v, r8), e2m1_encode_sr(v, r8) | 8) << describe_sr(v) << " r8 " << r8;
    }
  }
  // Saturation above 6: every draw gives +-6.
  for (uint32_t r8 = 0; r8 < 256; ++r8) {
    ASSERT_EQ(e2m1_encode_sr(6.0001f, r8), 7);
    ASSERT_EQ(e2m1_encode_sr(-100.0f, r8), 15);
  }
  // Hand-computed: 0.3 is 0.6 of the way from 0 to 0.5 -> ceil(153.6) = 154 draws (r8 0..153) go up.
  EXPECT_EQ(e2m1_encode_sr(0.3f, 153), 1);
  EXPECT_EQ(e2m1_encode_sr(0.3f, 154), 0);
  // 5.0 is halfway from 4 to 6 -> exactly r8 < 128 go up.
  EXPECT_EQ(e2m1_encode_sr(5.0f, 127), 7);
  EXPECT_EQ(e2m1_encode_sr(5.0f, 128), 6);
  EXPECT_EQ(e2m1_encode_sr(-0.0f, 0), 0);
}

TEST(StochasticRounding, PhiloxDrawsAreUnbiased) {
  // For each v: quantize it N times with bits from N different blocks (element j = block % 16)
  // and compare the mean decoded value to v: within 4 standard errors + step / 256 (the 8-bit
  // resolution bias, always upward in magnitude).
  const SrKey key{0xC0FFEEull, 17u, 5u, 1u};
  const int n = 100'000;
  for (float v : {0.3f, 0.1f, 1.1f, 1.9f, 2.7f, 3.3f, 4.9f, 5.5f, 5.99f, -0.7f, -2.2f, -4.1f, 3.0f, -0.01f}) {
    const double a = std::fabs(static_cast<double>(v));
    double lo, hi;
    grid_neighbours(a, lo, hi);
    const double step = hi - lo;
    const double p = step > 0 ? (a - lo) / step : 0.0;
    double sum = 0.0;
    for (int b = 0; b < n; ++b) {
      const Philox4x32 bits = sr_block_bits(key, static_cast<uint64_t>(b));
      sum += static_cast<double>(e2m1_decode(e2m1_encode_sr(v, sr_byte(bits, b % 16))));
    }
    const double mean = sum / n;
    const double se = step * std::sqrt(std::max(p * (1.0 - p), 1.0 / 256.0) / n);
    EXPECT_LE(std::fabs(mean - static_cast<double>(v)), 4.0 * se + step / 256.0)
        << "v " << v << " mean " << mean << " se " << se;
  }
}

TEST(StochasticRounding, TwoSeedsGiveDifferentRoundings) {
  const SrKey k1{1u, 0u, 0u, 0u}, k2{2u, 0u, 0u, 0u};
  int differ = 0;
  const int n = 10'000;
  for (int b = 0; b < n; ++b) {
    const Philox4x32 b1 = sr_block_bits(k1, static_cast<uint64_t>(b)), b2 = sr_block_bits(k2, static_cast<uint64_t>(b));
    differ += e2m1_encode_sr(0.25f, sr_byte(b1, 0)) != e2m1_encode_sr(0.25f, sr_byte(b2, 0)) ? 1 : 0;
  }
  // 0.25 rounds up with p = 1/2 under each seed: independent draws differ half the time.
  EXPECT_GT(differ, n * 45 / 100);
  EXPECT_LT(differ, n * 55 / 100);
}

// ---------------------------------------------------------------------------------------
// nvfp4_encode_sr vs nvfp4_encode_rne
// ---------------------------------------------------------------------------------------
TEST(StochasticRounding, Nvfp4SrIsRneOrItsNeighbour) {
  std::mt19937_64 rng(0x5A'0002);
  std::uniform_real_distribution<double> lg(-20.0, 20.0);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  int sr_differs = 0, sr_equals = 0;
  for (int iter = 0; iter < 20'000; ++iter) {
    const float amax = static_cast<float>(std::exp2(lg(rng)));
    const Nvfp4TensorScale t = nvfp4_tensor_scale(amax * 4.0f);
    const float bamax = amax;
    const float e = nvfp4_block_encode_factor(nvfp4_block_scale(bamax, t), t);
    const float x = unit(rng) * bamax;
    const float s = nvfp4_scaled(x, e);
    const uint8_t rne = nvfp4_encode_rne(x, e);
    double lo, hi;
    grid_neighbours(std::fabs(static_cast<double>(s)), lo, hi);
    const double rne_mag = std::fabs(static_cast<double>(e2m1_decode(rne)));
    ASSERT_TRUE(rne_mag == lo || rne_mag == hi) << "RNE of " << describe_sr(s) << " is not a neighbour";
    for (uint32_t r8 = 0; r8 < 256; ++r8) {
      const uint8_t sr = nvfp4_encode_sr(x, e, r8);
      const int dm = static_cast<int>(sr & 7) - static_cast<int>(rne & 7);
      const double mag = std::fabs(static_cast<double>(e2m1_decode(sr)));
      ASSERT_TRUE((sr & 8) == (rne & 8) && dm >= -1 && dm <= 1 && (mag == lo || mag == hi))
          << "x " << describe_sr(x) << " e " << describe_sr(e) << " r8 " << r8 << ": SR " << int(sr) << ", RNE "
          << int(rne) << ", neighbours " << lo << " " << hi;
      (sr == rne ? sr_equals : sr_differs)++;
    }
  }
  EXPECT_GT(sr_differs, 0);
  EXPECT_GT(sr_equals, 0);
}

TEST(StochasticRounding, EncodeBlockUsesByteJForElementJ) {
  const SrKey key{99u, 1u, 2u, 3u};
  const Philox4x32 bits = sr_block_bits(key, 12345u);
  float x[16];
  for (int j = 0; j < 16; ++j) x[j] = 0.1f + 0.37f * static_cast<float>(j) * (j % 2 ? -1.0f : 1.0f);
  const float e = 1.0f;
  uint8_t sr[16], rne[16];
  nvfp4_encode_block(x, 16, e, true, bits, sr);
  nvfp4_encode_block(x, 16, e, false, bits, rne);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(sr[j], nvfp4_encode_sr(x[j], e, sr_byte(bits, j))) << "element " << j;
    EXPECT_EQ(rne[j], nvfp4_encode_rne(x[j], e)) << "element " << j;
  }
  // A partial block writes only n codes.
  uint8_t part[16];
  std::fill(std::begin(part), std::end(part), uint8_t{0xAA});
  nvfp4_encode_block(x, 5, e, false, bits, part);
  for (int j = 5; j < 16; ++j) EXPECT_EQ(part[j], 0xAA) << "element " << j << " written beyond n";
}

}  // namespace
