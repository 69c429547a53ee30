// The KV cache's block table (the paged layout of cpu::KvPages / cuda::KvPages): a pool of `blocks`
// blocks of `block_size` positions, shared by the engine's slots; slot s's position j lives in
// block table()[s * per_seq() + j / block_size]. A slot takes blocks as its sequence grows (reserve,
// before a forward writes the new positions) and gives them all back when reset (release). Blocks
// are handed out lowest index first, so a run's block assignment — and with it every cache address
// — is the same run to run. The CPU and CUDA engines keep one each (src/infer/engine_*.cpp/.cu).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace nvfp4::infer {

class KvBlockTable {
 public:
  // slots x per_seq entries, per_seq = ceil(max_context / block_size); blocks = 0: enough for every
  // slot to reach max_context. Throws nvfp4::Error naming the option for a bad size.
  KvBlockTable(int slots, int max_context, int block_size, int blocks);

  int block_size() const { return block_size_; }
  int per_seq() const { return per_seq_; }
  int blocks() const { return blocks_; }
  int free_blocks() const { return static_cast<int>(free_.size()); }
  // Blocks a slot must own to hold `length` positions.
  int blocks_for(int length) const { return (length + block_size_ - 1) / block_size_; }
  const std::vector<int32_t>& table() const { return table_; }

  // Every slot[i] owns the blocks for new_length[i] positions afterwards — all or none: when the
  // pool is short, nothing changes and nvfp4::Error names the chunk, the blocks it needs and the
  // free ones. Returns whether any entry changed (a device copy of the table is then stale).
  bool reserve(std::span<const int> slot, std::span<const int> new_length);
  // The slot's blocks back to the pool (its entries -1).
  void release(int slot);

 private:
  int block_size_ = 0, per_seq_ = 0, blocks_ = 0;
  std::vector<int32_t> table_;
  std::vector<int> owned_;    // per slot: its blocks, entries [0, owned) of its table row
  std::vector<int32_t> free_;  // highest index first: back() is the lowest free block
};

}  // namespace nvfp4::infer
