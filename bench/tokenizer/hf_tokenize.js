// Reference tokenizer for cross-checks: reads JSON lines {"text": ...} (or {"ids": [...]}) on stdin
// and prints {"ids": [...], "text": decode(ids, skip_special_tokens=true)} per line, using Hugging
// Face `tokenizers` (npm) on DIR/tokenizer.json — what `phimoe-tokenize` prints for such lines.
// Usage: NODE_PATH=<dir with node_modules> node hf_tokenize.js DIR < in.jsonl
'use strict';
const readline = require('readline');
const { Tokenizer } = require('tokenizers');

async function main() {
  const dir = process.argv[2];
  if (!dir) {
    console.error('usage: node hf_tokenize.js TOKENIZER_DIR < in.jsonl');
    process.exit(2);
  }
  const tok = Tokenizer.fromFile(dir + '/tokenizer.json');
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of rl) {
    const req = JSON.parse(line);
    const ids = req.ids ? req.ids : Array.from((await tok.encode(req.text)).getIds());
    const text = await tok.decode(ids, true);
    process.stdout.write(JSON.stringify({ ids, text }) + '\n');
  }
}
main().catch((e) => { console.error(e); process.exit(1); });
