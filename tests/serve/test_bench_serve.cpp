// nvfp4 bench-serve: the event-stream parser (src/serve/sse.hpp) on awkwardly split input.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "serve/sse.hpp"

namespace nvfp4::test {
namespace {

using serve::SseParser;

// ---- the event-stream parser -------------------------------------------------------------------

std::vector<std::string> parse_in_pieces(const std::string& stream, const std::vector<size_t>& cuts) {
  std::vector<std::string> events;
  SseParser p([&](const std::string& d) { events.push_back(d); });
  size_t at = 0;
  for (size_t cut : cuts) {
    EXPECT_TRUE(p.feed(std::string_view(stream).substr(at, cut - at)));
    at = cut;
  }
  EXPECT_TRUE(p.feed(std::string_view(stream).substr(at)));
  p.finish();
  return events;
}

// A stream with every feature the parser handles: a byte-order mark, comments, "\r\n", "\r" and
// "\n" line endings, fields other than data, a data line without its space, an empty data value,
// an event of two data lines and one without data.
const std::string kStream =
    "\xEF\xBB\xBF: keep-alive comment\r\n\r\n"
    "data: {\"a\":1}\r\n\r\n"
    "event: message\nid: 7\nretry: 100\ndata:{\"b\":2}\n\n"
    "data: line one\rdata: line two\r\r"
    "id: 8\n\n"
    "data:\n\n"
    "data: [DONE]\n\n";
const std::vector<std::string> kEvents = {"{\"a\":1}", "{\"b\":2}", "line one\nline two", "", "[DONE]"};

TEST(Sse, WholeStream) { EXPECT_EQ(parse_in_pieces(kStream, {}), kEvents); }

TEST(Sse, EverySplitIntoTwoAndThreePieces) {
  for (size_t i = 0; i <= kStream.size(); ++i) {
    ASSERT_EQ(parse_in_pieces(kStream, {i}), kEvents) << "split at " << i;
    for (size_t j = i; j <= kStream.size(); j += 3) {
      ASSERT_EQ(parse_in_pieces(kStream, {i, j}), kEvents) << "split at " << i << ", " << j;
    }
  }
}

TEST(Sse, OneByteAtATime) {
  std::vector<size_t> cuts;
  for (size_t i = 1; i < kStream.size(); ++i) cuts.push_back(i);
  EXPECT_EQ(parse_in_pieces(kStream, cuts), kEvents);
}

TEST(Sse, CrLfSplitBetweenReadsIsOneLineBreak) {
  // "\r" ends one read and "\n" starts the next: one line break, not a line break and a blank line
  // (which would end the event early and split its two data lines into two events).
  std::vector<std::string> events;
  SseParser p([&](const std::string& d) { events.push_back(d); });
  EXPECT_TRUE(p.feed("data: x\r"));
  EXPECT_TRUE(p.feed("\ndata: y\r"));
  EXPECT_TRUE(p.feed("\n\r"));
  EXPECT_TRUE(p.feed("\n"));
  EXPECT_EQ(events, std::vector<std::string>{"x\ny"});
}

TEST(Sse, FinishDeliversAnEventWithoutItsBlankLine) {
  EXPECT_EQ(parse_in_pieces("data: a\n\ndata: [DONE]", {}), (std::vector<std::string>{"a", "[DONE]"}));
  EXPECT_EQ(parse_in_pieces("data: a\n\ndata: [DONE]\n", {}), (std::vector<std::string>{"a", "[DONE]"}));
  EXPECT_EQ(parse_in_pieces(": only a comment", {}), std::vector<std::string>{});
  EXPECT_EQ(parse_in_pieces("\xEF\xBB", {}), std::vector<std::string>{});  // a lone partial BOM: no event
}

TEST(Sse, AnOverlongLineIsAnError) {
  SseParser p([](const std::string&) {});
  const std::string chunk(1 << 20, 'x');
  bool ok = p.feed("data: ");
  for (size_t i = 0; ok && i <= SseParser::kMaxLineBytes / chunk.size(); ++i) ok = p.feed(chunk);
  EXPECT_FALSE(ok);
  EXPECT_NE(p.error().find("longer than"), std::string::npos) << p.error();
}

}  // namespace
}  // namespace nvfp4::test
