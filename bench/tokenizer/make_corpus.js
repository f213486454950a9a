// Writes a deterministic mixed-text benchmark corpus (default 4 MB) for the tokenizer benchmark:
// English prose (word runs drawn from Debian's /usr/share/common-licenses, a built-in list where
// that is missing), code, multilingual sentences (CJK, Cyrillic, Arabic, Hebrew, Thai, Devanagari,
// Greek, accented Latin, emoji), numbers/CSV/JSON/URLs and whitespace-heavy markdown.
// Usage: node make_corpus.js OUT_FILE [BYTES] [SEED]
'use strict';
const fs = require('fs');
const path = require('path');

const out = process.argv[2];
const target = parseInt(process.argv[3] || '4000000', 10);
let seed = parseInt(process.argv[4] || '20240917', 10) >>> 0;
if (!out) { console.error('usage: node make_corpus.js OUT_FILE [BYTES] [SEED]'); process.exit(2); }
function rand() { seed ^= seed << 13; seed >>>= 0; seed ^= seed >>> 17; seed ^= seed << 5; seed >>>= 0; return seed / 4294967296; }
const pick = (a) => a[Math.floor(rand() * a.length)];
const int = (n) => Math.floor(rand() * n);

let words = [];
const licenses = '/usr/share/common-licenses';
try {
  for (const f of fs.readdirSync(licenses).sort()) {
    const p = path.join(licenses, f);
    if (fs.statSync(p).isFile()) words.push(...fs.readFileSync(p, 'utf8').split(/\s+/).filter(Boolean));
  }
} catch (e) { /* fall back below */ }
if (words.length < 1000) {
  words = ('the of and to a in is that for it as with was on be by this are from or at an which ' +
    'have not but all were when we there can more if will one about their would what so up out ' +
    'model server request token stream expert layer attention cache batch latency throughput').split(' ');
}

const multilingual = [
  '你好，世界。今天天气很好，我们去公园散步吧。', '机器学习模型需要大量的数据和计算资源。',
  'こんにちは世界。東京は日本の首都です。', '자연어 처리는 인공지능의 한 분야입니다.',
  'Привет, мир! Как у тебя дела сегодня?', 'Быстрая коричневая лиса прыгает через ленивую собаку.',
  'مرحبا بالعالم. كيف حالك اليوم؟', 'שלום עולם, מה שלומך היום?', 'สวัสดีชาวโลก วันนี้อากาศดีมาก',
  'नमस्ते दुनिया, आप कैसे हैं?', 'Γειά σου Κόσμε, τι κάνεις;', 'Füße, Straße, Größe — naïve café résumé.',
  'Ça va très bien, merci beaucoup à vous.', '¿Dónde está la biblioteca? ¡Qué día tan bonito!',
  'Emoji time 🙂🚀🔥 and family 👨‍👩‍👧‍👦 with flags 🇫🇷🇯🇵.', 'Ω≈ç√∫˜µ≤≥÷ ½ ¼ ¾ ± × °C',
];

function english() {
  const sentences = [];
  for (let s = 0, n = 3 + int(6); s < n; s++) {
    const start = int(words.length - 30), len = 5 + int(20);
    let t = words.slice(start, start + len).join(' ');
    sentences.push(t.charAt(0).toUpperCase() + t.slice(1) + (rand() < 0.1 ? '?' : '.'));
  }
  return sentences.join(' ');
}

function code() {
  const ident = () => pick(words).replace(/[^A-Za-z]/g, '').toLowerCase() || 'x';
  const lines = [];
  const fn = ident() + '_' + ident();
  if (rand() < 0.5) {
    lines.push('def ' + fn + '(' + ident() + ', ' + ident() + '=' + int(100) + '):');
    for (let i = 0, n = 2 + int(8); i < n; i++) {
      lines.push('    ' + (rand() < 0.3 ? 'if ' + ident() + ' < ' + int(1000) + ':\n        ' : '') +
        ident() + ' = ' + ident() + '(' + ident() + ') + ' + (rand() * 100).toFixed(3) + '  # ' + ident());
    }
    lines.push('    return ' + ident());
  } else {
    lines.push('static int ' + fn + '(const std::vector<int>& ' + ident() + ', size_t n) {');
    for (let i = 0, n = 2 + int(8); i < n; i++) {
      lines.push('\tfor (size_t i = 0; i < n; ++i) { ' + ident() + '[i] += ' + int(65536) + ' * i; }  // ' + ident());
    }
    lines.push('\treturn 0x' + int(0xffffff).toString(16).toUpperCase() + ';\n}');
  }
  return lines.join('\n');
}

function data() {
  const rows = [];
  const kind = int(3);
  for (let i = 0, n = 3 + int(8); i < n; i++) {
    if (kind === 0) rows.push([int(100000), (rand() * 1e4).toFixed(2), '2024-0' + (1 + int(9)) + '-1' + int(10), pick(words)].join(','));
    else if (kind === 1) rows.push(JSON.stringify({ id: int(1e6), name: pick(words), score: +(rand()).toFixed(4), tags: [pick(words), pick(words)] }));
    else rows.push('https://example.org/' + pick(words).replace(/\W/g, '') + '/' + int(9999) + '?q=' + pick(words).replace(/\W/g, '') + '&page=' + int(50) + '#sec' + int(9));
  }
  return rows.join('\n');
}

function markdown() {
  const rows = ['| name | value |  notes  |', '|------|------:|---------|'];
  for (let i = 0, n = 2 + int(5); i < n; i++) rows.push('| ' + pick(words) + ' | ' + int(1000) + ' |   ' + pick(words) + '   |');
  rows.push('', '  - ' + english(), '    * ' + pick(words) + '\t\t' + pick(words), '', '    ' + english());
  return rows.join('\n');
}

const parts = [];
let size = 0;
while (size < target) {
  const r = rand();
  const p = r < 0.5 ? english() : r < 0.7 ? code() : r < 0.85 ? Array.from({ length: 1 + int(4) }, () => pick(multilingual)).join(' ') : r < 0.95 ? data() : markdown();
  parts.push(p);
  size += Buffer.byteLength(p) + 2;
}
fs.writeFileSync(out, parts.join('\n\n') + '\n');
console.log('make_corpus: wrote ' + out + ' (' + fs.statSync(out).size + ' bytes)');
