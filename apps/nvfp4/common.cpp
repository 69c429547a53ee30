#include "common.hpp"

#include <cmath>
#include <cstdio>
#include <iostream>

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

void write_text_file(const std::string& path, const std::string& text) {
  io::write_file_atomic(path, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

std::string fixed(double v, int decimals) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string general(double v, int digits) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  return fixed(bytes, u == 0 ? 0 : 1) + " " + units[u];
}

}  // namespace nvfp4::cli
