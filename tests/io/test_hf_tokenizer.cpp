// The Hugging Face tokenizer pipeline (src/io/tokenizer/) on tokenizer.json files written here:
// BPE merge order, byte fallback and unknown tokens, added tokens (special, single_word, lstrip,
// rstrip, normalized), the split behaviors, Metaspace, Digits, the decoders, invalid UTF-8, the
// regex iterator's empty matches, and errors that name the JSON path. (Exactness against the
// reference library on real tokenizers: tests/tokenizer/, scripts/tokenizer_compare.sh.)
#include <gtest/gtest.h>
#include <malloc.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/tokenizer/pipeline.hpp"
#include "io/tokenizer/regex.hpp"
#include "nvfp4/error.hpp"
#include "nvfp4/hf_tokenizer.hpp"

namespace {

using nlohmann::json;
using nvfp4::io::HfTokenizer;
namespace hf = nvfp4::io::hf;

// A character-level BPE over "a", "b", "c", " ", with merges (a b) -> ab rank 0, (b c) -> bc
// rank 1, (ab c) -> abc rank 2, and whatever the test adds.
json base_tokenizer() {
  json vocab = {{"a", 0}, {"b", 1}, {"c", 2}, {" ", 3}, {"ab", 4}, {"bc", 5}, {"abc", 6}, {"<eot>", 7}};
  return json{{"version", "1.0"},
              {"added_tokens", json::array({{{"id", 7}, {"content", "<eot>"}, {"special", true}, {"normalized", false}}})},
              {"normalizer", nullptr},
              {"pre_tokenizer", nullptr},
              {"post_processor", nullptr},
              {"decoder", nullptr},
              {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array({"a b", "b c", "ab c"})}}}};
}

std::unique_ptr<HfTokenizer> load(const json& j) { return HfTokenizer::from_json(j.dump(), "test.json", "<eot>"); }

std::vector<int32_t> ids(const HfTokenizer& t, const std::string& s) { return t.encode(s); }

// Words a pre-tokenizer makes of a text.
std::vector<std::string> words(const hf::PreTokenizer& p, std::string_view text) {
  std::vector<std::string> out;
  auto f = [&](std::string_view w, bool) { out.emplace_back(w); };
  p.each(text, true, f);
  return out;
}

