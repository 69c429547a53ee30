// Chat templates (include/nvfp4/chat_template.hpp): each construct of the Jinja subset on a fixed
// conversation (the expected texts are jinja2's, configured as transformers configures it),
// whitespace control, errors that name the source, line and column, raise_exception, the limits on
// hostile templates, tokenizer_config.json, and the API's forms. The byte-for-byte comparison with
// the real jinja2 over whole templates is the ctest ChatTemplate.IdenticalToJinja2
// (tests/hf/check_chat_templates.py).
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "nvfp4/chat_template.hpp"
#include "nvfp4/error.hpp"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using nlohmann::ordered_json;
using nvfp4::io::ChatMessage;
using nvfp4::io::ChatTemplate;
using nvfp4::io::ChatTemplateLimits;

const std::vector<ChatMessage> kMessages = {
    {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "Bye"}};

json extra() {
  return json::parse(R"({"tools": [{"type": "function", "function": {"name": "get_weather",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
      "data": {"n": 3, "tags": ["b", "a", "C"], "name": "\u00fcn\u00ef"}})");
}

std::tm fixed_now() {  // 2024-07-26 10:30:15, as tests/hf/check_chat_templates.py fixes it
  std::tm tm{};
  tm.tm_year = 2024 - 1900;
  tm.tm_mon = 6;
  tm.tm_mday = 26;
  tm.tm_hour = 10;
  tm.tm_min = 30;
  tm.tm_sec = 15;
  return tm;
}

ChatTemplate make(const std::string& text) {
  ChatTemplate t = ChatTemplate::parse(text, "t.jinja");
  t.set_variable("bos_token", "<s>");
  t.set_variable("eos_token", "</s>");
  t.set_now(fixed_now());
  return t;
}

std::string render(const std::string& text, bool add_generation_prompt = true) {
  return make(text).render(kMessages, add_generation_prompt, extra());
}

// The message of the nvfp4::Error `fn` throws ("" when it throws none).
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const nvfp4::Error& e) {
    return e.what();
  }
  return "";
}

struct Case {
  const char* name;
  const char* tpl;
  const char* want;  // jinja2's output (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks)
};

