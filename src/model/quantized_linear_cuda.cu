// QuantizedLinearCuda (see include/nvfp4/quantized_linear_cuda.hpp).
//
// Each GEMM has two operand slots (a, b); a slot owns the device buffers of its operand's
// quantized copy and remembers what the GEMM read, for held() and the next call. Weights use
// the same slots as activations.
//
// A training forward pass also makes the column-wise copies its backward pass will need (X^T
// for wgrad, W^T for dgrad) in the kernel call that makes the row-wise ones, when the recipe
// quantizes both alike (pairable, round-to-nearest: no SR key in the bits): one read of the
// tensor instead of two passes (amax + cast) in each direction. They are kept, by source
// tensor, in `kept` until the next forward pass; the backward pass takes them when its own
// decision for the operand is the same (else it quantizes afresh).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <string>

#include "format/nvfp4.hpp"
#include "model/device_array.cuh"
#include "nvfp4/cuda_gemm_nvfp4.hpp"
#include "nvfp4/cuda_quantize.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/quantized_linear.hpp"
#include "nvfp4/quantized_linear_cuda.hpp"

namespace nvfp4::model {

namespace {

using recipe::Gemm;
using recipe::Operand;
using recipe::OperandQuant;

// An operand the FP8 tensor cores take natively: 8-bit codes (the format's traits say).
bool native_fp8(Format f) { return format_traits(f).element_bits == 8; }

// alpha = product of the NVFP4 operands' per-tensor decode factors (1 for other formats).
__global__ void alpha_kernel(float* alpha, const float* amax_a, const float* amax_b) {
  float f = 1.0f;
  if (amax_a) f = fmt::nvfp4_tensor_decode_factor(*amax_a);
  if (amax_b) f *= fmt::nvfp4_tensor_decode_factor(*amax_b);
  *alpha = f;
}

constexpr int kMaxCounters = 4096;  // quantizer calls between two non-finite checks

// Whether the plan has operand p take its per-tensor amax from the kernel that wrote its tensor.
bool amax_from_producer(const recipe::OperandPlan& p) { return p.amax == recipe::AmaxSource::producer; }

// Where a quantizer call is, for messages: the plan's linear layer and the part of it. The
// text is made only when a message needs it (no strings on the hot path).
struct Where {
  size_t linear = 0;
  const char* part = "";        // "fprop X", "dY (dgrad and wgrad)", ...
  const char* also = nullptr;   // the kept column-wise copy's GEMM, when made in the same call
  std::string text(const recipe::Plan& plan) const {
    std::string s = plan.linear(linear).label + " " + part;
    if (also) s += std::string(" (and its column-wise copy for ") + also + ")";
    return s;
  }
};

}  // namespace

struct QuantizedLinearCuda::State {
  recipe::Plan plan;
  uint64_t seed;
  uint32_t step = 0;
  int phase = 0;  // the plan's phase for this step (before / after the late BF16 switch)

  struct Slot {
    DeviceArray<uint8_t> codes, scales;
    DeviceArray<float> f32;        // NVFP4: [0] amax; FP8: [0] amax, [4..] scale_inv (16-byte aligned)
    DeviceArray<uint16_t> decoded;  // NVFP4 / MXFP4 decoded to BF16
    bool nvfp4_undecoded = false;   // fused NVFP4 GEMM on: the copy is decoded only if the GEMM needs it
    DeviceArray<uint8_t> rht;       // MXFP4 under RHT: the transformed input (the 32-point RHT is its own pass)
    // What the last GEMM read.
    std::optional<OperandQuant> q;
    const recipe::OperandPlan* plan = nullptr;
    int64_t rows = 0, K = 0;
    const uint16_t* bf16 = nullptr;  // BF16 operand: the tensor, (rows, K) or stored (K, rows)
    bool bf16_column = false;
    cuda::GemmOperand op;
    const float* amax = nullptr;  // NVFP4: the factor's amax
    // The quantized copy's source, for reuse by the next linear layer reading the same input
    // in the same pass (q/k/v share their input, gate/up theirs): valid while `pass` is current.
    const void* src = nullptr;
    bool src_column = false;
    uint64_t pass = 0;
    // Where the quantized copy lives: this slot, or a copy kept from the forward pass.
    const Slot* from = nullptr;
    const Slot& holder() const { return from ? *from : *this; }
  };
  Slot slots[3][2];
  // Column-wise copies made by the last training forward pass, by source tensor.
  std::map<const void*, std::unique_ptr<Slot>> kept;
  // Row-wise weight copies prepare_weights() made for the current pass, by weight.
  std::map<const void*, std::unique_ptr<Slot>> prepared;
  bool training_forward = false;  // the current pass is a forward pass a backward pass follows
  bool kept_valid = false;        // `kept` holds the copies of the last forward pass
  uint64_t kept_pass = 0;         // the pass number of the last training forward pass
  // Producer amaxes: the plan's amax slots, zeroed once per pass before the first producer
  // writes one; a slot is read only if its producer was given it in this pass.
  DeviceArray<float> given;
  std::vector<uint64_t> given_pass;  // per slot: the pass its producer was given it in
  bool given_zeroed = false;         // in this pass
  const float* given_for(const recipe::OperandPlan& op) const {
    if (!amax_from_producer(op) || given_pass[op.amax_slot] != pass) return nullptr;
    return given.p + op.amax_slot;
  }
  // The weights' amaxes of prepare_weights() (one per weight it quantizes).
  DeviceArray<float> weight_amax;
  // The slot of `m` for `key`, made if new, set to hold a (rows, K) copy quantized as q in this
  // pass (kept and prepared copies).
  Slot& copy_slot(std::map<const void*, std::unique_ptr<Slot>>& m, const void* key, const OperandQuant& q,
                  int64_t rows, int64_t K) {
    auto& slot = m[key];
    if (!slot) slot = std::make_unique<Slot>();
    slot->q = q;
    slot->rows = rows;
    slot->K = K;
    slot->pass = pass;
    return *slot;
  }

