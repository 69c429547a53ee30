// bench_gemm_nvfp4: the fused NVFP4 kernels (W4A16, include/nvfp4/cuda_gemm_nvfp4.hpp) —
// cuda::nvfp4_gemv for M <= 64 tokens, cuda::nvfp4_gemm above — against cuBLAS BF16
// (cuda::Blas::matmul_forward, what the engine runs for BF16 weights) on the same shapes in the
// same run, on the linear layers of Llama-3.1-8B and -70B (OC x C) and M = 1, 8, 16, 64, 256,
// 1024, 4096 tokens.
// Each shape is checked first (the NVFP4 result against cuBLAS on the decoded weights times the
// factor: the largest difference at most 2^-7 of the output range, two BF16 roundings' worth),
// then timed: CUDA events, median of --reps after --warmup, a 256 MiB write before every
// repetition (L2 is 50 MiB on an H100) so both kernels read their weights from HBM, as runs 1-6 of
// docs/perf.md flushed. That leaves up to 50 MB of dirty lines for the timed kernel's reads to write
// back; `--l2 read` flushes by a 256 MiB read instead (clean lines; not yet run on a GPU). Random data,
// fresh per shape. Prints a table: microseconds, the weight stream's TB/s (NVFP4: codes and
// scales, 4.5 bits a weight), TFLOP/s, NVFP4's speed-up over BF16, and for the GEMV its time
// with each split along C (1, 2, 4, 8 warps per 16-row block; 16 up to 8 tokens) beside the
// kernel's own choice and, above 8 tokens, the split-K GEMM's (checked first); for the GEMM the
// wide wgmma tile's and its warp-specialized TMA version's (`wgmma_ws`; each checked first) and
// the mma.sync kernel's times beside the wgmma one's and W4A4's (nvfp4_gemm_nt, both
// operands NVFP4: the training recipe's GEMM, checked the same way against cuBLAS on both
// operands decoded) and the engine's prefill route's (the weight decoded on the device, then
// cuBLAS; checked to give cuBLAS's bits on the host-decoded weight); up to 8 tokens (16 for those
// that take more), each of the GEMV's alternative configurations at every split (1-16 warps along
// C), checked first.
//
// --l2 warm leaves L2 as the last repetition left it (no flush): how ggml's test-backend-ops times
// (the same matrices again and again), so a peer's numbers can be set beside ours on equal terms.
//
//   bench_gemm_nvfp4 [--reps 50] [--warmup 10] [--m 1,8,16,64,256,1024,4096] [--layer "8B down"] [--l2 flush|read|warm]
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "cuda_check.hpp"
#include "format/scalar.hpp"
#include "kernels/cuda/gemm/nvfp4_decode.cuh"
#include "nvfp4/cuda_gemm_nvfp4.hpp"
#include "nvfp4/cuda_ops.hpp"

