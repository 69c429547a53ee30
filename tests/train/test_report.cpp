// The `nvfp4 compare` report (src/train/report.cpp): summaries on hand-made runs with known numbers,
// and the HTML page's promises (self-contained, escaped, finite SVG coordinates, one chart each).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <regex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nvfp4/error.hpp"
#include "support/test_support.hpp"
#include "train/report.hpp"

namespace {

namespace train = nvfp4::train;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// `steps` steps of 1000 tokens; loss = start - 0.01 * step; validation every 5 steps and at the end
// with val = final_val + 0.01 * (steps - step); tokens_per_s = tps (step 1: tps / 10, warm-up).
train::RecipeRun make_run(const std::string& recipe, uint64_t seed, int steps, double final_val, double tps,
                          int64_t mem = 0) {
  train::RecipeRun r;
  r.recipe = recipe;
  r.seed = seed;
  r.peak_memory_bytes = mem;
  for (int s = 1; s <= steps; ++s) {
    train::ReportPoint p;
    p.step = s;
    p.tokens = 1000LL * s;
    p.loss = 5.0 - 0.01 * s;
    p.grad_norm = 1.0 / s;
    p.tokens_per_s = s == 1 ? tps / 10 : tps;
    if (s % 5 == 0 || s == steps) p.val_loss = final_val + 0.01 * (steps - s);
    r.history.push_back(p);
  }
  return r;
}

train::CompareReport three_recipes() {
  train::CompareReport r;
  r.title = "bf16 vs nvfp4";
  r.model_description = "tiny (2 layers)";
  r.data_description = "tiny corpus";
  r.command = "nvfp4 compare --recipes bf16,nvfp4";
  r.unigram_val_loss = 4.5;
  r.runs.push_back(make_run("bf16", 1, 20, 3.00, 1000, 100));
  r.runs.push_back(make_run("bf16", 2, 20, 3.02, 3000, 300));
  r.runs.push_back(make_run("nvfp4", 1, 20, 3.09, 2000, 50));
  r.runs.push_back(make_run("nvfp4", 2, 20, 3.13, 2000, 60));
  auto div = make_run("nvfp4", 3, 8, 9.0, 4000, 70);  // diverged at step 8: out of the val stats
  div.diverged = true;
  div.divergence = "step 8: loss 40.1 > 4 x running mean 3.2";
  r.runs.push_back(div);
  r.runs.push_back(make_run("fp8", 1, 20, 2.91, 500, 10));
  return r;
}

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}

// Every attribute value of every element inside <svg> ... </svg> that holds coordinates.
std::vector<std::string> svg_coordinate_values(const std::string& html) {
  std::vector<std::string> out;
  const std::regex attr(R"re(\b(points|x|y|x1|x2|y1|y2|cx|cy|r|width|height|viewBox|transform|stroke-width)="([^"]*)")re");
  for (size_t at = html.find("<svg"); at != std::string::npos; at = html.find("<svg", at + 1)) {
    const size_t end = html.find("</svg>", at);
    if (end == std::string::npos) break;
    const std::string svg = html.substr(at, end - at);
    for (std::sregex_iterator it(svg.begin(), svg.end(), attr), stop; it != stop; ++it) out.push_back((*it)[2]);
  }
  return out;
}

bool has_non_finite_text(const std::string& v) {
  std::string l;
  for (char c : v) l += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return l.find("nan") != std::string::npos || l.find("inf") != std::string::npos;
}

TEST(CompareSummary, MeansSpreadGapAndDivergences) {
  const auto rows = train::summarize(three_recipes());
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].recipe, "bf16");  // first-appearance order
  EXPECT_EQ(rows[1].recipe, "nvfp4");
  EXPECT_EQ(rows[2].recipe, "fp8");

  EXPECT_EQ(rows[0].seeds, 2);
  EXPECT_NEAR(rows[0].final_val_mean, 3.01, 1e-12);
  EXPECT_NEAR(rows[0].final_val_spread, 0.01, 1e-12);  // (3.02 - 3.00) / 2
  EXPECT_TRUE(std::isnan(rows[0].gap_percent));       // the baseline itself
  EXPECT_NEAR(rows[0].tokens_per_s_mean, 2000, 1e-9);  // warm-up step skipped: mean(1000, 3000)
  EXPECT_EQ(rows[0].peak_memory_bytes, 300);
  EXPECT_EQ(rows[0].diverged_runs, 0);

  EXPECT_EQ(rows[1].seeds, 3);
  EXPECT_EQ(rows[1].diverged_runs, 1);
  EXPECT_NEAR(rows[1].final_val_mean, 3.11, 1e-12);  // the diverged seed (9.0) is left out
  EXPECT_NEAR(rows[1].final_val_spread, 0.02, 1e-12);
  EXPECT_NEAR(rows[1].gap_percent, (3.11 - 3.01) / 3.01 * 100, 1e-9);
  EXPECT_NEAR(rows[1].tokens_per_s_mean, (2000 + 2000 + 4000) / 3.0, 1e-9);  // diverged runs count here
  EXPECT_EQ(rows[1].peak_memory_bytes, 70);

  EXPECT_EQ(rows[2].seeds, 1);
  EXPECT_NEAR(rows[2].final_val_spread, 0, 0);
  EXPECT_NEAR(rows[2].gap_percent, (2.91 - 3.01) / 3.01 * 100, 1e-9);  // negative: better
}