  // Makes the copy m holds for `key` slot s's operand, if it is what s needs (and, with
  // this_pass, was made in this pass). Returns whether it did.
  bool take(Slot& s, const std::map<const void*, std::unique_ptr<Slot>>& m, const void* key, bool this_pass,
            cudaStream_t st) {
    const auto it = m.find(key);
    if (it == m.end()) return false;
    const Slot& c = *it->second;
    if ((this_pass && c.pass != pass) || c.q != s.q || c.rows != s.rows || c.K != s.K) return false;
    s.from = &c;
    finish(s, st);
    return true;
  }

  uint64_t pass = 1;  // bumped by begin_pass(): activations may have been rewritten
  DeviceArray<float> alpha;  // one per GEMM
  DeviceArray<uint32_t> counters;
  int used_counters = 0;
  std::vector<Where> counter_what;

  bool timing_on = false;
  bool fused_nvfp4 = false;  // set_fused_nvfp4
  cuda::Nvfp4GemmNtKernel nt_kernel = cuda::Nvfp4GemmNtKernel::wgmma;
  struct Marks {
    cudaEvent_t start, quantized, done;
  };
  std::vector<Marks> events;  // pool
  size_t events_used = 0;
  QuantizedLinearCuda::Timing acc;

  State(recipe::Plan p, uint64_t sd) : plan(std::move(p)), seed(sd) {
    counters.need(kMaxCounters);
    check(cudaMemset(counters.p, 0, kMaxCounters * sizeof(uint32_t)), "cudaMemset");
    alpha.need(3);
    given.need(static_cast<size_t>(plan.amax_slots()));
    given_pass.assign(static_cast<size_t>(plan.amax_slots()), 0);
  }
  ~State() {
    for (auto& m : events) {
      cudaEventDestroy(m.start);
      cudaEventDestroy(m.quantized);
      cudaEventDestroy(m.done);
    }
  }

  Marks* marks() {
    if (!timing_on) return nullptr;
    if (events_used == events.size()) {
      Marks m{};
      check(cudaEventCreate(&m.start), "cudaEventCreate");
      check(cudaEventCreate(&m.quantized), "cudaEventCreate");
      check(cudaEventCreate(&m.done), "cudaEventCreate");
      events.push_back(m);
    }
    return &events[events_used++];
  }

  uint32_t* counter(const Where& what) {
    if (used_counters == kMaxCounters) {
      throw Error("QuantizedLinearCuda: more than " + std::to_string(kMaxCounters) +
                  " quantizer calls without a non-finite check (call check_nonfinite after each pass)");
    }
    counter_what.push_back(what);
    return counters.p + used_counters++;
  }

