// Decode attention over the paged KV cache (cuda::attention_cache, issue 18): one query row per
// sequence, every sequence at the same context, Llama-3.1-8B's heads (32 query, 8 KV, head size 128)
// by default. For each batch size and context: the output checked first against the CPU reference
// (cpu::attention_cache on the same BF16 values, within the BF16 tolerance of the CUDA kernel test),
// then the median time over repetitions with L2 flushed (a 256 MiB write) before each, and the
// cache's bytes read a second (K and V of every visible position: B x ctx x NKV x HS x 2 x 2
// bytes) beside the device-to-device copy's rate measured in the same run (read + write bytes of a
// 1 GiB copy over its time). The block table is shuffled (blocks spread over the pool as a serving
// run leaves them).
//
//   bench_attention_decode [--batch 1,8,32,64] [--ctx 1024,4096,16384,32768] [--heads 32,8,128]
//                          [--block 16] [--reps 20] [--warmup 3]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cuda_check.hpp"
#include "format/scalar.hpp"
#include "kernels/cpu/ops.hpp"
#include "nvfp4/cuda_ops.hpp"

namespace {

std::vector<int64_t> parse_list(const char* s) {
  std::vector<int64_t> v;
  for (const char* p = s; *p;) {
    char* end = nullptr;
    v.push_back(std::strtoll(p, &end, 10));
    if (end == p || v.back() <= 0) {
      std::fprintf(stderr, "bench_attention_decode: bad list '%s' (positive integers, comma-separated)\n", s);
      std::exit(2);
    }
    p = *end == ',' ? end + 1 : end;
  }
  return v;
}

// p[i] = a pseudo-random BF16 in about (-2, 2): the sum of two uniforms from a hash of (seed, i), on
// the device (the caches reach gigabytes).
__global__ void fill_random_bf16(uint16_t* p, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x) {
    uint64_t z = (seed + i) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float u = static_cast<float>(z & 0xFFFFFF) * 0x1p-24f, w = static_cast<float>((z >> 24) & 0xFFFFFF) * 0x1p-24f;
    p[i] = nvfp4::fmt::bf16_encode(2.0f * (u + w) - 2.0f);
  }
}

