// Quantization and dequantization kernels on the GPU: GB/s and the ratio to a device-to-device
// copy measured in the same run (issue 3's targets: NVFP4 row-wise >= 85% of copy, row +
// column-wise with RHT and SR >= 70%, FP8 cast + transpose >= 85%).
//
// Bytes counted = input read once + outputs written once (codes, scales; amax ignored), the
// least any implementation must move. Copy bandwidth = 2 x bytes copied / time. Timing: CUDA
// events around each launch after 3 warm-up runs, median of 20. Inputs: fresh Gaussian BF16
// made on the device (Philox + Box-Muller), never zeros. Before timing, every variant's
// output on the first size is compared byte for byte with the CPU reference.
//
//   bench_quantize_cuda [--quick]    (--quick: first size only)
#include <cuda_runtime.h>

#include "cuda_check.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "format/philox.hpp"
#include "format/scalar.hpp"
#include "nvfp4/cuda_quantize.hpp"
#include "nvfp4/cuda_runtime_info.hpp"
#include "nvfp4/quantize.hpp"

namespace {


__global__ void fill_gaussian_bf16(uint16_t* x, int64_t n, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; 2 * i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const auto b = nvfp4::fmt::philox4x32_10({{uint32_t(i), uint32_t(i >> 32), 0, 0}}, uint32_t(seed), uint32_t(seed >> 32));
    const float u1 = (b.v[0] >> 8) * (1.0f / 16777216.0f) + 1e-7f, u2 = (b.v[1] >> 8) * (1.0f / 16777216.0f);
    const float r = sqrtf(-2.0f * logf(u1));
    x[2 * i] = nvfp4::fmt::bf16_encode(r * cosf(6.2831853f * u2));
    if (2 * i + 1 < n) x[2 * i + 1] = nvfp4::fmt::bf16_encode(r * sinf(6.2831853f * u2));
  }
}

enum class Op { nvfp4, mxfp4, fp8, fp8_1x128, fp8_128x128, dequant_nvfp4, dequant_nvfp4_factor };

struct Variant {
  const char* name;
  Op op;
  int tile_rows;  // NVFP4: 1 or 16
  bool col, rht, sr, given_amax;
};

const Variant kVariants[] = {
    {"row 1x16", Op::nvfp4, 1, false, false, false, false},
    {"row 1x16, amax given", Op::nvfp4, 1, false, false, false, true},
    {"row+col 16x16 (weights)", Op::nvfp4, 16, true, false, false, false},
    {"row+col 1x16 RHT+SR (grads)", Op::nvfp4, 1, true, true, true, false},
    {"row+col 1x16 RHT+SR, amax given", Op::nvfp4, 1, true, true, true, true},
    {"MXFP4 row+col (round-up)", Op::mxfp4, 0, true, false, false, false},
    {"FP8 E4M3 cast+transpose", Op::fp8, 0, true, false, false, false},
    {"FP8 E4M3 cast+transpose, amax given", Op::fp8, 0, true, false, false, true},
    {"FP8 E4M3 1x128 blocks row+col", Op::fp8_1x128, 0, true, false, false, false},
    {"FP8 E4M3 128x128 blocks row+col", Op::fp8_128x128, 0, true, false, false, false},
    {"dequant NVFP4 -> BF16 (codes x scale)", Op::dequant_nvfp4, 1, false, false, false, false},
    {"dequant NVFP4 -> BF16 (x tensor factor)", Op::dequant_nvfp4_factor, 1, false, false, false, false},
};

bool is_dequant(const Variant& v) { return v.op == Op::dequant_nvfp4 || v.op == Op::dequant_nvfp4_factor; }

struct Outputs {
  uint8_t *rq, *rs, *cq, *cs;
  float *ra, *ca, *fs;
  uint16_t* y;  // dequantized BF16 (M, K)
};