  // Decides how operand o of GEMM g is held — the tensor x (rows_x, cols_x) row-major, or with
  // column = true its transpose — and, for a BF16 operand, holds it: x16 is the BF16 tensor
  // (x itself for activations, the weight's BF16 copy for weights). Returns the slot.
  Slot& prepare(Gemm g, Operand o, size_t li, const uint16_t* x16, int64_t rows_x, int64_t cols_x, bool column) {
    Slot& s = slots[int(g)][int(o)];
    s.plan = &plan.operand(li, phase, g, o);
    s.q = s.plan->quantized ? std::optional<OperandQuant>(s.plan->quant) : std::nullopt;
    s.rows = column ? cols_x : rows_x;
    s.K = column ? rows_x : cols_x;
    s.amax = nullptr;
    s.bf16 = nullptr;
    if (!s.q) {  // (a quantized slot's nvfp4_undecoded is finish()'s, kept when the copy is reused)
      s.nvfp4_undecoded = false;
      s.bf16 = x16;
      s.bf16_column = column;
      s.op = cuda::GemmOperand{x16, DType::BF16, !column, nullptr, BlockShape{0, 0}};
    }
    return s;
  }

  // Two operands that quantize the same tensor — one row-wise, one column-wise — can come from
  // one kernel call (one read of the tensor) when their settings agree; RHT is column-wise only.
  static bool pairable(const OperandQuant& row, const OperandQuant& col) {
    QuantizeOptions c;
    c.format = col.format;
    c.rht = col.rht;
    return row.format == col.format && row.block == col.block && row.rounding == col.rounding && !row.rht &&
           cuda::quantize_scratch_bytes(c, DType::F32, 1, 1) == 0;  // MXFP4's RHT transforms the input first
  }

  // Quantizes x (rows_x, cols_x), dtype BF16 or F32, into the row-wise copy held by slot `row`
  // and/or the column-wise copy held by slot `col` (prepared, quantized, pairable) in one call.
  // A kept column copy (col_is_operand = false) is not made into a GEMM operand here: the
  // backward pass does that (finish) when it takes the copy.
  // given_amax: max |x| from the kernel that wrote x (producer_amax), for copies whose scale
  // comes from it (amax_from_producer); else the quantizer finds the amax itself.
  void quantize(Slot* row, Slot* col, const void* x, DType dtype, int64_t rows_x, int64_t cols_x, SrKey key,
                const Where& what, cudaStream_t st, bool col_is_operand = true, const float* given_amax = nullptr) {
    const OperandQuant& q = row ? *row->q : *col->q;
    for (Slot* p : {row, col}) {
      if (!p) continue;
      p->src = nullptr;  // hold() records a reusable source after this returns
      p->from = nullptr;
    }
    try {
      const cuda::DeviceStatus status{counter(what)};
      QuantizeOptions c = recipe::quantize_options(q, false, key);
      c.rht = col && col->q->rht;
      // Each slot's buffers: codes, block scales, and FP32 words [amax, pad x3, FP8 scale_inv...].
      cuda::DeviceCopy copies[2];
      Slot* slot[2] = {row, col};
      for (int i = 0; i < 2; ++i) {
        if (!slot[i]) continue;
        Slot& s = *slot[i];
        const cuda::DeviceCopyBytes b = cuda::device_copy_bytes(c, s.rows, s.K);
        float* f = s.f32.need(4 + size_t(b.scale_inv) / sizeof(float));
        copies[i] = {s.codes.need(size_t(b.codes)), b.scales ? s.scales.need(size_t(b.scales)) : nullptr,
                     b.scale_inv ? f + 4 : nullptr, f};
        if (given_amax) copies[i].amax = const_cast<float*>(given_amax);  // read only
      }
      const int64_t scratch = cuda::quantize_scratch_bytes(c, dtype, rows_x, cols_x);
      cuda::quantize(x, dtype, rows_x, cols_x, c, row ? &copies[0] : nullptr, col ? &copies[1] : nullptr, status, st,
                     given_amax ? cuda::AmaxInput::given : cuda::AmaxInput::compute,
                     scratch ? col->rht.need(size_t(scratch)) : nullptr);
      if (row) finish(*row, st);
      if (col && col_is_operand) finish(*col, st);
    } catch (const NonFiniteError&) {
      throw;
    } catch (const Error& e) {
      throw Error(what.text(plan) + ": " + e.what());
    }
  }

