// The gateway's OpenAI-compatible endpoint driven by the official `openai` npm SDK (a client
// nobody here wrote): models.list, chat.completions.create (non-streaming and streaming, greedy),
// completions.create, and a bad parameter surfacing as the SDK's BadRequestError (400).
//
// Usage: node openai_client_test.mjs BASE_URL MODEL
//   BASE_URL: http://127.0.0.1:PORT/v1
// Prints one JSON line with what it got ({"chat": ..., "stream": ..., "completion": ...}) for the
// caller to compare with the gRPC API; exits 1 with a message on the first failed check.
import OpenAI from "openai";

const [baseURL, model] = process.argv.slice(2);
if (!baseURL || !model) {
  console.error("usage: node openai_client_test.mjs BASE_URL MODEL");
  process.exit(2);
}

function check(condition, message) {
  if (!condition) {
    console.error(`openai_client_test: ${message}`);
    process.exit(1);
  }
}

const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0, timeout: 120_000 });
const messages = [{ role: "user", content: "Tell me about mixture of experts." }];

const models = await client.models.list();
check(models.data.some((m) => m.id === model), `models.list lacks ${model}: ${JSON.stringify(models.data)}`);

const chat = await client.chat.completions.create({
  model, messages, max_tokens: 12, temperature: 0, ignore_eos: true,
});
check(chat.object === "chat.completion", `chat object ${chat.object}`);
check(chat.choices.length === 1, "one choice");
check(chat.choices[0].message.role === "assistant", "assistant role");
check(chat.choices[0].finish_reason === "length", `finish_reason ${chat.choices[0].finish_reason}`);
check(chat.usage.completion_tokens === 12, `completion_tokens ${chat.usage.completion_tokens}`);
check(chat.usage.total_tokens === chat.usage.prompt_tokens + 12, "total_tokens");

const stream = await client.chat.completions.create({
  model, messages, max_tokens: 12, temperature: 0, ignore_eos: true, stream: true,
  stream_options: { include_usage: true },
});
let streamed = "";
let chunks = 0;
let finish = null;
let usage = null;
let sawRole = false;
for await (const chunk of stream) {
  chunks += 1;
  check(chunk.object === "chat.completion.chunk", `chunk object ${chunk.object}`);
  if (chunk.usage) usage = chunk.usage;
  for (const choice of chunk.choices) {
    if (choice.delta.role === "assistant") sawRole = true;
    if (choice.delta.content) streamed += choice.delta.content;
    if (choice.finish_reason) finish = choice.finish_reason;
  }
}
check(sawRole, "no delta.role in the stream");
check(chunks >= 3, `only ${chunks} chunks: not streamed`);
check(finish === "length", `stream finish_reason ${finish}`);
check(usage && usage.completion_tokens === 12, `stream usage ${JSON.stringify(usage)}`);
check(streamed === chat.choices[0].message.content,
  `streamed ${JSON.stringify(streamed)} != non-streamed ${JSON.stringify(chat.choices[0].message.content)}`);

const completion = await client.completions.create({
  model, prompt: "The capital of France is", max_tokens: 8, temperature: 0, ignore_eos: true,
});
check(completion.object === "text_completion", `completion object ${completion.object}`);
check(completion.usage.completion_tokens === 8, `completion tokens ${completion.usage.completion_tokens}`);

let completionStream = "";
for await (const chunk of await client.completions.create({
  model, prompt: "The capital of France is", max_tokens: 8, temperature: 0, ignore_eos: true,
  stream: true,
})) {
  for (const choice of chunk.choices) completionStream += choice.text;
}
check(completionStream === completion.choices[0].text,
  `streamed completion ${JSON.stringify(completionStream)} != ${JSON.stringify(completion.choices[0].text)}`);

try {
  await client.chat.completions.create({ model, messages, top_p: 5 });
  check(false, "top_p 5 was accepted");
} catch (e) {
  check(e instanceof OpenAI.BadRequestError, `top_p 5: ${e?.constructor?.name} ${e}`);
  check(e.status === 400, `top_p 5: status ${e.status}`);
  check(e.param === "top_p", `top_p 5: param ${e.param}`);
}
try {
  await client.chat.completions.create({ model: "no-such-model", messages });
  check(false, "an unknown model was accepted");
} catch (e) {
  check(e instanceof OpenAI.NotFoundError, `unknown model: ${e?.constructor?.name} ${e}`);
  check(e.code === "model_not_found", `unknown model: code ${e.code}`);
}

console.log(JSON.stringify({
  chat: chat.choices[0].message.content,
  stream: streamed,
  completion: completion.choices[0].text,
}));
