// What CUDA devices this process can use. Plain C++ (no CUDA types), so CPU-only code and
// tests can ask; implemented in src/kernels/cuda/device.cu.
#pragma once

#include <string>

namespace nvfp4::cuda {

// Number of usable CUDA devices; 0 when there is no GPU or no driver (never throws).
int device_count();

// "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs)" for device `index`; empty if unavailable.
std::string device_description(int index = 0);

// Why no device is usable ("no CUDA driver", "no CUDA device", ...); empty if one is.
std::string unavailable_reason();

}  // namespace nvfp4::cuda
