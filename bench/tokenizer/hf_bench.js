// Encode throughput of Hugging Face `tokenizers` (npm, the Rust library) on FILE with DIR's
// tokenizer.json, in the modes phimoe-tokenize --bench reports: the whole file as one text, each
// line as its own encode() call, and all lines in one encodeBatch() call. Prints one JSON line per
// mode (best of REPEAT runs) with the same ids checksum as phimoe-tokenize, so ids can be compared.
// Run it on one core: taskset -c 0 env RAYON_NUM_THREADS=1 node hf_bench.js DIR FILE [REPEAT]
'use strict';
const fs = require('fs');
const { Tokenizer } = require('tokenizers');

function checksum(ids, h) {
  for (const id of ids) h = (Math.imul(h, 1000003) + id) >>> 0;
  return h;
}

async function main() {
  const [dir, file, repeatArg] = process.argv.slice(2);
  if (!dir || !file) { console.error('usage: node hf_bench.js TOKENIZER_DIR FILE [REPEAT]'); process.exit(2); }
  const repeat = Math.max(1, parseInt(repeatArg || '3', 10));
  const tok = Tokenizer.fromFile(dir + '/tokenizer.json');
  const text = fs.readFileSync(file, 'utf8');
  const bytes = Buffer.byteLength(text);
  let lines = text.split('\n');
  if (text.endsWith('\n')) lines.pop();  // as phimoe-tokenize --bench: no empty last line
  const modes = {
    whole_file: async () => { const ids = (await tok.encode(text)).getIds(); return [ids.length, checksum(ids, 0)]; },
    per_line: async () => {
      let n = 0, h = 0;
      for (const line of lines) { const ids = (await tok.encode(line)).getIds(); n += ids.length; h = checksum(ids, h); }
      return [n, h];
    },
    per_line_batch: async () => {
      let n = 0, h = 0;
      for (const enc of await tok.encodeBatch(lines)) { const ids = enc.getIds(); n += ids.length; h = checksum(ids, h); }
      return [n, h];
    },
  };
  for (const [mode, run] of Object.entries(modes)) {
    let best = Infinity, result;
    for (let r = 0; r < repeat; r++) {
      const t0 = process.hrtime.bigint();
      result = await run();
      best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
    }
    console.log(JSON.stringify({ impl: 'hf-tokenizers', mode, bytes, tokens: result[0], checksum: result[1], seconds: best, mb_per_s: bytes / 1e6 / best }));
  }
}
main().catch((e) => { console.error(e); process.exit(1); });