// One construct of the subset per row (docs/tokenizers.md, "Chat templates"); the expected texts
// were rendered by jinja2 3.1 on the conversation, variables and extra above.
const Case kCases[] = {
    {"text passes through",
     R"~(plain text, no tags)~",
     R"~(plain text, no tags)~"},
    {"variables and special tokens",
     R"~({{ bos_token }}{{ messages[1].content }}{{ eos_token }})~",
     R"~(<s>Hi</s>)~"},
    {"attribute and subscript",
     R"~({{ messages[0].role }} {{ messages[0]['content'] }} {{ messages[-1].content }} {{ data.tags.1 }})~",
     R"~(system Be brief. Bye a)~"},
    {"slices",
     R"~({{ data.tags[1:] }} {{ data.tags[::-1] }} {{ 'hello'[1:3] }} {{ data.name[::-1] }})~",
     R"~(['a', 'C'] ['C', 'a', 'b'] el ïnü)~"},
    {"literals",
     R"~({{ 'it\'s' }} {{ "tab\there" }} {{ 0x10 }} {{ 1_000 }} {{ 2.5e3 }} {{ [1, 'a', none, true] }} {{ {'k': (1,)} }})~",
     R"~(it's tab	here 16 1000 2500.0 [1, 'a', None, True] {'k': (1,)})~"},
    {"none and booleans print as Python",
     R"~({{ none }} {{ true }} {{ False }} {{ 1 == 1 }})~",
     R"~(None True False True)~"},
    {"numbers print as Python",
     R"~({{ 7 / 2 }} {{ 7 // 2 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 1e16 }} {{ 0.1 + 0.2 }} {{ 1 / 3 }} {{ 10 / 5 }})~",
     R"~(3.5 3 2 1024 1e+16 0.30000000000000004 0.3333333333333333 2.0)~"},
    {"string operators",
     R"~({{ 'a' + 'b' }} {{ 'ab' * 2 }} {{ 'x' ~ 1 ~ none }} {{ 'b' in 'abc' }} {{ 'z' not in 'abc' }})~",
     R"~(ab abab x1None True True)~"},
    {"comparisons and logic",
     R"~({{ 1 < 2 < 3 }} {{ 'a' == 'a' and 0 }} {{ '' or 'fallback' }} {{ not none }} {{ [1, 2] < [1, 3] }})~",
     R"~(True 0 fallback True True)~"},
    {"conditional expression",
     R"~({{ 'yes' if messages else 'no' }} [{{ 'only' if false }}])~",
     R"~(yes [])~"},
    {"if elif else",
     R"~({% for m in messages %}{% if m.role == 'system' %}S{% elif m.role == 'user' %}U{% else %}A{% endif %}{% endfor %})~",
     R"~(SUAU)~"},
    {"loop variables",
     R"~({% for m in messages %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.length }}{{ loop.first | int }}{{ loop.last | int }} {% endfor %})~",
     R"~(1043410 2132400 3221400 4310401 )~"},
    {"loop previtem nextitem cycle",
     R"~({% for m in messages %}{{ loop.previtem.role if not loop.first }}>{{ m.role[0] }}<{{ loop.nextitem.role if not loop.last }}|{{ loop.cycle('o', 'e') }} {% endfor %})~",
     R"~(>s<user|o system>u<assistant|e user>a<user|o assistant>u<|e )~"},
    {"for with a filter and else",
     R"~({% for m in messages if m.role == 'user' %}{{ m.content }}{{ ',' if not loop.last }}{% endfor %} {% for x in [] %}x{% else %}empty{% endfor %})~",
     R"~(Hi,Bye empty)~"},
    {"for over dict items",
     R"~({% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %} {% for k, v in data | dictsort %}{{ k }} {% endfor %})~",
     R"~(a=1;b=2; n name tags )~"},
    {"break and continue",
     R"~({% for i in range(10) %}{% if i is odd %}{% continue %}{% endif %}{% if i > 6 %}{% break %}{% endif %}{{ i }}{% endfor %})~",
     R"~(0246)~"},
    {"set and loop scope",
     R"~({% set x = 'outer' %}{% for i in range(2) %}{% set x = i %}{{ x }}{% endfor %}{{ x }})~",
     R"~(01outer)~"},
    {"namespace carries values out of loops",
     R"~({% set ns = namespace(n=0, last='') %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% set ns.last = m.role %}{% endfor %}{{ ns.n }} {{ ns.last }})~",
     R"~(4 user)~"},
    {"set block and filter block",
     R"~({% set s %}[{{ messages | length }}]{% endset %}{{ s }} {% filter upper %}shout {{ 'it' }}{% endfilter %})~",
     R"~([4] SHOUT IT)~"},
    {"macro with defaults and keywords",
     R"~({% macro tag(name, body='', close=true) %}<{{ name }}>{{ body }}{% if close %}</{{ name }}>{% endif %}{% endmacro %}{{ tag('b', 'x') }}{{ tag('br', close=false) }})~",
     R"~(<b>x</b><br>)~"},
    {"raw block",
     R"~({% raw %}{{ not rendered }}{% endraw %})~",
     R"~({{ not rendered }})~"},
    {"comments",
     R"~(a{# a comment #}b)~",
     R"~(ab)~"},
    {"trim_blocks drops the newline after a block tag",
     R"~({% if true %}
line
{% endif %}
end)~",
     R"~(line
end)~"},
    {"lstrip_blocks drops indentation before a block tag",
     R"~(x
    {% if true %}y{% endif %}
z)~",
     R"~(x
yz)~"},
    {"lstrip_blocks leaves variables alone",
     R"~(x
    {{ 'y' }}
z)~",
     R"~(x
    y
z)~"},
    {"minus strips whitespace",
     R"~(a  {%- if true -%}  b  {%- endif -%}  c {{- ' d ' -}} e)~",
     R"~(abc d e)~"},
    {"plus keeps indentation and newline",
     R"~(x
    {%+ if true +%}
y
{%+ endif %})~",
     R"~(x
    
