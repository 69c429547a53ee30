#include <cuda_runtime.h>

#include <atomic>
#include <cstdlib>
#include <string>

#include "nvfp4/cuda_ops.hpp"
#include "nvfp4/cuda_runtime_info.hpp"

namespace nvfp4::cuda {

namespace {
// NVFP4_DEPENDENT_LAUNCH=0 in the environment starts with it off (a driver that mishandles it).
std::atomic<bool> g_dependent_launch{[] {
  const char* v = std::getenv("NVFP4_DEPENDENT_LAUNCH");
  return v == nullptr || std::string(v) != "0";
}()};
}  // namespace

void set_dependent_launch(bool on) { g_dependent_launch.store(on, std::memory_order_relaxed); }
bool dependent_launch() { return g_dependent_launch.load(std::memory_order_relaxed); }

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

std::string device_description(int index) {
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, index) != cudaSuccess) {
    cudaGetLastError();
    return {};
  }
  return std::string(prop.name) + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + ", " +
         std::to_string(prop.multiProcessorCount) + " SMs)";
}

std::string unavailable_reason() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return std::string(cudaGetErrorString(err));
  }
  return n == 0 ? std::string("no CUDA device") : std::string();
}

}  // namespace nvfp4::cuda