  // Makes slot s's quantized copy (in s.holder()) the GEMM operand: FP8 codes as they are,
  // NVFP4 / MXFP4 decoded to BF16 into s.decoded — NVFP4 under set_fused_nvfp4 only when its
  // GEMM turns out to need it (run_gemm: the other operand is not NVFP4, or K % 64 != 0).
  void finish(Slot& s, cudaStream_t st) {
    const Slot& c = s.holder();
    const OperandQuant& q = *s.q;
    s.amax = nullptr;
    s.nvfp4_undecoded = false;
    const FormatTraits& t = format_traits(q.format);
    if (native_fp8(q.format)) {
      s.op = cuda::GemmOperand{c.codes.p, t.code_dtype, true, c.f32.p + 4, q.block};
      return;
    }
    if (fused_nvfp4 && q.format == Format::nvfp4) {
      s.amax = c.f32.p;
      s.nvfp4_undecoded = true;
      s.op = cuda::GemmOperand{};
      return;
    }
    decode(s, st);
  }

  // NVFP4 / MXFP4: codes x block scales, exact in BF16, into s.decoded; a per-tensor factor
  // (NVFP4's) goes into the GEMM's alpha.
  void decode(Slot& s, cudaStream_t st) {
    const Slot& c = s.holder();
    const OperandQuant& q = *s.q;
    const size_t n = static_cast<size_t>(s.rows * s.K);
    s.nvfp4_undecoded = false;
    const FormatTraits& t = format_traits(q.format);
    const cuda::DeviceCopy copy{c.codes.p, c.scales.p, nullptr, c.f32.p};
    uint16_t* dec = s.decoded.need(n);
    cuda::dequantize(copy, s.rows, s.K, recipe::quantize_options(q, false, {}), false, dec, DType::BF16, st);
    if (t.tensor_scale_from_amax) s.amax = c.f32.p;
    s.op = cuda::GemmOperand{dec, DType::BF16, true, nullptr, BlockShape{0, 0}};
  }

  // prepare() + quantize() for one operand. An input the slot quantized last, in this pass,
  // with the same settings and round-to-nearest (no key in the bits) is not quantized again; a
  // column-wise copy the forward pass kept for it is taken. In a training forward pass, `keep`
  // names the backward operand (gemm, operand) that reads the column-wise copy of the same
  // tensor: it is made in the same kernel call when the two are pairable and round-to-nearest.
  void hold(Gemm g, Operand o, LinearId id, const void* x, DType dtype, const uint16_t* x16, int64_t rows_x,
            int64_t cols_x, bool column, const char* what, cudaStream_t st,
            std::optional<std::pair<Gemm, Operand>> keep = std::nullopt) {
    const size_t li = linear_index(id);
    Slot& s = slots[int(g)][int(o)];
    const std::optional<OperandQuant> before = s.q;
    const int64_t rows_before = s.rows, k_before = s.K;
    prepare(g, o, li, x16, rows_x, cols_x, column);
    if (!s.q) {
      s.src = nullptr;
      s.from = nullptr;
      return;
    }
    if (s.src == x && s.src_column == column && s.pass == pass && before == s.q && rows_before == s.rows &&
        k_before == s.K && s.q->rounding == Rounding::rne) {
      s.amax = format_traits(s.q->format).tensor_scale_from_amax ? s.holder().f32.p : nullptr;  // prepare() cleared it
      return;
    }
    s.src = x;
    s.src_column = column;
    s.pass = pass;
    // A weight prepare_weights() quantized for this pass; a column copy the forward pass kept.
    if (!column && take(s, prepared, x, true, st)) return;
    if (column && kept_valid && !training_forward && take(s, kept, x, false, st)) return;
    Slot* k = nullptr;
    const recipe::OperandPlan* kp = nullptr;
    if (keep && training_forward && !column && s.q->rounding == Rounding::rne) {
      kp = &plan.operand(li, phase, keep->first, keep->second);
      if (kp->quantized && kp->quant.rounding == Rounding::rne && pairable(*s.q, kp->quant)) {
        k = &copy_slot(kept, x, kp->quant, cols_x, rows_x);
      }
    }
    const bool given_ok = amax_from_producer(*s.plan) && (!k || amax_from_producer(*kp));
    const Where where{li, what, k ? recipe::gemm_name(keep->first) : nullptr};
    quantize(column ? nullptr : &s, column ? &s : k, x, dtype, rows_x, cols_x,
             SrKey{seed, step, static_cast<uint32_t>(id.layer), s.plan->sr_role}, where, st,
             /*col_is_operand=*/column, given_ok ? given_for(*s.plan) : nullptr);
    s.src = x;  // quantize() cleared them
    s.src_column = column;
  }