y
)~"},
    {"a template's final newline is dropped",
     R"~(one
)~",
     R"~(one)~"},
    {"string filters",
     R"~({{ '  pad  ' | trim }}|{{ 'Ab' | upper }}|{{ 'Ab' | lower }}|{{ 'hello world' | capitalize }}|{{ 'hello world' | title }}|{{ 'a-b' | replace('-', '+') }})~",
     R"~(pad|AB|ab|Hello world|Hello World|a+b)~"},
    {"length and count",
     R"~({{ messages | length }} {{ data.name | length }} {{ data | count }} {{ nothing | length }})~",
     R"~(4 3 3 0)~"},
    {"join first last",
     R"~({{ data.tags | join(', ') }} {{ data.tags | first }} {{ data.tags | last }} {{ messages | map(attribute='role') | join('/') }})~",
     R"~(b, a, C b C system/user/assistant/user)~"},
    {"default",
     R"~({{ nothing | default('dflt') }} {{ none | default('kept none') }} {{ '' | default('empty', true) }} {{ nothing | d('d') }})~",
     R"~(dflt None empty d)~"},
    {"tojson",
     R"~({{ data | tojson }} {{ data.tags | tojson(indent=2) }} {{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }})~",
     R"~({"n": 3, "name": "ünï", "tags": ["b", "a", "C"]} [
  "b",
  "a",
  "C"
] {"a": 2, "b": 1})~"},
    {"string int float",
     R"~({{ 3 | string }}{{ '42' | int + 1 }} {{ '3.5' | float }} {{ 'x' | int }} {{ 2.7 | int }})~",
     R"~(343 3.5 0 2)~"},
    {"list items reverse sort unique",
     R"~({{ 'ab' | list }} {{ data | items | list | length }} {{ data.tags | reverse | list }} {{ data.tags | sort }} {{ ['a', 'A', 'b'] | unique | list }})~",
     R"~(['a', 'b'] 3 ['C', 'a', 'b'] ['a', 'b', 'C'] ['a', 'b'])~"},
    {"selectattr rejectattr map",
     R"~({{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') | list }} {{ messages | rejectattr('role', 'eq', 'user') | list | length }} {{ tools | map(attribute='function.name') | first }})~",
     R"~(['Hi', 'Bye'] 2 get_weather)~"},
    {"select reject",
     R"~({{ [1, 2, 3, 4] | select('even') | list }} {{ [0, 1, ''] | reject | list }})~",
     R"~([2, 4] [0, ''])~"},
    {"safe indent abs round dictsort",
     R"~({{ '<b>' | safe }}|{{ 'a\nb' | indent(2) }}|{{ -3 | abs }}|{{ 2.5 | round }}|{{ 3.14159 | round(2) }}|{{ {'b': 1, 'a': 2} | dictsort }})~",
     R"~(<b>|a
  b|3|2.0|3.14|[('a', 2), ('b', 1)])~"},
    {"tests",
     R"~({{ x is defined }} {{ x is undefined }} {{ none is none }} {{ 'a' is string }} {{ 1 is number }} {{ 1 is integer }} {{ data is mapping }} {{ data.tags is iterable }} {{ data.tags is sequence }} {{ true is true }} {{ false is false }} {{ true is boolean }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 'a' is equalto 'a' }} {{ 'a' is eq 'b' }})~",
     R"~(False True True True True True True True True True True True True True True True False)~"},
    {"string methods",
     R"~({{ '  x  '.strip() }}|{{ 'xx'.lstrip('x') }}|{{ 'a b'.split() }}|{{ 'a,b'.split(',') }}|{{ 'abc'.startswith('ab') }}|{{ 'abc'.endswith('bc') }}|{{ 'Ab'.upper() }}{{ 'Ab'.lower() }}|{{ 'a-b'.replace('-', '') }}|{{ 'hi there'.title() }})~",
     R"~(x||['a', 'b']|['a', 'b']|True|True|ABab|ab|Hi There)~"},
    {"dict methods",
     R"~({{ data.get('n') }} {{ data.get('missing', 'fallback') }} {{ data.get('missing') }} {{ data.keys() | list }} {{ {'a': 1}.values() | list }} {{ {'a': 1}.items() | list }})~",
     R"~(3 fallback None ['n', 'name', 'tags'] [1] [('a', 1)])~"},
    {"globals",
     R"~({{ range(3) | list }} {{ range(1, 7, 2) | list }} {{ namespace(a=1).a }} {{ dict(k='v') }})~",
     R"~([0, 1, 2] [1, 3, 5] 1 {'k': 'v'})~"},
    {"undefined prints empty and is falsy",
     R"~([{{ nothing }}] [{{ 'yes' if nothing else 'no' }}] [{{ nothing ~ 'x' }}] [{% for x in nothing %}x{% endfor %}])~",
     R"~([] [no] [x] [])~"},
    {"unicode content",
     R"~({{ data.name | upper if false else data.name }} {{ '🚀' | length }} {{ '日本' ~ '語' }})~",
     R"~(ünï 1 日本語)~"},
    {"template-looking content is data",
     R"~({{ '{{ x }} {% if %}' }})~",
     R"~({{ x }} {% if %})~"},
    {"generation block renders its body",
     R"~({% for m in messages if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}{% endfor %})~",
     R"~(Hello!)~"},
    {"with block",
     R"~({% with a = 1, b = 2 %}{{ a + b }}{% endwith %})~",
     R"~(3)~"},
    {"strftime_now uses the fixed clock",
     R"~({{ strftime_now('%Y-%m-%d %H:%M:%S %a %b %j') }})~",
     R"~(2024-07-26 10:30:15 Fri Jul 208)~"},

};

