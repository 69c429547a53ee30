#include "common.hpp"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <functional>
#include <iostream>
#include <limits>
#include <sstream>

#include "nvfp4/error.hpp"

namespace nvfp4::cli {

std::optional<Matrix> load_matrix(const io::Checkpoint& ckpt, const std::string& name, std::string* why_not) {
  const io::TensorInfo& info = ckpt.info(name);
  const bool widenable = info.dtype == DType::F64 || info.dtype == DType::F32 || info.dtype == DType::F16 ||
                         info.dtype == DType::BF16;
  if (!widenable) {
    if (why_not) *why_not = "dtype " + std::string(dtype_name(info.dtype)) + " is not F64/F32/F16/BF16";
    return std::nullopt;
  }
  if (info.shape.size() != 2) {
    if (why_not) *why_not = std::to_string(info.shape.size()) + "-D, not a matrix";
    return std::nullopt;
  }
  Matrix m;
  m.name = name;
  m.rows = info.shape[0];
  m.cols = info.shape[1];
  m.dtype = info.dtype;
  m.values = ckpt.load(name).to_f32();
  return m;
}

void Table::print() const {
  std::vector<size_t> width(header_.size(), 0);
  auto widen = [&](const std::vector<std::string>& r) {
    for (size_t i = 0; i < r.size() && i < width.size(); ++i) width[i] = std::max(width[i], r[i].size());
  };
  widen(header_);
  for (const auto& r : rows_) widen(r);
  auto line = [&](const std::vector<std::string>& r) {
    std::string s;
    for (size_t i = 0; i < width.size(); ++i) {
      const std::string cell = i < r.size() ? r[i] : "";
      const std::string pad(width[i] - cell.size(), ' ');
      s += i == 0 ? cell + pad : "  " + pad + cell;
    }
    while (!s.empty() && s.back() == ' ') s.pop_back();
    std::cout << s << "\n";
  };
  line(header_);
  size_t total = 0;
  for (size_t w : width) total += w + 2;
  std::cout << std::string(total > 2 ? total - 2 : 0, '-') << "\n";
  for (const auto& r : rows_) line(r);
}

namespace {

// A validator that parses with `parse` (false: not a value of the kind) and checks the range.
template <class T>
CLI::Validator number_validator(std::string range, std::string kind, bool rewrite,
                                std::function<bool(const std::string&, T&)> parse, std::function<bool(T)> in_range) {
  return CLI::Validator(
      [=](std::string& s) -> std::string {
        T v{};
        if (!parse(s, v)) return "\"" + s + "\" is not " + kind + "; give one in " + range;
        if (!in_range(v)) return s + " is out of range; give " + kind + " in " + range;
        if (rewrite) {
          std::ostringstream canonical;
          canonical << v;
          s = canonical.str();
        }
        return {};
      },
      range);
}

template <class T>
bool parse_decimal(const std::string& s, T& v) {
  const char* end = s.data() + s.size();
  const auto r = std::from_chars(s.data(), end, v);  // decimal; overflow is result_out_of_range
  return !s.empty() && r.ec == std::errc() && r.ptr == end;
}

}  // namespace

CLI::Validator integer_in(int64_t lo, int64_t hi) {
  return number_validator<int64_t>("[" + std::to_string(lo) + ", " + std::to_string(hi) + "]", "an integer", true,
                                   parse_decimal<int64_t>, [=](int64_t v) { return v >= lo && v <= hi; });
}

CLI::Validator unsigned_in(uint64_t lo, uint64_t hi) {
  return number_validator<uint64_t>("[" + std::to_string(lo) + ", " + std::to_string(hi) + "]",
                                    "a non-negative integer", true, parse_decimal<uint64_t>,
                                    [=](uint64_t v) { return v >= lo && v <= hi; });
}

CLI::Validator any_seed() { return unsigned_in(0, std::numeric_limits<uint64_t>::max()); }

CLI::Validator real_in(double lo, double hi, bool lo_open, bool hi_open) {
  const std::string range = (lo_open ? "(" : "[") + general(lo, 17) + ", " + general(hi, 17) + (hi_open ? ")" : "]");
  auto parse = [](const std::string& s, double& v) {
    char* end = nullptr;
    v = std::strtod(s.c_str(), &end);
    return !s.empty() && end == s.c_str() + s.size() && std::isfinite(v);
  };
  return number_validator<double>(range, "a finite number", false, parse, [=](double v) {
    return (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
  });
}

std::string json_text(const nlohmann::json& j) { return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace); }
std::string json_text(const nlohmann::ordered_json& j) {
  return j.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

std::vector<std::string> input_files(const io::Checkpoint& ckpt, const std::string& path) {
  std::vector<std::string> files = {path};
  for (const auto& shard : ckpt.shards()) files.push_back(shard.path());
  return files;
}

void add_input_output(CLI::App* c, const char* in_name, std::string& in, const std::string& in_help,
                      const char* out_name, std::string& out, const std::string& out_help) {
  c->add_option(in_name, in, in_help)->required();
  c->add_option(out_name, out, out_help)->required();
}

namespace {

// v through printf's "%.*<conversion>", with NaN and the infinities spelled out.
std::string formatted(double v, int precision, char conversion) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  const char spec[] = {'%', '.', '*', conversion, '\0'};
  char buf[64];
  std::snprintf(buf, sizeof buf, spec, precision, v);
  return buf;
}

}  // namespace

std::string fixed(double v, int decimals) { return formatted(v, decimals, 'f'); }
std::string general(double v, int digits) { return formatted(v, digits, 'g'); }

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  return fixed(bytes, u == 0 ? 0 : 1) + " " + units[u];
}

std::string shell_quote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%") ==
                        std::string::npos) {
    return s;
  }
  std::string out = "'";
  for (const char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

}  // namespace nvfp4::cli
