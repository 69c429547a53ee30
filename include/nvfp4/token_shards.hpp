// Token shards: the training data on disk, how it is made from text and how training reads it
// back. docs/data.md is the user-level description; this header is the contract.
//
// ---- the shard file (llm.c's layout, with our metadata in slots llm.c leaves zero) -----------
//
//   bytes [0, 1024)      header: 256 little-endian int32
//     header[0]          magic 20240520 (llm.c's GPT-2 token shards)
//     header[1]          layout version: 2 (written); 1 = the old layout, uint16 tokens (read)
//     header[2]          N, the number of tokens in the file
//     header[3]          vocabulary size of the tokenizer that made it; 0 = not recorded
//     header[4]          tokenizer id (kTokenizerIds in nvfp4/tokenizer.hpp: 1 = byte); 0 = not recorded
//     header[5]          split: 0 = train, 1 = val
//     header[6]          shard number within its split (0, 1, ...)
//     header[7]          documents that start in this shard (= its end-of-text tokens)
//     header[8]          version 2: bytes per token, 2 (uint16) or 4 (uint32); version 1: 0
//     header[9..255]     0 (reserved; readers ignore them)
//   bytes [1024, 1024+W*N) N tokens, little-endian, W = header[8] bytes each (2 in version 1)
//
// The writer picks the narrowest width that holds the vocabulary (shard_token_bytes): uint16
// up to 65,536 tokens (the byte tokenizer: the same token bytes as version 1), uint32 above.
// A shard written by llm.c's own scripts (version 1, slots 3.. zero) reads fine: vocabulary and
// tokenizer are then "not recorded" and the reader checks tokens against the vocabulary the
// caller gives. (llm.c's own loader reads version 1 only.)
//
// ---- a dataset folder (what `nvfp4 data` writes) ----------------------------------------------
//
//   DIR/train_000000.bin, train_000001.bin, ...   the train split, shards of <= shard_tokens
//   DIR/val_000000.bin, ...                       the validation split (absent if it is empty)
//   DIR/manifest.json                             describes all of the above
//
// The dataset is built in a sibling folder (.DIR.tmp.<pid>) and swapped in whole when complete,
// so DIR always holds either the old dataset or the new one. The manifest's fields are listed
// at build_token_dataset() and in docs/data.md; open_token_dataset() checks it against every
// shard's header and derives the dataset's identity (stored in checkpoints).
#pragma once

#include <cstdint>
#include <functional>
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "nvfp4/tokenizer.hpp"

namespace nvfp4::io {

inline constexpr int32_t kShardMagic = 20240520;
inline constexpr int32_t kShardVersion = 2;        // what the writer writes
inline constexpr int32_t kShardVersionUint16 = 1;  // the old layout: uint16 tokens, no width slot
inline constexpr int64_t kShardHeaderInts = 256;
inline constexpr int64_t kShardHeaderBytes = kShardHeaderInts * 4;  // 1024
inline constexpr int64_t kMaxShardTokens = 2147483647;              // header[2] is an int32
inline constexpr int32_t kMaxUint16Vocab = 65536;                   // ids 0..65535 fit uint16
inline constexpr const char* kManifestName = "manifest.json";
inline constexpr const char* kManifestFormat = "nvfp4.token_shards";
inline constexpr int kManifestVersion = 2;  // 1: shards of layout version 1 (uint16), no token_bytes

// Bytes per token for a vocabulary: 2 (uint16) up to kMaxUint16Vocab ids, else 4 (uint32).
int32_t shard_token_bytes(int32_t vocab_size);

enum class Split : int32_t { train = 0, val = 1 };
const char* split_name(Split s);  // "train", "val"

// The header fields we use (see the table above).
struct ShardHeader {
  int64_t num_tokens = 0;       // header[2]
  int32_t vocab_size = 0;       // header[3]; 0 = not recorded
  int32_t tokenizer_id = 0;     // header[4]; 0 = not recorded
  Split split = Split::train;   // header[5]
  int32_t index = 0;            // header[6]
  int32_t documents = 0;        // header[7]
  int32_t version = kShardVersion;  // header[1] as read (the writer always writes kShardVersion)
  int32_t token_bytes = 2;      // header[8]: 2 or 4 (version 1: 2); set by the writer from the span
};

// Writes one shard atomically with 2-byte (uint16) or 4-byte (uint32) tokens; h.num_tokens,
// h.version and h.token_bytes are taken from the call. Throws nvfp4::Error naming `path` for
// more than kMaxShardTokens tokens, a vocabulary that does not fit the token width, a token
// >= h.vocab_size (when recorded), or an I/O failure (the target is then left untouched).
void write_token_shard(const std::string& path, const ShardHeader& h, std::span<const uint16_t> tokens);
void write_token_shard(const std::string& path, const ShardHeader& h, std::span<const uint32_t> tokens);

// The (N,) tokens of a shard, as stored (uint16 or uint32), read as int32 ids.
class ShardTokens {
 public:
  ShardTokens(const uint8_t* data, int64_t n, int32_t token_bytes) : data_(data), n_(n), bytes_(token_bytes) {}
  int64_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  int32_t token_bytes() const { return bytes_; }
  int32_t operator[](int64_t i) const {
    const uint8_t* p = data_ + i * bytes_;
    if (bytes_ == 2) return static_cast<int32_t>(p[0] | (p[1] << 8));
    return static_cast<int32_t>(static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
                                (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24));
  }
  // Copies tokens [offset, offset + out.size()) into out.
  void copy(int64_t offset, std::span<int32_t> out) const;

