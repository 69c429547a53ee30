// Server-sent events (the text/event-stream format of the HTML standard, what OpenAI-compatible
// servers stream completions in), read incrementally from bytes as they arrive: a network read
// may end anywhere, in the middle of a line or between the '\r' and '\n' of a line break.
//
// What it keeps: the data of each event (its "data:" lines joined by '\n'). What it drops:
// comment lines (starting with ':'), the event, id and retry fields, events without data, a
// leading byte-order mark. Lines end in "\n", "\r\n" or "\r". Unlike the standard, an event still
// open when the stream ends is delivered by finish() (a server that omits the last blank line
// after "data: [DONE]" is tolerated).
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace nvfp4::serve {

class SseParser {
 public:
  // on_event receives each event's data.
  explicit SseParser(std::function<void(const std::string& data)> on_event) : on_event_(std::move(on_event)) {}

  // The next bytes of the stream. False (and error() says why) when a line grows past
  // kMaxLineBytes; the parser is then unusable.
  bool feed(std::string_view bytes);
  // The stream ended: delivers an event whose blank line never came.
  void finish();

  const std::string& error() const { return error_; }

  static constexpr size_t kMaxLineBytes = 8u << 20;

 private:
  void line_done();

  std::function<void(const std::string&)> on_event_;
  std::string line_;        // the current line, without its ending
  std::string data_;        // the current event's data
  bool has_data_ = false;   // a data field was seen (its value may be empty)
  bool after_cr_ = false;   // the last byte was '\r': a '\n' next belongs to the same line break
  bool at_start_ = true;    // nothing read yet (a byte-order mark may come)
  std::string error_;
};

}  // namespace nvfp4::serve
