// CPU quantization throughput (Google Benchmark). Bytes processed = FP32 input bytes, so
// "bytes_per_second" is GB/s of FP32 input; the target is >= 1 GB/s per core for
// NVFP4. Every benchmark first checks its output against an independent element-by-element
// evaluation of the format core, so a fast wrong kernel cannot report a number.
#include <benchmark/benchmark.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include <random>

#include "format/nvfp4.hpp"
#include "nvfp4/quantize.hpp"

namespace {

std::vector<float> gaussian(int64_t n) {
  std::mt19937_64 rng(42);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = d(rng);
  return x;
}

// Element-by-element NVFP4 1x16 row-wise quantization straight from the core functions.
bool matches_core(const std::vector<float>& x, int64_t rows, int64_t cols, const nvfp4::QuantizedCopy& c) {
  using namespace nvfp4::fmt;
  float amax = 0;
  for (float v : x) amax = std::max(amax, abs_f32(v));
  const auto ts = nvfp4_tensor_scale(amax);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < cols / 16; ++b) {
      float bamax = 0;
      for (int j = 0; j < 16; ++j) bamax = std::max(bamax, abs_f32(x[r * cols + 16 * b + j]));
      const uint8_t s = nvfp4_block_scale(bamax, ts);
      if (c.scales[r * (cols / 16) + b] != s) return false;
      const float e = nvfp4_block_encode_factor(s, ts);
      for (int j = 0; j < 16; ++j) {
        const int64_t i = r * cols + 16 * b + j;
        const uint8_t byte = c.codes[i / 2];
        if (((i & 1) ? byte >> 4 : byte & 0xF) != nvfp4_encode_rne(x[i], e)) return false;
      }
    }
  }
  return true;
}

void BM_Quantize(benchmark::State& state, nvfp4::Format format, nvfp4::BlockShape block, bool columnwise, bool rht,
                 bool sr) {
  const int64_t rows = state.range(0), cols = state.range(1);
  const auto x = gaussian(rows * cols);
  nvfp4::QuantizeOptions o;
  o.format = format;
  o.block = block;
  o.columnwise = columnwise;
  o.rht = rht;
  if (sr) o.rounding = nvfp4::Rounding::stochastic;
  if (format == nvfp4::Format::nvfp4 && block.rows == 1 && !sr && !rht) {
    const auto q = nvfp4::quantize(x, rows, cols, o);
    if (!matches_core(x, rows, cols, *q.row)) {
      state.SkipWithError("output differs from the format core");
      return;
    }
  }
  for (auto _ : state) {
    auto q = nvfp4::quantize(x, rows, cols, o);
    benchmark::DoNotOptimize(q.row);
    benchmark::DoNotOptimize(q.col);
  }
  state.SetBytesProcessed(state.iterations() * rows * cols * 4);
}

using nvfp4::BlockShape;
using nvfp4::Format;
BENCHMARK_CAPTURE(BM_Quantize, nvfp4_1x16_row, Format::nvfp4, BlockShape{1, 16}, false, false, false)->Args({4096, 4096});
BENCHMARK_CAPTURE(BM_Quantize, nvfp4_16x16_row, Format::nvfp4, BlockShape{16, 16}, false, false, false)->Args({4096, 4096});
BENCHMARK_CAPTURE(BM_Quantize, nvfp4_1x16_row_sr, Format::nvfp4, BlockShape{1, 16}, false, false, true)->Args({4096, 4096});
BENCHMARK_CAPTURE(BM_Quantize, nvfp4_1x16_row_col_rht_sr, Format::nvfp4, BlockShape{1, 16}, true, true, true)->Args({4096, 4096});
BENCHMARK_CAPTURE(BM_Quantize, mxfp4_row, Format::mxfp4, BlockShape{1, 32}, false, false, false)->Args({4096, 4096});
BENCHMARK_CAPTURE(BM_Quantize, fp8_e4m3_tensor_row, Format::fp8_e4m3, BlockShape{0, 0}, false, false, false)->Args({4096, 4096});

}  // namespace

// One core, as docs/perf.md reports it (the quantizer's OpenMP would use every core).
int main(int argc, char** argv) {
#ifdef _OPENMP
  omp_set_num_threads(1);
#endif
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