  class iterator {
   public:
    using value_type = int32_t;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    iterator(const ShardTokens* t, int64_t i) : t_(t), i_(i) {}
    int32_t operator*() const { return (*t_)[i_]; }
    iterator& operator++() { ++i_; return *this; }
    iterator operator++(int) { iterator r = *this; ++i_; return r; }
    bool operator==(const iterator& o) const { return i_ == o.i_; }
   private:
    const ShardTokens* t_ = nullptr;
    int64_t i_ = 0;
  };
  iterator begin() const { return {this, 0}; }
  iterator end() const { return {this, n_}; }

 private:
  const uint8_t* data_;
  int64_t n_;
  int32_t bytes_;
};

// One shard, memory-mapped read-only and validated on open.
class TokenShard {
 public:
  // Checks, in order, each failure an nvfp4::Error naming `path` and the problem: the file is a
  // regular file of at least 1024 bytes; magic; version 1 or 2; token width (version 2: 2 or
  // 4); a non-negative token count whose W*N bytes are exactly what follows the header
  // (shorter: truncated; longer: trailing bytes); vocabulary size in [0, 65536] for uint16
  // tokens, >= 0 for uint32; split 0 or 1; if expected_vocab != 0 and the header records a
  // different vocabulary, the shard belongs to another tokenizer; finally every token is below
  // the vocabulary (the header's, else expected_vocab, else only uint32 ids above INT32_MAX).
  static TokenShard open(const std::string& path, int32_t expected_vocab = 0);

  TokenShard(TokenShard&&) noexcept;
  TokenShard& operator=(TokenShard&&) noexcept;
  ~TokenShard();

  const std::string& path() const;
  const ShardHeader& header() const;
  int64_t size() const { return header().num_tokens; }
  ShardTokens tokens() const;  // (N,) view into the mapping

