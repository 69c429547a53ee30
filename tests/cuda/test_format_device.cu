// The header-only format core (src/format/*.hpp) evaluated ON THE GPU, compared bit for bit
// with the same functions evaluated on the host.
//
// What this is: the guarantee behind architecture principle 1 ("CPU reference and CUDA kernels
// run the SAME definition of every rounding step"): each kernel below calls the header
// functions over a large input set, copies the results back, and the host recomputes them.
// Nothing may differ, not one bit (style.md #10: deterministic math is tested bit-exactly).
// One extra test compares our encoders with the GPU's own conversion instructions
// (cvt.rn.satfinite.e4m3x2 / e5m2x2, cvt.rn.bf16.f32, cvt.rn.f16.f32), which is what TE uses.
// What this is not: a test of the quantize kernels themselves, or of performance.
//
// Built by nvcc for sm_90a with --fmad=false (tests/CMakeLists.txt): no FMA contraction in
// device code, as on the host. Needs a GPU; without one every test is skipped.
// Random inputs come from std::mt19937_64 with fixed seeds. Device memory only (cudaMalloc);
// every output buffer is poisoned with 0xFF before its kernel runs.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include "support/cuda_test.hpp"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "format/fp8.hpp"
#include "format/mxfp4.hpp"
#include "format/nvfp4.hpp"
#include "format/philox.hpp"
#include "format/rht.hpp"
#include "format/scalar.hpp"
#include "nvfp4/cuda_runtime_info.hpp"

#include "support/mismatches.hpp"

namespace {

using nvfp4::test_support::hex32;
using nvfp4::test_support::Mismatches;

using namespace nvfp4::fmt;

// After every launch: the launch itself, then the kernel's execution.
#define LAUNCH_OK()                    \
  do {                                 \
    CUDA_OK(cudaGetLastError());       \
    CUDA_OK(cudaDeviceSynchronize());  \
  } while (0)

constexpr int kThreads = 256;

// Grid size for a grid-stride loop over n items.
unsigned grid_for(uint64_t n) {
  const uint64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::max<uint64_t>(1, std::min<uint64_t>(blocks, 1u << 16)));
}

__device__ uint64_t thread_index() { return blockIdx.x * static_cast<uint64_t>(blockDim.x) + threadIdx.x; }
__device__ uint64_t thread_stride() { return static_cast<uint64_t>(gridDim.x) * blockDim.x; }

// Owns one cudaMalloc'ed array of n elements of T.
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (ptr_ != nullptr) EXPECT_EQ(cudaFree(ptr_), cudaSuccess) << "cudaFree: an earlier CUDA error";
  }
  cudaError_t alloc(size_t n) {
    n_ = n;
    return cudaMalloc(reinterpret_cast<void**>(&ptr_), std::max<size_t>(n, 1) * sizeof(T));
  }
  cudaError_t upload(const std::vector<T>& h) {
    if (h.size() != n_) return cudaErrorInvalidValue;
    return cudaMemcpy(ptr_, h.data(), n_ * sizeof(T), cudaMemcpyHostToDevice);
  }
  cudaError_t poison() { return cudaMemset(ptr_, 0xFF, n_ * sizeof(T)); }
  cudaError_t download(std::vector<T>& h) const {
    h.resize(n_);
    return cudaMemcpy(h.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost);
  }
  T* get() const { return ptr_; }
  size_t size() const { return n_; }

 private:
  T* ptr_ = nullptr;
  size_t n_ = 0;
};

bool is_nan_bits(uint32_t b) { return (b & 0x7FFFFFFFu) > 0x7F800000u; }

// ---------------------------------------------------------------------------------------
// FP8 / BF16 / FP16 encoders
// ---------------------------------------------------------------------------------------
struct EncodeOut {
  uint8_t* e4m3;
  uint8_t* e5m2;
  uint16_t* bf16;
  uint16_t* fp16;
};

__device__ void encode_one(float x, uint64_t i, const EncodeOut& out) {
  out.e4m3[i] = e4m3_encode(x);
  out.e5m2[i] = e5m2_encode(x);
  out.bf16[i] = bf16_encode(x);
  out.fp16[i] = fp16_encode(x);
}

// Input i is the FP32 bit pattern (first + i) * stride (mod 2^32).
__global__ void k_encode_strided(uint64_t first, uint64_t n, uint32_t stride, EncodeOut out) {
  for (uint64_t i = thread_index(); i < n; i += thread_stride()) {
    encode_one(f32_from_bits(static_cast<uint32_t>((first + i) * stride)), i, out);
  }
}

__global__ void k_encode_list(const float* x, uint64_t n, EncodeOut out) {
  for (uint64_t i = thread_index(); i < n; i += thread_stride()) encode_one(x[i], i, out);
}

// The GPU's own conversion instructions (sm_89+: cvt.rn.satfinite.{e4m3,e5m2}x2.f32).
__global__ void k_hw_encode_strided(uint64_t first, uint64_t n, uint32_t stride, EncodeOut out) {
  for (uint64_t i = thread_index(); i < n; i += thread_stride()) {
    const float x = f32_from_bits(static_cast<uint32_t>((first + i) * stride));
    out.e4m3[i] = static_cast<uint8_t>(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3));
    out.e5m2[i] = static_cast<uint8_t>(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E5M2));
    out.bf16[i] = __bfloat16_as_ushort(__float2bfloat16_rn(x));
    out.fp16[i] = __half_as_ushort(__float2half_rn(x));
  }
}

