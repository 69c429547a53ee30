// The KV cache's block table (src/infer/kv_blocks.hpp).
#include "infer/kv_blocks.hpp"

#include <algorithm>
#include <cstdint>
#include <string>

#include "nvfp4/error.hpp"

namespace nvfp4::infer {

KvBlockTable::KvBlockTable(int slots, int max_context, int block_size, int blocks) : block_size_(block_size) {
  if (block_size < 1) throw Error("kv_block_size " + std::to_string(block_size) + ": must be at least 1");
  if (slots < 1 || max_context < 1) throw Error("the KV cache needs at least one slot and one position");
  per_seq_ = (max_context + block_size - 1) / block_size;
  const int64_t all = int64_t{slots} * per_seq_;
  if (blocks < 0) throw Error("kv_blocks " + std::to_string(blocks) + ": must be >= 0 (0: every slot can reach the context)");
  if (blocks == 0 && all > INT32_MAX) throw Error("the KV cache's blocks for every slot exceed 2^31: give kv_blocks");
  blocks_ = blocks > 0 ? blocks : static_cast<int>(all);
  table_.assign(static_cast<size_t>(all), -1);
  owned_.assign(static_cast<size_t>(slots), 0);
  free_.resize(static_cast<size_t>(blocks_));
  for (int b = 0; b < blocks_; ++b) free_[static_cast<size_t>(blocks_ - 1 - b)] = b;
}

bool KvBlockTable::reserve(std::span<const int> slot, std::span<const int> new_length) {
  int needed = 0;
  for (size_t i = 0; i < slot.size(); ++i) {
    const int s = slot[i], want = blocks_for(new_length[i]);
    if (s < 0 || static_cast<size_t>(s) >= owned_.size()) throw Error("KV cache: slot " + std::to_string(s) + " does not exist");
    if (want > per_seq_) {
      throw Error("KV cache: chunk " + std::to_string(i) + " (slot " + std::to_string(s) + ") would hold " +
                  std::to_string(new_length[i]) + " positions, more than the context");
    }
    const int more = std::max(0, want - owned_[static_cast<size_t>(s)]);
    needed += more;
    if (needed > free_blocks()) {
      throw Error("KV cache full: chunk " + std::to_string(i) + " (slot " + std::to_string(s) + ", " +
                  std::to_string(new_length[i]) + " positions) needs " + std::to_string(more) +
                  (more == 1 ? " more block of " : " more blocks of ") + std::to_string(block_size_) +
                  " positions, the batch " + std::to_string(needed) + "; " +
                  std::to_string(free_blocks()) + " of " + std::to_string(blocks_) +
                  " are free (reset finished sequences, or give the engine more: kv_blocks)");
    }
  }
  bool changed = false;
  for (size_t i = 0; i < slot.size(); ++i) {
    const size_t s = static_cast<size_t>(slot[i]);
    for (int want = blocks_for(new_length[i]); owned_[s] < want; ++owned_[s]) {
      table_[s * static_cast<size_t>(per_seq_) + static_cast<size_t>(owned_[s])] = free_.back();
      free_.pop_back();
      changed = true;
    }
  }
  return changed;
}

void KvBlockTable::release(int slot) {
  const size_t s = static_cast<size_t>(slot);
  if (owned_.at(s) == 0) return;
  for (int k = 0; k < owned_[s]; ++k) {
    int32_t& e = table_[s * static_cast<size_t>(per_seq_) + static_cast<size_t>(k)];
    free_.push_back(e);
    e = -1;
  }
  owned_[s] = 0;
  // Lowest index first again: the pool's order does not depend on which slots were reset when.
  std::sort(free_.begin(), free_.end(), [](int32_t a, int32_t b) { return a > b; });
}

}  // namespace nvfp4::infer