void launch(const Variant& v, const uint16_t* x, int64_t M, int64_t K, Outputs& o, uint32_t* bad) {
  namespace cu = nvfp4::cuda;
  nvfp4::QuantizeOptions c;
  const cu::AmaxInput amax = v.given_amax ? cu::AmaxInput::given : cu::AmaxInput::compute;
  switch (v.op) {
    case Op::mxfp4: {  // no tensor scale, one pass; scales reuse rs/cs
      c.format = nvfp4::Format::mxfp4;
      cu::DeviceCopy row{o.rq, o.rs}, col{o.cq, o.cs};
      cu::quantize(x, nvfp4::DType::BF16, M, K, c, &row, v.col ? &col : nullptr, {bad}, nullptr);
      return;
    }
    case Op::fp8: {  // codes reuse the rq/cq buffers (sized M*K below for FP8)
      c.format = nvfp4::Format::fp8_e4m3;
      cu::DeviceCopy row{o.rq, nullptr, o.fs, o.ra}, col{o.cq, nullptr, o.fs + 1, o.ca};
      cu::quantize(x, nvfp4::DType::BF16, M, K, c, &row, &col, {bad}, nullptr, amax);
      return;
    }
    case Op::fp8_1x128:
    case Op::fp8_128x128: {  // scale_inv arrays reuse rs/cs (M*K/16 bytes >= what 1x128 needs)
      c.format = nvfp4::Format::fp8_e4m3;
      c.block = v.op == Op::fp8_1x128 ? nvfp4::BlockShape{1, 128} : nvfp4::BlockShape{128, 128};
      cu::DeviceCopy row{o.rq, nullptr, reinterpret_cast<float*>(o.rs), o.ra};
      cu::DeviceCopy col{o.cq, nullptr, reinterpret_cast<float*>(o.cs), o.ca};
      cu::quantize(x, nvfp4::DType::BF16, M, K, c, &row, &col, {bad}, nullptr);
      return;
    }
    case Op::dequant_nvfp4:
    case Op::dequant_nvfp4_factor:  // the row copy left by the previous variant's quantization
      cu::dequantize({o.rq, o.rs, nullptr, o.ra}, M, K, c, v.op == Op::dequant_nvfp4_factor, o.y, nvfp4::DType::BF16,
                     nullptr);
      return;
    case Op::nvfp4:
      break;
  }
  c.block = nvfp4::BlockShape{v.tile_rows, 16};
  c.rht = v.rht;
  c.rounding = v.sr ? nvfp4::Rounding::stochastic : nvfp4::Rounding::rne;
  c.sr_key = {42, 1, 0, 1};
  cu::DeviceCopy row{o.rq, o.rs, nullptr, o.ra}, col{o.cq, o.cs, nullptr, o.ca};
  cu::quantize(x, nvfp4::DType::BF16, M, K, c, &row, v.col ? &col : nullptr, {bad}, nullptr, amax);
}

template <typename T>
bool same_bytes(const std::vector<T>& want, const void* d) {
  std::vector<T> got(want.size());
  cudaMemcpy(got.data(), d, got.size() * sizeof(T), cudaMemcpyDeviceToHost);
  return std::memcmp(got.data(), want.data(), want.size() * sizeof(T)) == 0;
}