TEST(CompareSummary, NoBaselineRunGivesNaNGaps) {
  auto r = three_recipes();
  r.baseline = "fp32";
  for (const auto& s : train::summarize(r)) EXPECT_TRUE(std::isnan(s.gap_percent)) << s.recipe;
  const std::string html = train::render_html(r);
  EXPECT_EQ(count(html, "<svg"), 3u);  // the gap chart is skipped ...
  EXPECT_NE(html.find("gap chart is skipped"), std::string::npos);  // ... and says so
}

TEST(CompareSummary, JsonParsesAndHasTheNumbers) {
  const auto j = nlohmann::json::parse(train::summary_json(three_recipes()));
  EXPECT_EQ(j.at("baseline"), "bf16");
  EXPECT_EQ(j.at("spread"), "half_range");
  ASSERT_EQ(j.at("recipes").size(), 3u);
  const auto& base = j["recipes"][0];
  EXPECT_EQ(base.at("recipe"), "bf16");
  EXPECT_TRUE(base.at("gap_percent").is_null());
  EXPECT_NEAR(base.at("final_val_mean").get<double>(), 3.01, 1e-12);
  const auto& q = j["recipes"][1];
  EXPECT_EQ(q.at("seeds"), 3);
  EXPECT_EQ(q.at("diverged_runs"), 1);
  EXPECT_EQ(q.at("peak_memory_bytes"), 70);
  EXPECT_NEAR(q.at("gap_percent").get<double>(), (3.11 - 3.01) / 3.01 * 100, 1e-9);
  EXPECT_NEAR(q.at("final_val_spread").get<double>(), 0.02, 1e-12);
}

TEST(CompareSummary, TableHasOneLinePerRecipe) {
  const std::string t = train::summary_table(three_recipes());
  EXPECT_EQ(count(t, "\n"), 2u + 3u) << t;  // header, rule, rows
  EXPECT_NE(t.find("3.0100 ± 0.0100"), std::string::npos) << t;
  EXPECT_NE(t.find("+3.32%"), std::string::npos) << t;  // (3.11 - 3.01) / 3.01
  EXPECT_NE(t.find("(baseline)"), std::string::npos) << t;
}

TEST(CompareHtml, SelfContainedWithOneSvgPerChart) {
  const std::string html = train::render_html(three_recipes());
  for (const char* name : {"bf16", "nvfp4", "fp8", "step 8: loss 40.1"}) EXPECT_NE(html.find(name), std::string::npos) << name;
  EXPECT_EQ(count(html, "<svg"), 4u);
  EXPECT_EQ(count(html, "<svg"), count(html, "</svg>"));
  EXPECT_EQ(count(html, "https://"), 0u);
  EXPECT_EQ(count(html, "http://"), count(html, "xmlns=\"http://www.w3.org/2000/svg\""));
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("<link"), std::string::npos);
  EXPECT_EQ(html.find("<img"), std::string::npos);
  EXPECT_EQ(html.find("url(http"), std::string::npos);
  EXPECT_NE(html.find("0.9"), std::string::npos);  // the EMA factor is stated
  EXPECT_GT(count(html, "<polyline"), 10u);
  // The header comes before the first chart.
  EXPECT_LT(html.find("nvfp4 compare --recipes bf16,nvfp4"), html.find("<svg"));
  // The recipes are drawn in distinct colours.
  EXPECT_NE(html.find("#4e79a7"), std::string::npos);
  EXPECT_NE(html.find("#f28e2b"), std::string::npos);
  EXPECT_NE(html.find("#e15759"), std::string::npos);
  for (const auto& v : svg_coordinate_values(html)) EXPECT_FALSE(has_non_finite_text(v)) << v;
}

