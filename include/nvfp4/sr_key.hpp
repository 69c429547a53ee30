// The two constants of the quantization arithmetic that the public API and the format core
// (src/format/, compiled for host and device) share — defined here, once.
#pragma once

#include <cstdint>

namespace nvfp4 {

// What a stochastic-rounding draw is keyed by (docs/numerics.md §3, architecture.md principle 4):
// identical bits on the CPU and the GPU. The seed is the key; step, layer and role and the
// element's block index form the counter, so every (seed, step, layer, role, element) has its
// own random bits. A quantizer draws a tensor's row-wise copy with role and its column-wise
// copy with role | 128 (sr_copy_key), so callers give roles < 128.
struct SrKey {
  uint64_t seed = 0;
  uint32_t step = 0;
  uint32_t layer = 0;  // < 2^24
  uint32_t role = 0;   // < 128 as given; < 256 as drawn
};

// The key one copy of a tensor draws with: role's low 7 bits, bit 7 set for the column-wise copy.
constexpr SrKey sr_copy_key(const SrKey& k, bool column_copy) {
  return SrKey{k.seed, k.step, k.layer, (k.role & 0x7Fu) | (column_copy ? 0x80u : 0u)};
}

// TE's RHT sign vector, element 0 first, "+ + + - + - - - - - - + - + - -", as a bit mask
// (bit i set: s_i = -1): bits 3, 5, 6, 7, 8, 9, 10, 12, 14, 15.
inline constexpr uint16_t kTeRhtSignMask = 0b1101'0111'1110'1000;

}  // namespace nvfp4