TEST(ChatTemplate, EachConstructRendersAsJinja2Does) {
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    std::string got;
    EXPECT_NO_THROW(got = render(c.tpl)) << error_of([&] { render(c.tpl); });
    EXPECT_EQ(got, c.want);
  }
}

TEST(ChatTemplate, AddGenerationPromptAndTheMessagesReachTheTemplate) {
  const std::string t =
      "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}";
  EXPECT_EQ(render(t, true), "<system>Be brief.<user>Hi<assistant>Hello!<user>Bye<assistant>");
  EXPECT_EQ(render(t, false), "<system>Be brief.<user>Hi<assistant>Hello!<user>Bye");
  EXPECT_EQ(make(t).render({}, false), "");
}

// ---- errors ----------------------------------------------------------------------------------------

struct ErrorCase {
  const char* tpl;
  const char* want;  // the start of the message: source, line, column, then what
};

void expect_errors(const std::vector<ErrorCase>& cases, bool at_parse) {
  for (const ErrorCase& c : cases) {
    SCOPED_TRACE(c.tpl);
    const std::string msg = error_of([&] {
      const ChatTemplate t = ChatTemplate::parse(c.tpl, "t.jinja");
      if (!at_parse) t.render(kMessages, true);
    });
    EXPECT_EQ(msg.substr(0, std::string(c.want).size()), c.want) << msg;
  }
}

TEST(ChatTemplate, SyntaxErrorsNameTheSourceLineAndColumn) {
  expect_errors({
      {"{% if true %}open", "t.jinja:1:18: expected {% elif %} or {% else %} or {% endif %}, got the end of the template"},
      {"line one\n  {{ }}", "t.jinja:2:6: expected an expression, got '}}'"},
      {"{% frobnicate %}", "t.jinja:1:4: unknown tag 'frobnicate'"},
      {"ab\ncd {{ (1 + 2 }}", "t.jinja:2:14: unexpected '}', expected ')'"},
      {"{% set 1 = 2 %}", "t.jinja:1:8: can't assign to this expression"},
      {"{% break %}", "t.jinja:1:4: 'break' outside a for loop"},
      {"x\n{# open comment", "t.jinja:2:1: missing end of comment tag"},
      {"{{ 'open string }}", "t.jinja:1:4: unexpected character '''"},
      {"{{ 1 is odd is even }}", "t.jinja:1:13: you cannot chain multiple tests with 'is'"},
      {"{{ x | no_such_filter }}", "t.jinja:1:8: no filter named 'no_such_filter'"},
      {"{{ x is no_such_test }}", "t.jinja:1:9: no test named 'no_such_test'"},
      {"{% raw %}never closed", "t.jinja:1:1: missing end of raw directive"},
      {"\xc3\xbc\n\xff", "t.jinja:2:1: the template is not valid UTF-8"},
      {"{{ 99999999999999999999 }}", "t.jinja:1:4: unsupported: the integer literal"},
      {"\xe6\x97\xa5\xe6\x9c\xac {{ x y }}", "t.jinja:1:9: expected '}}', got 'y'"},
  }, true);
}