struct EncodeBuffers {
  DeviceBuffer<uint8_t> e4m3, e5m2;
  DeviceBuffer<uint16_t> bf16, fp16;
  EncodeOut out() const { return {e4m3.get(), e5m2.get(), bf16.get(), fp16.get()}; }
};

void alloc_encode(EncodeBuffers& b, size_t n) {
  CUDA_OK(b.e4m3.alloc(n));
  CUDA_OK(b.e5m2.alloc(n));
  CUDA_OK(b.bf16.alloc(n));
  CUDA_OK(b.fp16.alloc(n));
}

void poison_encode(EncodeBuffers& b) {
  CUDA_OK(b.e4m3.poison());
  CUDA_OK(b.e5m2.poison());
  CUDA_OK(b.bf16.poison());
  CUDA_OK(b.fp16.poison());
}

struct EncodeHost {
  std::vector<uint8_t> e4m3, e5m2;
  std::vector<uint16_t> bf16, fp16;
};

void download_encode(const EncodeBuffers& b, EncodeHost& h) {
  CUDA_OK(b.e4m3.download(h.e4m3));
  CUDA_OK(b.e5m2.download(h.e5m2));
  CUDA_OK(b.bf16.download(h.bf16));
  CUDA_OK(b.fp16.download(h.fp16));
}

// Host evaluation of the same header functions, compared bit for bit with the device's.
void compare_encode(const EncodeHost& d, size_t i, float x, Mismatches& m) {
  const uint8_t e4 = e4m3_encode(x), e5 = e5m2_encode(x);
  const uint16_t bf = bf16_encode(x), fp = fp16_encode(x);
  if (d.e4m3[i] != e4 || d.e5m2[i] != e5 || d.bf16[i] != bf || d.fp16[i] != fp) {
    char buf[200];
    std::snprintf(buf, sizeof buf, "x=%s: e4m3 host %02x dev %02x, e5m2 host %02x dev %02x, bf16 host %04x dev %04x, "
                  "fp16 host %04x dev %04x", hex32(f32_bits(x)).c_str(), e4, d.e4m3[i], e5, d.e5m2[i], bf, d.bf16[i], fp,
                  d.fp16[i]);
    m.add(buf);
  }
}

// Midpoints between adjacent codes of every format, one ulp either side, every code value,
// and the specials (zeros, Inf, NaN, FLT_MAX, subnormals).
std::vector<float> midpoint_inputs() {
  std::vector<float> xs;
  auto both = [&xs](float x) {
    xs.push_back(x);
    xs.push_back(-x);
  };
  auto around = [&both](float lo, float hi) {
    const float mid = (lo + hi) * 0.5f;
    both(lo);
    both(mid);
    both(std::nextafter(mid, 0.0f));
    both(std::nextafter(mid, INFINITY));
  };
  for (int c = 0; c < 0x7E; ++c) around(e4m3_decode(static_cast<uint8_t>(c)), e4m3_decode(static_cast<uint8_t>(c + 1)));
  around(448.0f, 480.0f);  // beyond max: 464 and its neighbours saturate
  for (int c = 0; c < 0x7B; ++c) around(e5m2_decode(static_cast<uint8_t>(c)), e5m2_decode(static_cast<uint8_t>(c + 1)));
  around(57344.0f, 65536.0f);
  for (uint32_t h = 0; h < 0x7F80u; ++h) around(bf16_decode(static_cast<uint16_t>(h)), bf16_decode(static_cast<uint16_t>(h + 1)));
  for (uint32_t h = 0; h < 0x7BFFu; ++h) around(fp16_decode(static_cast<uint16_t>(h)), fp16_decode(static_cast<uint16_t>(h + 1)));
  around(65504.0f, 65536.0f);  // 65520: FP16 overflow tie
  for (float x : {0.0f, FLT_MIN, FLT_MAX, INFINITY, 1e-45f, 1e-40f, 7e-39f, 1e30f}) both(x);
  for (uint32_t nb : {0x7FC00000u, 0xFFC00000u, 0x7F800001u, 0xFF800001u, 0x7FFFFFFFu, 0xFFFFFFFFu, 0x7FBFFFFFu})
    xs.push_back(f32_from_bits(nb));
  return xs;
}

// ---------------------------------------------------------------------------------------
// Decoders
// ---------------------------------------------------------------------------------------
__global__ void k_decode_all(uint32_t* bf16, uint32_t* fp16, uint32_t* e4m3, uint32_t* e5m2, uint32_t* e8m0,
                             uint32_t* e2m1) {
  for (uint64_t i = thread_index(); i < 65536; i += thread_stride()) {
    const uint16_t c = static_cast<uint16_t>(i);
    bf16[i] = f32_bits(bf16_decode(c));
    fp16[i] = f32_bits(fp16_decode(c));
    if (i < 256) {
      e4m3[i] = f32_bits(e4m3_decode(static_cast<uint8_t>(i)));
      e5m2[i] = f32_bits(e5m2_decode(static_cast<uint8_t>(i)));
      e8m0[i] = f32_bits(e8m0_decode(static_cast<uint8_t>(i)));
    }
    if (i < 16) e2m1[i] = f32_bits(e2m1_decode(static_cast<uint8_t>(i)));
  }
}