template <class T>
T* device_alloc(size_t n) {
  T* p = nullptr;
  CK(cudaMalloc(&p, n * sizeof(T)));
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int64_t> batches = {1, 8, 32, 64}, ctxs = {1024, 4096, 16384, 32768}, heads = {32, 8, 128};
  int64_t block = 16;
  int reps = 20, warmup = 3;
  for (int i = 1; i < argc; i += 2) {
    const std::string a = argv[i];
    if (i + 1 == argc) {
      std::fprintf(stderr, "bench_attention_decode: %s needs a value\n", a.c_str());
      return 2;
    }
    if (a == "--batch") batches = parse_list(argv[i + 1]);
    else if (a == "--ctx") ctxs = parse_list(argv[i + 1]);
    else if (a == "--heads") heads = parse_list(argv[i + 1]);
    else if (a == "--block") block = parse_list(argv[i + 1]).at(0);
    else if (a == "--reps") reps = std::atoi(argv[i + 1]);
    else if (a == "--warmup") warmup = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "bench_attention_decode: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  if (heads.size() != 3 || heads[0] % heads[1] != 0 || reps < 1 || warmup < 0) {
    std::fprintf(stderr, "bench_attention_decode: --heads NH,NKV,HS with NKV dividing NH; --reps >= 1\n");
    return 2;
  }
  const int64_t NH = heads[0], NKV = heads[1], HS = heads[2], width = NKV * HS;
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));

  // L2 flush buffer and the copy baseline.
  const size_t flush_bytes = size_t{256} << 20, copy_bytes = size_t{1} << 30;
  uint8_t* flush = device_alloc<uint8_t>(flush_bytes);
  uint8_t *src = device_alloc<uint8_t>(copy_bytes), *dst = device_alloc<uint8_t>(copy_bytes);
  CK(cudaMemset(src, 1, copy_bytes));
  const auto flush_l2 = [&] { CK(cudaMemsetAsync(flush, 0, flush_bytes)); };
  const double t_copy = nvfp4::bench::median_event_seconds(
      [&] { CK(cudaMemcpyAsync(dst, src, copy_bytes, cudaMemcpyDeviceToDevice)); }, flush_l2, warmup, reps);
  const double copy_rate = 2.0 * copy_bytes / t_copy;
  CK(cudaFree(src));
  CK(cudaFree(dst));
  std::printf("device: %s; copy %.0f GB/s (read + write of 1 GiB); heads %lld/%lld, head size %lld, block %lld\n",
              prop.name, copy_rate / 1e9, static_cast<long long>(NH), static_cast<long long>(NKV),
              static_cast<long long>(HS), static_cast<long long>(block));
  std::printf("%6s %7s %10s %10s %9s %8s\n", "batch", "ctx", "KV MB", "us", "TB/s", "of copy");

  std::mt19937_64 rng(42);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const int64_t B : batches) {
    for (const int64_t ctx : ctxs) {
      const int64_t per_seq = (ctx + block - 1) / block, blocks = B * per_seq;
      const size_t cache_n = static_cast<size_t>(blocks * block * width);
      if (cache_n * 2 * 2 > prop.totalGlobalMem / 10 * 8) {
        std::printf("%6lld %7lld  skipped: the cache does not fit\n", static_cast<long long>(B), static_cast<long long>(ctx));
        continue;
      }
      // Random BF16 K, V (filled on the device), q; a shuffled block table; one query row per
      // sequence at position ctx - 1.
      std::vector<uint16_t> hq(static_cast<size_t>(B * NH * HS));
      for (auto& x : hq) x = nvfp4::fmt::bf16_encode(normal(rng));
      std::vector<int32_t> table(static_cast<size_t>(blocks));
      std::iota(table.begin(), table.end(), 0);
      std::shuffle(table.begin(), table.end(), rng);
      std::vector<int32_t> slot(static_cast<size_t>(B)), pos(static_cast<size_t>(B), static_cast<int32_t>(ctx - 1));
      std::iota(slot.begin(), slot.end(), 0);
      uint16_t *dk = device_alloc<uint16_t>(cache_n), *dv = device_alloc<uint16_t>(cache_n);
      uint16_t *dq = device_alloc<uint16_t>(hq.size()), *dout = device_alloc<uint16_t>(hq.size());
      int32_t *dtable = device_alloc<int32_t>(table.size()), *dslot = device_alloc<int32_t>(slot.size()),
              *dpos = device_alloc<int32_t>(pos.size());
      uint32_t* dstatus = device_alloc<uint32_t>(1);
      fill_random_bf16<<<1024, 256>>>(dk, cache_n, rng());
      fill_random_bf16<<<1024, 256>>>(dv, cache_n, rng());
      CK(cudaGetLastError());
      CK(cudaMemcpy(dq, hq.data(), hq.size() * 2, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(dtable, table.data(), table.size() * 4, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(dslot, slot.data(), slot.size() * 4, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(dpos, pos.data(), pos.size() * 4, cudaMemcpyHostToDevice));
      CK(cudaMemset(dstatus, 0, 4));
      const nvfp4::KvPages pages{dtable, block, blocks};
      const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
      const auto run = [&] {
        nvfp4::cuda::attention_cache(dout, dq, dk, dv, dslot, dpos, B, NH, NKV, HS, B, ctx, 0, scale, dstatus, nullptr,
                                     pages);
      };
      run();
      CK(cudaDeviceSynchronize());
      // Check one sequence (the first) against the CPU reference on the same values.
      {
        uint32_t st = 0;
        CK(cudaMemcpy(&st, dstatus, 4, cudaMemcpyDeviceToHost));
        std::vector<uint16_t> got(hq.size());
        CK(cudaMemcpy(got.data(), dout, got.size() * 2, cudaMemcpyDeviceToHost));
        // Sequence 0's keys and values, block by block through its table row.
        std::vector<uint16_t> bk(static_cast<size_t>(per_seq * block * width)), bv(bk.size());
        for (int64_t j = 0; j < per_seq; ++j) {
          const size_t at = static_cast<size_t>(int64_t{table[static_cast<size_t>(j)]} * block * width);
          const size_t to = static_cast<size_t>(j * block * width), bytes = static_cast<size_t>(block * width) * 2;
          CK(cudaMemcpy(bk.data() + to, dk + at, bytes, cudaMemcpyDeviceToHost));
          CK(cudaMemcpy(bv.data() + to, dv + at, bytes, cudaMemcpyDeviceToHost));
        }
        std::vector<float> k(static_cast<size_t>(ctx * width)), v(k.size()), q(static_cast<size_t>(NH * HS)), want(q.size());
        for (size_t e = 0; e < k.size(); ++e) k[e] = nvfp4::fmt::bf16_decode(bk[e]), v[e] = nvfp4::fmt::bf16_decode(bv[e]);
        for (size_t e = 0; e < q.size(); ++e) q[e] = nvfp4::fmt::bf16_decode(hq[e]);
        const int32_t s0 = 0, p0 = static_cast<int32_t>(ctx - 1);
        nvfp4::cpu::attention_cache(want.data(), q.data(), k.data(), v.data(), &s0, &p0, 1, NH, NKV, HS, 1, ctx, 0, scale);
        double worst = 0.0;
        for (size_t e = 0; e < want.size(); ++e) {
          const double err = std::fabs(double(nvfp4::fmt::bf16_decode(got[e])) - want[e]);
          worst = std::max(worst, err / (std::fabs(want[e]) * 0x1p-8 + 1e-3));
        }
        if (st != 0 || !(worst <= 1.0)) {
          std::printf("%6lld %7lld  CHECK FAILED: status %u, worst error / tolerance %.3g\n", static_cast<long long>(B),
                      static_cast<long long>(ctx), st, worst);
          return 1;
        }
      }
      const double t = nvfp4::bench::median_event_seconds(run, flush_l2, warmup, reps);
      const double bytes = 2.0 * 2.0 * static_cast<double>(B * ctx * width);
      std::printf("%6lld %7lld %10.1f %10.2f %9.2f %7.1f%%\n", static_cast<long long>(B), static_cast<long long>(ctx),
                  bytes / 1e6, t * 1e6, bytes / t / 1e12, 100.0 * bytes / t / copy_rate);
      for (void* p : {static_cast<void*>(dk), static_cast<void*>(dv), static_cast<void*>(dq), static_cast<void*>(dout),
                      static_cast<void*>(dtable), static_cast<void*>(dslot), static_cast<void*>(dpos),
                      static_cast<void*>(dstatus)})
        CK(cudaFree(p));
    }
  }
  CK(cudaFree(flush));
  return 0;
}