TEST(ChatTemplate, UnsupportedConstructsFailAtParseTimeNamingThem) {
  expect_errors({
      {"{% include 'x.jinja' %}", "t.jinja:1:4: unsupported: the 'include' tag"},
      {"{% import 'm.jinja' as m %}", "t.jinja:1:4: unsupported: the 'import' tag"},
      {"a\n{% extends 'base' %}", "t.jinja:2:4: unsupported: the 'extends' tag"},
      {"{% block b %}{% endblock %}", "t.jinja:1:4: unsupported: the 'block' tag"},
      {"{% call m() %}x{% endcall %}", "t.jinja:1:4: unsupported: the 'call' tag"},
      {"{% for x in y recursive %}{% endfor %}", "t.jinja:1:15: unsupported: recursive for loops"},
      {"{{ f(*args) }}", "t.jinja:1:6: unsupported: *args and **kwargs"},
      {"{{ x | groupby('a') }}", "t.jinja:1:8: unsupported: the filter 'groupby'"},
      {"{% if false %}{{ x | wordwrap(9) }}{% endif %}", "t.jinja:1:22: unsupported: the filter 'wordwrap'"},
      {"{{ xs | map('center') | list }}", "t.jinja:1:13: unsupported: the filter 'center'"},
      {"{{ cycler('a') }}", "t.jinja:1:4: unsupported: the global 'cycler'"},
      {"{% macro m() %}{{ caller() }}{% endmacro %}", "t.jinja:1:4: unsupported: 'caller'"},
      {"{{ '\\N{BULLET}' }}", "t.jinja:1:4: unsupported: \\N{...} escapes"},
      {"{{ caf\xc3\xa9 }}", "t.jinja:1:7: unsupported: a non-ASCII character in a name"},
      {"{{ '%s: %d' % ('a', 1) }}", "t.jinja:1:13: unsupported: printf-style string formatting"},
      {"{{ 'Hi {}'.format(x) }}", "t.jinja:1:11: unsupported: the str method 'format'"},
  }, true);
}

TEST(ChatTemplate, RuntimeErrorsNameTheTemplateAndPosition) {
  expect_errors({
      {"{{ nothing.attr }}", "t.jinja:1:11: 'nothing' is undefined"},
      {"{{ nothing['k'] }}", "t.jinja:1:11: 'nothing' is undefined"},
      {"{{ nothing + 1 }}", "t.jinja:1:12: 'nothing' is undefined"},
      {"{{ nothing() }}", "t.jinja:1:4: 'nothing' is undefined"},
      {"x\n{{ 'a' + 1 }}", "t.jinja:2:8: unsupported operand type(s) for +: 'str' and 'int'"},
      {"{{ messages + 'a' }}", "t.jinja:1:13: unsupported operand type(s) for +: 'list' and 'str'"},
      {"{{ 1 / 0 }}", "t.jinja:1:6: division by zero"},
      {"{{ 'a' < 1 }}", "t.jinja:1:4: '<' not supported between instances of 'str' and 'int'"},
      {"{% if true %}{{ x | no_such_filter }}{% endif %}", "t.jinja:1:21: no filter named 'no_such_filter'"},
      {"{{ nothing | tojson }}", "t.jinja:1:14: Object of type Undefined is not JSON serializable"},
      {"{% set d = {} %}{% set d.a = 1 %}", "t.jinja:1:24: cannot assign attribute on non-namespace object"},
      {"{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}", "t.jinja:1:34: macro 'm' takes not more than 1 argument(s)"},
      {"{% for a, b in [[1, 2, 3]] %}{% endfor %}", "t.jinja:1:8: too many values to unpack (expected 2)"},
      {"{{ range(1000000) }}", "t.jinja:1:4: Range too big"},
      {"{{ 'Gr\xc3\xbc\xc3\x9f""e' | upper }}", "t.jinja:1:14: unsupported: upper of text with non-ASCII letters"},
      {"{{ (messages | map(attribute='role')) }}", "t.jinja:1:16: a generator"},
      {"{{ 9223372036854775807 + 1 }}", "t.jinja:1:24: integer overflow"},
  }, false);
}

TEST(ChatTemplate, RaiseExceptionGivesTheMessageVerbatim) {
  const ChatTemplate t = ChatTemplate::parse(
      "{% for m in messages %}\n"
      "  {% if (m.role == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Roles must alternate: ' ~ m.role ~ "
      "' at ' ~ loop.index0 ~ ' \xf0\x9f\x9a\xab') }}{% endif %}\n"
      "{% endfor %}",
      "alt.jinja");
  const std::vector<ChatMessage> twice = {{"user", "u"}, {"assistant", "a"}, {"assistant", "again"}};
  try {
    t.render(twice, true);
    FAIL() << "no exception";
  } catch (const nvfp4::io::ChatTemplateRaised& e) {
    EXPECT_EQ(e.raised(), "Roles must alternate: assistant at 2 \xf0\x9f\x9a\xab");
    EXPECT_EQ(std::string(e.what()), "alt.jinja:2:59: raise_exception: Roles must alternate: assistant at 2 \xf0\x9f\x9a\xab");
  }
  const std::vector<ChatMessage> alternating = {{"user", "u"}, {"assistant", "a"}, {"user", "u"}};
  EXPECT_EQ(t.render(alternating, true), "");
}

