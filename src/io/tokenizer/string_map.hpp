// A compact open-addressing hash map from byte strings to small values, for the tokenizers'
// vocabularies, merge tables and word caches (hundreds of thousands of short keys, looked up
// millions of times a second). Keys live in one arena; lookups take a string_view. No erase.
// Private to src/io/.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace nvfp4::io::hf {

// 64-bit hash of a byte string: 8 bytes at a time, multiply-xorshift mixing.
inline uint64_t hash_bytes(std::string_view s) {
  constexpr uint64_t kMul = 0x9E3779B97F4A7C15ull;
  uint64_t h = 0x243F6A8885A308D3ull ^ (s.size() * kMul);
  const char* p = s.data();
  size_t n = s.size();
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    h = (h ^ v) * kMul;
    h ^= h >> 29;
    p += 8;
    n -= 8;
  }
  if (n > 0) {
    uint64_t v = 0;
    std::memcpy(&v, p, n);
    h = (h ^ v) * kMul;
    h ^= h >> 29;
  }
  h *= 0xBF58476D1CE4E5B9ull;
  return h ^ (h >> 32);
}

template <typename V>
class StringMap {
 public:
  size_t size() const { return entries_.size(); }

  // The value of `key`, or nullptr.
  const V* find(std::string_view key) const {
    if (slots_.empty()) return nullptr;
    const uint64_t h = hash_bytes(key);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      const uint32_t e = slots_[i];
      if (e == kEmpty) return nullptr;
      const Entry& en = entries_[e];
      if (en.hash == h && en.len == key.size() && std::memcmp(arena_.data() + en.off, key.data(), key.size()) == 0) {
        return &en.value;
      }
    }
  }

  // Inserts key -> value, or overwrites the value of an existing key (the last write wins).
  void set(std::string_view key, V value) { find_or_insert(key, value) = value; }

  // The value of `key`, inserted as `init` when absent (the BPE trainer's word counts). The
  // reference stays valid until the next insertion.
  V& find_or_insert(std::string_view key, V init) {
    if ((entries_.size() + 1) * 4 > slots_.size() * 3) grow();
    const uint64_t h = hash_bytes(key);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      const uint32_t e = slots_[i];
      if (e == kEmpty) {
        slots_[i] = static_cast<uint32_t>(entries_.size());
        entries_.push_back({h, arena_.size(), static_cast<uint32_t>(key.size()), init});
        arena_.append(key);
        return entries_.back().value;
      }
      Entry& en = entries_[e];
      if (en.hash == h && en.len == key.size() && std::memcmp(arena_.data() + en.off, key.data(), key.size()) == 0) {
        return en.value;
      }
    }
  }

  // Every (key, value), in insertion order.
  template <typename F>
  void for_each(F&& f) const {
    for (const Entry& e : entries_) f(std::string_view(arena_.data() + e.off, e.len), e.value);
  }

  void clear() {
    slots_.clear();
    entries_.clear();
    arena_.clear();
    mask_ = 0;
  }

 private:
  static constexpr uint32_t kEmpty = 0xFFFFFFFFu;
  struct Entry {
    uint64_t hash;
    size_t off;
    uint32_t len;
    V value;
  };
  void grow() {
    const size_t n = slots_.empty() ? 64 : slots_.size() * 2;
    slots_.assign(n, kEmpty);
    mask_ = n - 1;
    for (uint32_t e = 0; e < entries_.size(); ++e) {
      for (size_t i = entries_[e].hash & mask_;; i = (i + 1) & mask_) {
        if (slots_[i] == kEmpty) {
          slots_[i] = e;
          break;
        }
      }
    }
  }
  std::vector<uint32_t> slots_;
  std::vector<Entry> entries_;
  std::string arena_;
  size_t mask_ = 0;
};

// Pairs of 32-bit ids -> value (the BPE merge table, the trainer's pair table), open addressing
// on the packed 64-bit key. The pair (0xFFFFFFFF, 0xFFFFFFFF) is reserved (the empty slot).
template <typename V>
class PairMap {
 public:
  const V* find(uint32_t a, uint32_t b) const {
    if (keys_.empty()) return nullptr;
    const uint64_t k = (uint64_t(a) << 32) | b;
    for (size_t i = mix(k) & mask_;; i = (i + 1) & mask_) {
      if (keys_[i] == kEmpty) return nullptr;
      if (keys_[i] == k) return &values_[i];
    }
  }
  void set(uint32_t a, uint32_t b, V v) { find_or_insert(a, b, v) = v; }
  // The value of (a, b), inserted as `init` when absent (the BPE trainer's pair table). The
  // reference stays valid until the next insertion.
  V& find_or_insert(uint32_t a, uint32_t b, V init) {
    if ((count_ + 1) * 2 > keys_.size()) grow();
    const uint64_t k = (uint64_t(a) << 32) | b;
    for (size_t i = mix(k) & mask_;; i = (i + 1) & mask_) {
      if (keys_[i] == kEmpty) {
        keys_[i] = k;
        values_[i] = init;
        ++count_;
        return values_[i];
      }
      if (keys_[i] == k) return values_[i];
    }
  }
  size_t size() const { return count_; }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  static uint64_t mix(uint64_t k) {
    k ^= k >> 33;
    k *= 0xFF51AFD7ED558CCDull;
    k ^= k >> 33;
    return k;
  }
  void grow() {
    const size_t n = keys_.empty() ? 1024 : keys_.size() * 2;
    std::vector<uint64_t> keys(n, kEmpty);
    std::vector<V> values(n);
    const size_t mask = n - 1;
    for (size_t j = 0; j < keys_.size(); ++j) {
      if (keys_[j] == kEmpty) continue;
      for (size_t i = mix(keys_[j]) & mask;; i = (i + 1) & mask) {
        if (keys[i] == kEmpty) {
          keys[i] = keys_[j];
          values[i] = values_[j];
          break;
        }
      }
    }
    keys_.swap(keys);
    values_.swap(values);
    mask_ = mask;
  }
  std::vector<uint64_t> keys_;
  std::vector<V> values_;
  size_t count_ = 0, mask_ = 0;
};

// Token ids -> value. Ids may be sparse: a tokenizer.json is untrusted and may give one token the
// id 2^31 - 2, so no table is ever sized by the largest id.
template <typename V>
class IdMap {
 public:
  const V* find(int32_t id) const { return id < 0 ? nullptr : map_.find(static_cast<uint32_t>(id), 0); }
  void set(int32_t id, V v) { map_.set(static_cast<uint32_t>(id), 0, v); }  // id >= 0

 private:
  PairMap<V> map_;
};

}  // namespace nvfp4::io::hf
