// Builds a Phi-3.5 tokenizer folder from the npm package llama-tokenizer-js@1.2.2, which ships the
// Llama-2 vocabulary (32000 pieces) and its BPE merges, plus the Phi-3.5 parts written here: the
// added tokens 32000..32010 and their flags, the normalizer (prepend "▁", " " → "▁"), the decoder,
// no BOS, the chat template and the generation stop ids.
//
// The merges are put in Hugging Face's order, so that the result equals Phi-3.5's tokenizer.json:
// pieces that are not all "▁" first, sorted by (id of the merged piece, left id, right id), then the
// whitespace-only merges in the same sort. (The package's own list has the same merges with the
// whitespace ones elsewhere.) The package's merge set is checked against the vocabulary.
//
// Usage: node build_phi35_tokenizer.js PATH/TO/package/llama-tokenizer.js DEST_DIR
// Writes tokenizer.json, tokenizer_config.json, added_tokens.json, special_tokens_map.json,
// generation_config.json and BUILD_INFO.txt into DEST_DIR (created if needed). Needs only node.
'use strict';
const fs = require('fs');
const path = require('path');

const SPACE = '\u2581';  // "▁"

const ADDED_TOKENS = [
  // [id, content, special, rstrip]
  [0, '<unk>', true, false],
  [1, '<s>', true, false],
  [2, '</s>', false, true],
  [32000, '<|endoftext|>', true, false],
  [32001, '<|assistant|>', true, true],
  [32002, '<|placeholder1|>', true, true],
  [32003, '<|placeholder2|>', true, true],
  [32004, '<|placeholder3|>', true, true],
  [32005, '<|placeholder4|>', true, true],
  [32006, '<|system|>', true, true],
  [32007, '<|end|>', true, true],
  [32008, '<|placeholder5|>', true, true],
  [32009, '<|placeholder6|>', true, true],
  [32010, '<|user|>', true, true],
];

const CHAT_TEMPLATE =
  "{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}" +
  "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}" +
  "{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}" +
  "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}";

function fail(msg) {
  console.error('build_phi35_tokenizer: ' + msg);
  process.exit(1);
}

function extractConstant(source, name) {
  const m = source.match(new RegExp('const ' + name + ' = "([A-Za-z0-9+/=]*)"'));
  if (!m) fail('cannot find ' + name + ' in the package source');
  return Buffer.from(m[1], 'base64');
}

function loadPackage(file) {
  const source = fs.readFileSync(file, 'utf8');
  const vocab = extractConstant(source, 'llama_vocab_base64').toString('utf8').split('\n');
  const mergeBytes = extractConstant(source, 'llama_merges_binary');
  if (vocab.length !== 32000) fail('expected 32000 vocabulary pieces, got ' + vocab.length);
  if (mergeBytes.length % 4 !== 0) fail('merge data is not a list of id pairs');
  const merges = [];
  for (let i = 0; i < mergeBytes.length; i += 4) {
    merges.push([mergeBytes.readUInt16LE(i), mergeBytes.readUInt16LE(i + 2)]);
  }
  return { vocab, merges };
}

function checkAndOrder(vocab, merges) {
  const idOf = new Map();
  vocab.forEach((p, i) => {
    if (idOf.has(p)) fail('duplicate vocabulary piece ' + JSON.stringify(p));
    idOf.set(p, i);
  });
  for (let b = 0; b < 256; b++) {
    const name = '<0x' + b.toString(16).toUpperCase().padStart(2, '0') + '>';
    if (idOf.get(name) !== 3 + b) fail('byte piece ' + name + ' is not at id ' + (3 + b));
  }
  if (vocab[0] !== '<unk>' || vocab[1] !== '<s>' || vocab[2] !== '</s>') fail('unexpected ids 0..2');
  const seen = new Set();
  const rows = merges.map(([l, r]) => {
    if (l >= vocab.length || r >= vocab.length) fail('merge id out of range');
    const merged = idOf.get(vocab[l] + vocab[r]);
    if (merged === undefined) fail('merge result not in vocabulary: ' + vocab[l] + ' ' + vocab[r]);
    const key = l + ',' + r;
    if (seen.has(key)) fail('duplicate merge ' + vocab[l] + ' ' + vocab[r]);
    seen.add(key);
    const ws = [...(vocab[l] + vocab[r])].every((c) => c === SPACE);
    return { l, r, merged, ws };
  });
  rows.sort((a, b) => (a.ws - b.ws) || (a.merged - b.merged) || (a.l - b.l) || (a.r - b.r));
  return rows.map((m) => vocab[m.l] + ' ' + vocab[m.r]);
}