TEST(ChatTemplate, UndefinedIsJinja2sDefaultUndefined) {
  // Printing, testing, iterating, defaulting and concatenating an undefined value work; using its
  // attributes or items, arithmetic on it, or calling it fail (jinja2's UndefinedError).
  EXPECT_EQ(render("[{{ x }}][{{ x is defined }}][{{ x | length }}][{{ x | default(1) }}][{{ x ~ 'y' }}][{{ x is sequence }}]"),
            "[][False][0][1][y][True]");
  EXPECT_EQ(render("[{{ data.missing }}][{{ data['missing'] }}][{{ data.missing is defined }}][{{ none.attr }}]"), "[][][False][]");
  EXPECT_NE(error_of([] { render("{{ data.missing.deeper }}"); }).find("has no attribute 'missing'"), std::string::npos);
}

// ---- hostile templates -----------------------------------------------------------------------------

TEST(ChatTemplate, HostileTemplatesFailWithinTheDefaultLimits) {
  struct Hostile {
    const char* what;
    const char* tpl;
    const char* want;  // a piece of the message
  };
  const Hostile cases[] = {
      {"a billion-long range", "{{ range(10 ** 9) | length }}", "Range too big"},
      {"nested loops", "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}", "loop iterations"},
      {"exponential macros", "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(31) }}", "units of work"},
      {"endless recursion", "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "macro calls nest deeper than 32"},
      {"a doubling string", "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "bytes"},
      {"a huge list", "{{ ([1] * 100000000) | length }}", "items"},
      {"an output bomb", "{% set s = 'x' * 1000000 %}{% for i in range(100) %}{{ s }}{% endfor %}", "bytes"},
      {"deep values", "{% set ns = namespace(l=[]) %}{% for i in range(1000) %}{% set ns.l = [ns.l] %}{% endfor %}", "nests deeper"},
      {"big copies", "{% set s = 'x' * 20000000 %}{% for i in range(100000) %}{% set t = s.strip() %}{% endfor %}", "units of work"},
      {"integer overflow", "{{ 2 ** 64 }}", "integer overflow"},
  };
  for (const Hostile& h : cases) {
    SCOPED_TRACE(h.what);
    const auto start = std::chrono::steady_clock::now();
    const std::string msg = error_of([&] { render(h.tpl); });
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_NE(msg.find(h.want), std::string::npos) << msg;
    EXPECT_LT(seconds, 10.0) << "the default limits stop a template within about a second on a developer machine";
  }
}

TEST(ChatTemplate, LimitsAreSettable) {
  ChatTemplate t = make("{% for i in range(50) %}{{ i }}{% endfor %}");
  ChatTemplateLimits small;
  small.max_iterations = 10;
  t.set_limits(small);
  EXPECT_NE(error_of([&] { t.render(kMessages, true); }).find("more than 10 loop iterations"), std::string::npos);
  t.set_limits(nvfp4::io::kLimits);
  EXPECT_EQ(t.render(kMessages, true).size(), 90u);
}

TEST(ChatTemplate, DeepNestingFailsAtParseTimeNotOnTheStack) {
  const std::string parens = "{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}";
  std::string blocks, nots = "{{ ";
  for (int k = 0; k < 5000; ++k) blocks += "{% if true %}";
  for (int k = 0; k < 5000; ++k) nots += "not ";
  nots += "1 }}";
  for (const std::string& t : {parens, blocks, nots}) {
    EXPECT_NE(error_of([&] { ChatTemplate::parse(t, "t.jinja"); }).find("nests deeper than"), std::string::npos);
  }
}

TEST(ChatTemplate, TheDeepestAcceptedTemplateRendersWithoutExhaustingTheStack) {
  // Expressions nested as deep as the parser allows inside macros recursing as deep as the
  // renderer allows: an error naming the limit, never a crash.
  std::string expr = "n";
  for (int k = 0; k < 19; ++k) expr = "(" + expr + " + 0)";
  const std::string t = "{% macro f(n) %}{% if n < 40 %}{{ f(" + expr + " + 1) }}{% endif %}{% endmacro %}{{ f(0) }}";
  ASSERT_NO_THROW(ChatTemplate::parse(t, "t.jinja"));
  const std::string msg = error_of([&] { render(t); });
  EXPECT_NE(msg.find("deeper than"), std::string::npos) << msg;
}

// ---- tokenizer_config.json ---------------------------------------------------------------------------

class ChatTemplateConfig : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("nvfp4_chat_template_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    const fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << text;
    return p.string();
  }
  fs::path dir_;
};

TEST_F(ChatTemplateConfig, StringTemplateAndSpecialTokens) {
  const std::string path = write("a.json", R"({
    "bos_token": "<s>", "eos_token": {"content": "</s>", "lstrip": false, "special": true},
    "unk_token": null, "pad_token": "", "additional_special_tokens": ["<x>", {"content": "<y>"}],
    "chat_template": "{{ bos_token }}|{{ eos_token }}|{{ unk_token is defined }}|{{ pad_token is defined }}|{{ additional_special_tokens }}"})");
  const std::optional<ChatTemplate> t = ChatTemplate::from_tokenizer_config(path);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->render(kMessages, false), "<s>|</s>|False|False|['<x>', '<y>']");
  EXPECT_EQ(t->source_name(), path + ":chat_template");
}