// `nvfp4 quantize --report`: self-contained, both charts, every layer listed, the fallback layers
// drawn in their own colour, the threshold dashed, a zero or NaN KL (not on a log axis) never drawn.
TEST(PtqHtml, ChartsTablesAndFallbackLayers) {
  train::PtqReport r;
  r.title = "nvfp4 quantize: <m>";
  r.command = "nvfp4 quantize m q --auto-fallback 0.01";
  r.fallback_rule = "auto-fallback: a member's KL > 0.01";
  r.threshold = 0.01;
  for (int i = 0; i < 14; ++i) {
    const double kl = i == 5 ? 0.0 : i == 6 ? kNaN : 1e-4 * (i + 1) * (i % 3 == 0 ? 100 : 1);
    r.layers.push_back({"model.layers." + std::to_string(i / 7) + ".proj" + std::to_string(i % 7), kl, 0.01 * (i + 1),
                        kl > 0.01});
  }
  r.quality = {{"unquantized", 10.0, kNaN, kNaN}, {"every layer quantized", 10.5, 0.02, 0.97}, {"after the fallback", 10.1, 0.005, 0.99}};
  const std::string html = train::render_ptq_html(r);
  EXPECT_EQ(count(html, "<svg"), 2u);
  EXPECT_EQ(count(html, "<svg"), count(html, "</svg>"));
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(count(html, "http://"), count(html, "xmlns=\"http://www.w3.org/2000/svg\""));
  EXPECT_NE(html.find("nvfp4 quantize: &lt;m&gt;"), std::string::npos);
  EXPECT_EQ(count(html, "class=\"ref\""), 1u);  // the threshold, on the KL chart
  EXPECT_NE(html.find("#e15759"), std::string::npos);  // fallback markers
  EXPECT_EQ(count(html, "BF16 (fallback)"), 3u);      // layers 3, 9, 12: KL 0.01 x (i + 1) > 0.01 (6: NaN)
  for (int i = 0; i < 14; ++i) EXPECT_NE(html.find(r.layers[static_cast<size_t>(i)].name), std::string::npos) << i;
  EXPECT_NE(html.find("after the fallback"), std::string::npos);
  EXPECT_NE(html.find("97.00 %"), std::string::npos);
  for (const auto& v : svg_coordinate_values(html)) EXPECT_FALSE(has_non_finite_text(v)) << v;
  // Markers: 12 drawable KLs (not 0, not NaN) + 14 output errors.
  EXPECT_EQ(count(html, "<circle"), 12u + 14u);
}

TEST(CompareHtml, NonFiniteValuesNeverReachTheSvg) {
  auto r = three_recipes();
  r.runs[0].history[3].loss = kNaN;
  r.runs[0].history[4].loss = kInf;
  r.runs[0].history[4].val_loss = kNaN;
  r.runs[1].history[0].loss = kNaN;  // the EMA starts at the first finite loss
  r.runs[2].history[9].val_loss = kInf;
  r.runs[2].history[2].grad_norm = kNaN;
  r.runs[2].history[3].grad_norm = 0;  // not drawable on a log axis
  r.runs[2].history[4].grad_norm = -kInf;
  r.runs[3].history[5].tokens_per_s = kNaN;
  r.unigram_val_loss = kNaN;
  const std::string html = train::render_html(r);
  const auto values = svg_coordinate_values(html);
  ASSERT_GT(values.size(), 100u);
  for (const auto& v : values) EXPECT_FALSE(has_non_finite_text(v)) << v;
  EXPECT_EQ(count(html, "<svg"), 4u);
  // Every run entirely NaN: still renders, with no data to draw.
  for (auto& run : r.runs)
    for (auto& p : run.history) p.loss = p.val_loss = p.grad_norm = kNaN;
  const std::string none = train::render_html(r);
  for (const auto& v : svg_coordinate_values(none)) EXPECT_FALSE(has_non_finite_text(v)) << v;
  EXPECT_EQ(count(none, "<svg"), count(none, "</svg>"));
}