bool check_against_cpu(const Variant& v, const uint16_t* dx, int64_t M, int64_t K, Outputs& o, uint32_t* bad) {
  std::vector<uint16_t> hx(M * K);
  CK(cudaMemcpy(hx.data(), dx, hx.size() * 2, cudaMemcpyDeviceToHost));
  std::vector<float> x(hx.size());
  for (size_t i = 0; i < x.size(); ++i) x[i] = nvfp4::fmt::bf16_decode(hx[i]);
  nvfp4::QuantizeOptions opt;
  opt.block = nvfp4::BlockShape{v.tile_rows, 16};
  opt.columnwise = v.col;
  opt.rht = v.rht;
  opt.rounding = v.sr ? nvfp4::Rounding::stochastic : nvfp4::Rounding::rne;
  opt.sr_key = {42, 1, 0, 1};
  if (v.op == Op::fp8 || v.op == Op::fp8_1x128 || v.op == Op::fp8_128x128) {
    opt.format = nvfp4::Format::fp8_e4m3;
    opt.block = v.op == Op::fp8 ? nvfp4::BlockShape{0, 0}
                                : (v.op == Op::fp8_1x128 ? nvfp4::BlockShape{1, 128} : nvfp4::BlockShape{128, 128});
  }
  if (v.op == Op::mxfp4) {
    opt.format = nvfp4::Format::mxfp4;
    opt.block = std::nullopt;
  }
  const auto ref = nvfp4::quantize(x, M, K, opt, nvfp4::DType::BF16);
  if (is_dequant(v)) {  // quantize on the device first (checked by its own variant), then decode
    launch(Variant{v.name, Op::nvfp4, 1, false, false, false, false}, dx, M, K, o, bad);
    CK(cudaMemset(o.y, 0xAB, M * K * 2));
    launch(v, dx, M, K, o, bad);
    CK(cudaDeviceSynchronize());
    const auto want = nvfp4::dequantize(*ref.row, ref.options, v.op == Op::dequant_nvfp4_factor);
    std::vector<uint16_t> want_bf16(want.size());
    for (size_t i = 0; i < want.size(); ++i) want_bf16[i] = nvfp4::fmt::bf16_encode(nvfp4::fmt::bf16_round(want[i]));
    return same_bytes(want_bf16, o.y);
  }
  if (v.given_amax) {
    nvfp4::QuantizeOptions c;
    c.rht = v.rht;
    nvfp4::cuda::nvfp4_amax(dx, nvfp4::DType::BF16, M, K, c, o.ra, v.col ? o.ca : nullptr, {bad}, nullptr);
  }
  CK(cudaMemset(o.rq, 0xAB, M * K));
  CK(cudaMemset(o.cq, 0xAB, M * K));
  launch(v, dx, M, K, o, bad);
  CK(cudaDeviceSynchronize());
  if (v.op == Op::fp8) return same_bytes(ref.row->codes, o.rq) && same_bytes(ref.col->codes, o.cq);
  if (v.op == Op::fp8_1x128 || v.op == Op::fp8_128x128) {
    return same_bytes(ref.row->codes, o.rq) && same_bytes(ref.col->codes, o.cq) &&
           same_bytes(ref.row->scale_inv, o.rs) && same_bytes(ref.col->scale_inv, o.cs);
  }
  bool ok = same_bytes(ref.row->codes, o.rq) && same_bytes(ref.row->scales, o.rs);
  if (v.col) ok = ok && same_bytes(ref.col->codes, o.cq) && same_bytes(ref.col->scales, o.cs);
  return ok;
}

// Bytes a variant must move at least: input read once, every output written once.
double bytes_moved(const Variant& v, int64_t n) {
  switch (v.op) {
    case Op::fp8: return n * 2.0 + 2.0 * n;
    case Op::fp8_1x128: return n * 2.0 + 2.0 * (n + 4.0 * n / 128);
    case Op::fp8_128x128: return n * 2.0 + 2.0 * (n + 4.0 * n / (128 * 128));
    case Op::mxfp4: return n * 2.0 + (v.col ? 2 : 1) * (n / 2.0 + n / 32.0);
    case Op::dequant_nvfp4:
    case Op::dequant_nvfp4_factor: return n / 2.0 + n / 16.0 + 2.0 * n;
    case Op::nvfp4: break;
  }
  return n * 2.0 + (v.col ? 2 : 1) * (n / 2.0 + n / 16.0);
}

float time_ms(cudaEvent_t a, cudaEvent_t b) {
  float ms = 0;
  CK(cudaEventElapsedTime(&ms, a, b));
  return ms;
}