TEST_F(ChatTemplateConfig, NamedTemplatesTakeTheDefault) {
  const std::string path = write("b.json", R"({"chat_template": [
    {"name": "tool_use", "template": "tools"}, {"name": "default", "template": "default one"}]})");
  EXPECT_EQ(ChatTemplate::from_tokenizer_config(path)->render(kMessages, false), "default one");
}

TEST_F(ChatTemplateConfig, NoTemplateIsNullopt) {
  EXPECT_FALSE(ChatTemplate::from_tokenizer_config(write("c.json", R"({"bos_token": "<s>"})")).has_value());
  EXPECT_FALSE(ChatTemplate::from_tokenizer_config(write("d.json", R"({"chat_template": null})")).has_value());
}

TEST_F(ChatTemplateConfig, ErrorsNameTheFileAndField) {
  const auto starts = [](const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; };
  const std::string e1 = write("e1.json", R"({"chat_template": [{"name": "tool_use", "template": "t"}]})");
  EXPECT_TRUE(starts(error_of([&] { ChatTemplate::from_tokenizer_config(e1); }),
                     e1 + ": chat_template: a list of named templates with none named \"default\""));
  const std::string e2 = write("e2.json", R"({"chat_template": 5})");
  EXPECT_TRUE(starts(error_of([&] { ChatTemplate::from_tokenizer_config(e2); }), e2 + ": chat_template: expected a string"));
  const std::string e3 = write("e3.json", R"({"chat_template": "x", "bos_token": 1})");
  EXPECT_TRUE(starts(error_of([&] { ChatTemplate::from_tokenizer_config(e3); }), e3 + ": bos_token: expected a string or an AddedToken"));
  const std::string e4 = write("e4.json", R"({"chat_template": "{% if %}"})");
  EXPECT_TRUE(starts(error_of([&] { ChatTemplate::from_tokenizer_config(e4); }), e4 + ":chat_template:1:7: expected an expression"));
  const std::string e5 = write("e5.json", "{not json");
  EXPECT_TRUE(starts(error_of([&] { ChatTemplate::from_tokenizer_config(e5); }), e5 + ": not valid JSON"));
  EXPECT_NE(error_of([&] { ChatTemplate::from_tokenizer_config((dir_ / "missing.json").string()); }).find("cannot open"),
            std::string::npos);
}

