// Server-sent events, read incrementally (src/serve/sse.hpp).
#include "serve/sse.hpp"

namespace nvfp4::serve {

bool SseParser::feed(std::string_view bytes) {
  if (!error_.empty()) return false;
  if (at_start_ && !bytes.empty()) {
    // The UTF-8 byte-order mark, possibly split over reads: wait until 3 bytes are there.
    static constexpr std::string_view kBom = "\xEF\xBB\xBF";
    line_.append(bytes);
    if (line_.size() < kBom.size() && kBom.substr(0, line_.size()) == line_) return true;
    at_start_ = false;
    std::string first;
    first.swap(line_);
    if (first.compare(0, kBom.size(), kBom) == 0) first.erase(0, kBom.size());
    return feed(first);
  }
  size_t at = 0;
  while (at < bytes.size()) {
    if (after_cr_) {
      after_cr_ = false;
      if (bytes[at] == '\n') ++at;  // the rest of "\r\n", perhaps split over two reads
      continue;
    }
    const size_t end = bytes.find_first_of("\r\n", at);
    if (end == std::string_view::npos) {
      line_.append(bytes.substr(at));
      break;
    }
    line_.append(bytes.substr(at, end - at));
    after_cr_ = bytes[end] == '\r';
    at = end + 1;
    line_done();
  }
  if (line_.size() > kMaxLineBytes) {
    error_ = "an event-stream line is longer than " + std::to_string(kMaxLineBytes >> 20) + " MiB";
    return false;
  }
  return true;
}

void SseParser::line_done() {
  std::string line;
  line.swap(line_);
  if (line.empty()) {  // a blank line ends the event
    if (has_data_) on_event_(data_);
    data_.clear();
    has_data_ = false;
    return;
  }
  if (line[0] == ':') return;  // a comment (servers send them to keep a connection alive)
  const size_t colon = line.find(':');
  const std::string_view field = std::string_view(line).substr(0, colon);
  if (field != "data") return;  // event, id, retry and unknown fields say nothing about the text
  std::string_view value;
  if (colon != std::string::npos) {
    value = std::string_view(line).substr(colon + 1);
    if (!value.empty() && value[0] == ' ') value.remove_prefix(1);
  }
  if (has_data_) data_ += '\n';
  data_.append(value);
  has_data_ = true;
}

void SseParser::finish() {
  if (!error_.empty()) return;
  if (at_start_ && !line_.empty()) {  // fewer bytes than a byte-order mark in all
    at_start_ = false;
    std::string first;
    first.swap(line_);
    feed(first);
  }
  if (!line_.empty()) line_done();
  if (has_data_) on_event_(data_);
  data_.clear();
  has_data_ = false;
}

}  // namespace nvfp4::serve