 private:
  struct Impl;
  explicit TokenShard(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Where a ShardLoader is: the first token of the next window is shards[shard].tokens()[offset].
// Saving it in a checkpoint and passing it back (constructor or seek) continues exactly.
struct LoaderPosition {
  int64_t shard = 0;   // index into the loader's shard list
  int64_t offset = 0;  // token offset inside that shard
  int64_t epoch = 0;   // completed passes over the shard list
  bool operator==(const LoaderPosition&) const = default;
};

// Sequential, deterministic (B, T+1) windows over a list of shards, llm.c's DataLoader order:
// window row b holds tokens[offset + b*T, offset + (b+1)*T] (T+1 tokens: inputs are the first T,
// targets the last T); then offset advances by B*T. A batch never spans two shards: when the
// next B*T+1 tokens do not fit in the current shard, its tail is skipped and the next shard
// starts at offset 0; after the last shard the first one comes again and epoch counts up.
// No shuffling: the order is the shard list's, and the data was split by document when made.
class ShardLoader {
 public:
  // Opens and validates every shard up front (TokenShard::open with vocab_size, so 0 = use the
  // headers' own vocabularies). Each shard must hold at least B*T+1 tokens. Throws nvfp4::Error
  // naming the shard (or option) otherwise, or if `start` is not a position in these shards.
  ShardLoader(std::vector<std::string> shard_paths, int64_t B, int64_t T, int32_t vocab_size = 0,
              LoaderPosition start = {});

  // The next batch: out is (B, T+1) row-major, B*(T+1) int32 (an Error if out has another size).
  void next(std::span<int32_t> out);
  std::vector<int32_t> next();

  // The start of the next window (always a valid window start: the loader moves to the next
  // shard as soon as the current one cannot give another full batch).
  LoaderPosition position() const { return pos_; }
  void seek(LoaderPosition p);  // validated like the constructor's `start`

  int64_t B() const { return B_; }
  int64_t T() const { return T_; }
  int64_t batches_per_epoch() const;  // sum over shards of floor((N_i - 1) / (B*T))
  const std::vector<TokenShard>& shards() const { return shards_; }

 private:
  void normalize(LoaderPosition& p) const;
  std::vector<TokenShard> shards_;
  int64_t B_ = 0, T_ = 0;
  LoaderPosition pos_;
};

// A dataset folder opened for reading: DIR/manifest.json checked against every shard it lists.
struct TokenDataset {
  std::string dir, manifest_path;
  // The manifest's "tokenizer" (Tokenizer::describe(), compact JSON); for a hand-made manifest
  // without one, the registered name of the shards' tokenizer id ("unknown" if none).
  std::string tokenizer;
  int32_t vocab_size = 0;     // from the manifest's tokenizer, else the shards' headers; 0 = unknown
  int32_t token_bytes = 2;    // the shard layout's token width
  std::vector<std::string> train, val;  // shard paths under dir, in manifest order
  // What the data is, not where it lives: "fnv1a64:" + 16 hex digits of a hash over the
  // manifest's tokenizer, options, shard layout and splits, and per shard (in order) its file
  // name, split, token count, documents, vocabulary, tokenizer id and token width as its header
  // records them. A copied or moved dataset keeps it; any other dataset, a re-split, another
  // tokenizer or another shard size changes it. Stored in checkpoints and checked on --resume.
  std::string identity;

  // train or val; throws nvfp4::Error naming the manifest when the split has no shards.
  const std::vector<std::string>& shards(Split split) const;
};

// Reads DIR/manifest.json (format versions 1 and 2) and the header of every shard it lists,
// and checks they agree: each shard's split, token count, vocabulary, tokenizer id and token
// width as the manifest says (a manifest with train and val swapped, or a shard from another
// dataset, fails here), and each split's token and shard totals. Errors are nvfp4::Error naming
// the manifest or the shard, what disagrees, and to remake the dataset with `nvfp4 data --force`.
// The shards' tokens are not read (TokenShard::open / ShardLoader do that).
TokenDataset open_token_dataset(const std::string& dir);

// open_token_dataset(dir).shards(split): a split's shard paths, in order, after the checks.
std::vector<std::string> manifest_shards(const std::string& dir, Split split);

// ---- making a dataset from text ----------------------------------------------------------------

// The files behind INPUT arguments, in a deterministic order: each argument in the order given;
// a file is itself; a folder is every regular file under it, recursively, sorted by path (names
// starting with '.' are skipped, folder symlinks are not followed); an argument with * ? or [ is a
// glob whose matches (files or folders, expanded likewise) are sorted by path. A file reached
// twice is kept the first time only. Throws nvfp4::Error for a path that does not exist or a glob
// that matches nothing.
std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs);

// 64-bit FNV-1a of the bytes: a stable fingerprint of data (dataset identities, calibration sets),
// not a cryptographic hash.
uint64_t fnv1a64(std::string_view bytes);

// The text of one input file: `.gz` files are decompressed (zlib; concatenated members are
// read in full); GNU info files (`.info`, `.info-N`, each optionally `.gz`) are cleaned by
// is_info_name()/clean_info_text(). Throws nvfp4::Error naming the file if it cannot be read or
// the gzip stream is corrupt or truncated.
std::string read_input_text(const std::string& path);
bool is_info_name(const std::string& path);
// GNU info text without its navigation: the 0x1F node separators, the "File: ..., Node: ..."
// line that heads each node, and the "Tag Table", "Indirect" and "Local Variables" blocks (byte
// offsets, not prose) are removed; nodes are separated by one blank line. Text without 0x1F
// comes back unchanged.
std::string clean_info_text(std::string_view raw);

// The documents of one file's text. Text of at most doc_bytes bytes is one document (none if it
// is empty). Longer text is cut into paragraphs, each ending after a run of blank lines (lines
// of only spaces, tabs and '\r'), and consecutive paragraphs are grouped greedily into documents
// of at most doc_bytes; a paragraph longer than doc_bytes is cut at its last newline (else its
// last UTF-8 character boundary) within each doc_bytes window. The documents are views into
// `text`, and concatenated they are `text` exactly.
std::vector<std::string_view> split_documents(std::string_view text, int64_t doc_bytes);

// The split rule. Document i (0-based, over all documents of all inputs in order) draws
// u = split_draw(seed, i), uniform in [0, 1) from Philox4x32-10 keyed by the seed; it goes to val
// when u < val_fraction. Then, when there are >= 2 documents and val_fraction > 0: if no
// document went to val, the one with the smallest u does; if every document went to val, the
// one with the largest u goes to train.
double split_draw(uint64_t seed, uint64_t index);
std::vector<Split> assign_splits(uint64_t seed, int64_t documents, double val_fraction);
// The order a split's documents are written in with DataOptions::shuffle (train: seed, val:
// seed + 1): a permutation of 0..n-1 by Fisher-Yates with Philox draws keyed by the seed, in
// a stream of their own (independent of the split draws).
std::vector<int64_t> document_order(uint64_t seed, int64_t n);

struct DataOptions {
  std::vector<std::string> inputs;  // files, folders, globs (expand_inputs)
  std::string out_dir;
  std::string tokenizer = "byte";       // a make_tokenizer() name
  // A library caller's own tokenizer, used instead of `tokenizer` when set (tests use one with
  // a vocabulary above 65,536 to exercise uint32 shards).
  std::shared_ptr<const Tokenizer> tokenizer_object;
  double val_fraction = 0.05;           // in [0, 1)
  uint64_t seed = 1;
  int64_t shard_tokens = 100'000'000;   // in [1, kMaxShardTokens]
  int64_t doc_bytes = 64 * 1024;        // >= 1
  bool force = false;                   // replace the dataset in an existing, non-empty out_dir
  // Write each split's documents in a seeded random order (so a sequential loader sees the
  // corpus mixed rather than section by section). Holds the documents' text in memory; false
  // streams file by file in input order.
  bool shuffle = true;
  std::string command;                  // recorded in the manifest as "command" ("" = null)
  std::string tool;                     // recorded as "created_by", e.g. "nvfp4 0.1.0" ("" = null)
};

struct SourceStats {
  std::string path;
  uint64_t file_bytes = 0;  // on disk
  uint64_t text_bytes = 0;  // after decompression / info cleaning
  int64_t documents = 0;
  bool gzip = false, info = false;
};

struct SkippedInput {
  std::string path;
  std::string reason;  // "binary (NUL byte in the first 8 KiB)"
};

struct ShardRecord {
  std::string file;  // name inside out_dir: train_000000.bin
  Split split = Split::train;
  int64_t tokens = 0;
  int64_t documents = 0;
};

struct SplitStats {
  int64_t documents = 0;
  uint64_t text_bytes = 0;
  int64_t tokens = 0;  // including one end-of-text token per document
  int64_t shards = 0;
};

struct DataSummary {
  std::string out_dir, manifest_path, tokenizer_description;
  std::vector<SourceStats> sources;
  std::vector<SkippedInput> skipped;
  std::vector<ShardRecord> shards;
  SplitStats train, val;
  std::vector<std::string> cleaned;  // what was cleaned up after killed runs ("removed PATH", ...)
  double seconds = 0;  // wall time of build_token_dataset
};

// Called now and then with text bytes processed so far (second pass) and the total.
using DataProgress = std::function<void(uint64_t done_bytes, uint64_t total_bytes)>;

// Builds a dataset folder (see the top of this header):
//  1. checks the options and out_dir: if it exists and is not empty, an nvfp4::Error unless
//     force; cleans up after killed builds (clean_stale_dataset_builds) and dead writers' temp
//     files in out_dir (remove_stale_temp_files);
//  2. expand_inputs; reads every file once to count its documents (split_documents), skipping
//     binary files (a NUL byte in the first 8 KiB); no text at all is an nvfp4::Error;
//  3. assign_splits; reads every file again and appends, per document, the end-of-text token and
//     the document's tokens to its split's stream — in document_order() with shuffle (the
//     default), else in input order — cut into shards of shard_tokens (documents may span two
//     shards), written into the sibling build folder .NAME.tmp.<pid> beside out_dir;
//  4. writes the manifest there (shards listed train first, then val, in order):
//     {"format", "format_version", "created_by", "command",
//     "tokenizer": describe(), "options": {val_fraction, seed, shuffle, shard_tokens, doc_bytes},
//     "shard_layout": {magic, version, header_ints, token_dtype, token_bytes, header_fields},
//     "sources": [...SourceStats], "skipped": [...], "splits": {"train"|"val": SplitStats},
//     "shards": [...ShardRecord]};
//  5. swaps the build folder in: out_dir and the build folder are exchanged in one atomic
//     rename (renameat2 RENAME_EXCHANGE; where the filesystem lacks it, the old folder is renamed
//     aside to .NAME.old.<pid> and the new one renamed in), other files of the old folder are
//     moved into the new one, and the old dataset is deleted. A failure or a kill at any point
//     leaves out_dir holding the old dataset or the new one, complete; a failure removes the
//     build folder before the Error propagates.
DataSummary build_token_dataset(const DataOptions& options, const DataProgress& progress = {});

// Cleans up after `nvfp4 data` runs that were killed while building `out_dir`: sibling folders
// .NAME.tmp.<pid> and .NAME.old.<pid> whose pid is no longer running. A complete dataset among
// them (a manifest) is renamed back to out_dir if out_dir is missing (the kill fell between the
// two renames of a swap); otherwise its files that are not ours (not manifest.json, shards or
// temp files) are moved into out_dir when no file of that name is there, ours are deleted, and
// the folder is removed once empty. Returns what it did, one line per folder.
std::vector<std::string> clean_stale_dataset_builds(const std::string& out_dir);

}  // namespace nvfp4::io