  // out = alpha · a · bᵀ over the slots of GEMM g.
  void run_gemm(cuda::Blas& blas, Gemm g, void* out, DType out_dtype, int64_t M, int64_t N, int64_t K, bool accumulate,
                const Where& what, cudaStream_t st) {
    Slot& a = slots[int(g)][0];
    Slot& b = slots[int(g)][1];
    const float* alpha_ptr = nullptr;
    if (a.amax || b.amax) {
      alpha_ptr = alpha.p + int(g);
      alpha_kernel<<<1, 1, 0, st>>>(alpha.p + int(g), a.amax, b.amax);
      check(cudaGetLastError(), "alpha_kernel");
    }
    // Both operands NVFP4 and left undecoded (set_fused_nvfp4): the fused W4A4 GEMM reads the codes.
    if (a.nvfp4_undecoded && b.nvfp4_undecoded) {
      const cuda::Nvfp4Operand na{a.holder().codes.p, a.holder().scales.p}, nb{b.holder().codes.p, b.holder().scales.p};
      if (cuda::nvfp4_gemm_nt_supported(na, nb, K)) {
        try {
          cuda::nvfp4_gemm_nt(out, out_dtype, na, nb, M, N, K, alpha_ptr, accumulate, st, nt_kernel);
        } catch (const Error& e) {
          throw Error(what.text(plan) + ": " + e.what());
        }
        return;
      }
    }
    for (Slot* s : {&a, &b}) {
      if (s->nvfp4_undecoded) decode(*s, st);
    }
    // FP8 fprop with per-tensor scales runs with fast accumulation; dgrad and wgrad promote to
    // FP32 after every K block (Transformer Engine's split: gradients keep the full
    // accumulation). Block-scaled FP8 promotes everywhere (cuBLASLt has no fast mode for it).
    const bool fp8 = a.op.dtype == DType::F8_E4M3 || a.op.dtype == DType::F8_E5M2;
    const bool fast = g == Gemm::fprop && fp8 && a.op.block.per_tensor() && b.op.block.per_tensor();
    try {
      blas.gemm(out, out_dtype, a.op, b.op, M, N, K, alpha_ptr, accumulate, st, fast);
    } catch (const Error& e) {
      throw Error(what.text(plan) + ": " + e.what());
    }
  }
};

QuantizedLinearCuda::QuantizedLinearCuda(const recipe::Recipe& r, int n_layer, uint64_t seed)
    : QuantizedLinearCuda(resolve_plan(r, n_layer), seed) {}

QuantizedLinearCuda::QuantizedLinearCuda(recipe::Plan plan, uint64_t seed) {
  const recipe::Recipe& r = plan.recipe();
  for (Gemm g : {Gemm::fprop, Gemm::dgrad, Gemm::wgrad}) {
    const auto& gq = r.gemm(g);
    const bool fa = gq.a.quantized && native_fp8(gq.a.format), fb = gq.b.quantized && native_fp8(gq.b.format);
    if (fa != fb) {
      throw Error(std::string("recipe ") + r.name + ": the " + recipe::gemm_name(g) +
                  " GEMM pairs an FP8 operand with a non-FP8 one; the CUDA path runs FP8 GEMMs natively and needs "
                  "both operands in FP8");
    }
    if (fa && format_traits(gq.a.format).code_dtype == DType::F8_E5M2 &&
        format_traits(gq.b.format).code_dtype == DType::F8_E5M2) {
      throw Error(std::string("recipe ") + r.name + ": the " + recipe::gemm_name(g) +
                  " GEMM has two E5M2 operands; Hopper's FP8 GEMMs take at most one");
    }
  }
  s_ = std::make_unique<State>(std::move(plan), seed);
}

QuantizedLinearCuda::~QuantizedLinearCuda() = default;
const recipe::Recipe& QuantizedLinearCuda::recipe() const { return s_->plan.recipe(); }
const recipe::Plan& QuantizedLinearCuda::plan() const { return s_->plan; }

void QuantizedLinearCuda::set_step(uint32_t step, double progress) {
  s_->step = step;
  s_->phase = s_->plan.phase(progress);
}

void QuantizedLinearCuda::forward(cuda::Blas& blas, LinearId id, uint16_t* out, const uint16_t* inp,
                                  const float* weight, const uint16_t* weight_bf16, int64_t N, int64_t C, int64_t OC,
                                  cuda::Stream stream) {
  State& s = *s_;
  const auto st = reinterpret_cast<cudaStream_t>(stream);
  State::Marks* m = s.marks();
  if (m) check(cudaEventRecord(m->start, st), "cudaEventRecord");
  s.hold(Gemm::fprop, Operand::a, id, inp, DType::BF16, inp, N, C, false, "fprop X", st,
         std::pair{Gemm::wgrad, Operand::b});
  s.hold(Gemm::fprop, Operand::b, id, weight, DType::F32, weight_bf16, OC, C, false, "fprop W", st,
         std::pair{Gemm::dgrad, Operand::b});
  if (m) check(cudaEventRecord(m->quantized, st), "cudaEventRecord");
  s.run_gemm(blas, Gemm::fprop, out, DType::BF16, N, OC, C, false, Where{linear_index(id), "fprop"}, st);
  if (m) check(cudaEventRecord(m->done, st), "cudaEventRecord");
}

void QuantizedLinearCuda::backward(cuda::Blas& blas, LinearId id, uint16_t* dinp, float* dweight,
                                   const uint16_t* dout, const uint16_t* inp, const float* weight,
                                   const uint16_t* weight_bf16, int64_t N, int64_t C, int64_t OC,
                                   bool accumulate_dinp, cuda::Stream stream) {
  State& s = *s_;
  const auto st = reinterpret_cast<cudaStream_t>(stream);
  const size_t li = linear_index(id);
  // dgrad: dX (N, C) = dY (N, OC) · W: contraction over OC; b = W's column-wise copy (C, OC).
  // wgrad: dW (OC, C) += dYᵀ (OC, N) · X (N, C): contraction over N; both column-wise copies.
  // dY's row-wise (dgrad) and column-wise (wgrad) copies come from one kernel call when the
  // recipe quantizes both alike (the paper's recipe: SR on both, RHT on the column-wise one).
  State::Marks* m = s.marks();
  if (m) check(cudaEventRecord(m->start, st), "cudaEventRecord");
  bool dy_done = false;
  if (dinp && dweight) {
    State::Slot& ra = s.prepare(Gemm::dgrad, Operand::a, li, dout, N, OC, false);
    State::Slot& ca = s.prepare(Gemm::wgrad, Operand::a, li, dout, N, OC, true);
    if (ra.q && ca.q && State::pairable(*ra.q, *ca.q)) {
      const bool given_ok = amax_from_producer(*ra.plan) && amax_from_producer(*ca.plan);
      s.quantize(&ra, &ca, dout, DType::BF16, N, OC, SrKey{s.seed, s.step, static_cast<uint32_t>(id.layer), ra.plan->sr_role},
                 Where{li, "dY (dgrad and wgrad)"}, st, true, given_ok ? s.given_for(*ra.plan) : nullptr);
      dy_done = true;
    }
  }
  if (dinp) {
    if (!dy_done) s.hold(Gemm::dgrad, Operand::a, id, dout, DType::BF16, dout, N, OC, false, "dgrad dY", st);
    s.hold(Gemm::dgrad, Operand::b, id, weight, DType::F32, weight_bf16, OC, C, true, "dgrad W^T", st);
  }
  if (dweight) {
    if (!dy_done) s.hold(Gemm::wgrad, Operand::a, id, dout, DType::BF16, dout, N, OC, true, "wgrad dY^T", st);
    s.hold(Gemm::wgrad, Operand::b, id, inp, DType::BF16, inp, N, C, true, "wgrad X^T", st);
  }
  if (m) check(cudaEventRecord(m->quantized, st), "cudaEventRecord");
  if (dinp) s.run_gemm(blas, Gemm::dgrad, dinp, DType::BF16, N, C, OC, accumulate_dinp, Where{li, "dgrad"}, st);
  if (dweight) s.run_gemm(blas, Gemm::wgrad, dweight, DType::F32, OC, C, N, true, Where{li, "wgrad"}, st);
  if (m) check(cudaEventRecord(m->done, st), "cudaEventRecord");
}

void QuantizedLinearCuda::begin_pass(Pass p) {
  State& s = *s_;
  ++s.pass;
  s.given_zeroed = false;
  if (p == Pass::backward) {
    s.training_forward = false;
    return;
  }
  // A forward pass rewrites the activations: the kept copies are stale. Those the last
  // training forward pass did not refresh (a tensor no longer read, after a resize) go.
  s.kept_valid = p == Pass::training_forward;
  s.training_forward = s.kept_valid;
  if (!s.kept_valid) return;
  for (auto it = s.kept.begin(); it != s.kept.end();) {
    if (it->second->pass != s.kept_pass) {
      for (auto& g : s.slots)
        for (auto& sl : g)
          if (sl.from == it->second.get()) sl.from = nullptr, sl.q.reset(), sl.src = nullptr;
      it = s.kept.erase(it);
    } else {
      ++it;
    }
  }
  s.kept_pass = s.pass;
}

float* QuantizedLinearCuda::producer_amax(LinearId id, recipe::Tensor tensor, cuda::Stream stream) {
  State& s = *s_;
  if (tensor == recipe::Tensor::w) throw Error("producer_amax: weights' amaxes are the quantizer's (prepare_weights)");
  // The operand that reads the tensor row-wise: fprop's X, dgrad's dY (their column-wise
  // readers share the plan's slot).
  const Gemm g = tensor == recipe::Tensor::x ? Gemm::fprop : Gemm::dgrad;
  const recipe::OperandPlan& op = s.plan.operand(linear_index(id), s.phase, g, Operand::a);
  if (!amax_from_producer(op)) return nullptr;
  if (!s.given_zeroed) {
    check(cudaMemsetAsync(s.given.p, 0, s.given.bytes(), reinterpret_cast<cudaStream_t>(stream)), "cudaMemsetAsync");
    s.given_zeroed = true;
  }
  s.given_pass[op.amax_slot] = s.pass;
  return s.given.p + op.amax_slot;
}

void QuantizedLinearCuda::prepare_weights(std::span<const WeightRef> weights, cuda::Stream stream) {
  State& s = *s_;
  const auto st = reinterpret_cast<cudaStream_t>(stream);
  State::Marks* m = s.marks();
  if (m) check(cudaEventRecord(m->start, st), "cudaEventRecord");
  std::vector<cuda::AmaxTask> amax;
  std::vector<cuda::Fp8Task> both, rows_only;  // one multi-tensor call asks every tensor for the same copies
  // A weight whose fprop copy has one scale per tensor, from its amax (FP8 current scaling).
  const auto per_tensor = [](const recipe::OperandPlan& p) { return p.quantized && p.quant.block.per_tensor(); };
  float* const amax_base = s.weight_amax.need(weights.size());
  if (!weights.empty()) check(cudaMemsetAsync(amax_base, 0, weights.size() * sizeof(float), st), "cudaMemsetAsync");
  for (size_t wi = 0; wi < weights.size(); ++wi) {
    const WeightRef& w = weights[wi];
    const size_t li = linear_index(w.id);
    const recipe::OperandPlan& qp = s.plan.operand(li, s.phase, Gemm::fprop, Operand::b);
    const int64_t n = w.OC * w.C;
    if (!per_tensor(qp) || w.OC % 16 != 0 || w.C % 16 != 0 || reinterpret_cast<uintptr_t>(w.weight) % 16 != 0) {
      continue;  // forward() quantizes it
    }
    const OperandQuant* q = &qp.quant;
    const OperandQuant* kq = nullptr;
    if (s.training_forward) {  // dgrad's W^T beside it, as forward() would keep it
      const recipe::OperandPlan& kp = s.plan.operand(li, s.phase, Gemm::dgrad, Operand::b);
      if (per_tensor(kp) && q->rounding == Rounding::rne && kp.quant.rounding == Rounding::rne &&
          State::pairable(*q, kp.quant)) {
        kq = &kp.quant;
      }
    }
    float* a = amax_base + wi;
    State::Slot& row = s.copy_slot(s.prepared, w.weight, *q, w.OC, w.C);
    cuda::Fp8Task t;
    t.x = w.weight;
    t.M = w.OC;
    t.K = w.C;
    t.format = q->format;
    t.row = {row.codes.need(static_cast<size_t>(n)), nullptr, row.f32.need(8) + 4, a};
    t.nonfinite_count = s.counter(Where{li, "fprop W"});
    if (kq) {
      State::Slot& col = s.copy_slot(s.kept, w.weight, *kq, w.C, w.OC);
      t.col = {col.codes.need(static_cast<size_t>(n)), nullptr, col.f32.need(8) + 4, a};
    }
    amax.push_back({w.weight, n, a});
    (kq ? both : rows_only).push_back(t);
  }
  cuda::multi_amax(amax.data(), static_cast<int>(amax.size()), DType::F32, stream);
  cuda::quantize_fp8_multi(both.data(), static_cast<int>(both.size()), DType::F32, stream);
  cuda::quantize_fp8_multi(rows_only.data(), static_cast<int>(rows_only.size()), DType::F32, stream);
  if (m) {
    check(cudaEventRecord(m->quantized, st), "cudaEventRecord");
    check(cudaEventRecord(m->done, st), "cudaEventRecord");
  }
}

void QuantizedLinearCuda::check_nonfinite(cuda::Stream stream) {
  State& s = *s_;
  const auto st = reinterpret_cast<cudaStream_t>(stream);
  if (s.used_counters == 0) return;
  std::vector<uint32_t> h(static_cast<size_t>(s.used_counters));
  check(cudaMemcpyAsync(h.data(), s.counters.p, h.size() * sizeof(uint32_t), cudaMemcpyDeviceToHost, st),
        "cudaMemcpyAsync");
  check(cudaStreamSynchronize(st), "check_nonfinite");
  const std::vector<Where> what = std::move(s.counter_what);
  s.counter_what.clear();
  s.used_counters = 0;
  for (size_t i = 0; i < h.size(); ++i) {
    if (h[i] == 0) continue;
    check(cudaMemset(s.counters.p, 0, h.size() * sizeof(uint32_t)), "cudaMemset");
    throw NonFiniteError(what[i].text(s.plan) + ": " + std::to_string(h[i]) + " NaN/Inf values reached the quantizer", -1, h[i]);
  }
}

std::vector<float> QuantizedLinearCuda::held(Gemm g, Operand o) const {
  const State::Slot& s = s_->slots[int(g)][int(o)];
  const State::Slot& c = s.holder();
  const size_t n = static_cast<size_t>(s.rows * s.K);
  std::vector<float> out(n);
  check(cudaDeviceSynchronize(), "held");
  if (!s.q) {
    std::vector<uint16_t> raw(n);
    check(cudaMemcpy(raw.data(), s.bf16, n * 2, cudaMemcpyDeviceToHost), "cudaMemcpy");
    for (int64_t r = 0; r < s.rows; ++r) {
      for (int64_t k = 0; k < s.K; ++k) {
        const uint16_t v = s.bf16_column ? raw[k * s.rows + r] : raw[r * s.K + k];
        const uint32_t bits = uint32_t(v) << 16;
        std::memcpy(&out[r * s.K + k], &bits, 4);
      }
    }
    return out;
  }
  DeviceArray<float> dev;
  dev.need(n);
  const cuda::DeviceCopy copy{c.codes.p, c.scales.p, c.f32.p + 4, c.f32.p};
  cuda::dequantize(copy, s.rows, s.K, recipe::quantize_options(*s.q, false, {}), true, dev.p, DType::F32, nullptr);
  check(cudaMemcpy(out.data(), dev.p, n * 4, cudaMemcpyDeviceToHost), "cudaMemcpy");
  return out;
}

int64_t QuantizedLinearCuda::device_bytes() const {
  int64_t total = s_->alpha.bytes() + s_->counters.bytes() + s_->given.bytes();
  const auto add = [&](const State::Slot& sl) {
    total += sl.codes.bytes() + sl.scales.bytes() + sl.f32.bytes() + sl.decoded.bytes() + sl.rht.bytes();
  };
  for (const auto& g : s_->slots)
    for (const auto& sl : g) add(sl);
  for (const auto& [src, sl] : s_->kept) add(*sl);
  for (const auto& [src, sl] : s_->prepared) add(*sl);
  return total;
}

void QuantizedLinearCuda::enable_timing(bool on) { s_->timing_on = on; }
void QuantizedLinearCuda::set_fused_nvfp4(bool on, bool warp_specialized) {
  s_->fused_nvfp4 = on;
  s_->nt_kernel = warp_specialized ? cuda::Nvfp4GemmNtKernel::wgmma_ws : cuda::Nvfp4GemmNtKernel::wgmma;
}

QuantizedLinearCuda::Timing QuantizedLinearCuda::timing() {
  State& s = *s_;
  check(cudaDeviceSynchronize(), "timing");
  for (size_t i = 0; i < s.events_used; ++i) {
    float q = 0, g = 0;
    check(cudaEventElapsedTime(&q, s.events[i].start, s.events[i].quantized), "cudaEventElapsedTime");
    check(cudaEventElapsedTime(&g, s.events[i].quantized, s.events[i].done), "cudaEventElapsedTime");
    s.acc.quantize_ms += q;
    s.acc.gemm_ms += g;
  }
  s.events_used = 0;
  return s.acc;
}

void QuantizedLinearCuda::reset_timing() {
  timing();
  s_->acc = Timing{};
}

}  // namespace nvfp4::model