TEST(CompareHtml, NamesAndMessagesAreEscaped) {
  auto r = three_recipes();
  r.runs[2].recipe = r.runs[3].recipe = r.runs[4].recipe = "<b>&";
  r.runs[4].divergence = "<script>alert(1)</script>";
  r.title = "a \"quoted\" <title>";
  r.command = "nvfp4 compare --recipes 'bf16,<b>&'";
  const std::string html = train::render_html(r);
  EXPECT_EQ(html.find("<b>&"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_NE(html.find("&lt;b&gt;&amp;"), std::string::npos);
  EXPECT_NE(html.find("&lt;script&gt;alert(1)&lt;/script&gt;"), std::string::npos);
  EXPECT_NE(html.find("a &quot;quoted&quot; &lt;title&gt;"), std::string::npos);
  const auto j = nlohmann::json::parse(train::summary_json(r));
  EXPECT_EQ(j["recipes"][1]["recipe"], "<b>&");  // JSON keeps the name as it is
}

TEST(CompareHtml, EdgeCasesRender) {
  // Empty report.
  train::CompareReport empty;
  const std::string e = train::render_html(empty);
  EXPECT_EQ(count(e, "<svg"), count(e, "</svg>"));
  EXPECT_NE(e.find("</html>"), std::string::npos);
  EXPECT_EQ(nlohmann::json::parse(train::summary_json(empty)).at("recipes").size(), 0u);
  EXPECT_NE(train::summary_table(empty).find("(no runs)"), std::string::npos);

  // A single run with a constant loss and a constant gradient norm (no zero-range axes).
  train::CompareReport one;
  one.runs.push_back(make_run("bf16", 7, 10, 3.0, 100));
  for (auto& p : one.runs[0].history) p.loss = 2.5, p.grad_norm = 1.0, p.val_loss = p.val_loss >= 0 ? 3.0 : -1;
  const std::string h1 = train::render_html(one);
  EXPECT_EQ(count(h1, "<svg"), 3u);  // no other recipe: no gap chart
  for (const auto& v : svg_coordinate_values(h1)) EXPECT_FALSE(has_non_finite_text(v)) << v;
  const auto rows = train::summarize(one);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_NEAR(rows[0].final_val_mean, 3.0, 0);
  EXPECT_NEAR(rows[0].final_val_spread, 0.0, 0);

  // Runs with empty histories, diverged before the first step.
  train::CompareReport hollow = three_recipes();
  train::RecipeRun nothing;
  nothing.recipe = "nvfp4";
  nothing.diverged = true;
  nothing.divergence = "step 1: NaN loss";
  hollow.runs.push_back(nothing);
  train::RecipeRun unvalidated;
  unvalidated.recipe = "fp4-empty";
  hollow.runs.push_back(unvalidated);
  const std::string hh = train::render_html(hollow);
  EXPECT_NE(hh.find("before the first step"), std::string::npos);
  EXPECT_NE(hh.find("fp4-empty"), std::string::npos);
  const auto hrows = train::summarize(hollow);
  ASSERT_EQ(hrows.size(), 4u);
  EXPECT_EQ(hrows[1].diverged_runs, 2);
  EXPECT_TRUE(std::isnan(hrows[3].final_val_mean));
  EXPECT_TRUE(std::isnan(hrows[3].tokens_per_s_mean));
}

TEST(CompareHtml, LongRunsAreThinnedNotDropped) {
  train::CompareReport r;
  r.runs.push_back(make_run("bf16", 1, 50000, 3.0, 100));
  const std::string html = train::render_html(r);
  EXPECT_LT(html.size(), 2'000'000u);  // the raw lines are thinned to a few thousand points
  EXPECT_NE(html.find(">50M<"), std::string::npos);  // the last x tick: 50M tokens
}

TEST(CompareHtml, RejectsABadEmaFactor) {
  auto r = three_recipes();
  r.ema_factor = 1.0;
  EXPECT_NE(nvfp4::test::error_of([&] { train::render_html(r); }).find("ema_factor"), std::string::npos);
}

}  // namespace