TEST(ChatTemplate, TheRealTokenizerConfigs) {
  // tokenizer-data/ (bash scripts/tokenizer_reference.sh install): Llama-3's file has a template;
  // Llama-2's and gpt-oss's ship none (gpt-oss keeps its template in chat_template.jinja).
  const fs::path root = fs::path(NVFP4_TESTS_DIR) / ".." / "tokenizer-data";
  if (!fs::exists(root / "llama3" / "tokenizer_config.json")) {
    GTEST_SKIP() << "no " << root << " (bash scripts/tokenizer_reference.sh install writes it)";
  }
  const auto llama3 = ChatTemplate::from_tokenizer_config((root / "llama3" / "tokenizer_config.json").string());
  ASSERT_TRUE(llama3.has_value());
  EXPECT_EQ(llama3->render(std::vector<ChatMessage>{{"user", " Hi "}}, true),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_FALSE(ChatTemplate::from_tokenizer_config((root / "llama2" / "tokenizer_config.json").string()).has_value());
  EXPECT_FALSE(ChatTemplate::from_tokenizer_config((root / "gptoss" / "tokenizer_config.json").string()).has_value());
}

// ---- the API -----------------------------------------------------------------------------------------

TEST(ChatTemplate, RenderFormsAgree) {
  ChatTemplate t = make(
      "{% for m in messages %}{{ m.role }}:{{ m.content }};{% endfor %}{{ tools is none }}{{ documents is none }}{{ extra_var }}");
  ordered_json msgs = ordered_json::array();
  for (const ChatMessage& m : kMessages) msgs.push_back({{"role", m.role}, {"content", m.content}});
  const std::string a = t.render(kMessages, false, json{{"extra_var", 7}});
  EXPECT_EQ(a, t.render_json(msgs, false, ordered_json{{"extra_var", 7}}));
  EXPECT_EQ(a, "system:Be brief.;user:Hi;assistant:Hello!;user:Bye;TrueTrue7");
  EXPECT_EQ(t.render(kMessages, false, json()), t.render(kMessages, false, json::object()));
  EXPECT_NE(error_of([&] { t.render(kMessages, false, json{{"messages", 1}}); }).find("cannot set 'messages'"), std::string::npos);
  EXPECT_NE(error_of([&] { t.render_json(ordered_json::object(), false); }).find("messages must be a JSON list"), std::string::npos);
}

TEST(ChatTemplate, ExtraOverridesVariablesAndOrderedJsonKeepsKeyOrder) {
  const ChatTemplate t = make("{{ bos_token }} {{ tools | tojson }}");
  EXPECT_EQ(t.render_json(ordered_json::array(), false, ordered_json::parse(R"({"bos_token": "B", "tools": [{"z": 1, "a": 2}]})")),
            R"(B [{"z": 1, "a": 2}])");
  // nlohmann::json sorts keys; ordered_json keeps the request's order, as Python's dict does.
  EXPECT_EQ(t.render({}, false, json::parse(R"({"tools": [{"z": 1, "a": 2}]})")), R"(<s> [{"a": 2, "z": 1}])");
}

TEST(ChatTemplate, SetNowFixesStrftimeNow) {
  ChatTemplate t = ChatTemplate::parse("{{ strftime_now('%d %b %Y %A %j %f %%') }}", "t");
  std::tm tm = fixed_now();
  tm.tm_mday = 31 + 26;  // normalised: July 57th is August 26th
  t.set_now(tm);
  EXPECT_EQ(t.render({}, false), "26 Aug 2024 Monday 239 000000 %");
  t.clear_now();
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char year[8];
  std::strftime(year, sizeof(year), "%Y", &local);
  EXPECT_NE(t.render({}, false).find(year), std::string::npos);
}

TEST(ChatTemplate, InvalidUtf8InMessagesIsAnError) {
  const ChatTemplate t = make("{{ messages[0].content }}");
  EXPECT_NE(error_of([&] { t.render(std::vector<ChatMessage>{{"user", "ok \xC3"}}, false); }).find("not valid UTF-8"),
            std::string::npos);
  EXPECT_NE(error_of([&] { t.render({}, false, json{{"x", "bad \xff"}}); }).find("t.jinja: render:"), std::string::npos);
}

TEST(ChatTemplate, CopiesShareTheTemplateAndRenderConcurrently) {
  const ChatTemplate t = make("{% for m in messages %}{{ m.content | upper }}{% endfor %}{{ strftime_now('%Y') }}");
  const ChatTemplate copy = t;
  std::vector<std::thread> threads;
  std::vector<std::string> got(8);
  for (size_t k = 0; k < got.size(); ++k) {
    threads.emplace_back([&, k] {
      for (int i = 0; i < 50; ++i) got[k] = (k % 2 ? copy : t).render(kMessages, false);
    });
  }
  for (std::thread& th : threads) th.join();
  for (const std::string& g : got) EXPECT_EQ(g, "BE BRIEF.HIHELLO!BYE2024");
}

}  // namespace