function addedTokenObject([id, content, special, rstrip]) {
  return { id, content, single_word: false, lstrip: false, rstrip, normalized: false, special };
}

function tokenizerJson(vocab, merges) {
  const head = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: ADDED_TOKENS.map(addedTokenObject),
    normalizer: {
      type: 'Sequence',
      normalizers: [
        { type: 'Prepend', prepend: SPACE },
        { type: 'Replace', pattern: { String: ' ' }, content: SPACE },
      ],
    },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: {},
    },
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: SPACE }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
  };
  // The vocabulary is written by hand to keep id order (JS objects put integer-like keys first).
  const lines = [];
  const headText = JSON.stringify(head, null, 2);
  lines.push(headText.slice(0, headText.lastIndexOf('}')).trimEnd() + ',');
  lines.push('  "model": {');
  lines.push('    "type": "BPE",');
  lines.push('    "dropout": null,');
  lines.push('    "unk_token": "<unk>",');
  lines.push('    "continuing_subword_prefix": null,');
  lines.push('    "end_of_word_suffix": null,');
  lines.push('    "fuse_unk": true,');
  lines.push('    "byte_fallback": true,');
  lines.push('    "vocab": {');
  lines.push(vocab.map((p, i) => '      ' + JSON.stringify(p) + ': ' + i).join(',\n'));
  lines.push('    },');
  lines.push('    "merges": [');
  lines.push(merges.map((m) => '      ' + JSON.stringify(m)).join(',\n'));
  lines.push('    ]');
  lines.push('  }');
  lines.push('}');
  return lines.join('\n') + '\n';
}

function tokenizerConfig() {
  const decoder = {};
  for (const t of ADDED_TOKENS) {
    const o = addedTokenObject(t);
    decoder[String(t[0])] = {
      content: o.content, lstrip: o.lstrip, normalized: o.normalized, rstrip: o.rstrip,
      single_word: o.single_word, special: o.special,
    };
  }
  return {
    add_bos_token: false,
    add_eos_token: false,
    added_tokens_decoder: decoder,
    bos_token: '<s>',
    chat_template: CHAT_TEMPLATE,
    clean_up_tokenization_spaces: false,
    eos_token: '<|endoftext|>',
    legacy: false,
    model_max_length: 131072,
    pad_token: '<|endoftext|>',
    padding_side: 'left',
    sp_model_kwargs: {},
    tokenizer_class: 'LlamaTokenizer',
    unk_token: '<unk>',
    use_default_system_prompt: false,
  };
}

function specialTokensMap() {
  const t = (content) => ({ content, lstrip: false, normalized: false, rstrip: false, single_word: false });
  return { bos_token: t('<s>'), eos_token: t('<|endoftext|>'), pad_token: t('<|endoftext|>'), unk_token: t('<unk>') };
}

function main() {
  const [source, dest] = process.argv.slice(2);
  if (!source || !dest) fail('usage: node build_phi35_tokenizer.js llama-tokenizer.js DEST_DIR');
  const { vocab, merges } = loadPackage(source);
  const ordered = checkAndOrder(vocab, merges);
  fs.mkdirSync(dest, { recursive: true });
  const write = (name, text) => {
    const tmp = path.join(dest, '.' + name + '.tmp');
    fs.writeFileSync(tmp, text);
    fs.renameSync(tmp, path.join(dest, name));
  };
  const json = (o) => JSON.stringify(o, null, 2) + '\n';
  write('tokenizer.json', tokenizerJson(vocab, ordered));
  write('tokenizer_config.json', json(tokenizerConfig()));
  write('added_tokens.json', json(Object.fromEntries(ADDED_TOKENS.filter((t) => t[0] >= 32000).map((t) => [t[1], t[0]]))));
  write('special_tokens_map.json', json(specialTokensMap()));
  write('generation_config.json', json({ bos_token_id: 1, eos_token_id: [32007, 32001, 32000], pad_token_id: 32000 }));
  write('BUILD_INFO.txt',
    'Phi-3.5 tokenizer built by tools/build_tokenizer/build_phi35_tokenizer.js from the npm package\n' +
    'llama-tokenizer-js@1.2.2 (Llama-2 vocabulary and merges, MIT) plus the Phi-3.5 added tokens,\n' +
    'normalizer, decoder, chat template and stop ids. ' + vocab.length + ' pieces, ' + ordered.length +
    ' merges in Hugging Face order. No tokenizer.model (sentencepiece) is produced.\n');
  console.log('build_phi35_tokenizer: wrote ' + dest + ' (' + vocab.length + ' pieces, ' + ordered.length + ' merges)');
}

main();
