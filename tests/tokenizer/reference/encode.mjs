#!/usr/bin/env node
// Reference tokenizer CLI: Hugging Face `tokenizers` (the Node binding of the Rust library,
// pinned in package.json) behind the same contract as `nvfp4 tokenize`, so that
// scripts/tokenizer_compare.sh can diff the two line by line. It is the oracle, not a tool:
// no truncation, no padding, no batching options, no chat templates.
//
//   node encode.mjs TOKENIZER_JSON FILE [--jsonl] [--decode] [--add-special] [--bench]
//
//   --jsonl            one JSON array of ids per line of FILE, compact ("[9906,1917]"; "[]" for
//                      an empty line). Lines are split on "\n" only: a "\r" stays part of its
//                      line, and the file's final "\n" does not start an extra empty line (an
//                      empty file has no lines).
//   --jsonl --decode   FILE holds such arrays, one per line; print each one's decoded text
//                      (special tokens kept, i.e. skip_special_tokens = false) on its own line.
//                      The text is printed as is: ids that decode to "\n" break the
//                      one-line-per-array shape (the compare script decodes only ids of lines,
//                      which hold no "\n").
//   (no --jsonl)       encode the whole FILE as one text; print
//                      {"tokens": N, "bytes": B, "seconds": S}, B being FILE's size in bytes.
//   --add-special      let the tokenizer's post-processor add its special tokens (e.g. <s> for
//                      the Llama-2-style file). Without it, none are added.
//   --bench            (whole-file only) one warm-up encode, then 3 timed ones; "seconds" is the
//                      median and "mb_per_s" is bytes / 1e6 / seconds. Single-threaded: one
//                      text is encoded on one thread, and TOKENIZERS_PARALLELISM=false keeps the
//                      library from fanning out. The Rust BPE keeps a word cache, which the
//                      warm-up fills: the timed runs are warm-cache numbers.
//
// Text convention (our side must do the same before encoding): FILE is read as bytes and each
// line (or the whole file) is decoded as UTF-8 the way the WHATWG TextDecoder does with
// fatal: false: every maximal ill-formed subsequence becomes one U+FFFD (Unicode's "substitution
// of maximal subparts", also what Rust's String::from_utf8_lossy does), e.g. FF -> 1 x U+FFFD,
// E2 82 (truncated) -> 1, C0 80 (overlong) -> 2, ED A0 80 (surrogate) -> 3. A byte-order mark is
// kept as the character U+FEFF (ignoreBOM: true), and NUL is an ordinary character.
//
// Errors go to stderr, exit status 1.
import { readFileSync } from 'node:fs'

const usage = 'usage: node encode.mjs TOKENIZER_JSON FILE [--jsonl] [--decode] [--add-special] [--bench]'

function fail(message) {
  process.stderr.write(`encode.mjs: ${message}\n`)
  process.exit(1)
}

// Set before the library's first encode: the Rust side reads it when it decides whether to
// use its thread pool.
process.env.TOKENIZERS_PARALLELISM = 'false'

const flags = { '--jsonl': false, '--decode': false, '--add-special': false, '--bench': false }
const positional = []
for (const arg of process.argv.slice(2)) {
  if (arg in flags) flags[arg] = true
  else if (arg.startsWith('--')) fail(`unknown option ${arg}\n${usage}`)
  else positional.push(arg)
}
if (positional.length !== 2) fail(usage)
const [tokenizerPath, inputPath] = positional
if (flags['--decode'] && !flags['--jsonl']) fail('--decode needs --jsonl (it reads one id array per line)')
if (flags['--bench'] && flags['--jsonl']) fail('--bench times the whole-file encode; drop --jsonl')
if (flags['--decode'] && flags['--add-special']) fail('--add-special applies to encoding, not to --decode')

let Tokenizer
try {
  ;({ Tokenizer } = await import('tokenizers'))
} catch (e) {
  fail(`cannot load the tokenizers binding (${e.message}); run scripts/tokenizer_reference.sh install`)
}

let tokenizer
try {
  tokenizer = Tokenizer.fromFile(tokenizerPath)
} catch (e) {
  fail(`${tokenizerPath}: cannot load as a tokenizer.json (${e.message})`)
}
// Raw ids only, whatever the file configures.
tokenizer.disableTruncation()
tokenizer.disablePadding()

let bytes
try {
  bytes = readFileSync(inputPath)
} catch (e) {
  fail(`${inputPath}: ${e.message}`)
}

const utf8 = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true })
const encodeOptions = { addSpecialTokens: flags['--add-special'] }
const BATCH = 512 // lines per encodeBatch/decodeBatch call; sequential, see TOKENIZERS_PARALLELISM

// FILE's lines as byte ranges: split on "\n", no extra line after a final "\n".
function splitLines(buf) {
  const lines = []
  let start = 0
  while (start < buf.length) {
    let end = buf.indexOf(0x0a, start)
    if (end < 0) end = buf.length
    lines.push(buf.subarray(start, end))
    start = end + 1
  }
  return lines
}

function write(text) {
  process.stdout.write(text)
}

if (flags['--jsonl'] && !flags['--decode']) {
  const lines = splitLines(bytes)
  for (let i = 0; i < lines.length; i += BATCH) {
    const texts = lines.slice(i, i + BATCH).map((l) => utf8.decode(l))
    const encodings = await tokenizer.encodeBatch(texts, encodeOptions)
    write(encodings.map((e) => JSON.stringify(e.getIds()) + '\n').join(''))
  }
} else if (flags['--decode']) {
  const lines = splitLines(bytes)
  const vocabSize = tokenizer.getVocabSize(true)
  for (let i = 0; i < lines.length; i += BATCH) {
    const idLists = lines.slice(i, i + BATCH).map((l, k) => {
      const lineNo = i + k + 1
      let ids
      try {
        ids = JSON.parse(utf8.decode(l))
      } catch (e) {
        fail(`${inputPath}:${lineNo}: not a JSON array of ids (${e.message})`)
      }
      if (!Array.isArray(ids) || !ids.every((id) => Number.isInteger(id) && id >= 0 && id < vocabSize))
        fail(`${inputPath}:${lineNo}: expected a JSON array of integer ids in [0, ${vocabSize})`)
      return ids
    })
    const texts = await tokenizer.decodeBatch(idLists, false)
    write(texts.map((t) => t + '\n').join(''))
  }
} else {
  const text = utf8.decode(bytes)
  const timeEncode = async () => {
    const t0 = process.hrtime.bigint()
    const encoding = await tokenizer.encode(text, null, encodeOptions)
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9
    return { tokens: encoding.getLength(), seconds }
  }
  let result = await timeEncode()
  if (flags['--bench']) {
    const runs = []
    for (let r = 0; r < 3; r++) runs.push(await timeEncode())
    if (runs.some((r) => r.tokens !== result.tokens)) fail('token count changed between runs')
    runs.sort((a, b) => a.seconds - b.seconds)
    result = runs[1]
  }
  const out = { tokens: result.tokens, bytes: bytes.length, seconds: Number(result.seconds.toFixed(6)) }
  if (flags['--bench']) out.mb_per_s = Number((bytes.length / 1e6 / result.seconds).toFixed(3))
  write(JSON.stringify(out) + '\n')
}
