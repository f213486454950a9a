// Writes N random JSON lines {"text": ...} (seeded) for cross-checking phimoe-tokenize against
// Hugging Face tokenizers: mixes of words, whitespace runs, added tokens and their fragments,
// control bytes, accents, CJK, Arabic, Thai, emoji and "▁".
// Usage: node gen_fuzz.js N SEED > fuzz.jsonl
'use strict';
const n = parseInt(process.argv[2] || '1000', 10);
let seed = parseInt(process.argv[3] || '1', 10) >>> 0;
function rand() {  // xorshift32
  seed ^= seed << 13; seed >>>= 0; seed ^= seed >>> 17; seed ^= seed << 5; seed >>>= 0;
  return seed / 4294967296;
}
const atoms = [
  ' ', '  ', '   ', '\n', '\n\n', '\t', '\r\n', '\u00a0', '\u3000', '\u2003', '\u2581', '\u2581\u2581',
  'the', ' the', 'Hello', ' world', 'ing', 'a', 'aa', 'aaaa', 'x', 'Q', '0', '42', '3.14', ',', '.', '?',
  '!', '(', ')', '{', '}', '<', '>', '|', '<|', '|>', '<|end|>', '<|user|>', '<|assistant|>',
  '<|system|>', '<|endoftext|>', '<s>', '</s>', '<unk>', '<|placeholder3|>', '<|end|', 'end|>',
  'é', 'ï', 'naïve', 'Füh', 'Привет', 'мир', '你好', '天气', '很', 'こんにちは', '테스트', 'مرحبا',
  'שלום', 'สวัสดี', '🙂', '🚀', '👨\u200d👩\u200d👧', '\u200d', '\u0000', '\u0001', '\u001f', '\u007f',
  'ÿ', '½', 'Ω≈ç', 'def f(x):\n    return x', '    ', '\t\t', 'https://a.b/c?d=e', '\ufeff', '\ud800\udc00',
];
for (let i = 0; i < n; i++) {
  const len = Math.floor(rand() * (rand() < 0.1 ? 200 : 20));
  let s = '';
  for (let k = 0; k < len; k++) s += atoms[Math.floor(rand() * atoms.length)];
  process.stdout.write(JSON.stringify({ text: s }) + '\n');
}
