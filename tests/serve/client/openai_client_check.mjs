// The official OpenAI Node client against a running `nvfp4 serve` (scripts/serve_check.sh starts
// it on loopback): models, completions and chat completions, streamed and not, the usage counts,
// errors as the client's typed exceptions, and 64 concurrent streaming clients.
//
//   node openai_client_check.mjs BASE_URL API_KEY
//
// Prints one line per check and "N passed, M failed" last; exits 1 when any check failed.
import OpenAI from "openai";

const [baseURL, apiKey] = process.argv.slice(2);
if (!baseURL || !apiKey) {
  console.error("usage: node openai_client_check.mjs BASE_URL API_KEY");
  process.exit(2);
}
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 120_000 });
let passed = 0;
let failed = 0;

async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok   ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
  }
}

function assert(cond, what) {
  if (!cond) throw new Error(what);
}

let model = "";
await check("models.list names the served model", async () => {
  const list = await client.models.list();
  const ids = [];
  for await (const m of list) ids.push(m.id);
  assert(ids.length === 1, `expected one model, got ${JSON.stringify(ids)}`);
  model = ids[0];
  const one = await client.models.retrieve(model);
  assert(one.id === model, "models.retrieve");
});

let plain = "";
await check("completions.create (greedy) returns text and usage", async () => {
  const r = await client.completions.create({ model, prompt: "Hello", max_tokens: 10, temperature: 0 });
  assert(r.object === "text_completion", `object ${r.object}`);
  assert(r.choices.length === 1, "one choice");
  assert(["stop", "length"].includes(r.choices[0].finish_reason), `finish_reason ${r.choices[0].finish_reason}`);
  assert(r.usage.completion_tokens >= 1 && r.usage.completion_tokens <= 10, `completion_tokens ${r.usage.completion_tokens}`);
  assert(r.usage.total_tokens === r.usage.prompt_tokens + r.usage.completion_tokens, "total_tokens");
  plain = r.choices[0].text;
});

await check("completions.create streamed gives the same text, then usage", async () => {
  const stream = await client.completions.create({
    model, prompt: "Hello", max_tokens: 10, temperature: 0, stream: true, stream_options: { include_usage: true },
  });
  let text = "";
  let finish = null;
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += c.text;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert(text === plain, `streamed ${JSON.stringify(text)} != ${JSON.stringify(plain)}`);
  assert(finish !== null, "a finish_reason");
  assert(usage && usage.completion_tokens >= 1, "usage chunk");
});

let chatText = "";
await check("chat.completions.create renders the chat template and answers", async () => {
  const r = await client.chat.completions.create({
    model, max_tokens: 12, temperature: 0,
    messages: [{ role: "system", content: "Be brief." }, { role: "user", content: "Hi there" }],
  });
  assert(r.object === "chat.completion", `object ${r.object}`);
  assert(r.choices[0].message.role === "assistant", "assistant role");
  assert(typeof r.choices[0].message.content === "string", "content");
  assert(r.usage.prompt_tokens > 10, `the template adds tokens: ${r.usage.prompt_tokens}`);
  chatText = r.choices[0].message.content;
});

await check("chat.completions.create streamed: role first, then the same content", async () => {
  const stream = await client.chat.completions.create({
    model, max_tokens: 12, temperature: 0, stream: true,
    messages: [{ role: "system", content: "Be brief." }, { role: "user", content: "Hi there" }],
  });
  let text = "";
  let first = true;
  for await (const chunk of stream) {
    const d = chunk.choices[0]?.delta ?? {};
    if (first) assert(d.role === "assistant", "the first delta carries the role");
    first = false;
    if (d.content) text += d.content;
  }
  assert(text === chatText, `streamed ${JSON.stringify(text)} != ${JSON.stringify(chatText)}`);
});

await check("a seed makes sampling repeat itself", async () => {
  const ask = () => client.completions.create({ model, prompt: "x", max_tokens: 16, temperature: 1, seed: 42 });
  const [a, b] = await Promise.all([ask(), ask()]);
  assert(a.choices[0].text === b.choices[0].text, "same seed, same text");
});

await check("bad requests raise BadRequestError (400) naming the field", async () => {
  try {
    await client.completions.create({ model, prompt: "x", max_tokens: 5, temperature: 7 });
    throw new Error("accepted temperature 7");
  } catch (e) {
    assert(e instanceof OpenAI.BadRequestError, `got ${e && e.constructor && e.constructor.name}: ${e}`);
    assert(e.status === 400, `status ${e.status}`);
    assert(e.param === "temperature" || (e.error && e.error.param === "temperature"), `param ${JSON.stringify(e.error)}`);
  }
});

await check("an unknown model raises NotFoundError (404)", async () => {
  try {
    await client.completions.create({ model: "no-such-model", prompt: "x", max_tokens: 2 });
    throw new Error("accepted an unknown model");
  } catch (e) {
    assert(e instanceof OpenAI.NotFoundError, `got ${e}`);
  }
});

await check("a wrong API key raises AuthenticationError (401)", async () => {
  const wrong = new OpenAI({ baseURL, apiKey: apiKey + "-wrong", maxRetries: 0 });
  try {
    await wrong.models.list();
    throw new Error("accepted a wrong key");
  } catch (e) {
    assert(e instanceof OpenAI.AuthenticationError, `got ${e}`);
  }
});

await check("64 concurrent streaming chat clients all complete", async () => {
  const one = async (i) => {
    const stream = await client.chat.completions.create({
      model, max_tokens: 8, temperature: 0.7, seed: i, stream: true,
      messages: [{ role: "user", content: `client ${i}` }],
    });
    let chunks = 0;
    let finish = null;
    for await (const chunk of stream) {
      chunks++;
      if (chunk.choices[0]?.finish_reason) finish = chunk.choices[0].finish_reason;
    }
    assert(finish !== null && chunks >= 2, `client ${i}: ${chunks} chunks, finish ${finish}`);
  };
  await Promise.all(Array.from({ length: 64 }, (_, i) => one(i)));
});

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