// The GPU's decode instructions (cvt.rn.f16x2.e4m3x2 / e5m2x2) and bf16/fp16 -> f32.
__global__ void k_hw_decode_all(uint32_t* bf16, uint32_t* fp16, uint32_t* e4m3, uint32_t* e5m2) {
  for (uint64_t i = thread_index(); i < 65536; i += thread_stride()) {
    const unsigned short c = static_cast<unsigned short>(i);
    bf16[i] = f32_bits(__bfloat162float(__ushort_as_bfloat16(c)));
    fp16[i] = f32_bits(__half2float(__ushort_as_half(c)));
    if (i < 256) {
      const __nv_fp8_storage_t s = static_cast<__nv_fp8_storage_t>(i);
      e4m3[i] = f32_bits(__half2float(__half(__nv_cvt_fp8_to_halfraw(s, __NV_E4M3))));
      e5m2[i] = f32_bits(__half2float(__half(__nv_cvt_fp8_to_halfraw(s, __NV_E5M2))));
    }
  }
}

// ---------------------------------------------------------------------------------------
// E2M1
// ---------------------------------------------------------------------------------------
__global__ void k_e2m1_rne(const float* x, uint64_t n, uint8_t* out) {
  for (uint64_t i = thread_index(); i < n; i += thread_stride()) out[i] = e2m1_encode_rne(x[i]);
}

// out[v * 128 + p] = code(r8 = 2p) | code(r8 = 2p + 1) << 4: every r8 for every value.
__global__ void k_e2m1_sr(const float* x, uint64_t n, uint8_t* out) {
  for (uint64_t i = thread_index(); i < n * 128; i += thread_stride()) {
    const float v = x[i / 128];
    const uint32_t r8 = static_cast<uint32_t>(i % 128) * 2;
    out[i] = static_cast<uint8_t>(e2m1_encode_sr(v, r8) | (e2m1_encode_sr(v, r8 + 1) << 4));
  }
}

std::vector<float> e2m1_inputs(size_t n_random, uint64_t seed) {
  std::vector<float> xs;
  constexpr float grid[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  for (int k = 0; k < 8; ++k) {
    const float hi = k < 7 ? grid[k + 1] : 8.0f;
    const float mid = (grid[k] + hi) * 0.5f;
    for (float x : {grid[k], mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY), std::nextafter(grid[k], INFINITY),
                    std::nextafter(grid[k], 0.0f)}) {
      xs.push_back(x);
      xs.push_back(-x);
    }
  }
  for (float x : {0.0f, 1e-45f, FLT_MIN, 7.0f, 1e30f, FLT_MAX, INFINITY}) {
    xs.push_back(x);
    xs.push_back(-x);
  }
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-8.0f, 8.0f);
  const size_t n_bits = n_random / 32;  // some arbitrary bit patterns: NaN, Inf, huge, tiny
  while (xs.size() < n_random - n_bits) xs.push_back(u(rng));
  while (xs.size() < n_random) xs.push_back(f32_from_bits(static_cast<uint32_t>(rng())));
  return xs;
}

// ---------------------------------------------------------------------------------------
// NVFP4 pipeline, MXFP4, Philox, RHT
// ---------------------------------------------------------------------------------------
__global__ void k_tensor_scale(const float* amax, uint64_t n, Nvfp4TensorScale* out) {
  for (uint64_t i = thread_index(); i < n; i += thread_stride()) out[i] = nvfp4_tensor_scale(amax[i]);
}

struct BlockResult {
  uint8_t scale;
  float factor;
  uint8_t rne[16];
  uint8_t sr[16];
  float dec[16];
};

// One 16-element block through docs/numerics.md §2, with the tensor amax given. The SAME function
// runs on host and device.
__host__ __device__ void nvfp4_block_pipeline(const float* x, float tensor_amax, const SrKey& key, uint64_t block,
                                              BlockResult& r) {
  const Nvfp4TensorScale t = nvfp4_tensor_scale(tensor_amax);
  float bamax = 0.0f;
  for (int j = 0; j < kNvfp4Block; ++j) bamax = max_f32(bamax, abs_f32(x[j]));
  r.scale = nvfp4_block_scale(bamax, t);
  r.factor = nvfp4_block_encode_factor(r.scale, t);
  const Philox4x32 bits = sr_block_bits(key, block);
  nvfp4_encode_block(x, kNvfp4Block, r.factor, false, bits, r.rne);
  nvfp4_encode_block(x, kNvfp4Block, r.factor, true, bits, r.sr);
  const float dec = nvfp4_tensor_decode_factor(tensor_amax);
  for (int j = 0; j < kNvfp4Block; ++j) r.dec[j] = nvfp4_decode(r.rne[j], r.scale, dec);
}

__global__ void k_nvfp4_blocks(const float* x, const float* tensor_amax, uint64_t nblocks, SrKey key, BlockResult* out) {
  for (uint64_t b = thread_index(); b < nblocks; b += thread_stride()) {
    nvfp4_block_pipeline(x + b * kNvfp4Block, tensor_amax[b], key, b, out[b]);
  }
}

struct MxResult {
  int e_round_up;
  int e_ocp;
  uint8_t code_round_up;
  uint8_t code_ocp;
};

__host__ __device__ MxResult mx_eval(float amax, float x) {
  MxResult r;
  r.e_round_up = mxfp4_block_exponent(amax, MxScaleRule::round_up);
  r.e_ocp = mxfp4_block_exponent(amax, MxScaleRule::ocp_floor);
  r.code_round_up = mxfp4_encode_rne(x, mxfp4_encode_factor(r.e_round_up));
  r.code_ocp = mxfp4_encode_rne(x, mxfp4_encode_factor(r.e_ocp));
  return r;
}

__global__ void k_mxfp4(const float* amax, const float* x, uint64_t n, MxResult* out) {
  for (uint64_t i = thread_index(); i < n; i += thread_stride()) out[i] = mx_eval(amax[i], x[i]);
}