namespace {

namespace cu = nvfp4::cuda;
namespace gd = nvfp4::cuda::gemm_detail;

struct Shape {
  const char* what;
  long OC, C;
};

// Llama-3.1-8B: q (4096 x 4096), q|k|v (6144 x 4096), down (4096 x 14336), gate|up (28672 x 4096);
// 70B: q (8192 x 8192), down (8192 x 28672), gate|up (57344 x 8192 as two 28672 x 8192).
const Shape kShapes[] = {{"8B q/o", 4096, 4096},        {"8B qkv", 6144, 4096},       {"8B down", 4096, 14336},
                         {"8B gate|up", 28672, 4096},   {"70B q/o", 8192, 8192},      {"70B down", 8192, 28672},
                         {"70B gate/up", 28672, 8192}};

template <class T>
T* device_copy(const std::vector<T>& h) {
  T* d = nullptr;
  CK(cudaMalloc(&d, h.size() * sizeof(T)));
  CK(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

// The largest |got - ref × factor| and the output range max |ref × factor| (BF16 outputs).
std::pair<double, double> worst_and_range(const std::vector<uint16_t>& got, const std::vector<uint16_t>& ref,
                                          float factor) {
  double range = 0, worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double want = double(nvfp4::fmt::bf16_decode(ref[i])) * factor;
    range = std::max(range, std::fabs(want));
    worst = std::max(worst, std::fabs(double(nvfp4::fmt::bf16_decode(got[i])) - want));
  }
  return {worst, range};
}

// Reads n uint4 (the flush buffer) through L2; the store never happens for the buffer's contents
// (a fixed fill whose XOR is 0) but keeps the loads.
__global__ void read_flush_kernel(const uint4* __restrict__ p, int64_t n, unsigned* sink) {
  unsigned acc = 0;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const uint4 v = p[i];
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9E3779B9u) *sink = acc;
}

std::vector<int> parse_list(const char* s) {
  std::vector<int> v;
  for (const char* p = s; *p;) {
    v.push_back(std::atoi(p));
    while (*p && *p != ',') ++p;
    if (*p == ',') ++p;
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 50, warmup = 10;
  std::vector<int> ms = {1, 8, 16, 64, 256, 1024, 4096};
  std::string only;  // --layer: one row of kShapes (e.g. for a profiler run)
  enum class L2 { flush, read, warm } l2 = L2::flush;
  for (int i = 1; i < argc; i += 2) {
    const std::string a = argv[i];
    if (i + 1 == argc) {
      std::fprintf(stderr, "bench_gemm_nvfp4: %s needs a value\n", a.c_str());
      return 2;
    }
    if (a == "--reps") reps = std::atoi(argv[i + 1]);
    else if (a == "--warmup") warmup = std::atoi(argv[i + 1]);
    else if (a == "--m") ms = parse_list(argv[i + 1]);
    else if (a == "--layer") only = argv[i + 1];
    else if (a == "--l2" && std::strcmp(argv[i + 1], "warm") == 0) l2 = L2::warm;
    else if (a == "--l2" && std::strcmp(argv[i + 1], "read") == 0) l2 = L2::read;
    else if (a == "--l2" && std::strcmp(argv[i + 1], "flush") == 0) l2 = L2::flush;
    else {
      std::fprintf(stderr,
                   "bench_gemm_nvfp4: unknown option or value %s (--reps N, --warmup N, --m 1,8,16,64,256, --layer NAME, "
                   "--l2 flush|read|warm)\n",
                   a.c_str());
      return 2;
    }
  }
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, L2 %d MiB, %s\n", prop.name, prop.l2CacheSize >> 20,
              l2 == L2::warm    ? "L2 warm (no flush between repetitions)"
              : l2 == L2::read ? "L2 flushed by a 256 MiB read before every repetition (clean lines)"
                               : "L2 flushed by a 256 MiB write before every repetition");
  const size_t flush_bytes = size_t{256} << 20;
  void* flush = nullptr;
  unsigned* sink = nullptr;
  CK(cudaMalloc(&flush, flush_bytes));
  CK(cudaMalloc(&sink, sizeof(unsigned)));
  CK(cudaMemset(flush, 0x5A, flush_bytes));  // --l2 read: every word the same, so the XOR is 0
  int flips = 0;
  const auto flush_l2 = [&] {
    if (l2 == L2::flush) CK(cudaMemsetAsync(flush, ++flips & 0xFF, flush_bytes));
    if (l2 == L2::read) {
      read_flush_kernel<<<1024, 256>>>(static_cast<const uint4*>(flush), static_cast<int64_t>(flush_bytes / 16), sink);
      CK(cudaGetLastError());
    }
  };

  cu::Blas blas;
  std::mt19937_64 rng(20261207);
  std::printf("%-12s %6s %6s %5s %11s %11s %10s %10s %11s %11s %8s\n", "layer", "OC", "C", "M", "bf16 us", "nvfp4 us",
              "bf16 TB/s", "nvfp4 TB/s", "bf16 TF/s", "nvfp4 TF/s", "speed-up");
  bool all_ok = true;
  for (const Shape& sh : kShapes) {
    if (!only.empty() && only != sh.what) continue;
    const long OC = sh.OC, C = sh.C;
    // NVFP4 weights: random codes, block scales of the max rule's range, one decode factor.
    std::vector<uint8_t> codes(static_cast<size_t>(OC * C / 2)), packed(codes.size()), scales(static_cast<size_t>(OC * C / 16));
    for (auto& b : codes) b = static_cast<uint8_t>(rng());
    for (auto& s : scales) s = static_cast<uint8_t>(0x30 + rng() % 0x4E);
    cu::repack_nvfp4_codes_for_gemv(packed.data(), codes.data(), OC, C);
    const float decode = 1.0f / 2688.0f;
    // The same weights decoded to BF16 (e2m1 x scale, exact; the factor applied to the output).
    std::vector<uint16_t> wd(static_cast<size_t>(OC * C));
    for (long o = 0; o < OC; ++o)
      for (long e = 0; e < C; ++e) {
        const uint8_t byte = codes[static_cast<size_t>(o * (C / 2) + e / 2)];
        const float v = nvfp4::fmt::e2m1_decode((e & 1) ? byte >> 4 : byte & 15) *
                        nvfp4::fmt::e4m3_decode(scales[static_cast<size_t>(o * (C / 16) + e / 16)]);
        wd[static_cast<size_t>(o * C + e)] = nvfp4::fmt::bf16_encode(v);
      }
    uint8_t* d_codes = device_copy(packed);
    uint8_t* d_native = device_copy(codes);  // checkpoint order: the W4A4 GEMM's b operand
    uint8_t* d_scales = device_copy(scales);
    float* d_decode = device_copy(std::vector<float>{decode});
    uint16_t* d_w = device_copy(wd);
    const cu::Nvfp4Weight w{d_codes, d_scales, d_decode};
    uint16_t* d_wdec = nullptr;  // the decoded weight of the decode-then-cuBLAS route (more than 64 tokens)
    for (const int M : ms) {
      std::normal_distribution<float> nd(0.0f, 1.0f);
      std::vector<uint16_t> x(static_cast<size_t>(M * C));
      for (auto& v : x) v = nvfp4::fmt::bf16_encode(nd(rng));
      uint16_t* d_x = device_copy(x);
      uint16_t *d_ref = nullptr, *d_out = nullptr;
      CK(cudaMalloc(&d_ref, static_cast<size_t>(M * OC) * 2));
      CK(cudaMalloc(&d_out, static_cast<size_t>(M * OC) * 2));
      // Check: NVFP4 against cuBLAS on the decoded weights (times the factor), relative to the range.
      blas.matmul_forward(d_ref, d_x, d_w, M, C, OC, nullptr);
      const auto fused = [&] {
        if (M <= cu::kNvfp4GemvMaxRows) cu::nvfp4_gemv(d_out, nvfp4::DType::BF16, d_x, w, nullptr, M, C, OC, nullptr);
        else cu::nvfp4_gemm(d_out, nvfp4::DType::BF16, d_x, w, nullptr, M, C, OC, nullptr);
      };
      std::vector<uint16_t> ref(static_cast<size_t>(M * OC)), got(ref.size());
      CK(cudaMemcpy(ref.data(), d_ref, ref.size() * 2, cudaMemcpyDeviceToHost));
      // Runs a kernel once and compares its output with ref: false, and a line saying so, when a
      // value is further from cuBLAS than 2^-7 of the output range.
      const auto check = [&](const char* what, const auto& kernel) {
        kernel();
        CK(cudaDeviceSynchronize());
        CK(cudaMemcpy(got.data(), d_out, got.size() * 2, cudaMemcpyDeviceToHost));
        const auto [worst, range] = worst_and_range(got, ref, decode);
        if (range > 0 && worst <= range * 0x1p-7) return true;
        std::printf("%-12s %6ld %6ld %5d %sCHECK FAILED: max |nvfp4 - cuBLAS| = %.3g of a range %.3g\n", sh.what, OC, C, M,
                    what, worst, range);
        all_ok = false;
        return false;
      };
      if (!check("", fused)) continue;
      const double t_bf16 = nvfp4::bench::median_event_seconds(
          [&] { blas.matmul_forward(d_ref, d_x, d_w, M, C, OC, nullptr); }, flush_l2, warmup, reps);
      const double t_fp4 = nvfp4::bench::median_event_seconds(fused, flush_l2, warmup, reps);
      // The GEMV's other splits along C (the tuning table's alternatives), same data and flush; the
      // GEMM's other kernel (mma.sync beside the default wgmma).
      std::string splits;
      if (M > cu::kNvfp4GemvMaxRows) {
        // The wide wgmma tile (128 x 256 tokens), checked like the default first.
        const auto wide = [&] {
          cu::nvfp4_gemm(d_out, nvfp4::DType::BF16, d_x, w, nullptr, M, C, OC, nullptr, nullptr,
                         cu::Nvfp4GemmKernel::wgmma_wide);
        };
        check("WIDE ", wide);
        const double t_wide = nvfp4::bench::median_event_seconds(wide, flush_l2, warmup, reps);
        // The warp-specialized wide tile (TMA producer warp, mbarriers), checked the same way.
        const auto ws = [&] {
          cu::nvfp4_gemm(d_out, nvfp4::DType::BF16, d_x, w, nullptr, M, C, OC, nullptr, nullptr,
                         cu::Nvfp4GemmKernel::wgmma_ws);
        };
        check("WS ", ws);
        const double t_ws = nvfp4::bench::median_event_seconds(ws, flush_l2, warmup, reps);
        const double t = nvfp4::bench::median_event_seconds(
            [&] {
              cu::nvfp4_gemm(d_out, nvfp4::DType::BF16, d_x, w, nullptr, M, C, OC, nullptr, nullptr,
                             cu::Nvfp4GemmKernel::mma_sync);
            },
            flush_l2, warmup, reps);
        // The engine's prefill route: the weight decoded to BF16 on the device, then cuBLAS (the
        // tensor factor, applied to the output after, not timed). Checked first: cuBLAS's bits on
        // the weight decoded on the host.
        if (!d_wdec) CK(cudaMalloc(&d_wdec, static_cast<size_t>(OC * C) * 2));
        const auto decoded = [&] {
          cu::nvfp4_decode_gemv_order(d_wdec, w, OC, C, nullptr);
          blas.matmul_forward(d_out, d_x, d_wdec, M, C, OC, nullptr);
        };
        decoded();
        CK(cudaDeviceSynchronize());
        CK(cudaMemcpy(got.data(), d_out, got.size() * 2, cudaMemcpyDeviceToHost));
        const bool decoded_ok = got == ref;
        if (!decoded_ok) {
          std::printf("%-12s %6ld %6ld %5d DECODED CHECK FAILED: decode + cuBLAS differs from cuBLAS on the host decode\n",
                      sh.what, OC, C, M);
          all_ok = false;
        }
        const double t_dec = decoded_ok ? nvfp4::bench::median_event_seconds(decoded, flush_l2, warmup, reps) : 0.0;
        // W4A4, both operands NVFP4 (the training recipe's GEMM): x as random NVFP4 codes and scales.
        std::vector<uint8_t> xc(static_cast<size_t>(M * C / 2)), xs(static_cast<size_t>(M * C / 16));
        for (auto& b : xc) b = static_cast<uint8_t>(rng());
        for (auto& v : xs) v = static_cast<uint8_t>(0x30 + rng() % 0x4E);
        uint8_t* d_xc = device_copy(xc);
        uint8_t* d_xs = device_copy(xs);
        const auto nt = [&] {
          cu::nvfp4_gemm_nt(d_out, nvfp4::DType::BF16, cu::Nvfp4Operand{d_xc, d_xs}, cu::Nvfp4Operand{d_native, d_scales},
                            M, OC, C, d_decode, false, nullptr);
        };
        {  // check it first: against cuBLAS on both operands decoded, times the factor
          std::vector<uint16_t> xd(static_cast<size_t>(M * C));
          for (long m = 0; m < M; ++m)
            for (long e = 0; e < C; ++e) {
              const uint8_t byte = xc[static_cast<size_t>(m * (C / 2) + e / 2)];
              xd[static_cast<size_t>(m * C + e)] = nvfp4::fmt::bf16_encode(
                  nvfp4::fmt::e2m1_decode((e & 1) ? byte >> 4 : byte & 15) *
                  nvfp4::fmt::e4m3_decode(xs[static_cast<size_t>(m * (C / 16) + e / 16)]));
            }
          uint16_t* d_xd = device_copy(xd);
          blas.matmul_forward(d_ref, d_xd, d_w, M, C, OC, nullptr);
          CK(cudaDeviceSynchronize());
          CK(cudaMemcpy(ref.data(), d_ref, ref.size() * 2, cudaMemcpyDeviceToHost));
          CK(cudaFree(d_xd));
          check("W4A4 ", nt);
        }
        const auto nt_ws = [&] {
          cu::nvfp4_gemm_nt(d_out, nvfp4::DType::BF16, cu::Nvfp4Operand{d_xc, d_xs}, cu::Nvfp4Operand{d_native, d_scales},
                            M, OC, C, d_decode, false, nullptr, cu::Nvfp4GemmNtKernel::wgmma_ws);
        };
        check("W4A4 WS ", nt_ws);  // the same reference as W4A4's
        const double t_nt = nvfp4::bench::median_event_seconds(nt, flush_l2, warmup, reps);
        const double t_nt_ws = nvfp4::bench::median_event_seconds(nt_ws, flush_l2, warmup, reps);
        CK(cudaFree(d_xc));
        CK(cudaFree(d_xs));
        char buf[384];
        std::snprintf(buf, sizeof buf,
                      "  wide %.2f us (%.2fx bf16), ws %.2f us (%.2fx bf16), mma.sync %.2f us, w4a4 %.2f us (%.2fx bf16), "
                      "w4a4 ws %.2f us (%.2fx bf16), decoded+cuBLAS %.2f us (%.2fx bf16)",
                      t_wide * 1e6, t_bf16 / t_wide, t_ws * 1e6, t_bf16 / t_ws, t * 1e6, t_nt * 1e6, t_bf16 / t_nt,
                      t_nt_ws * 1e6, t_bf16 / t_nt_ws, t_dec * 1e6, t_dec > 0 ? t_bf16 / t_dec : 0.0);
        splits = buf;
      }
      std::string split_k;
      if (M <= cu::kNvfp4GemvMaxRows && M > 8) {  // the split-K GEMM beside the GEMV, checked first
        const auto sk = [&] {
          cu::nvfp4_gemm(d_out, nvfp4::DType::BF16, d_x, w, nullptr, M, C, OC, nullptr, nullptr, cu::Nvfp4GemmKernel::split_k);
        };
        check("SPLIT-K ", sk);
        const double t_sk = nvfp4::bench::median_event_seconds(sk, flush_l2, warmup, reps);
        char buf[64];
        std::snprintf(buf, sizeof buf, "; split-K GEMM %.2f us (%.2fx bf16)", t_sk * 1e6, t_bf16 / t_sk);
        split_k = buf;
      }
      if (M <= cu::kNvfp4GemvMaxRows) {
        for (const int split : {1, 2, 4, 8, 16}) {
          if (split == 16 && M > 8) continue;  // 16 warps along C only at one n-tile
          const double t = nvfp4::bench::median_event_seconds(
              [&] { cu::nvfp4_gemv(d_out, nvfp4::DType::BF16, d_x, w, nullptr, M, C, OC, nullptr, nullptr, split); },
              flush_l2, warmup, reps);
          char buf[32];
          std::snprintf(buf, sizeof buf, " %d:%.2f", split, t * 1e6);
          splits += buf;
        }
      }
      // Up to 16 tokens, the GEMV's other configurations that take M (ring depth, accumulator sets,
      // warps an SM) at every split, each checked first: one line each after the table row.
      std::string variants;
      if (M <= 16) {
        for (int v = 0; v < gd::nvfp4_gemv_variants(); ++v) {
          if (M > gd::nvfp4_gemv_variant_max_rows(v)) continue;
          variants += "    variant " + std::to_string(v) + " (" + gd::nvfp4_gemv_variant_name(v) + "): us by split";
          for (const int split : {1, 2, 4, 8, 16}) {
            const auto run = [&] {
              gd::nvfp4_gemv_variant(v, split, d_out, nvfp4::DType::BF16, d_x, w, nullptr, M, C, OC, nullptr, nullptr);
            };
            char buf[48];
            if (!check(("VARIANT " + std::to_string(v) + " SPLIT " + std::to_string(split) + " ").c_str(), run)) {
              variants += " " + std::to_string(split) + ":FAILED";
              continue;
            }
            std::snprintf(buf, sizeof buf, " %d:%.2f", split,
                          nvfp4::bench::median_event_seconds(run, flush_l2, warmup, reps) * 1e6);
            variants += buf;
          }
          variants += "\n";
        }
      }
      const double bytes_bf16 = double(OC) * C * 2, bytes_fp4 = double(OC) * C * (0.5 + 1.0 / 16);
      const double flop = 2.0 * M * OC * C;
      std::printf("%-12s %6ld %6ld %5d %11.2f %11.2f %10.2f %10.2f %11.1f %11.1f %7.2fx%s\n", sh.what, OC, C, M,
                  t_bf16 * 1e6, t_fp4 * 1e6, bytes_bf16 / t_bf16 * 1e-12, bytes_fp4 / t_fp4 * 1e-12, flop / t_bf16 * 1e-12,
                  flop / t_fp4 * 1e-12, t_bf16 / t_fp4,
                  splits.empty() ? "" : (M > cu::kNvfp4GemvMaxRows ? splits : "  us by split" + splits + split_k).c_str());
      std::fputs(variants.c_str(), stdout);
      CK(cudaFree(d_x));
      CK(cudaFree(d_ref));
      CK(cudaFree(d_out));
    }
    if (d_wdec) CK(cudaFree(d_wdec));
    CK(cudaFree(d_codes));
    CK(cudaFree(d_native));
    CK(cudaFree(d_scales));
    CK(cudaFree(d_decode));
    CK(cudaFree(d_w));
  }
  CK(cudaFree(flush));
  CK(cudaFree(sink));
  return all_ok ? 0 : 1;
}