template <typename F>
double median_ms(F&& fn) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  for (int i = 0; i < 3; ++i) fn();
  std::vector<float> t;
  for (int i = 0; i < 20; ++i) {
    CK(cudaEventRecord(a));
    fn();
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    t.push_back(time_ms(a, b));
  }
  CK(cudaGetLastError());
  std::sort(t.begin(), t.end());
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  if (nvfp4::cuda::device_count() == 0) {
    std::printf("no CUDA device: %s\n", nvfp4::cuda::unavailable_reason().c_str());
    return 1;
  }
  std::printf("device: %s\n", nvfp4::cuda::device_description(0).c_str());
  const std::vector<std::pair<int64_t, int64_t>> sizes = {{4096, 4096}, {8192, 8192}, {16384, 8192}, {8192, 28672}};
  struct Row {
    std::string size, variant;
    double ms, gbps, copy_gbps;
  };
  std::vector<Row> rows;
  bool all_ok = true;
  for (size_t si = 0; si < (quick ? 1 : sizes.size()); ++si) {
    const auto [M, K] = sizes[si];
    const int64_t n = M * K;
    uint16_t *x, *x2;
    Outputs o{};
    uint32_t* bad;
    CK(cudaMalloc(&x, n * 2));
    CK(cudaMalloc(&x2, n * 2));
    CK(cudaMalloc(&o.rq, n));  // FP8 needs n bytes; NVFP4 uses the first n / 2
    CK(cudaMalloc(&o.cq, n));
    CK(cudaMalloc(&o.fs, 8));
    CK(cudaMalloc(&o.rs, n / 16));
    CK(cudaMalloc(&o.cs, n / 16));
    CK(cudaMalloc(&o.ra, 4));
    CK(cudaMalloc(&o.ca, 4));
    CK(cudaMalloc(&o.y, n * 2));
    CK(cudaMalloc(&bad, 4));
    CK(cudaMemset(bad, 0, 4));
    fill_gaussian_bf16<<<1024, 256>>>(x, n, 1234 + si);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    const double copy_ms = median_ms([&] { CK(cudaMemcpyAsync(x2, x, n * 2, cudaMemcpyDeviceToDevice)); });
    const double copy_gbps = 2.0 * n * 2 / (copy_ms * 1e-3) / 1e9;
    const std::string size = std::to_string(M) + "x" + std::to_string(K);
    rows.push_back({size, "D2D copy (baseline)", copy_ms, copy_gbps, copy_gbps});
    for (const Variant& v : kVariants) {
      if (si == 0) {
        const bool ok = check_against_cpu(v, x, M, K, o, bad);
        std::printf("check %-38s vs CPU reference: %s\n", v.name, ok ? "bit-exact" : "MISMATCH");
        all_ok = all_ok && ok;
      }
      if (v.given_amax) {  // amax buffers hold this input's amax from a full run
        launch(Variant{v.name, v.op, v.tile_rows, v.col, v.rht, v.sr, false}, x, M, K, o, bad);
        CK(cudaDeviceSynchronize());
      }
      if (is_dequant(v)) {  // decode a row-wise NVFP4 copy of this input
        launch(Variant{v.name, Op::nvfp4, 1, false, false, false, false}, x, M, K, o, bad);
        CK(cudaDeviceSynchronize());
      }
      const double ms = median_ms([&] { launch(v, x, M, K, o, bad); });
      rows.push_back({size, v.name, ms, bytes_moved(v, n) / (ms * 1e-3) / 1e9, copy_gbps});
    }
    uint32_t nonfinite = 0;
    CK(cudaMemcpy(&nonfinite, bad, 4, cudaMemcpyDeviceToHost));
    if (nonfinite) {
      std::printf("unexpected non-finite count %u\n", nonfinite);
      all_ok = false;
    }
    for (void* p : {(void*)x, (void*)x2, (void*)o.rq, (void*)o.cq, (void*)o.rs, (void*)o.cs, (void*)o.ra, (void*)o.ca, (void*)o.fs, (void*)o.y, (void*)bad}) {
      CK(cudaFree(p));
    }
  }
  std::printf("\n%-12s %-38s %9s %9s %8s\n", "size", "variant", "ms", "GB/s", "vs copy");
  for (const auto& r : rows) {
    std::printf("%-12s %-38s %9.3f %9.0f %7.1f%%\n", r.size.c_str(), r.variant.c_str(), r.ms, r.gbps,
                100.0 * r.gbps / r.copy_gbps);
  }
  return all_ok ? 0 : 1;
}
