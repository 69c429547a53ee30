// The sampler and generation loop of src/infer (nvfp4/sampling.hpp): greedy is argmax, top-k
// never leaves the k largest, the draw follows softmax(logits / T), a seed fixes the stream.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>
#include <vector>

#include "nvfp4/error.hpp"
#include "nvfp4/model.hpp"
#include "nvfp4/sampling.hpp"
#include "nvfp4/tokenizer.hpp"
#include "support/test_support.hpp"

namespace {

using nvfp4::infer::choose_token;

const std::vector<float> kLogits = {0.5f, 2.0f, -1.0f, 2.0f, 1.5f, 0.0f, 3.0f, -4.0f};  // max at 6, tie 1/3

TEST(ChooseToken, TemperatureZeroIsTheArgmaxWhateverTheDraw) {
  for (double u : {0.0, 0.3, 0.999}) EXPECT_EQ(choose_token(kLogits, 0.0, 0, u), 6);
  // Ties go to the smaller id: with 6 gone, 1 and 3 tie.
  std::vector<float> l = kLogits;
  l[6] = -10;
  EXPECT_EQ(choose_token(l, 0.0, 0, 0.5), 1);
  EXPECT_EQ(choose_token(l, 0.0, 5, 0.5), 1);
}

TEST(ChooseToken, TopKNeverLeavesTheKLargest) {
  const std::set<int32_t> top3 = {6, 1, 3};  // 3.0, then 2.0 twice
  std::set<int32_t> seen;
  for (int i = 0; i < 1000; ++i) {
    const int32_t t = choose_token(kLogits, 5.0, 3, (i + 0.5) / 1000.0);
    EXPECT_TRUE(top3.count(t)) << t;
    seen.insert(t);
  }
  EXPECT_EQ(seen, top3) << "all of the k are reachable";
  for (int i = 0; i < 100; ++i) EXPECT_EQ(choose_token(kLogits, 5.0, 1, i / 100.0), 6) << "top-k 1 is greedy";
  // k larger than the vocabulary, or 0: every token is reachable.
  for (int k : {0, 100}) {
    std::set<int32_t> all;
    for (int i = 0; i < 10000; ++i) all.insert(choose_token(kLogits, 50.0, k, (i + 0.5) / 10000.0));
    EXPECT_EQ(all.size(), kLogits.size()) << k;
  }
}

TEST(ChooseToken, DrawsFollowTheSoftmaxOfLogitsOverTemperature) {
  // A regular grid of draws u hits each token in proportion to its probability.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.25f), std::log(0.125f), std::log(0.125f)};
  for (double temperature : {1.0, 2.0}) {
    std::vector<double> want(4);
    double sum = 0;
    for (int i = 0; i < 4; ++i) sum += want[i] = std::exp(logits[i] / temperature);
    std::map<int32_t, int> count;
    const int n = 100000;
    for (int i = 0; i < n; ++i) ++count[choose_token(logits, temperature, 0, (i + 0.5) / n)];
    for (int i = 0; i < 4; ++i) EXPECT_NEAR(count[i] / double(n), want[i] / sum, 1e-4) << "T " << temperature << " id " << i;
  }
}

TEST(Sampler, SameSeedSameStreamOtherSeedOtherStream) {
  const std::vector<float> flat(64, 0.0f);  // uniform: every draw decides
  auto stream = [&](uint64_t seed) {
    nvfp4::infer::Sampler s({1.0, 0, seed});
    std::vector<int32_t> out;
    for (int i = 0; i < 50; ++i) out.push_back(s.next(flat));
    return out;
  };
  EXPECT_EQ(stream(7), stream(7));
  EXPECT_NE(stream(7), stream(8));
  // The draws are the documented ones: 53 bits of mt19937_64, one per token.
  std::mt19937_64 rng(7);
  nvfp4::infer::Sampler s({1.0, 0, 7});
  for (int i = 0; i < 5; ++i) EXPECT_EQ(s.uniform(), static_cast<double>(rng() >> 11) / 9007199254740992.0);
}

TEST(Sampler, RejectsOptionsOutOfRangeNamingTheOption) {
  EXPECT_NE(nvfp4::test::error_of([] { nvfp4::infer::validate({NAN, 40, 1}); }).find("--temperature"), std::string::npos);
  EXPECT_NE(nvfp4::test::error_of([] { nvfp4::infer::validate({INFINITY, 40, 1}); }).find("--temperature"), std::string::npos);
  EXPECT_NE(nvfp4::test::error_of([] { nvfp4::infer::validate({-0.5, 40, 1}); }).find("--temperature"), std::string::npos);
  EXPECT_NE(nvfp4::test::error_of([] { nvfp4::infer::validate({1.0, -1, 1}); }).find("--top-k"), std::string::npos);
  EXPECT_NO_THROW(nvfp4::infer::validate({0.0, 0, 0}));
}

nvfp4::model::CpuModel tiny_model() {
  nvfp4::model::ModelConfig c;
  c.n_layer = 1;
  c.d_model = 32;
  c.n_head = 2;
  c.n_kv_head = 2;
  c.seq_len = 8;
  c.vocab = 264;  // padded beyond the byte tokenizer's 257
  nvfp4::model::CpuModel m(c);
  nvfp4::model::init_params(c, m.params(), 11);
  return m;
}

TEST(Generate, IsDeterministicStaysInTheVocabularyAndSlidesTheWindow) {
  auto m = tiny_model();
  const nvfp4::infer::SamplingOptions o{2.0, 0, 5};
  // 20 tokens from a context of 3: the window of seq_len 8 slides.
  const auto a = nvfp4::infer::generate(m, {256, 65, 66}, 20, /*stop_token=*/-1, /*vocab_limit=*/257, o);
  const auto b = nvfp4::infer::generate(m, {256, 65, 66}, 20, -1, 257, o);
  ASSERT_EQ(a.tokens.size(), 20u);
  EXPECT_EQ(a.tokens, b.tokens);
  for (int32_t t : a.tokens) EXPECT_TRUE(t >= 0 && t < 257) << t;
  // Greedy from the same context is the argmax each time: the first token is the model's argmax.
  const auto g = nvfp4::infer::generate(m, {256, 65, 66}, 1, -1, 257, {0.0, 40, 99});
  m.forward(std::vector<int32_t>{256, 65, 66}.data(), nullptr, 1, 3);
  const auto last = m.logits().subspan(2 * 264, 257);
  EXPECT_EQ(g.tokens.at(0), std::max_element(last.begin(), last.end()) - last.begin());
  // Stopping: the stop token ends the loop and is not returned.
  const auto s = nvfp4::infer::generate(m, {256, 65, 66}, 20, g.tokens.at(0), 257, {0.0, 40, 99});
  EXPECT_TRUE(s.tokens.empty());
  EXPECT_THROW(nvfp4::infer::generate(m, {256}, 0, -1, 257, o), nvfp4::Error);
}

TEST(Generate, CompleteDecodesAnyBytes) {
  auto m = tiny_model();
  const nvfp4::io::ByteTokenizer tok;
  const std::string prompt = "caf\xc3\xa9 \xe2\x82";  // ends inside a UTF-8 sequence
  const auto t = nvfp4::infer::complete(m, tok, prompt, 12, {1.5, 0, 3});
  EXPECT_EQ(t.completion, tok.decode(t.tokens));
  EXPECT_LE(t.tokens.size(), 12u);
  const auto again = nvfp4::infer::complete(m, tok, prompt, 12, {1.5, 0, 3});
  EXPECT_EQ(again.completion, t.completion);
}

}  // namespace