void expect_error(const std::function<void()>& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "expected an error mentioning " << needle;
  } catch (const nvfp4::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(HfTokenizer, MergesApplyLowestRankFirstLeftmostOnTies) {
  auto t = load(base_tokenizer());
  EXPECT_EQ(ids(*t, "abc"), (std::vector<int32_t>{6}));      // ab (rank 0) first, then ab+c
  EXPECT_EQ(ids(*t, "bc"), (std::vector<int32_t>{5}));
  EXPECT_EQ(ids(*t, "abab"), (std::vector<int32_t>{4, 4}));  // two rank-0 pairs
  EXPECT_EQ(ids(*t, "bcab"), (std::vector<int32_t>{5, 4}));
  EXPECT_EQ(ids(*t, "abbc"), (std::vector<int32_t>{4, 5}));
  // A long word takes the heap path: the same result as the short-word scan.
  std::string longw;
  std::vector<int32_t> want;
  for (int i = 0; i < 40; ++i) {
    longw += "abc";
    want.push_back(6);
  }
  EXPECT_EQ(ids(*t, longw), want);
  // Without a decoder the reference joins the tokens (abc, " ", bc, a) with spaces.
  EXPECT_EQ(t->decode(ids(*t, "abc bca")), "abc   bc a");
}

TEST(HfTokenizer, AddedTokensAreMatchedBeforeTheModel) {
  json j = base_tokenizer();
  j["added_tokens"].push_back({{"id", 8}, {"content", "cab"}, {"single_word", true}, {"normalized", false}});
  j["added_tokens"].push_back({{"id", 9}, {"content", "ba"}, {"lstrip", true}, {"rstrip", true}, {"normalized", false}});
  auto t = load(j);
  EXPECT_EQ(t->vocab_size(), 10);
  EXPECT_EQ(ids(*t, "ab<eot>c"), (std::vector<int32_t>{4, 7, 2}));
  EXPECT_EQ(ids(*t, "a cab c"), (std::vector<int32_t>{0, 3, 8, 3, 2}));     // a word on its own
  EXPECT_EQ(ids(*t, "acab"), (std::vector<int32_t>{0, 2, 4}));              // inside a word: not matched
  EXPECT_EQ(ids(*t, "c  ba  c"), (std::vector<int32_t>{2, 9, 2}));          // white space taken by l/rstrip
  EXPECT_EQ(t->eot_token(), 7);
  // Without a known end-of-text token, encoding works and asking for it is an error.
  auto no_eot = HfTokenizer::from_json(j.dump(), "test.json");
  EXPECT_EQ(ids(*no_eot, "ab"), (std::vector<int32_t>{4}));
  expect_error([&] { (void)no_eot->eot_token(); }, "no end-of-text token");
  EXPECT_EQ(t->decode(std::vector<int32_t>{4, 7}, true), "ab");  // skip_special
}

TEST(HfTokenizer, AddedTokenIdsFollowTheReferenceAssignment) {
  json j = base_tokenizer();
  // An id in the file that disagrees: the reference keeps the model's id for a token it has,
  // and gives a new one the next id after the vocabulary.
  j["added_tokens"].push_back({{"id", 100}, {"content", "ab"}, {"normalized", false}});
  j["added_tokens"].push_back({{"id", 100}, {"content", "<new>"}, {"special", true}, {"normalized", false}});
  auto t = load(j);
  EXPECT_EQ(t->token_to_id("ab"), 4);
  EXPECT_EQ(t->token_to_id("<new>"), 8);
}

TEST(HfTokenizer, ByteFallbackAndUnknownTokens) {
  json j = base_tokenizer();
  j["model"]["vocab"]["<0xC3>"] = 20;
  j["model"]["vocab"]["<0xA9>"] = 21;
  j["model"]["vocab"]["<unk>"] = 22;
  j["model"]["byte_fallback"] = true;
  j["model"]["unk_token"] = "<unk>";
  j["model"]["fuse_unk"] = true;
  j["decoder"] = {{"type", "Sequence"}, {"decoders", json::array({{{"type", "ByteFallback"}}, {{"type", "Fuse"}}})}};
  auto t = load(j);
  EXPECT_EQ(ids(*t, "a\xC3\xA9"), (std::vector<int32_t>{0, 20, 21}));  // é -> its two bytes
  EXPECT_EQ(ids(*t, "a\xE2\x82\xAC\xE2\x82\xAC"), (std::vector<int32_t>{0, 22}));  // €€: one fused <unk>
  EXPECT_EQ(t->decode(std::vector<int32_t>{0, 20, 21}), "a\xC3\xA9");
  EXPECT_EQ(t->decode(std::vector<int32_t>{20, 0}), "\xEF\xBF\xBD" "a");  // a lone byte decodes to U+FFFD
}

TEST(HfTokenizer, SplitBehaviorsAsTheReferenceDefinesThem) {
  using B = hf::SplitBehavior;
  auto split = [](B b, bool invert = false) { return hf::make_split("-", false, b, invert, "test"); };
  const std::string s = "a-b--c-";
  EXPECT_EQ(words(*split(B::removed), s), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(words(*split(B::isolated), s), (std::vector<std::string>{"a", "-", "b", "-", "-", "c", "-"}));
  EXPECT_EQ(words(*split(B::merged_with_previous), s), (std::vector<std::string>{"a-", "b-", "-", "c-"}));
  EXPECT_EQ(words(*split(B::merged_with_next), s), (std::vector<std::string>{"a", "-b", "-", "-c", "-"}));
  EXPECT_EQ(words(*split(B::contiguous), s), (std::vector<std::string>{"a", "-", "b", "--", "c", "-"}));
  EXPECT_EQ(words(*split(B::removed, true), s), (std::vector<std::string>{"-", "-", "-", "-"}));  // each "-" a match
  auto re = hf::make_split(R"(\p{N}+)", true, B::isolated, false, "test");
  EXPECT_EQ(words(*re, "ab12cd3"), (std::vector<std::string>{"ab", "12", "cd", "3"}));
}

TEST(HfTokenizer, MetaspaceDigitsAndByteLevelPreTokenizers) {
  const std::string sp = "\xE2\x96\x81";  // ▁
  auto ms = hf::make_metaspace(sp, hf::PrependScheme::always, true);
  EXPECT_EQ(words(*ms, "hi there"), (std::vector<std::string>{sp + "hi", sp + "there"}));
  auto first = hf::make_metaspace(sp, hf::PrependScheme::first, false);
  std::vector<std::string> got;
  auto f = [&](std::string_view w, bool) { got.emplace_back(w); };
  first->each("x y", false, f);  // not at the start of the text: no prefix
  EXPECT_EQ(got, (std::vector<std::string>{"x" + sp + "y"}));
  EXPECT_EQ(words(*hf::make_digits(true), "a123b"), (std::vector<std::string>{"a", "1", "2", "3", "b"}));
  EXPECT_EQ(words(*hf::make_digits(false), "a123b"), (std::vector<std::string>{"a", "123", "b"}));
  auto bl = hf::make_byte_level(true, true, true);
  // GPT-2's pattern with a prefix space, each byte as its byte-level character (space: Ġ).
  EXPECT_EQ(words(*bl, "Hello world's"), (std::vector<std::string>{"\xC4\xA0Hello", "\xC4\xA0world", "'s"}));
}

TEST(HfTokenizer, UnicodeNormalizersAndCharacterClasses) {
  auto norm = [](std::unique_ptr<hf::Normalizer> n, std::string s) {
    n->apply(s);
    return s;
  };
  EXPECT_EQ(norm(hf::make_unicode_normalizer(0), "e\xCC\x81"), "\xC3\xA9");  // NFC: e + U+0301 -> é
  EXPECT_EQ(norm(hf::make_unicode_normalizer(1), "\xC3\xA9"), "e\xCC\x81");      // NFD
  EXPECT_EQ(norm(hf::make_unicode_normalizer(2), "\xEF\xAC\x81"), "fi");          // NFKC: the ligature U+FB01
  EXPECT_EQ(norm(hf::make_lowercase(), "\xC3\x80" "B" "\xCE\xA3"), "\xC3\xA0" "b" "\xCF\x83");  // ÀBΣ -> àbσ (no context)
  EXPECT_EQ(norm(hf::make_strip(true, true), "\xE3\x80\x80 a b\t"), "a b");     // U+3000 is white space
  // Digits: Unicode numerals (Arabic-Indic, Roman numeral Ⅻ, ½) are numeric.
  EXPECT_EQ(words(*hf::make_digits(true), "a\xD9\xA3\xE2\x85\xAB\xC2\xBD"),
            (std::vector<std::string>{"a", "\xD9\xA3", "\xE2\x85\xAB", "\xC2\xBD"}));
  EXPECT_EQ(words(*hf::make_whitespace_split(), "a\xE3\x80\x80" "b\xC2\xA0" "c"), (std::vector<std::string>{"a", "b", "c"}));
}

TEST(HfTokenizer, DecodersAsTheReferenceDefinesThem) {
  std::vector<std::string> t = {"\xE2\x96\x81Hello", "\xE2\x96\x81world"};
  hf::make_metaspace_decoder("\xE2\x96\x81", hf::PrependScheme::always)->apply(t);
  EXPECT_EQ(t, (std::vector<std::string>{"Hello", " world"}));
  t = {"  ab  "};
  hf::make_strip_decoder(" ", 1, 0)->apply(t);
  EXPECT_EQ(t, (std::vector<std::string>{" ab  "}));
  t = {"\xC4\xA0hi", "<|x|>"};
  hf::make_byte_level_decoder()->apply(t);
  EXPECT_EQ(t, (std::vector<std::string>{" hi<|x|>"}));
  t = {"<0x41>", "<0x+A>", "z"};  // Rust's from_str_radix takes "+A" as 10
  hf::make_byte_fallback_decoder()->apply(t);
  EXPECT_EQ(t, (std::vector<std::string>{"A\n", "z"}));
}

TEST(HfTokenizer, InvalidUtf8IsReplacedPerMaximalSubpart) {
  EXPECT_EQ(nvfp4::io::utf8_replace_invalid("ok \xC3\xA9"), "ok \xC3\xA9");
  EXPECT_EQ(nvfp4::io::utf8_replace_invalid("\xC3"), "\xEF\xBF\xBD");
  EXPECT_EQ(nvfp4::io::utf8_replace_invalid("\xE2\x82x"), "\xEF\xBF\xBDx");                 // one subpart
  EXPECT_EQ(nvfp4::io::utf8_replace_invalid("\xF0\x80\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // overlong
  EXPECT_EQ(nvfp4::io::utf8_replace_invalid("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_EQ(nvfp4::io::utf8_replace_invalid(std::string("a\0b", 3)), std::string("a\0b", 3));
  auto t = load(base_tokenizer());
  EXPECT_EQ(ids(*t, "a\xFF" "b"), ids(*t, "a\xEF\xBF\xBD" "b"));
}

TEST(HfTokenizer, RegexEmptyMatchesFollowOniguruma) {
  hf::Regex re("a*", "test");
  std::vector<std::pair<size_t, size_t>> m;
  re.find_all("baaac", m);
  EXPECT_EQ(m, (std::vector<std::pair<size_t, size_t>>{{0, 0}, {1, 4}, {5, 5}}));
}

TEST(HfTokenizer, PostProcessorAddsSpecialTokensOnlyWhenAsked) {
  json j = base_tokenizer();
  j["post_processor"] = {{"type", "TemplateProcessing"},
                         {"single", json::array({{{"SpecialToken", {{"id", "<eot>"}, {"type_id", 0}}}},
                                                 {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
                         {"pair", json::array()},
                         {"special_tokens", {{"<eot>", {{"id", "<eot>"}, {"ids", {7}}, {"tokens", {"<eot>"}}}}}}};
  auto t = load(j);
  EXPECT_EQ(t->encode("ab", true), (std::vector<int32_t>{7, 4}));
  EXPECT_EQ(t->encode("ab", false), (std::vector<int32_t>{4}));
}

// Found in the hostile-input review (docs/fuzzing.md; the fuzz binary reported out-of-memory):
// one token with id 2^31 - 2 made the loader size tables by the largest id, 16 GB for the
// model's and 8 GB for the added tokens'.
TEST(HfTokenizer, SparseIdsDoNotSizeTablesByTheLargestId) {
  json j = base_tokenizer();
  j["model"]["vocab"]["ca"] = 2147483646;
  j["model"]["merges"].push_back("c a");
  j["added_tokens"].push_back({{"id", 0}, {"content", "<big>"}, {"special", true}, {"normalized", false}});
  auto t = load(j);
  EXPECT_EQ(t->vocab_size(), 2147483647);
  EXPECT_EQ(t->token_to_id("<big>"), 9);  // the model's vocabulary size (9 entries): the reference's rule
  EXPECT_EQ(ids(*t, "ca<big>"), (std::vector<int32_t>{2147483646, 9}));
  EXPECT_EQ(t->decode(std::vector<int32_t>{2147483646, 7, 9}), "ca <eot> <big>");
  EXPECT_EQ(t->id_to_token(2147483645), std::nullopt);
  expect_error([&] { t->decode(std::vector<int32_t>{2147483645}); }, "token 0 is id 2147483645");
}

// The text of `j` with `key` set to the JSON text `component` (built as text: nlohmann's dump
// recurses, so it cannot write the deep nestings below).
std::string with_component(json j, const std::string& key, const std::string& component) {
  j.erase(key);
  std::string text = j.dump();
  text.pop_back();  // the closing brace
  return text + ",\"" + key + "\":" + component + "}";
}

// `depth` Sequences of `list`, one inside the other, around `inner`.
std::string nested(const std::string& list, const std::string& inner, int depth) {
  std::string s;
  for (int i = 0; i < depth; ++i) s += "{\"type\":\"Sequence\",\"" + list + "\":[";
  s += inner;
  for (int i = 0; i < depth; ++i) s += "]}";
  return s;
}

// Found in the hostile-input review (docs/fuzzing.md; hand-made inputs too large for the fuzzer,
// ASan reported stack overflows): Sequences nested 100,000 deep overflowed the stack in the
// loader, and a pre-tokenizer Sequence of 200,000 parts overflowed it when encoding, one stack
// frame per part. The reference loads up to 62 nested Sequences, and the 200,000 parts.
TEST(HfTokenizer, DeeplyNestedSequencesAreAnErrorNotACrash) {
  const std::vector<std::pair<std::string, std::string>> kinds = {{"normalizer", "normalizers"},
                                                                  {"pre_tokenizer", "pretokenizers"},
                                                                  {"post_processor", "processors"},
                                                                  {"decoder", "decoders"}};
  const std::vector<std::string> inner = {"{\"type\":\"Lowercase\"}", "{\"type\":\"WhitespaceSplit\"}",
                                          "{\"type\":\"ByteLevel\"}", "{\"type\":\"Fuse\"}"};
  for (size_t k = 0; k < kinds.size(); ++k) {
    const auto& [key, list] = kinds[k];
    SCOPED_TRACE(key);
    const json base = base_tokenizer();
    auto ok = HfTokenizer::from_json(with_component(base, key, nested(list, inner[k], 62)), "test.json", "<eot>");
    const std::vector<int32_t> want = key == "pre_tokenizer" ? std::vector<int32_t>{4, 2} : std::vector<int32_t>{4, 3, 2};
    EXPECT_EQ(ok->encode("ab c", true), want);  // WhitespaceSplit drops the space
    EXPECT_EQ(ok->decode(std::vector<int32_t>{6}), "abc");
    expect_error([&] { HfTokenizer::from_json(with_component(base, key, nested(list, inner[k], 63)), "test.json"); },
                 "test.json: " + key + ".");
    expect_error([&] { HfTokenizer::from_json(with_component(base, key, nested(list, inner[k], 100000)), "test.json"); },
                 "Sequences nested more than 62 deep");
  }
}

TEST(HfTokenizer, LongPreTokenizerSequencesGiveTheWordsOfAShortOne) {
  // Split "-" (isolated), then 40 parts that keep every word, then Digits (individual): the same
  // words as the three parts alone, across the groups the long Sequence runs in.
  json j = base_tokenizer();
  j["model"]["vocab"]["-"] = 8;
  for (char d = '0'; d <= '9'; ++d) j["model"]["vocab"][std::string(1, d)] = 9 + (d - '0');
  std::string parts = "{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"behavior\":\"Isolated\"}";
  for (int i = 0; i < 40; ++i) parts += ",{\"type\":\"WhitespaceSplit\"}";
  parts += ",{\"type\":\"Digits\",\"individual_digits\":true}";
  auto long_seq = HfTokenizer::from_json(
      with_component(j, "pre_tokenizer", "{\"type\":\"Sequence\",\"pretokenizers\":[" + parts + "]}"), "test.json", "<eot>");
  json short_seq = j;
  short_seq["pre_tokenizer"] = {{"type", "Sequence"},
                                {"pretokenizers", json::array({{{"type", "Split"}, {"pattern", {{"String", "-"}}}, {"behavior", "Isolated"}},
                                                               {{"type", "WhitespaceSplit"}},
                                                               {{"type", "Digits"}, {"individual_digits", true}}})}};
  for (const std::string text : {"ab-12 c", "abc", "-", "a - b  -c-1", "9abc-bc 3"}) {
    SCOPED_TRACE(text);
    EXPECT_EQ(long_seq->encode(text), load(short_seq)->encode(text));
  }
  std::string many = "{\"type\":\"WhitespaceSplit\"}";
  for (int i = 1; i < 200000; ++i) many += ",{\"type\":\"WhitespaceSplit\"}";
  auto huge = HfTokenizer::from_json(with_component(j, "pre_tokenizer", "{\"type\":\"Sequence\",\"pretokenizers\":[" + many + "]}"),
                                     "test.json", "<eot>");
  EXPECT_EQ(huge->encode("abc  ab c"), (std::vector<int32_t>{6, 4, 2}));
}

// Found in the hostile-input review (docs/fuzzing.md): PCRE2's \C matches one byte even in UTF
// mode, so a Replace or Split could cut a character apart and hand invalid UTF-8 to every later
// stage. With the normalizer below, "\u0800\u0809" became the bytes A0 89; Strip read them as a
// tab, walked back past the string's start, and UBSan stopped on the pointer overflow.
TEST(HfTokenizer, PatternsThatMatchSingleBytesAreRejected) {
  json j = base_tokenizer();
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers", json::array({{{"type", "Replace"}, {"pattern", {{"Regex", "[^\\x{800}\\x{809}]"}}}, {"content", ""}},
                                                  {{"type", "Replace"}, {"pattern", {{"Regex", "^\\C\\C|(?<=\\x{800})\\C\\C"}}}, {"content", ""}},
                                                  {{"type", "Strip"}, {"strip_left", false}, {"strip_right", true}}})}};
  expect_error([&] { load(j); }, "test.json: normalizer.normalizers[1].pattern: the regular expression does not compile");
  j = base_tokenizer();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "\\C"}}}, {"behavior", "Isolated"}};
  expect_error([&] { load(j); }, "test.json: pre_tokenizer.pattern: the regular expression does not compile");
  hf::Regex ok("\\\\C", "test");  // an escaped backslash before a C: still a pattern
  std::vector<std::pair<size_t, size_t>> m;
  ok.find_all("\xC3\xA9\\C\\", m);
  EXPECT_EQ(m, (std::vector<std::pair<size_t, size_t>>{{2, 4}}));
}

// Found in the hostile-input review (docs/fuzzing.md): a "(*NO_JIT)" pattern passed
// pcre2_jit_compile, was then run by the JIT matcher and failed on every text ("bad JIT
// option"). The reference (Oniguruma) rejects it when loading, and so do we now. (The
// interpreter, for a pattern the JIT fails to compile, also took PCRE2_ERROR_NOMEMORY for a
// match with the ovector unset; seen with a failing allocator outside these tests. Its heap is
// now bounded at 256 MB and every PCRE2 error is an nvfp4::Error.)
TEST(HfTokenizer, NoJitPatternsAreRejectedLikeTheReference) {
  json j = base_tokenizer();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(*NO_JIT)\\p{N}+"}}}, {"behavior", "Isolated"}};
  expect_error([&] { load(j); }, "test.json: pre_tokenizer.pattern: (*NO_JIT) is a PCRE2 option");
}

// Found in the hostile-input review (docs/fuzzing.md; fuzz_tokenizer_json, which loads a new
// tokenizer per input, would have hit its RSS limit): each model's word cache lived in a
// thread-local map keyed by the model and outlived it, about 1.4 KB per tokenizer loaded and used
// (60 MB after 40,000 loads of a small one).
TEST(HfTokenizer, WordCachesAreFreedWithTheirModel) {
  const std::string text = base_tokenizer().dump();
  auto load_and_encode = [&](int i) { (void)HfTokenizer::from_json(text, "test.json")->encode("abc cab " + std::to_string(i)); };
  for (int i = 0; i < 100; ++i) load_and_encode(i);
  const size_t before = mallinfo2().uordblks;
  for (int i = 0; i < 5000; ++i) load_and_encode(i);
  const size_t after = mallinfo2().uordblks;
  EXPECT_LT(after, before + (256 << 10)) << "heap grew by " << (after - before) << " bytes over 5,000 tokenizers";
  // Two models on one thread, used in turn, each with its own cache.
  auto a = load(base_tokenizer());
  json other = base_tokenizer();
  other["model"]["merges"] = json::array({"b c"});
  auto b = load(other);
  for (int k = 0; k < 3; ++k) {
    EXPECT_EQ(ids(*a, "abc"), (std::vector<int32_t>{6}));
    EXPECT_EQ(ids(*b, "abc"), (std::vector<int32_t>{0, 5}));
  }
}

TEST(HfTokenizer, ErrorsNameTheFileAndTheJsonPath) {
  json j = base_tokenizer();
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", json::array({{{"type", "NFC"}}, {{"type", "BertNormalizer"}}})}};
  expect_error([&] { load(j); }, "test.json: normalizer.normalizers[1].type: the normalizer \"BertNormalizer\" is not supported");
  j = base_tokenizer();
  j["model"]["merges"].push_back("a zz");
  expect_error([&] { load(j); }, "model.merges[3]: token 'zz' is not in the vocabulary");
  j = base_tokenizer();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "("}}}, {"behavior", "Isolated"}};
  expect_error([&] { load(j); }, "pre_tokenizer.pattern: the regular expression does not compile");
  j = base_tokenizer();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"String", "x"}}}, {"behavior", "Sideways"}};
  expect_error([&] { load(j); }, "pre_tokenizer.behavior: \"Sideways\" is not");
  j = base_tokenizer();
  j["model"]["vocab"]["a"] = "zero";
  expect_error([&] { load(j); }, "model.vocab[\"a\"]: expected an integer");
  expect_error([&] { HfTokenizer::from_json("{\"model\": {\"vocab\": {}, \"vocab\": {}}}", "dup.json"); }, "appears twice");
  expect_error([&] { HfTokenizer::from_json("{not json", "bad.json"); }, "bad.json: not valid JSON");
  auto t = load(base_tokenizer());
  expect_error([&] { t->decode(std::vector<int32_t>{0, 99}); }, "token 1 is id 99");
  // Catastrophic back-tracking is an error, not a hang.
  j = base_tokenizer();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(a+)+$"}}}, {"behavior", "Isolated"}};
  auto slow = load(j);
  expect_error([&] { slow->encode(std::string(40, 'a') + "b"); }, "back-tracks too much");
}

}  // namespace
