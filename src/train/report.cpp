// The `nvfp4 compare` report; the contract is in report.hpp.
#include "train/report.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "nvfp4/error.hpp"

namespace nvfp4::train {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Tableau 10, then six darker hues (an ablation study easily has more than ten recipes):
// distinct on screen and in print; recipe i gets kPalette[i % 16].
constexpr const char* kPalette[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
                                    "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac", "#17becf", "#393b79",
                                    "#637939", "#8c6d31", "#843c39", "#7b4173"};

// Raw series longer than this are thinned (every k-th point) before drawing; statistics and the
// EMA use every point.
constexpr size_t kMaxDrawnPoints = 2000;

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

std::string escape_html(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// The recipes in first-appearance order.
std::vector<std::string> recipe_order(const CompareReport& r) {
  std::vector<std::string> names;
  for (const auto& run : r.runs)
    if (std::find(names.begin(), names.end(), run.recipe) == names.end()) names.push_back(run.recipe);
  return names;
}

const char* colour_of(const std::vector<std::string>& names, const std::string& recipe) {
  const auto it = std::find(names.begin(), names.end(), recipe);
  return kPalette[static_cast<size_t>(it - names.begin()) % std::size(kPalette)];
}

bool has_val(const ReportPoint& p) { return std::isfinite(p.val_loss) && p.val_loss >= 0; }

// The last finite validation loss of a run (NaN: none).
double final_val(const RecipeRun& run) {
  for (auto it = run.history.rbegin(); it != run.history.rend(); ++it)
    if (has_val(*it)) return it->val_loss;
  return kNaN;
}

double run_tokens_per_s(const RecipeRun& run) {
  double sum = 0;
  int n = 0;
  const size_t first = run.history.size() > 1 ? 1 : 0;  // step 1 carries the warm-up
  for (size_t i = first; i < run.history.size(); ++i) {
    const double t = run.history[i].tokens_per_s;
    if (std::isfinite(t) && t > 0) sum += t, ++n;
  }
  return n ? sum / n : kNaN;
}

// ---- number formatting ---------------------------------------------------------------------------

// A tick label: enough decimals for `step`; k/M/G suffixes from 10 000 up.
std::string tick_label(double v, double step) {
  if (std::fabs(v) < step * 1e-9) v = 0;
  const double a = std::fabs(v);
  if (a >= 1e4) {
    const char* suffix = a >= 1e9 ? "G" : a >= 1e6 ? "M" : "k";
    const double div = a >= 1e9 ? 1e9 : a >= 1e6 ? 1e6 : 1e3;
    const int dec = std::clamp(static_cast<int>(-std::floor(std::log10(step / div) + 1e-9)), 0, 6);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f%s", dec, v / div, suffix);
    return buf;
  }
  if (a != 0 && a < 1e-3) return fmt("%.0e", v);
  const int dec = std::clamp(static_cast<int>(-std::floor(std::log10(step) + 1e-9)), 0, 6);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", dec, v);
  return buf;
}

// A value in a table cell ("-" for NaN).
std::string cell(double v, const char* format) { return std::isfinite(v) ? fmt(format, v) : "-"; }

std::string bytes_text(int64_t b) {
  if (b <= 0) return "-";
  const double d = static_cast<double>(b);
  if (d >= 1024.0 * 1024 * 1024) return fmt("%.2f GiB", d / (1024.0 * 1024 * 1024));
  return fmt("%.1f MiB", d / (1024.0 * 1024));
}

std::string tokens_text(double t) {
  if (!std::isfinite(t)) return "-";
  if (t >= 1e6) return fmt("%.2fM", t / 1e6);
  if (t >= 1e3) return fmt("%.1fk", t / 1e3);
  return fmt("%.0f", t);
}

// ---- charts --------------------------------------------------------------------------------------

using Points = std::vector<std::pair<double, double>>;  // (x, y); non-finite y breaks the line

struct Line {
  Points pts;
  std::string colour;
  double width = 2;
  double opacity = 1;
  bool markers = false;
  bool in_range = true;  // counts for the axis range (raw training losses do not)
};

struct ChartSpec {
  std::string title, x_label, y_label, caption;
  bool log_y = false;
  std::optional<double> ref_y;  // a dashed horizontal reference line (e.g. 0 % gap)
  std::vector<Line> lines;
};

struct Range {
  double lo = 0, hi = 1;
  bool log = false;
};

bool usable(double v, bool log) { return std::isfinite(v) && (!log || v > 0); }

// The axis range of the values (padded 5 %); a constant series gets a small non-zero range.
Range make_range(std::vector<double> v, bool log) {
  Range r;
  r.log = log;
  v.erase(std::remove_if(v.begin(), v.end(), [&](double x) { return !usable(x, log); }), v.end());
  if (v.empty()) {
    r.lo = log ? 0.1 : 0;
    r.hi = log ? 10 : 1;
    return r;
  }
  double lo = *std::min_element(v.begin(), v.end()), hi = *std::max_element(v.begin(), v.end());
  if (log) {
    lo = std::log10(lo), hi = std::log10(hi);
    if (hi - lo < 0.02) lo -= 0.2, hi += 0.2;
  } else if (hi - lo <= 1e-12 * std::max(1.0, std::fabs(hi))) {
    const double pad = std::max(std::fabs(hi) * 0.05, 0.5);
    lo -= pad, hi += pad;
  }
  const double pad = (hi - lo) * 0.05;
  r.lo = lo - pad, r.hi = hi + pad;  // log axes keep log10 values
  return r;
}

// "Nice" linear ticks (1, 2, 5 x 10^k) inside [lo, hi]; returns (value, step).
std::vector<double> nice_ticks(double lo, double hi, double& step) {
  const double raw = (hi - lo) / 5;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  step = (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
  std::vector<double> t;
  for (double x = std::ceil(lo / step) * step; x <= hi + step * 1e-9 && t.size() < 50; x += step) t.push_back(x);
  return t;
}

// Log-axis ticks (values, not log10): 1-2-5 x 10^k inside the range, thinned to powers of ten when
// crowded; a range narrower than one 1-2-5 step falls back to linear ticks.
std::vector<std::pair<double, std::string>> log_ticks(const Range& r) {
  std::vector<std::pair<double, std::string>> out;
  std::vector<double> all;
  for (int e = static_cast<int>(std::floor(r.lo)); e <= static_cast<int>(std::ceil(r.hi)); ++e)
    for (double k : {1.0, 2.0, 5.0}) {
      const double v = k * std::pow(10.0, e);
      if (std::log10(v) >= r.lo && std::log10(v) <= r.hi) all.push_back(v);
    }
  if (all.size() > 8) {
    std::vector<double> p;
    for (double v : all)
      if (std::fabs(std::log10(v) - std::round(std::log10(v))) < 1e-9) p.push_back(v);
    all = p;
  }
  if (all.size() >= 2) {
    for (double v : all) out.emplace_back(v, tick_label(v, v));
    return out;
  }
  double step = 1;
  for (double v : nice_ticks(std::pow(10.0, r.lo), std::pow(10.0, r.hi), step))
    if (v > 0) out.emplace_back(v, tick_label(v, step));
  return out;
}

// Chart geometry (SVG user units).
constexpr double kW = 760, kH = 340, kLeft = 70, kRight = 20, kTop = 16, kBottom = 50;
constexpr double kPlotW = kW - kLeft - kRight, kPlotH = kH - kTop - kBottom;

// A coordinate for an SVG attribute: finite, clamped so that far-off points stay sane numbers.
std::string coord(double v) {
  if (!std::isfinite(v)) v = 0;  // NOTE: unreachable for drawn points (filtered); belt and braces
  return fmt("%.1f", std::clamp(v, -1e5, 1e5));
}

std::string render_chart(const ChartSpec& spec, int id) {
  std::vector<double> xs, ys;
  for (const auto& l : spec.lines)
    for (const auto& [x, y] : l.pts)
      if (std::isfinite(x) && usable(y, spec.log_y)) {
        xs.push_back(x);
        if (l.in_range) ys.push_back(y);
      }
  if (ys.empty())  // only out-of-range lines: use them
    for (const auto& l : spec.lines)
      for (const auto& [x, y] : l.pts)
        if (std::isfinite(x) && usable(y, spec.log_y)) ys.push_back(y);
  if (spec.ref_y) ys.push_back(*spec.ref_y);
  const bool empty = xs.empty();
  Range rx = make_range(xs, false), ry = make_range(ys, spec.log_y);
  if (!empty) rx.lo = std::max(rx.lo, std::min(0.0, *std::min_element(xs.begin(), xs.end())));

  auto px = [&](double x) { return kLeft + (x - rx.lo) / (rx.hi - rx.lo) * kPlotW; };
  auto py = [&](double y) {
    const double v = ry.log ? std::log10(y) : y;
    return kTop + kPlotH - (v - ry.lo) / (ry.hi - ry.lo) * kPlotH;
  };

  std::string s;
  s += "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 " + coord(kW) + " " + coord(kH) +
       "\" role=\"img\" aria-label=\"" + escape_html(spec.title) + "\">\n";
  const std::string clip = "clip" + std::to_string(id);
  s += "<defs><clipPath id=\"" + clip + "\"><rect x=\"" + coord(kLeft) + "\" y=\"" + coord(kTop) +
       "\" width=\"" + coord(kPlotW) + "\" height=\"" + coord(kPlotH) + "\"/></clipPath></defs>\n";
  s += "<rect class=\"plot\" x=\"" + coord(kLeft) + "\" y=\"" + coord(kTop) + "\" width=\"" + coord(kPlotW) +
       "\" height=\"" + coord(kPlotH) + "\"/>\n";

  // Ticks and grid.
  double xstep = 1;
  for (double x : nice_ticks(rx.lo, rx.hi, xstep)) {
    const std::string X = coord(px(x));
    s += "<line class=\"grid\" x1=\"" + X + "\" y1=\"" + coord(kTop) + "\" x2=\"" + X + "\" y2=\"" +
         coord(kTop + kPlotH) + "\"/><text class=\"tick\" x=\"" + X + "\" y=\"" + coord(kTop + kPlotH + 16) +
         "\" text-anchor=\"middle\">" + escape_html(tick_label(x, xstep)) + "</text>\n";
  }
  std::vector<std::pair<double, std::string>> yt;
  if (ry.log) {
    yt = log_ticks(ry);
  } else {
    double ystep = 1;
    for (double y : nice_ticks(ry.lo, ry.hi, ystep)) yt.emplace_back(y, tick_label(y, ystep));
  }
  for (const auto& [y, label] : yt) {
    const std::string Y = coord(py(y));
    s += "<line class=\"grid\" x1=\"" + coord(kLeft) + "\" y1=\"" + Y + "\" x2=\"" + coord(kLeft + kPlotW) +
         "\" y2=\"" + Y + "\"/><text class=\"tick\" x=\"" + coord(kLeft - 6) + "\" y=\"" + coord(py(y) + 4) +
         "\" text-anchor=\"end\">" + escape_html(label) + "</text>\n";
  }
  // Axis labels.
  s += "<text class=\"label\" x=\"" + coord(kLeft + kPlotW / 2) + "\" y=\"" + coord(kH - 8) +
       "\" text-anchor=\"middle\">" + escape_html(spec.x_label) + "</text>\n";
  s += "<text class=\"label\" transform=\"translate(16," + coord(kTop + kPlotH / 2) +
       ") rotate(-90)\" text-anchor=\"middle\">" + escape_html(spec.y_label) + "</text>\n";

  if (empty) {
    s += "<text class=\"label\" x=\"" + coord(kLeft + kPlotW / 2) + "\" y=\"" + coord(kTop + kPlotH / 2) +
         "\" text-anchor=\"middle\">no data</text>\n</svg>\n";
    return s;
  }

  s += "<g clip-path=\"url(#" + clip + ")\" fill=\"none\">\n";
  if (spec.ref_y)
    s += "<line class=\"ref\" x1=\"" + coord(kLeft) + "\" y1=\"" + coord(py(*spec.ref_y)) + "\" x2=\"" +
         coord(kLeft + kPlotW) + "\" y2=\"" + coord(py(*spec.ref_y)) + "\"/>\n";
  for (const auto& l : spec.lines) {
    const std::string style = "stroke=\"" + l.colour + "\" stroke-width=\"" + fmt("%.2f", l.width) +
                              "\" stroke-opacity=\"" + fmt("%.2f", l.opacity) + "\"";
    // Break the line at unusable points; each run of usable points is one polyline.
    std::vector<std::string> segment;
    auto flush = [&] {
      if (segment.size() >= 2) {
        s += "<polyline " + style + " stroke-linejoin=\"round\" points=\"";
        for (size_t i = 0; i < segment.size(); ++i) s += (i ? " " : "") + segment[i];
        s += "\"/>\n";
      } else if (segment.size() == 1 && !l.markers) {  // a lone point would be invisible
        const auto comma = segment[0].find(',');
        s += "<circle cx=\"" + segment[0].substr(0, comma) + "\" cy=\"" + segment[0].substr(comma + 1) +
             "\" r=\"2\" fill=\"" + l.colour + "\" fill-opacity=\"" + fmt("%.2f", l.opacity) + "\"/>\n";
      }
      segment.clear();
    };
    for (const auto& [x, y] : l.pts) {
      if (std::isfinite(x) && usable(y, spec.log_y)) segment.push_back(coord(px(x)) + "," + coord(py(y)));
      else flush();
    }
    flush();
    if (l.markers)
      for (const auto& [x, y] : l.pts)
        if (std::isfinite(x) && usable(y, spec.log_y))
          s += "<circle cx=\"" + coord(px(x)) + "\" cy=\"" + coord(py(y)) + "\" r=\"3\" fill=\"" + l.colour +
               "\" fill-opacity=\"" + fmt("%.2f", l.opacity) + "\"/>\n";
  }
  s += "</g>\n</svg>\n";
  return s;
}

// Every k-th point (the last one kept) when a series is longer than kMaxDrawnPoints.
Points thin(const Points& p) {
  if (p.size() <= kMaxDrawnPoints) return p;
  const size_t k = (p.size() + kMaxDrawnPoints - 1) / kMaxDrawnPoints;
  Points out;
  for (size_t i = 0; i < p.size(); i += k) out.push_back(p[i]);
  if ((p.size() - 1) % k) out.push_back(p.back());
  return out;
}

// The HTML legend under a chart: one swatch per recipe.
std::string legend(const std::vector<std::string>& names, const std::vector<std::string>& shown) {
  std::string s = "<ul class=\"legend\">";
  for (const auto& n : names)
    if (std::find(shown.begin(), shown.end(), n) != shown.end())
      s += "<li><span class=\"swatch\" style=\"background:" + std::string(colour_of(names, n)) + "\"></span>" +
           escape_html(n) + "</li>";
  return s + "</ul>\n";
}

// A chart with its title, the legend's HTML under it and its caption.
std::string figure_with(const ChartSpec& spec, int id, const std::string& legend_html) {
  return "<figure>\n<h2>" + escape_html(spec.title) + "</h2>\n" + render_chart(spec, id) + legend_html +
         "<figcaption>" + escape_html(spec.caption) + "</figcaption>\n</figure>\n";
}

std::string figure(const ChartSpec& spec, int id, const std::vector<std::string>& names,
                   const std::vector<std::string>& shown) {
  return figure_with(spec, id, legend(names, shown));
}


int seeds_of(const CompareReport& r, const std::string& recipe) {
  return static_cast<int>(std::count_if(r.runs.begin(), r.runs.end(), [&](const RecipeRun& x) { return x.recipe == recipe; }));
}

// Per recipe (not the baseline): step -> mean over seeds of (val - baseline val) / baseline val * 100,
// drawn at the mean token count; the baseline val at a step is the mean over its seeds.
std::vector<std::pair<std::string, Points>> gap_series(const CompareReport& r, const std::vector<std::string>& names) {
  std::map<int64_t, std::pair<double, int>> base;
  for (const auto& run : r.runs)
    if (run.recipe == r.baseline)
      for (const auto& p : run.history)
        if (has_val(p)) base[p.step].first += p.val_loss, base[p.step].second++;
  std::vector<std::pair<std::string, Points>> out;
  if (base.empty()) return out;
  for (const auto& name : names) {
    if (name == r.baseline) continue;
    struct Acc { double gap = 0, tokens = 0; int n = 0; };
    std::map<int64_t, Acc> acc;
    for (const auto& run : r.runs) {
      if (run.recipe != name) continue;
      for (const auto& p : run.history) {
        const auto b = base.find(p.step);
        if (!has_val(p) || b == base.end()) continue;
        const double bv = b->second.first / b->second.second;
        if (!(bv > 0)) continue;
        auto& a = acc[p.step];
        a.gap += (p.val_loss - bv) / bv * 100, a.tokens += static_cast<double>(p.tokens), a.n++;
      }
    }
    Points pts;
    for (const auto& [step, a] : acc) pts.emplace_back(a.tokens / a.n, a.gap / a.n);
    out.emplace_back(name, std::move(pts));
  }
  return out;
}

constexpr const char* kCss = R"(
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px auto; max-width: 980px; color: #222; background: #fff; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.1em; margin: 0.2em 0; }
dl.header { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; }
dl.header dt { font-weight: 600; }
dl.header dd { margin: 0; }
pre { background: #f5f5f5; padding: 6px 8px; overflow-x: auto; white-space: pre-wrap; word-break: break-all; margin: 0; }
figure { margin: 24px 0; }
svg { width: 100%; height: auto; display: block; }
svg .plot { fill: #fcfcfc; stroke: #888; stroke-width: 1; }
svg .grid { stroke: #e3e3e3; stroke-width: 1; }
svg .ref { stroke: #555; stroke-width: 1; stroke-dasharray: 4 3; }
svg .tick { font-size: 11px; fill: #444; }
svg .label { font-size: 13px; fill: #222; }
ul.legend { list-style: none; padding: 0; margin: 4px 0; display: flex; flex-wrap: wrap; gap: 4px 16px; }
ul.legend li { display: flex; align-items: center; gap: 6px; }
.swatch { display: inline-block; width: 18px; height: 4px; border-radius: 2px; }
figcaption { font-size: 0.9em; color: #555; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.baseline td { font-weight: 600; }
.note { font-size: 0.9em; color: #555; }
)";

// A self-contained page up to its header list: the head with the style sheet, the title, the
// opening of the header's <dl> (header_item adds its rows).
std::string page_start(const std::string& title) {
  return "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
         "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>" +
         escape_html(title) + "</title>\n<style>" + kCss + "</style>\n</head>\n<body>\n<h1>" + escape_html(title) +
         "</h1>\n<dl class=\"header\">\n";
}

// One row of the header (none for an empty value); `pre` for a command line.
std::string header_item(const char* key, const std::string& value, bool pre = false) {
  if (value.empty()) return "";
  return std::string("<dt>") + key + "</dt><dd>" + (pre ? "<pre>" : "") + escape_html(value) + (pre ? "</pre>" : "") +
         "</dd>\n";
}

}  // namespace

std::vector<RecipeSummary> summarize(const CompareReport& report) {
  std::vector<RecipeSummary> rows;
  for (const auto& name : recipe_order(report)) {
    RecipeSummary s;
    s.recipe = name;
    std::vector<double> finals, tps;
    for (const auto& run : report.runs) {
      if (run.recipe != name) continue;
      s.seeds++;
      s.peak_memory_bytes = std::max(s.peak_memory_bytes, run.peak_memory_bytes);
      if (run.diverged) s.diverged_runs++;
      const double f = final_val(run);
      if (!run.diverged && std::isfinite(f)) finals.push_back(f);
      const double t = run_tokens_per_s(run);
      if (std::isfinite(t)) tps.push_back(t);
    }
    auto mean = [](const std::vector<double>& v) {
      double sum = 0;
      for (double x : v) sum += x;
      return v.empty() ? kNaN : sum / static_cast<double>(v.size());
    };
    s.final_val_mean = mean(finals);
    s.final_val_spread = finals.empty() ? kNaN
                                        : (*std::max_element(finals.begin(), finals.end()) -
                                           *std::min_element(finals.begin(), finals.end())) / 2;
    s.tokens_per_s_mean = mean(tps);
    s.gap_percent = kNaN;
    rows.push_back(std::move(s));
  }
  const auto base = std::find_if(rows.begin(), rows.end(), [&](const RecipeSummary& s) { return s.recipe == report.baseline; });
  for (auto& s : rows)
    if (base != rows.end() && s.recipe != report.baseline && std::isfinite(s.final_val_mean) &&
        std::isfinite(base->final_val_mean) && base->final_val_mean > 0)
      s.gap_percent = (s.final_val_mean - base->final_val_mean) / base->final_val_mean * 100;
  return rows;
}

std::string summary_json(const CompareReport& report) {
  nlohmann::ordered_json j;
  auto num = [](double v) { return std::isfinite(v) ? nlohmann::ordered_json(v) : nlohmann::ordered_json(nullptr); };
  j["baseline"] = report.baseline;
  j["unigram_val_loss"] = num(report.unigram_val_loss > 0 ? report.unigram_val_loss : kNaN);
  j["spread"] = "half_range";  // final_val_spread = (max - min) / 2 over the non-diverged seeds
  j["recipes"] = nlohmann::ordered_json::array();
  for (const auto& s : summarize(report)) {
    j["recipes"].push_back({{"recipe", s.recipe},
                            {"seeds", s.seeds},
                            {"final_val_mean", num(s.final_val_mean)},
                            {"final_val_spread", num(s.final_val_spread)},
                            {"gap_percent", num(s.gap_percent)},
                            {"tokens_per_s_mean", num(s.tokens_per_s_mean)},
                            {"peak_memory_bytes", s.peak_memory_bytes},
                            {"diverged_runs", s.diverged_runs}});
  }
  // NOTE: replace invalid UTF-8 in recipe names rather than throw: a report must still print.
  return j.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

std::string summary_table(const CompareReport& report) {
  const std::vector<std::string> head = {"recipe", "seeds", "final val loss", "gap vs " + report.baseline,
                                         "tokens/s", "peak memory", "diverged"};
  std::vector<std::vector<std::string>> rows;
  for (const auto& s : summarize(report)) {
    std::string val = cell(s.final_val_mean, "%.4f");
    if (std::isfinite(s.final_val_mean) && s.seeds > 1) val += " ± " + cell(s.final_val_spread, "%.4f");
    rows.push_back({s.recipe, std::to_string(s.seeds), val,
                    s.recipe == report.baseline ? "(baseline)" : cell(s.gap_percent, "%+.2f%%"),
                    tokens_text(s.tokens_per_s_mean), bytes_text(s.peak_memory_bytes),
                    std::to_string(s.diverged_runs)});
  }
  // Column widths in code points (the "±" is two bytes of UTF-8).
  auto width = [](const std::string& t) {
    size_t n = 0;
    for (unsigned char c : t) n += (c & 0xC0) != 0x80;
    return n;
  };
  std::vector<size_t> w(head.size());
  for (size_t c = 0; c < head.size(); ++c) {
    w[c] = width(head[c]);
    for (const auto& r : rows) w[c] = std::max(w[c], width(r[c]));
  }
  auto line = [&](const std::vector<std::string>& r) {
    std::string s;
    for (size_t c = 0; c < r.size(); ++c) {
      const std::string pad(w[c] - width(r[c]), ' ');
      s += c == 0 ? r[c] + pad : "  " + pad + r[c];  // first column left-aligned, numbers right
    }
    while (!s.empty() && s.back() == ' ') s.pop_back();
    return s + "\n";
  };
  std::string out = line(head);
  size_t total = 0;
  for (size_t c = 0; c < w.size(); ++c) total += w[c] + (c ? 2 : 0);
  out += std::string(total, '-') + "\n";
  for (const auto& r : rows) out += line(r);
  if (rows.empty()) out += "(no runs)\n";
  return out;
}

std::string render_html(const CompareReport& report) {
  if (!(report.ema_factor >= 0 && report.ema_factor < 1))
    throw Error("compare report: ema_factor " + fmt("%g", report.ema_factor) +
                " is outside [0, 1); 0.9 is the usual smoothing of training losses");
  const auto names = recipe_order(report);
  // ---- header ----
  std::string h = page_start(report.title.empty() ? "nvfp4 compare" : report.title);
  auto item = [&](const char* key, const std::string& value, bool pre = false) { h += header_item(key, value, pre); };
  item("Model", report.model_description);
  item("Data", report.data_description);
  item("Command", report.command, true);
  item("Baseline", report.baseline);
  if (std::isfinite(report.unigram_val_loss) && report.unigram_val_loss > 0)
    item("Unigram loss", fmt("%.4f", report.unigram_val_loss) + " nats (the loss of predicting token frequencies)");
  item("Runs", std::to_string(report.runs.size()) + " (" + std::to_string(names.size()) + " recipes)");
  h += "</dl>\n";

  auto width_of = [&](const RecipeRun& run) { return seeds_of(report, run.recipe) > 1 ? 1.25 : 2.0; };
  auto shown_all = names;

  // ---- (1) training loss ----
  {
    ChartSpec c;
    c.title = "Training loss";
    c.x_label = "training tokens";
    c.y_label = "loss (nats)";
    const double f = report.ema_factor;
    c.caption = "Faint: the loss of every step. Solid: its exponential moving average, ema = " + fmt("%g", f) +
                " × ema + " + fmt("%g", 1 - f) +
                " × loss (started at the first finite loss; non-finite losses are skipped).";
    if (report.unigram_val_loss > 0 && std::isfinite(report.unigram_val_loss)) {
      c.ref_y = report.unigram_val_loss;
      c.caption += " Dashed: the unigram loss.";
    }
    std::vector<Line> raw, smooth;
    for (const auto& run : report.runs) {
      Line r, e;
      r.colour = e.colour = colour_of(names, run.recipe);
      r.width = 1, r.opacity = 0.25, r.in_range = false;
      e.width = width_of(run);
      std::optional<double> ema;
      for (const auto& p : run.history) {
        const double x = static_cast<double>(p.tokens);
        r.pts.emplace_back(x, p.loss);
        if (std::isfinite(p.loss)) ema = ema ? f * *ema + (1 - f) * p.loss : p.loss;
        e.pts.emplace_back(x, std::isfinite(p.loss) && ema ? *ema : kNaN);
      }
      r.pts = thin(r.pts), e.pts = thin(e.pts);
      raw.push_back(std::move(r)), smooth.push_back(std::move(e));
    }
    for (auto& l : raw) c.lines.push_back(std::move(l));
    for (auto& l : smooth) c.lines.push_back(std::move(l));
    h += figure(c, 1, names, shown_all);
  }

  // ---- (2) validation loss ----
  {
    ChartSpec c;
    c.title = "Validation loss";
    c.x_label = "training tokens";
    c.y_label = "validation loss (nats)";
    c.caption = "One line per run; markers at each validation.";
    for (const auto& run : report.runs) {
      Line l;
      l.colour = colour_of(names, run.recipe);
      l.width = width_of(run);
      l.markers = true;
      for (const auto& p : run.history)
        if (has_val(p)) l.pts.emplace_back(static_cast<double>(p.tokens), p.val_loss);
      c.lines.push_back(std::move(l));
    }
    h += figure(c, 2, names, shown_all);
  }

  // ---- (3) gap to the baseline ----
  {
    const auto gaps = gap_series(report, names);
    if (gaps.empty()) {
      h += "<figure>\n<h2>Validation-loss gap to " + escape_html(report.baseline) + "</h2>\n<p class=\"note\">No " +
           escape_html(report.baseline) + " run with a validation loss: the gap chart is skipped.</p>\n</figure>\n";
    } else {
      ChartSpec c;
      c.title = "Validation-loss gap to " + report.baseline;
      c.x_label = "training tokens";
      c.y_label = "gap to " + report.baseline + " (%)";
      c.ref_y = 0;
      c.caption = "Per recipe, the mean over its seeds of (val − " + report.baseline + " val at the same step) / " +
                  report.baseline + " val × 100; the " + report.baseline +
                  " value at a step is the mean over its seeds. Dashed: no gap. Above zero: worse than " +
                  report.baseline + ".";
      std::vector<std::string> shown;
      for (const auto& [name, pts] : gaps) {
        Line l;
        l.colour = colour_of(names, name);
        l.markers = true;
        l.pts = pts;
        c.lines.push_back(std::move(l));
        shown.push_back(name);
      }
      h += figure(c, 3, names, shown);
    }
  }

  // ---- (4) gradient norm ----
  {
    ChartSpec c;
    c.title = "Gradient norm";
    c.x_label = "training tokens";
    c.y_label = "global gradient norm (log scale)";
    c.log_y = true;
    c.caption = "The global gradient norm before clipping, every step; zero and non-finite values are not drawn.";
    for (const auto& run : report.runs) {
      Line l;
      l.colour = colour_of(names, run.recipe);
      l.width = width_of(run) * 0.6;
      l.opacity = 0.8;
      for (const auto& p : run.history) l.pts.emplace_back(static_cast<double>(p.tokens), p.grad_norm);
      l.pts = thin(l.pts);
      c.lines.push_back(std::move(l));
    }
    h += figure(c, 4, names, shown_all);
  }

  // ---- summary table ----
  h += "<h2>Summary</h2>\n<table>\n<thead><tr><th>recipe</th><th>seeds</th><th>final val loss</th><th>gap vs " +
       escape_html(report.baseline) +
       "</th><th>tokens/s</th><th>peak memory</th><th>diverged</th></tr></thead>\n<tbody>\n";
  for (const auto& s : summarize(report)) {
    const bool is_base = s.recipe == report.baseline;
    std::string val = cell(s.final_val_mean, "%.4f");
    if (std::isfinite(s.final_val_mean) && s.seeds > 1) val += " ± " + cell(s.final_val_spread, "%.4f");
    h += std::string("<tr") + (is_base ? " class=\"baseline\"" : "") + "><td><span class=\"swatch\" style=\"background:" +
         colour_of(names, s.recipe) + "\"></span> " + escape_html(s.recipe) + "</td><td>" + std::to_string(s.seeds) +
         "</td><td>" + escape_html(val) + "</td><td>" + (is_base ? "baseline" : escape_html(cell(s.gap_percent, "%+.2f %%"))) +
         "</td><td>" + tokens_text(s.tokens_per_s_mean) + "</td><td>" + bytes_text(s.peak_memory_bytes) + "</td><td>" +
         std::to_string(s.diverged_runs) + "</td></tr>\n";
  }
  h += "</tbody>\n</table>\n<p class=\"note\">Final val loss: the last validation of each run that did not diverge, "
       "mean ± half the range over seeds. Gap: (mean − " + escape_html(report.baseline) + " mean) / " +
       escape_html(report.baseline) + " mean. Tokens/s: mean over steps (the first skipped) and runs. "
       "Peak memory: the largest over runs.</p>\n";

  // ---- divergences ----
  h += "<h2>Divergences</h2>\n";
  std::string events;
  for (const auto& run : report.runs) {
    if (!run.diverged) continue;
    const std::string where = run.history.empty() ? "before the first step"
                                                  : "after step " + std::to_string(run.history.back().step) + " (" +
                                                        tokens_text(static_cast<double>(run.history.back().tokens)) + " tokens)";
    events += "<li><strong>" + escape_html(run.recipe) + "</strong>, seed " + std::to_string(run.seed) + ", stopped " +
              escape_html(where) + ": " + escape_html(run.divergence.empty() ? "(no message)" : run.divergence) + "</li>\n";
  }
  h += events.empty() ? "<p>None.</p>\n" : "<ul>\n" + events + "</ul>\n";
  h += "<p class=\"note\">Generated by nvfp4 (compare / report).</p>\n</body>\n</html>\n";
  return h;
}

std::string render_ptq_html(const PtqReport& report) {
  std::string h = page_start(report.title.empty() ? "nvfp4 quantize" : report.title);
  auto item = [&](const char* key, const std::string& value, bool pre = false) { h += header_item(key, value, pre); };
  item("Model", report.model_description);
  item("Command", report.command, true);
  item("Calibration", report.calibration);
  item("Sensitivity", report.sensitivity);
  item("Fallback", report.fallback_rule.empty() ? "none" : report.fallback_rule);
  h += "</dl>\n";

  // ---- the whole model ----
  h += "<h2>The model on the held-out tokens</h2>\n<table>\n<tr><th></th><th>perplexity</th><th>KL vs unquantized "
       "(nats/token)</th><th>top-1 agreement</th></tr>\n";
  for (const auto& q : report.quality) {
    h += "<tr><td>" + escape_html(q.what) + "</td><td>" + cell(q.ppl, "%.4f") + "</td><td>" + cell(q.kl, "%.4g") +
         "</td><td>" + (std::isfinite(q.top1) ? fmt("%.2f %%", 100 * q.top1) : "-") + "</td></tr>\n";
  }
  h += "</table>\n";

  // ---- per-layer charts: x = the layer's index in the model's order ----
  const char* kept_colour = "#4e79a7";
  const char* fallback_colour = "#e15759";
  auto series = [&](bool fallback, auto value) {
    Line l;
    l.colour = fallback ? fallback_colour : kept_colour;
    l.width = 0;
    l.opacity = 1;
    l.markers = true;
    for (size_t i = 0; i < report.layers.size(); ++i) {
      const auto& p = report.layers[i];
      l.pts.emplace_back(static_cast<double>(i), p.fallback == fallback ? value(p) : kNaN);
    }
    return l;
  };
  const auto legend2 = [&] {
    return "<ul class=\"legend\"><li><span class=\"swatch\" style=\"background:" + std::string(kept_colour) +
           "\"></span>quantized</li><li><span class=\"swatch\" style=\"background:" + std::string(fallback_colour) +
           "\"></span>kept in BF16 by the fallback</li></ul>\n";
  };
  {
    ChartSpec c;
    c.title = "Per-layer sensitivity: KL with only that layer quantized";
    c.x_label = "linear layer (model order: q, k, v, o, gate, up, down per block)";
    c.y_label = "KL vs unquantized (nats/token)";
    c.log_y = true;
    c.caption = "Each point: the model with only this layer at its NVFP4 weights and every other layer unquantized, "
                "against the unquantized model, on the held-out tokens.";
    if (report.threshold > 0) {
      c.ref_y = report.threshold;
      c.caption += " Dashed: the --auto-fallback threshold.";
    }
    c.lines.push_back(series(false, [](const PtqLayerPoint& p) { return p.kl; }));
    c.lines.push_back(series(true, [](const PtqLayerPoint& p) { return p.kl; }));
    h += figure_with(c, 1, legend2());
  }
  {
    ChartSpec c;
    c.title = "Per-layer output error";
    c.x_label = "linear layer (model order)";
    c.y_label = "||y_q - y|| / ||y||";
    c.caption = "The layer's relative output error on the same tokens, only it quantized.";
    c.lines.push_back(series(false, [](const PtqLayerPoint& p) { return p.rel_error; }));
    c.lines.push_back(series(true, [](const PtqLayerPoint& p) { return p.rel_error; }));
    h += figure_with(c, 2, legend2());
  }
  h += "<h2>Every layer</h2>\n<table>\n<tr><th>#</th><th>layer</th><th>KL alone</th><th>output error</th><th></th></tr>\n";
  for (size_t i = 0; i < report.layers.size(); ++i) {
    const auto& p = report.layers[i];
    h += "<tr><td>" + std::to_string(i) + "</td><td>" + escape_html(p.name) + "</td><td>" + cell(p.kl, "%.4g") +
         "</td><td>" + cell(p.rel_error, "%.4f") + "</td><td>" + (p.fallback ? "BF16 (fallback)" : "") + "</td></tr>\n";
  }
  h += "</table>\n</body>\n</html>\n";
  return h;
}

}  // namespace nvfp4::train
