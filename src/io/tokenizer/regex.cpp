// PCRE2 (Debian libpcre2-dev) with JIT behind hf::Regex.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "io/tokenizer/regex.hpp"

#include <pcre2.h>

#include "io/tokenizer/unicode.hpp"
#include "nvfp4/error.hpp"

namespace nvfp4::io::hf {

namespace {

// Bounds on one match attempt: a catastrophically back-tracking pattern stops with an error.
constexpr uint32_t kMatchLimit = 10'000'000;
constexpr uint32_t kDepthLimit = 100'000;
// The interpreter's back-tracking memory in KiB (PCRE2's default is 20 GB). Only a pattern the
// JIT fails to compile uses it.
constexpr uint32_t kHeapLimitKiB = 256 * 1024;

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof buf);
  return reinterpret_cast<const char*>(buf);
}

}  // namespace

struct Regex::Impl {
  pcre2_code* code = nullptr;
  pcre2_match_context* mctx = nullptr;
  bool jit = false;
  ~Impl() {
    if (mctx) pcre2_match_context_free(mctx);
    if (code) pcre2_code_free(code);
  }
};

Regex::Regex(std::string_view pattern, const std::string& where)
    : impl_(std::make_unique<Impl>()), pattern_(pattern), where_(where) {
  int err = 0;
  PCRE2_SIZE off = 0;
  // UTF: the subject is UTF-8 (validated by us, hence NO_UTF_CHECK at match time); UCP: \s, \w,
  // \d and POSIX classes use Unicode properties, as Oniguruma's do in UTF-8 mode.
  // NEVER_BACKSLASH_C: \C matches one byte even in UTF mode, so a match could end inside a
  // character and every later stage (and PCRE2 itself, told not to check) would see invalid UTF-8.
  // Oniguruma has no such escape.
  impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                              PCRE2_UTF | PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C, &err, &off, nullptr);
  if (!impl_->code) {
    throw Error(where + ": the regular expression does not compile at offset " + std::to_string(off) + " (" +
                pcre2_message(err) + ")");
  }
  // pcre2_jit_compile also succeeds on a "(*NO_JIT)" pattern, compiling nothing. Oniguruma, the
  // reference's engine, refuses that pattern ("undefined callout name"), and so do we.
  impl_->jit = pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE) == 0;
  size_t jit_size = 0;
  if (impl_->jit && pcre2_pattern_info(impl_->code, PCRE2_INFO_JITSIZE, &jit_size) == 0 && jit_size == 0) {
    throw Error(where + ": (*NO_JIT) is a PCRE2 option, not Oniguruma syntax (the reference rejects the pattern)");
  }
  impl_->mctx = pcre2_match_context_create(nullptr);
  pcre2_set_match_limit(impl_->mctx, kMatchLimit);
  pcre2_set_depth_limit(impl_->mctx, kDepthLimit);
  pcre2_set_heap_limit(impl_->mctx, kHeapLimitKiB);
}

Regex::~Regex() = default;
Regex::Regex(Regex&&) noexcept = default;
Regex& Regex::operator=(Regex&&) noexcept = default;

void Regex::find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const {
  find_each(s, [&](size_t a, size_t b) { out.emplace_back(a, b); });
}

void Regex::find_each_impl(std::string_view s, void* ctx, void (*cb)(void*, size_t, size_t)) const {
  // One match-data block per thread and pattern size: a pattern has a few capture groups at most.
  thread_local struct Md {
    pcre2_match_data* md = nullptr;
    ~Md() {
      if (md) pcre2_match_data_free(md);
    }
  } tl;
  if (!tl.md) tl.md = pcre2_match_data_create(64, nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
  // Oniguruma's iterator, step for step: an empty match right where the previous match ended is
  // not reported; the search then resumes one character further.
  size_t last_end = 0;
  bool have_last = false;
  size_t last_match_end = 0;
  while (last_end <= s.size()) {
    const int rc = impl_->jit ? pcre2_jit_match(impl_->code, subject, s.size(), last_end, PCRE2_NO_UTF_CHECK, tl.md,
                                                impl_->mctx)
                              : pcre2_match(impl_->code, subject, s.size(), last_end, PCRE2_NO_UTF_CHECK, tl.md,
                                            impl_->mctx);
    if (rc == PCRE2_ERROR_NOMATCH) return;
    // rc == 0: more groups than the match data holds, the whole match (pair 0) still set. Every
    // error (a limit, or PCRE2_ERROR_NOMEMORY: the interpreter's malloc failed) leaves the ovector
    // unset.
    if (rc < 0) {
      throw Error(where_ + ": matching the regular expression failed (" + pcre2_message(rc) +
                  "); the pattern back-tracks too much on this input");
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(tl.md);
    const size_t a = ov[0], b = ov[1];
    if (a == b && have_last && last_match_end == b) {
      last_end += last_end < s.size() ? cp_len(static_cast<uint8_t>(s[last_end])) : 1;
      continue;
    }
    last_end = b;
    last_match_end = b;
    have_last = true;
    cb(ctx, a, b);
  }
}

}  // namespace nvfp4::io::hf