__global__ void k_philox(const Philox4x32* ctr, const uint32_t* keys, uint64_t n, Philox4x32* out) {
  for (uint64_t i = thread_index(); i < n; i += thread_stride()) out[i] = philox4x32_10(ctr[i], keys[2 * i], keys[2 * i + 1]);
}

__global__ void k_sr_bits(const SrKey* keys, const uint64_t* blocks, uint64_t n, Philox4x32* out) {
  for (uint64_t i = thread_index(); i < n; i += thread_stride()) out[i] = sr_block_bits(keys[i], blocks[i]);
}

// Each vector: rht16 in FP32, then the BF16 rounding docs/numerics.md §4 applies before the amax.
__global__ void k_rht(const float* in, const uint16_t* masks, uint64_t nvec, float* out, uint16_t* out_bf16) {
  for (uint64_t v = thread_index(); v < nvec; v += thread_stride()) {
    float y[kRhtSize];
    for (int j = 0; j < kRhtSize; ++j) y[j] = in[v * kRhtSize + j];
    rht16(y, masks[v]);
    for (int j = 0; j < kRhtSize; ++j) {
      out[v * kRhtSize + j] = y[j];
      out_bf16[v * kRhtSize + j] = bf16_encode(y[j]);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------
TEST(DeviceFormat, EncodeEvery61stFp32PatternMatchesHost) {
  REQUIRE_GPU();
  constexpr uint32_t kStride = 61;  // prime: the low bits cycle through every residue
  const uint64_t total = ((uint64_t{1} << 32) + kStride - 1) / kStride;  // patterns i * 61 < 2^32
  const uint64_t chunk = uint64_t{1} << 24;
  EncodeBuffers dev;
  ASSERT_NO_FATAL_FAILURE(alloc_encode(dev, chunk));
  EncodeHost host;
  Mismatches m;
  for (uint64_t first = 0; first < total; first += chunk) {
    const uint64_t n = std::min(chunk, total - first);
    ASSERT_NO_FATAL_FAILURE(poison_encode(dev));
    k_encode_strided<<<grid_for(n), kThreads>>>(first, n, kStride, dev.out());
    LAUNCH_OK();
    ASSERT_NO_FATAL_FAILURE(download_encode(dev, host));
    for (uint64_t i = 0; i < n; ++i) {
      compare_encode(host, i, f32_from_bits(static_cast<uint32_t>((first + i) * kStride)), m);
    }
  }
  EXPECT_EQ(m.count, 0u) << m.count << " of " << total << " FP32 patterns encode differently on the device" << m.first;
}

TEST(DeviceFormat, EncodeMidpointsAndSpecialsMatchesHost) {
  REQUIRE_GPU();
  const std::vector<float> xs = midpoint_inputs();
  DeviceBuffer<float> in;
  CUDA_OK(in.alloc(xs.size()));
  CUDA_OK(in.upload(xs));
  EncodeBuffers dev;
  ASSERT_NO_FATAL_FAILURE(alloc_encode(dev, xs.size()));
  ASSERT_NO_FATAL_FAILURE(poison_encode(dev));
  k_encode_list<<<grid_for(xs.size()), kThreads>>>(in.get(), xs.size(), dev.out());
  LAUNCH_OK();
  EncodeHost host;
  ASSERT_NO_FATAL_FAILURE(download_encode(dev, host));
  Mismatches m;
  for (size_t i = 0; i < xs.size(); ++i) compare_encode(host, i, xs[i], m);
  EXPECT_EQ(m.count, 0u) << m.count << " of " << xs.size() << m.first;
}

TEST(DeviceFormat, OurEncodersMatchTheGpuConversionInstructions) {
  // Independent check: the hardware cvt instructions (what TE's kernels use) against our host
  // encoders. Only NaN-ness is compared for NaN inputs (the hardware returns a canonical NaN).
  REQUIRE_GPU();
  constexpr uint32_t kStride = 127;
  const uint64_t total = ((uint64_t{1} << 32) + kStride - 1) / kStride;
  const uint64_t chunk = uint64_t{1} << 24;
  EncodeBuffers dev;
  ASSERT_NO_FATAL_FAILURE(alloc_encode(dev, chunk));
  EncodeHost hw;
  Mismatches m;
  for (uint64_t first = 0; first < total; first += chunk) {
    const uint64_t n = std::min(chunk, total - first);
    ASSERT_NO_FATAL_FAILURE(poison_encode(dev));
    k_hw_encode_strided<<<grid_for(n), kThreads>>>(first, n, kStride, dev.out());
    LAUNCH_OK();
    ASSERT_NO_FATAL_FAILURE(download_encode(dev, hw));
    for (uint64_t i = 0; i < n; ++i) {
      const float x = f32_from_bits(static_cast<uint32_t>((first + i) * kStride));
      if (is_nan(x)) {
        const bool ok = std::isnan(e4m3_decode(hw.e4m3[i])) && std::isnan(e5m2_decode(hw.e5m2[i])) &&
                        std::isnan(bf16_decode(hw.bf16[i])) && std::isnan(fp16_decode(hw.fp16[i])) &&
                        e4m3_encode(x) == 0x7F && e5m2_encode(x) == 0x7F && std::isnan(bf16_decode(bf16_encode(x))) &&
                        std::isnan(fp16_decode(fp16_encode(x)));
        if (!ok) m.add("NaN input " + hex32(f32_bits(x)) + " not NaN everywhere");
        continue;
      }
      compare_encode(hw, i, x, m);
    }
  }
  EXPECT_EQ(m.count, 0u) << m.count << " of " << total << " (host = ours, dev = hardware cvt)" << m.first;
}

TEST(DeviceFormat, DecodeEveryCodeMatchesHostAndHardware) {
  REQUIRE_GPU();
  DeviceBuffer<uint32_t> bf16, fp16, e4m3, e5m2, e8m0, e2m1;
  CUDA_OK(bf16.alloc(65536));
  CUDA_OK(fp16.alloc(65536));
  CUDA_OK(e4m3.alloc(256));
  CUDA_OK(e5m2.alloc(256));
  CUDA_OK(e8m0.alloc(256));
  CUDA_OK(e2m1.alloc(16));
  for (auto* b : {&bf16, &fp16, &e4m3, &e5m2, &e8m0, &e2m1}) CUDA_OK(b->poison());
  k_decode_all<<<grid_for(65536), kThreads>>>(bf16.get(), fp16.get(), e4m3.get(), e5m2.get(), e8m0.get(), e2m1.get());
  LAUNCH_OK();
  std::vector<uint32_t> hb, hf, h4, h5, h8, h2;
  CUDA_OK(bf16.download(hb));
  CUDA_OK(fp16.download(hf));
  CUDA_OK(e4m3.download(h4));
  CUDA_OK(e5m2.download(h5));
  CUDA_OK(e8m0.download(h8));
  CUDA_OK(e2m1.download(h2));
  Mismatches m;
  for (uint32_t c = 0; c < 65536; ++c) {
    if (hb[c] != f32_bits(bf16_decode(static_cast<uint16_t>(c)))) m.add("bf16 " + hex32(c));
    if (hf[c] != f32_bits(fp16_decode(static_cast<uint16_t>(c)))) m.add("fp16 " + hex32(c));
  }
  for (uint32_t c = 0; c < 256; ++c) {
    if (h4[c] != f32_bits(e4m3_decode(static_cast<uint8_t>(c)))) m.add("e4m3 " + hex32(c));
    if (h5[c] != f32_bits(e5m2_decode(static_cast<uint8_t>(c)))) m.add("e5m2 " + hex32(c));
    if (h8[c] != f32_bits(e8m0_decode(static_cast<uint8_t>(c)))) m.add("e8m0 " + hex32(c));
  }
  for (uint32_t c = 0; c < 16; ++c) {
    if (h2[c] != f32_bits(e2m1_decode(static_cast<uint8_t>(c)))) m.add("e2m1 " + hex32(c));
  }
  EXPECT_EQ(m.count, 0u) << "device decode != host decode" << m.first;

  // The hardware decoders: same values; NaN codes only need to decode to NaN (the hardware
  // drops the sign of E4M3 NaN, ours keeps it).
  for (auto* b : {&bf16, &fp16, &e4m3, &e5m2}) CUDA_OK(b->poison());
  k_hw_decode_all<<<grid_for(65536), kThreads>>>(bf16.get(), fp16.get(), e4m3.get(), e5m2.get());
  LAUNCH_OK();
  CUDA_OK(bf16.download(hb));
  CUDA_OK(fp16.download(hf));
  CUDA_OK(e4m3.download(h4));
  CUDA_OK(e5m2.download(h5));
  Mismatches hw;
  auto same = [](uint32_t a, uint32_t b) { return is_nan_bits(a) || is_nan_bits(b) ? is_nan_bits(a) && is_nan_bits(b) : a == b; };
  for (uint32_t c = 0; c < 65536; ++c) {
    if (!same(hb[c], f32_bits(bf16_decode(static_cast<uint16_t>(c))))) hw.add("bf16 " + hex32(c));
    if (!same(hf[c], f32_bits(fp16_decode(static_cast<uint16_t>(c))))) hw.add("fp16 " + hex32(c));
  }
  for (uint32_t c = 0; c < 256; ++c) {
    if (!same(h4[c], f32_bits(e4m3_decode(static_cast<uint8_t>(c))))) hw.add("e4m3 " + hex32(c) + " hw " + hex32(h4[c]));
    if (!same(h5[c], f32_bits(e5m2_decode(static_cast<uint8_t>(c))))) hw.add("e5m2 " + hex32(c) + " hw " + hex32(h5[c]));
  }
  EXPECT_EQ(hw.count, 0u) << "hardware decode != our decode" << hw.first;
}

TEST(DeviceFormat, E2M1RneAndSrMatchHost) {
  REQUIRE_GPU();
  // RNE over 4M values.
  {
    const std::vector<float> xs = e2m1_inputs(size_t{1} << 22, 0xE2'0001);
    DeviceBuffer<float> in;
    DeviceBuffer<uint8_t> out;
    CUDA_OK(in.alloc(xs.size()));
    CUDA_OK(in.upload(xs));
    CUDA_OK(out.alloc(xs.size()));
    CUDA_OK(out.poison());
    k_e2m1_rne<<<grid_for(xs.size()), kThreads>>>(in.get(), xs.size(), out.get());
    LAUNCH_OK();
    std::vector<uint8_t> d;
    CUDA_OK(out.download(d));
    Mismatches m;
    for (size_t i = 0; i < xs.size(); ++i) {
      const uint8_t h = e2m1_encode_rne(xs[i]);
      if (d[i] != h) m.add("rne x=" + hex32(f32_bits(xs[i])) + " host " + std::to_string(h) + " dev " + std::to_string(d[i]));
    }
    EXPECT_EQ(m.count, 0u) << m.count << " of " << xs.size() << m.first;
  }
  // SR over 1M values x all 256 r8.
  {
    const std::vector<float> xs = e2m1_inputs(size_t{1} << 20, 0xE2'0002);
    DeviceBuffer<float> in;
    DeviceBuffer<uint8_t> out;
    CUDA_OK(in.alloc(xs.size()));
    CUDA_OK(in.upload(xs));
    CUDA_OK(out.alloc(xs.size() * 128));
    CUDA_OK(out.poison());
    k_e2m1_sr<<<grid_for(xs.size() * 128), kThreads>>>(in.get(), xs.size(), out.get());
    LAUNCH_OK();
    std::vector<uint8_t> d;
    CUDA_OK(out.download(d));
    Mismatches m;
    for (size_t i = 0; i < xs.size(); ++i) {
      for (uint32_t r8 = 0; r8 < 256; ++r8) {
        const uint8_t dev = (d[i * 128 + r8 / 2] >> (4 * (r8 & 1))) & 0xF;
        const uint8_t h = e2m1_encode_sr(xs[i], r8);
        if (dev != h) {
          m.add("sr x=" + hex32(f32_bits(xs[i])) + " r8 " + std::to_string(r8) + " host " + std::to_string(h) + " dev " +
                std::to_string(dev));
        }
      }
    }
    EXPECT_EQ(m.count, 0u) << m.count << " of " << xs.size() * 256 << m.first;
  }
}

TEST(DeviceFormat, Nvfp4TensorScaleMatchesHost) {
  REQUIRE_GPU();
  std::vector<float> amax = {0.0f, INFINITY, 1.0f, 2688.0f, FLT_MAX, FLT_MIN, 1e-45f, 1e-36f, 7.9e-36f, 448.0f, 6.0f};
  std::mt19937_64 rng(0x7500);
  std::uniform_real_distribution<double> lg(-149.0, 128.0);
  while (amax.size() < (size_t{1} << 20)) {
    if (amax.size() % 2) {
      amax.push_back(static_cast<float>(std::exp2(lg(rng))));
    } else {
      amax.push_back(f32_from_bits(static_cast<uint32_t>(rng()) & 0x7F7FFFFFu));  // positive, finite
    }
  }
  DeviceBuffer<float> in;
  DeviceBuffer<Nvfp4TensorScale> out;
  CUDA_OK(in.alloc(amax.size()));
  CUDA_OK(in.upload(amax));
  CUDA_OK(out.alloc(amax.size()));
  CUDA_OK(out.poison());
  k_tensor_scale<<<grid_for(amax.size()), kThreads>>>(in.get(), amax.size(), out.get());
  LAUNCH_OK();
  std::vector<Nvfp4TensorScale> d;
  CUDA_OK(out.download(d));
  Mismatches m;
  for (size_t i = 0; i < amax.size(); ++i) {
    const Nvfp4TensorScale h = nvfp4_tensor_scale(amax[i]);
    if (f32_bits(h.amax) != f32_bits(d[i].amax) || f32_bits(h.s_enc) != f32_bits(d[i].s_enc) ||
        f32_bits(h.s_dec) != f32_bits(d[i].s_dec) || f32_bits(h.mult) != f32_bits(d[i].mult)) {
      m.add("amax " + hex32(f32_bits(amax[i])) + ": s_enc host " + hex32(f32_bits(h.s_enc)) + " dev " +
            hex32(f32_bits(d[i].s_enc)) + ", s_dec host " + hex32(f32_bits(h.s_dec)) + " dev " +
            hex32(f32_bits(d[i].s_dec)) + ", mult host " + hex32(f32_bits(h.mult)) + " dev " + hex32(f32_bits(d[i].mult)));
    }
  }
  EXPECT_EQ(m.count, 0u) << m.count << " of " << amax.size() << m.first;
}

TEST(DeviceFormat, Nvfp4BlockPipelineMatchesHost) {
  REQUIRE_GPU();
  const uint64_t nblocks = uint64_t{1} << 18;
  std::vector<float> x(nblocks * kNvfp4Block), tamax(nblocks);
  std::mt19937_64 rng(0xB10C);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  std::uniform_int_distribution<int> expo(-40, 40);
  constexpr float ties[8] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f, 6.0f};
  for (uint64_t b = 0; b < nblocks; ++b) {
    float* xb = &x[b * kNvfp4Block];
    float bamax = 0.0f;
    const int kind = static_cast<int>(b % 8);
    const float scale = std::ldexp(1.0f, expo(rng));
    for (int j = 0; j < kNvfp4Block; ++j) {
      float v;
      switch (kind) {
        case 0: v = 0.0f; break;                                         // all-zero block
        case 1: v = ties[j % 8] * (j % 2 ? -1.0f : 1.0f); break;         // exact ties at factor 1
        case 2: v = unit(rng) * 1e-39f; break;                           // FP32 subnormal inputs
        case 3: v = bf16_round(unit(rng) * scale); break;                // BF16-valued
        default: v = unit(rng) * scale; break;
      }
      xb[j] = v;
      bamax = std::max(bamax, std::fabs(v));
    }
    switch (kind) {
      case 1: tamax[b] = 2688.0f; break;                                 // S_enc = 1, bamax 6: factor 1
      case 5: tamax[b] = bamax * std::ldexp(1.0f, 30); break;            // scale underflows to 0
      case 6: tamax[b] = bamax * std::ldexp(1.0f, static_cast<int>(rng() % 12)); break;  // subnormal E4M3 scales
      case 7: tamax[b] = bamax * (1.0f + std::fabs(unit(rng))); break;
      default: tamax[b] = bamax; break;
    }
  }
  const SrKey key{0x5EED'0000'1234ull, 77u, 3u, 2u};
  DeviceBuffer<float> dx, dt;
  DeviceBuffer<BlockResult> out;
  CUDA_OK(dx.alloc(x.size()));
  CUDA_OK(dx.upload(x));
  CUDA_OK(dt.alloc(tamax.size()));
  CUDA_OK(dt.upload(tamax));
  CUDA_OK(out.alloc(nblocks));
  CUDA_OK(out.poison());
  k_nvfp4_blocks<<<grid_for(nblocks), kThreads>>>(dx.get(), dt.get(), nblocks, key, out.get());
  LAUNCH_OK();
  std::vector<BlockResult> d;
  CUDA_OK(out.download(d));
  Mismatches m;
  int zero_scales = 0, sr_moved = 0;
  for (uint64_t b = 0; b < nblocks; ++b) {
    BlockResult h;
    nvfp4_block_pipeline(&x[b * kNvfp4Block], tamax[b], key, b, h);
    bool same = h.scale == d[b].scale && f32_bits(h.factor) == f32_bits(d[b].factor);
    for (int j = 0; j < kNvfp4Block; ++j) {
      same = same && h.rne[j] == d[b].rne[j] && h.sr[j] == d[b].sr[j] && f32_bits(h.dec[j]) == f32_bits(d[b].dec[j]);
      sr_moved += h.sr[j] != h.rne[j] ? 1 : 0;
    }
    zero_scales += h.scale == 0 ? 1 : 0;
    if (!same) {
      m.add("block " + std::to_string(b) + " (kind " + std::to_string(b % 8) + "): scale host " + std::to_string(h.scale) +
            " dev " + std::to_string(d[b].scale) + ", factor host " + hex32(f32_bits(h.factor)) + " dev " +
            hex32(f32_bits(d[b].factor)));
    }
  }
  EXPECT_EQ(m.count, 0u) << m.count << " of " << nblocks << " blocks differ" << m.first;
  EXPECT_GT(zero_scales, 0) << "the inputs must include underflowing block scales";
  EXPECT_GT(sr_moved, 0) << "SR never differed from RNE: the SR path was not exercised";
}

TEST(DeviceFormat, Mxfp4BlockExponentBothRulesMatchHost) {
  REQUIRE_GPU();
  std::vector<float> amax = {0.0f, -0.0f, 6.0f, 6.0001f, 1e-40f, FLT_MAX, FLT_MIN, 7.0f, 0.75f, NAN, INFINITY};
  std::mt19937_64 rng(0x3F'0001);
  std::uniform_real_distribution<double> lg(-149.0, 128.0);
  while (amax.size() < (size_t{1} << 20)) {
    amax.push_back(amax.size() % 2 ? static_cast<float>(std::exp2(lg(rng)))
                                   : f32_from_bits(static_cast<uint32_t>(rng()) & 0x7F7FFFFFu));
  }
  std::vector<float> x(amax.size());
  std::uniform_real_distribution<float> frac(-1.2f, 1.2f);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::isfinite(amax[i]) ? amax[i] * frac(rng) : 1.0f;
  DeviceBuffer<float> da, dx;
  DeviceBuffer<MxResult> out;
  CUDA_OK(da.alloc(amax.size()));
  CUDA_OK(da.upload(amax));
  CUDA_OK(dx.alloc(x.size()));
  CUDA_OK(dx.upload(x));
  CUDA_OK(out.alloc(amax.size()));
  CUDA_OK(out.poison());
  k_mxfp4<<<grid_for(amax.size()), kThreads>>>(da.get(), dx.get(), amax.size(), out.get());
  LAUNCH_OK();
  std::vector<MxResult> d;
  CUDA_OK(out.download(d));
  Mismatches m;
  for (size_t i = 0; i < amax.size(); ++i) {
    const MxResult h = mx_eval(amax[i], x[i]);
    if (h.e_round_up != d[i].e_round_up || h.e_ocp != d[i].e_ocp || h.code_round_up != d[i].code_round_up ||
        h.code_ocp != d[i].code_ocp) {
      m.add("amax " + hex32(f32_bits(amax[i])) + ": round_up host " + std::to_string(h.e_round_up) + " dev " +
            std::to_string(d[i].e_round_up) + ", ocp host " + std::to_string(h.e_ocp) + " dev " + std::to_string(d[i].e_ocp));
    }
  }
  EXPECT_EQ(m.count, 0u) << m.count << " of " << amax.size() << m.first;
}

TEST(DeviceFormat, PhiloxAndSrBlockBitsMatchHost) {
  REQUIRE_GPU();
  const size_t n = size_t{1} << 20;
  std::mt19937_64 rng(0x9417'0C5);
  std::vector<Philox4x32> ctr(n);
  std::vector<uint32_t> keys(2 * n);
  for (size_t i = 0; i < n; ++i) {
    for (uint32_t& w : ctr[i].v) w = static_cast<uint32_t>(rng());
    keys[2 * i] = static_cast<uint32_t>(rng());
    keys[2 * i + 1] = static_cast<uint32_t>(rng());
  }
  // Random123's known-answer inputs first (counter 0 / all ones / pi), so a device failure
  // on exactly those is visible too.
  ctr[0] = Philox4x32{{0, 0, 0, 0}};
  keys[0] = keys[1] = 0;
  ctr[1] = Philox4x32{{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}};
  keys[2] = keys[3] = 0xffffffffu;
  ctr[2] = Philox4x32{{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}};
  keys[4] = 0xa4093822u;
  keys[5] = 0x299f31d0u;
  std::vector<SrKey> srk(n);
  std::vector<uint64_t> blocks(n);
  for (size_t i = 0; i < n; ++i) {
    srk[i] = SrKey{rng(), static_cast<uint32_t>(rng()), static_cast<uint32_t>(rng() & 0xFFFFFFu),
                   static_cast<uint32_t>(rng() & 0xFFu)};
    blocks[i] = i % 2 ? rng() : i;
  }
  DeviceBuffer<Philox4x32> dctr, dout, dsr;
  DeviceBuffer<uint32_t> dkeys;
  DeviceBuffer<SrKey> dsrk;
  DeviceBuffer<uint64_t> dblocks;
  CUDA_OK(dctr.alloc(n));
  CUDA_OK(dctr.upload(ctr));
  CUDA_OK(dkeys.alloc(2 * n));
  CUDA_OK(dkeys.upload(keys));
  CUDA_OK(dout.alloc(n));
  CUDA_OK(dout.poison());
  k_philox<<<grid_for(n), kThreads>>>(dctr.get(), dkeys.get(), n, dout.get());
  LAUNCH_OK();
  CUDA_OK(dsrk.alloc(n));
  CUDA_OK(dsrk.upload(srk));
  CUDA_OK(dblocks.alloc(n));
  CUDA_OK(dblocks.upload(blocks));
  CUDA_OK(dsr.alloc(n));
  CUDA_OK(dsr.poison());
  k_sr_bits<<<grid_for(n), kThreads>>>(dsrk.get(), dblocks.get(), n, dsr.get());
  LAUNCH_OK();
  std::vector<Philox4x32> dp, ds;
  CUDA_OK(dout.download(dp));
  CUDA_OK(dsr.download(ds));
  Mismatches m;
  for (size_t i = 0; i < n; ++i) {
    const Philox4x32 hp = philox4x32_10(ctr[i], keys[2 * i], keys[2 * i + 1]);
    const Philox4x32 hs = sr_block_bits(srk[i], blocks[i]);
    if (std::memcmp(hp.v, dp[i].v, sizeof hp.v) != 0) m.add("philox counter " + std::to_string(i));
    if (std::memcmp(hs.v, ds[i].v, sizeof hs.v) != 0) m.add("sr_block_bits " + std::to_string(i));
  }
  EXPECT_EQ(m.count, 0u) << m.count << " of " << 2 * n << m.first;
  EXPECT_EQ(dp[0].v[0], 0x6627e8d5u) << "Random123 known answer, counter 0, on the device";
  EXPECT_EQ(dp[1].v[0], 0x408f276du) << "Random123 known answer, counter all ones, on the device";
  EXPECT_EQ(dp[2].v[0], 0xd16cfe09u) << "Random123 known answer, counter pi, on the device";
}

TEST(DeviceFormat, Rht16OnBf16InputsMatchesHost) {
  REQUIRE_GPU();
  const uint64_t nvec = uint64_t{1} << 18;
  std::vector<float> in(nvec * kRhtSize);
  std::vector<uint16_t> masks(nvec);
  std::mt19937_64 rng(0x4D7'0001);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> expo(-30, 30);
  for (uint64_t v = 0; v < nvec; ++v) {
    masks[v] = v % 3 == 0 ? kTeRhtSignMask : (v % 3 == 1 ? uint16_t{0} : static_cast<uint16_t>(rng()));
    const float scale = std::ldexp(1.0f, expo(rng));
    for (int j = 0; j < kRhtSize; ++j) {
      // BF16-valued inputs of mixed magnitudes (as the Wgrad operands are); some zeros and
      // values far apart in magnitude so the FP32 sums round.
      float x = bf16_round(normal(rng) * scale);
      if (rng() % 16 == 0) x = 0.0f;
      if (rng() % 16 == 0) x = bf16_round(x * 65536.0f);
      in[v * kRhtSize + j] = x;
    }
  }
  DeviceBuffer<float> din, dout;
  DeviceBuffer<uint16_t> dmask, dbf;
  CUDA_OK(din.alloc(in.size()));
  CUDA_OK(din.upload(in));
  CUDA_OK(dmask.alloc(nvec));
  CUDA_OK(dmask.upload(masks));
  CUDA_OK(dout.alloc(in.size()));
  CUDA_OK(dout.poison());
  CUDA_OK(dbf.alloc(in.size()));
  CUDA_OK(dbf.poison());
  k_rht<<<grid_for(nvec), kThreads>>>(din.get(), dmask.get(), nvec, dout.get(), dbf.get());
  LAUNCH_OK();
  std::vector<float> d;
  std::vector<uint16_t> dbits;
  CUDA_OK(dout.download(d));
  CUDA_OK(dbf.download(dbits));
  Mismatches m;
  for (uint64_t v = 0; v < nvec; ++v) {
    float y[kRhtSize];
    std::copy(&in[v * kRhtSize], &in[v * kRhtSize] + kRhtSize, y);
    rht16(y, masks[v]);
    for (int j = 0; j < kRhtSize; ++j) {
      const size_t k = v * kRhtSize + j;
      if (f32_bits(y[j]) != f32_bits(d[k]) || bf16_encode(y[j]) != dbits[k]) {
        m.add("vector " + std::to_string(v) + " mask " + std::to_string(masks[v]) + " element " + std::to_string(j) +
              ": host " + hex32(f32_bits(y[j])) + " dev " + hex32(f32_bits(d[k])));
        break;
      }
    }
  }
  EXPECT_EQ(m.count, 0u) << m.count << " of " << nvec << " vectors differ" << m.first;
}

}  // namespace
