// Philox4x32-10 (Salmon et al., "Parallel Random Numbers: As Easy as 1, 2, 3", SC'11):
// a counter-based generator. The same (key, counter) gives the same 128 bits on the CPU and
// on the GPU, with no state to carry, which is what makes stochastic rounding reproducible
// and identical between the CPU reference and the CUDA kernels (docs/numerics.md §3).
#pragma once

#include "format/hd.hpp"
#include "nvfp4/sr_key.hpp"

namespace nvfp4::fmt {

struct Philox4x32 {
  uint32_t v[4];
};

NVFP4_HD void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
#if defined(__CUDA_ARCH__)
  lo = a * b;
  hi = __umulhi(a, b);
#else
  const uint64_t p = static_cast<uint64_t>(a) * b;
  lo = static_cast<uint32_t>(p);
  hi = static_cast<uint32_t>(p >> 32);
#endif
}

// Ten rounds of Philox4x32 on counter c with key (k0, k1).
NVFP4_HD Philox4x32 philox4x32_10(Philox4x32 c, uint32_t k0, uint32_t k1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;  // round multipliers
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;  // Weyl key increments
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(kM0, c.v[0], hi0, lo0);
    philox_mulhilo(kM1, c.v[2], hi1, lo1);
    c = Philox4x32{{hi1 ^ c.v[1] ^ k0, lo1, hi0 ^ c.v[3] ^ k1, lo0}};
    k0 += kW0;
    k1 += kW1;
  }
  return c;
}

// What a stochastic-rounding draw is keyed by: include/nvfp4/sr_key.hpp (defined once).
using nvfp4::SrKey;

// 128 random bits for one block of 16 consecutive elements: element j of block `block`
// uses byte j (word j/4, byte j%4) as its 8-bit draw.
NVFP4_HD Philox4x32 sr_block_bits(const SrKey& key, uint64_t block) {
  const Philox4x32 counter{{static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), key.step,
                            (key.layer << 8) | (key.role & 0xFFu)}};
  return philox4x32_10(counter, static_cast<uint32_t>(key.seed), static_cast<uint32_t>(key.seed >> 32));
}

NVFP4_HD uint32_t sr_byte(const Philox4x32& bits, int j) {
  return (bits.v[(j >> 2) & 3] >> (8 * (j & 3))) & 0xFFu;
}

}  // namespace nvfp4::fmt
