#!/usr/bin/env node
// Reference BPE trainer: Hugging Face `tokenizers` (the Node binding, pinned in package.json)
// training on a text file with the pipeline of a given tokenizer.json, so that
// scripts/tokenizer_train_check.sh can set its merges beside `nvfp4 tokenizer train`'s.
//
//   node train.mjs TOKENIZER_JSON TEXT_FILE OUT_JSON
//
// TOKENIZER_JSON supplies the normalizer, pre-tokenizer, post-processor and decoder (e.g. a file
// `nvfp4 tokenizer train` wrote); its vocabulary, merges and added tokens are dropped. The
// binding exposes only Tokenizer.train(files), which uses the model's default trainer: BPE with
// vocab_size 30000, min_frequency 0, no special tokens, and an alphabet of the characters seen
// (not all 256 byte-level ones). It reads TEXT_FILE line by line (each line with its "\n"), so a
// word never spans two lines; our trainer reads whole texts — give it text where that makes no
// difference (valid UTF-8 without blank or white-space-only lines, see the check script).
// The trained tokenizer is saved to OUT_JSON. Errors go to stderr, exit status 1.
import { readFileSync } from 'node:fs'

function fail(message) {
  process.stderr.write(`train.mjs: ${message}\n`)
  process.exit(1)
}

const args = process.argv.slice(2)
if (args.length !== 3) fail('usage: node train.mjs TOKENIZER_JSON TEXT_FILE OUT_JSON')
const [configPath, textPath, outPath] = args

let Tokenizer
try {
  ;({ Tokenizer } = await import('tokenizers'))
} catch (e) {
  fail(`cannot load the tokenizers binding (${e.message}); run scripts/tokenizer_reference.sh install`)
}

let config
try {
  config = JSON.parse(readFileSync(configPath, 'utf8'))
} catch (e) {
  fail(`${configPath}: ${e.message}`)
}
if (!config.model || config.model.type !== 'BPE') fail(`${configPath}: model.type is not "BPE"`)
config.added_tokens = []
config.model.vocab = {}
config.model.merges = []

try {
  const tokenizer = Tokenizer.fromString(JSON.stringify(config))
  tokenizer.train([textPath])
  tokenizer.save(outPath, false)
} catch (e) {
  fail(`training on ${textPath} failed: ${e.message}`)
}
