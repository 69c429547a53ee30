// The CPU reference token embedding, forward and backward (ops.hpp; CUDA twin:
// src/kernels/cuda/embedding.cu).
#include "kernels/cpu/ops.hpp"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cpu/ops_common.hpp"

namespace nvfp4::cpu {

using namespace ops_detail;

// ---- token embedding -----------------------------------------------------------------------

namespace {

void check_tokens(const char* op, const int32_t* tokens, int64_t B, int64_t T, int64_t V) {
  for (int64_t i = 0; i < B * T; ++i) {
    require(tokens[i] >= 0 && tokens[i] < V, op,
            "token " + std::to_string(tokens[i]) + " at position (b=" + std::to_string(i / T) +
                ", t=" + std::to_string(i % T) + ") is outside the vocabulary [0, " + std::to_string(V) +
                "); check the tokenizer's vocabulary size against the model's");
  }
}

}  // namespace

void encoder_forward(float* out, const int32_t* tokens, const float* wte, int64_t B, int64_t T, int64_t C,
                     int64_t V) {
  require_nonnegative("encoder_forward", {{"B", B}, {"T", T}, {"C", C}, {"V", V}});
  check_tokens("encoder_forward", tokens, B, T, V);
  NVFP4_OMP("omp parallel for")
  for (int64_t i = 0; i < B * T; ++i)
    std::memcpy(out + i * C, wte + static_cast<int64_t>(tokens[i]) * C, sizeof(float) * static_cast<size_t>(C));
}

void encoder_backward(float* dwte, const float* dout, const int32_t* tokens, int64_t B, int64_t T, int64_t C,
                      int64_t V) {
  require_nonnegative("encoder_backward", {{"B", B}, {"T", T}, {"C", C}, {"V", V}});
  check_tokens("encoder_backward", tokens, B, T, V);
  // The order of the additions (cuda::encoder_backward's too, bit for bit): the positions sorted
  // by token, stably (a counting sort), cut into chunks of kEncoderChunk sorted positions; in a
  // chunk, each token's rows summed from zero in position order (a piece); each token's pieces
  // added into its row in order. Serial: it keeps the bits independent of the thread count.
  const int64_t N = B * T;
  std::vector<int64_t> next(static_cast<size_t>(V) + 1, 0);
  for (int64_t i = 0; i < N; ++i) ++next[static_cast<size_t>(tokens[i]) + 1];
  for (int64_t v = 0; v < V; ++v) next[v + 1] += next[v];
  std::vector<int64_t> sorted(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) sorted[next[tokens[i]]++] = i;
  std::vector<float> piece(static_cast<size_t>(C));
  for (int64_t a = 0; a < N;) {
    const int32_t tok = tokens[sorted[a]];
    const int64_t chunk_end = std::min(N, (a / kEncoderChunk + 1) * kEncoderChunk);
    std::fill(piece.begin(), piece.end(), 0.0f);
    int64_t b = a;
    for (; b < chunk_end && tokens[sorted[b]] == tok; ++b) {
      const float* g = dout + sorted[b] * C;
      for (int64_t c = 0; c < C; ++c) piece[c] += g[c];
    }
    float* row = dwte + static_cast<int64_t>(tok) * C;
    for (int64_t c = 0; c < C; ++c) row[c] += piece[c];
    a = b;
  }
}

}  // namespace nvfp4::cpu
