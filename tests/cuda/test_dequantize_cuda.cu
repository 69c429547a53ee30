// CUDA dequantization (cuda::dequantize, every format) against the CPU reference, bit for bit,
// and its argument errors. Skips cleanly without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "cuda/quantize_test_util.hpp"
#include "format/scalar.hpp"
#include "nvfp4/cuda_check.hpp"
#include "nvfp4/cuda_quantize.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/quantize.hpp"
#include "support/cuda_test.hpp"

namespace {

using namespace nvfp4::quantize_test;

// Dequantization kernels vs nvfp4::dequantize(): FP32 output bit-exact, BF16 output its RNE
// rounding; every format, both tensor-factor modes, plain and swizzled NVFP4 scales.
struct DequantCase {
  const char* name;
  nvfp4::Format format;
  nvfp4::BlockShape block;
  bool swizzled, tensor_factor;
};
const DequantCase kDequantCases[] = {
    {"nvfp4 1x16 codes x scale", nvfp4::Format::nvfp4, {1, 16}, false, false},
    {"nvfp4 1x16 with tensor factor", nvfp4::Format::nvfp4, {1, 16}, false, true},
    {"nvfp4 16x16 swizzled, tensor factor", nvfp4::Format::nvfp4, {16, 16}, true, true},
    {"nvfp4 1x16 swizzled", nvfp4::Format::nvfp4, {1, 16}, true, false},
    {"mxfp4", nvfp4::Format::mxfp4, {1, 32}, false, false},
    {"mxfp4-ocp", nvfp4::Format::mxfp4_ocp, {1, 32}, false, false},
    {"fp8-e4m3 per tensor", nvfp4::Format::fp8_e4m3, {0, 0}, false, false},
    {"fp8-e5m2 1x128", nvfp4::Format::fp8_e5m2, {1, 128}, false, false},
    {"fp8-e4m3 128x128", nvfp4::Format::fp8_e4m3, {128, 128}, false, false},
};

TEST(CudaDequantize, MatchesCpuForEveryFormat) {
  REQUIRE_GPU();
  const Shape shapes[] = {{32, 32}, {64, 96}, {224, 160}, {1024, 512}, {32, 4096}};
  uint64_t seed = 2000;
  int cases = 0;
  for (const DequantCase& dc : kDequantCases) {
    for (const Shape& s : shapes) {
      for (Data d : kData) {
        for (nvfp4::DType out_dt : {nvfp4::DType::BF16, nvfp4::DType::F32}) {
          SCOPED_TRACE(std::string(dc.name) + " " + std::to_string(s.M) + "x" + std::to_string(s.K) + " " +
                       data_name(d) + (out_dt == nvfp4::DType::BF16 ? " -> bf16" : " -> f32"));
          const auto x = make(d, s.M, s.K, ++seed, false);
          nvfp4::QuantizeOptions o;
          o.format = dc.format;
          o.block = dc.block;
          const auto ref = nvfp4::quantize(x, s.M, s.K, o);
          const nvfp4::QuantizedCopy& c = *ref.row;
          const auto want = nvfp4::dequantize(c, ref.options, dc.tensor_factor);
          const auto scales = dc.swizzled ? nvfp4::swizzle_scales(c.scales, c.rows, c.cols / 16) : c.scales;
          DeviceBuffer<uint8_t> q(c.codes.size()), sc(std::max<size_t>(scales.size(), 1));
          DeviceBuffer<float> si(std::max<size_t>(c.scale_inv.size(), 1)), am(1);
          const size_t esize = out_dt == nvfp4::DType::BF16 ? 2 : 4;
          DeviceBuffer<uint8_t> out(x.size() * esize);
          CUDA_OK(cudaMemcpy(q.ptr, c.codes.data(), c.codes.size(), cudaMemcpyHostToDevice));
          if (!scales.empty()) CUDA_OK(cudaMemcpy(sc.ptr, scales.data(), scales.size(), cudaMemcpyHostToDevice));
          if (!c.scale_inv.empty()) {
            CUDA_OK(cudaMemcpy(si.ptr, c.scale_inv.data(), c.scale_inv.size() * 4, cudaMemcpyHostToDevice));
          }
          CUDA_OK(cudaMemcpy(am.ptr, &c.amax, 4, cudaMemcpyHostToDevice));
          CUDA_OK(cudaMemset(out.ptr, 0xAB, out.n));
          nvfp4::QuantizeOptions d = o;  // one entry: the format and block pick the decoder
          d.swizzled_scales = dc.swizzled;
          nvfp4::cuda::dequantize({q.ptr, sc.ptr, si.ptr, am.ptr}, c.rows, c.cols, d, dc.tensor_factor, out.ptr, out_dt,
                                  nullptr);
          CUDA_OK(cudaDeviceSynchronize());
          const std::vector<uint8_t> want_bytes = input_bytes(
              out_dt == nvfp4::DType::BF16 ? [&] {
                std::vector<float> r(want.size());
                for (size_t i = 0; i < want.size(); ++i) r[i] = nvfp4::fmt::bf16_round(want[i]);
                return r;
              }()
                                           : want,
              out_dt);
          EXPECT_EQ(first_diff(want_bytes, out.download()), "");
          ++cases;
          if (HasFailure()) return;
        }
      }
    }
  }
  EXPECT_EQ(cases, 9 * 5 * 4 * 2);
}

TEST(CudaDequantize, BadArgumentsAreExplained) {
  REQUIRE_GPU();
  DeviceBuffer<uint8_t> q(64 * 64), sc(64 * 4);
  DeviceBuffer<float> out(64 * 64), si(1);
  const nvfp4::QuantizeOptions nv = opts(nvfp4::Format::nvfp4), mx = opts(nvfp4::Format::mxfp4);
  const nvfp4::cuda::DeviceCopy fp4{q.ptr, sc.ptr}, fp8{q.ptr, nullptr, si.ptr};
  expect_error([&] { nvfp4::cuda::dequantize(fp4, 64, 40, nv, false, out.ptr, nvfp4::DType::F32, nullptr); }, "cols = 40");
  expect_error([&] { nvfp4::cuda::dequantize(fp4, 64, 64, nv, true, out.ptr, nvfp4::DType::F32, nullptr); }, "amax");
  expect_error([&] { nvfp4::cuda::dequantize(fp4, 64, 48, mx, false, out.ptr, nvfp4::DType::BF16, nullptr); },
         "multiple of 32");
  expect_error([&] { nvfp4::cuda::dequantize(fp4, 64, 64, mx, false, out.ptr, nvfp4::DType::F16, nullptr); }, "F16");
  expect_error([&] {
    nvfp4::cuda::dequantize(fp8, 64, 64, opts(nvfp4::Format::fp8_e4m3, nvfp4::BlockShape{1, 16}), false, out.ptr,
                            nvfp4::DType::F32, nullptr);
  }, "block 1x16");
  expect_error([&] { nvfp4::cuda::dequantize(fp8, 64, 64, nv, false, out.ptr, nvfp4::DType::F32, nullptr); },
         "scales pointer is null");  // the format picks the decoder; an FP8 copy has no byte scales
}

}  // namespace
