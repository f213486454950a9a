// The OpenAI JSON mapping without a server: request bodies → phimoe.v1 requests, unsupported
// parameters refused with the parameter named, statuses → OpenAI error objects and HTTP codes,
// and the response / chunk objects.
#include "gateway/http/openai_json.h"

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace phimoe::gateway {
namespace {

using json = nlohmann::json;

constexpr char kModel[] = "phi-3.5-moe";

absl::StatusOr<OpenAiRequest> Chat(const json& body) {
  return ParseOpenAiRequest(OpenAiEndpoint::kChatCompletions, body.dump(), kModel);
}
absl::StatusOr<OpenAiRequest> Completion(const json& body) {
  return ParseOpenAiRequest(OpenAiEndpoint::kCompletions, body.dump(), kModel);
}

// The HTTP status and param an invalid body maps to.
std::pair<int, std::string> ErrorOf(const absl::StatusOr<OpenAiRequest>& r) {
  EXPECT_FALSE(r.ok());
  if (r.ok()) return {0, ""};
  OpenAiError e = ToOpenAiError(r.status());
  return {e.http_status, e.param};
}

TEST(OpenAiJsonTest, ChatRequestMapsEveryParameter) {
  auto r = Chat({{"model", kModel},
                 {"messages",
                  {{{"role", "system"}, {"content", "Be brief."}},
                   {{"role", "user"},
                    {"content", {{{"type", "text"}, {"text", "Hello"}},
                                 {{"type", "text"}, {"text", " there"}}}}}}},
                 {"max_tokens", 7},
                 {"temperature", 0},
                 {"top_p", 0.5},
                 {"top_k", 40},
                 {"seed", 42},
                 {"stop", "END"},
                 {"n", 1},
                 {"stream", true},
                 {"stream_options", {{"include_usage", true}}},
                 {"logprobs", true},
                 {"ignore_eos", true},
                 {"presence_penalty", 0}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->endpoint, OpenAiEndpoint::kChatCompletions);
  ASSERT_EQ(r->chat.messages_size(), 2);
  EXPECT_EQ(r->chat.messages(0).role(), "system");
  EXPECT_EQ(r->chat.messages(1).content(), "Hello there");
  const auto& p = r->chat.params();
  EXPECT_EQ(p.max_tokens(), 7);
  EXPECT_EQ(p.temperature(), 0.0f);
  EXPECT_FLOAT_EQ(p.top_p(), 0.5f);
  EXPECT_EQ(p.top_k(), 40);
  EXPECT_EQ(p.seed(), 42u);
  ASSERT_EQ(p.stop_size(), 1);
  EXPECT_EQ(p.stop(0), "END");
  EXPECT_TRUE(p.ignore_eos());
  EXPECT_TRUE(p.logprobs());
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
  EXPECT_TRUE(r->logprobs);
}

TEST(OpenAiJsonTest, ChatDefaultsLeaveParamsUnset) {
  auto r = Chat({{"messages", {{{"role", "user"}, {"content", "hi"}}}}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->chat.params().has_max_tokens());  // chat runs to a stop rule
  EXPECT_FALSE(r->chat.params().has_temperature());
  EXPECT_FALSE(r->chat.params().has_seed());
  EXPECT_FALSE(r->stream);
}

TEST(OpenAiJsonTest, MaxCompletionTokensWinsAndDeveloperIsSystem) {
  auto r = Chat({{"messages", {{{"role", "developer"}, {"content", "x"}}}},
                 {"max_tokens", 5},
                 {"max_completion_tokens", 9},
                 {"stop", {"a", "b"}},
                 {"top_k", -1}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->chat.params().max_tokens(), 9);
  EXPECT_EQ(r->chat.messages(0).role(), "system");
  EXPECT_EQ(r->chat.params().stop_size(), 2);
  EXPECT_EQ(r->chat.params().top_k(), 0);
}

TEST(OpenAiJsonTest, CompletionPromptForms) {
  auto text = Completion({{"prompt", "Once upon"}});
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(text->generate.text(), "Once upon");
  EXPECT_EQ(text->generate.params().max_tokens(), 16);  // OpenAI's default for completions

  auto ids = Completion({{"prompt", {1, 2, 3}}, {"max_tokens", 4}, {"logprobs", 0}});
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_TRUE(ids->generate.has_token_ids());
  EXPECT_EQ(ids->generate.token_ids().ids_size(), 3);
  EXPECT_EQ(ids->generate.params().max_tokens(), 4);
  EXPECT_TRUE(ids->logprobs);

  auto one = Completion({{"prompt", {"only one"}}});
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->generate.text(), "only one");

  auto nested = Completion({{"prompt", {{5, 6}}}});
  ASSERT_TRUE(nested.ok()) << nested.status();
  EXPECT_EQ(nested->generate.token_ids().ids_size(), 2);
}

TEST(OpenAiJsonTest, UnsupportedParametersAreRefusedByName) {
  const json msgs = {{{"role", "user"}, {"content", "hi"}}};
  EXPECT_EQ(ErrorOf(Chat({{"messages", msgs}, {"n", 2}})), std::make_pair(400, std::string("n")));
  // Zero is out of range, not "more than one choice" (JSON reads 0 as an unsigned number).
  for (const char* key : {"n", "max_tokens", "max_completion_tokens"}) {
    absl::StatusOr<OpenAiRequest> zero = Chat({{"messages", msgs}, {key, 0}});
    EXPECT_EQ(ErrorOf(zero), std::make_pair(400, std::string(key)));
    EXPECT_NE(zero.status().message().find("must be in [1, "), std::string::npos) << zero.status();
  }
  EXPECT_EQ(ErrorOf(Chat({{"messages", msgs}, {"top_logprobs", 2}})),
            std::make_pair(400, std::string("top_logprobs")));
  EXPECT_EQ(ErrorOf(Chat({{"messages", msgs}, {"presence_penalty", 0.5}})),
            std::make_pair(400, std::string("presence_penalty")));
  EXPECT_EQ(ErrorOf(Chat({{"messages", msgs}, {"frequency_penalty", -1}})),
            std::make_pair(400, std::string("frequency_penalty")));
  EXPECT_EQ(ErrorOf(Chat({{"messages", msgs}, {"logit_bias", {{"50", 10}}}})),
            std::make_pair(400, std::string("logit_bias")));
  EXPECT_EQ(ErrorOf(Completion({{"prompt", "x"}, {"echo", true}})),
            std::make_pair(400, std::string("echo")));
  EXPECT_EQ(ErrorOf(Completion({{"prompt", {"a", "b"}}})),
            std::make_pair(400, std::string("prompt")));
  EXPECT_EQ(ErrorOf(Completion({{"prompt", "x"}, {"logprobs", 3}})),
            std::make_pair(400, std::string("logprobs")));
}

TEST(OpenAiJsonTest, MalformedBodiesAreBadRequests) {
  auto bad = ParseOpenAiRequest(OpenAiEndpoint::kChatCompletions, "{not json", kModel);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(ToOpenAiError(bad.status()).http_status, 400);
  EXPECT_EQ(ToOpenAiError(bad.status()).param, "");
  EXPECT_EQ(ErrorOf(Chat(json::array())).first, 400);
  EXPECT_EQ(ErrorOf(Chat({{"model", kModel}})), std::make_pair(400, std::string("messages")));
  EXPECT_EQ(ErrorOf(Chat({{"messages", {{{"role", "user"}, {"content", 3}}}}})),
            std::make_pair(400, std::string("messages[0].content")));
  EXPECT_EQ(ErrorOf(Chat({{"messages",
                           {{{"role", "user"},
                             {"content", {{{"type", "image_url"}, {"image_url", "x"}}}}}}}})),
            std::make_pair(400, std::string("messages[0].content[0].type")));
  EXPECT_EQ(ErrorOf(Chat({{"messages", {{{"role", "user"}, {"content", "x"}}}},
                          {"temperature", "hot"}})),
            std::make_pair(400, std::string("temperature")));
  EXPECT_EQ(ErrorOf(Chat({{"messages", {{{"role", "user"}, {"content", "x"}}}},
                          {"max_tokens", 1.5}})),
            std::make_pair(400, std::string("max_tokens")));
  EXPECT_EQ(ErrorOf(Completion({{"prompt", {1, -2}}})),
            std::make_pair(400, std::string("prompt")));
}

TEST(OpenAiJsonTest, AnotherModelIsNotFound) {
  auto r = Chat({{"model", "gpt-4o"}, {"messages", {{{"role", "user"}, {"content", "x"}}}}});
  ASSERT_FALSE(r.ok());
  OpenAiError e = ToOpenAiError(r.status());
  EXPECT_EQ(e.http_status, 404);
  EXPECT_EQ(e.code, "model_not_found");
  EXPECT_EQ(e.param, "model");
  EXPECT_NE(e.message.find("gpt-4o"), std::string::npos);
}

TEST(OpenAiJsonTest, GatewayStatusesMapToOpenAiErrors) {
  OpenAiError top_p = ToOpenAiError(absl::InvalidArgumentError("params.top_p: must be in (0, 1]"));
  EXPECT_EQ(top_p.http_status, 400);
  EXPECT_EQ(top_p.type, "invalid_request_error");
  EXPECT_EQ(top_p.param, "top_p");
  EXPECT_EQ(top_p.message, "top_p: must be in (0, 1]");
  EXPECT_EQ(ToOpenAiError(absl::InvalidArgumentError("token_ids.ids[2]: 99999 is outside")).param,
            "prompt");
  EXPECT_EQ(ToOpenAiError(absl::InvalidArgumentError("text: too long")).param, "prompt");
  EXPECT_EQ(ToOpenAiError(absl::InvalidArgumentError("params.stop[1]: too long")).param, "stop");
  EXPECT_EQ(ToOpenAiError(absl::InvalidArgumentError("messages[0].role: must be")).param,
            "messages[0].role");
  EXPECT_EQ(ToOpenAiError(absl::InvalidArgumentError("a sentence without a path")).param, "");
  EXPECT_EQ(ToOpenAiError(absl::FailedPreconditionError("no chat template")).http_status, 400);

  OpenAiError full = ToOpenAiError(absl::ResourceExhaustedError("queue full"));
  EXPECT_EQ(full.http_status, 429);
  EXPECT_EQ(full.code, "rate_limit_exceeded");
  EXPECT_EQ(ToOpenAiError(absl::UnavailableError("draining")).http_status, 503);
  EXPECT_EQ(ToOpenAiError(absl::DeadlineExceededError("late")).http_status, 504);
  EXPECT_EQ(ToOpenAiError(absl::InternalError("bug")).http_status, 500);

  const json j = ToJson(top_p);
  EXPECT_EQ(j["error"]["message"], "top_p: must be in (0, 1]");
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_EQ(j["error"]["param"], "top_p");
  EXPECT_TRUE(j["error"]["code"].is_null());
}

TEST(OpenAiJsonTest, ChatChunksAndCompleteObject) {
  OpenAiResponseBuilder b(OpenAiEndpoint::kChatCompletions, "chatcmpl-1", 100, kModel,
                          /*logprobs=*/true, /*include_usage=*/true,
                          [](int32_t id) { return absl::StrCat("t", id); });
  json role = b.RoleChunk();
  EXPECT_EQ(role["object"], "chat.completion.chunk");
  EXPECT_EQ(role["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(role["usage"].is_null());

  OutputDelta d;
  d.token_ids = {7, 8};
  d.logprobs = {-0.5f, -1.0f};
  d.text = "Hi";
  json chunk = b.DeltaChunk(d);
  EXPECT_EQ(chunk["choices"][0]["delta"]["content"], "Hi");
  EXPECT_EQ(chunk["choices"][0]["logprobs"]["content"][1]["token"], "t8");
  EXPECT_EQ(chunk["choices"][0]["logprobs"]["content"][0]["logprob"], -0.5);
  EXPECT_TRUE(chunk["choices"][0]["finish_reason"].is_null());

  OutputEnd end;
  end.reason = FinishReason::kLength;
  end.prompt_tokens = 5;
  end.completion_tokens = 2;
  json fin = b.FinishChunk(end);
  EXPECT_EQ(fin["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(fin["choices"][0]["delta"].empty());
  json usage = b.UsageChunk(end);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 7);

  json all = b.Complete(d, end);
  EXPECT_EQ(all["object"], "chat.completion");
  EXPECT_EQ(all["id"], "chatcmpl-1");
  EXPECT_EQ(all["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(all["choices"][0]["message"]["content"], "Hi");
  EXPECT_EQ(all["usage"]["prompt_tokens"], 5);
  EXPECT_EQ(all["usage"]["completion_tokens"], 2);
}

TEST(OpenAiJsonTest, CompletionObjects) {
  OpenAiResponseBuilder b(OpenAiEndpoint::kCompletions, "cmpl-1", 100, kModel,
                          /*logprobs=*/true, /*include_usage=*/false,
                          [](int32_t id) { return std::string("ab"); });
  OutputDelta d;
  d.token_ids = {1, 2};
  d.logprobs = {-1.0f, -2.0f};
  d.text = "abab";
  json chunk = b.DeltaChunk(d);
  EXPECT_EQ(chunk["object"], "text_completion");
  EXPECT_EQ(chunk["choices"][0]["text"], "abab");
  EXPECT_EQ(chunk["choices"][0]["logprobs"]["text_offset"], json({0, 2}));
  EXPECT_FALSE(chunk.contains("usage"));
  OutputEnd end;
  end.reason = FinishReason::kStop;
  end.stop_string = "END";
  json all = b.Complete(d, end);
  EXPECT_EQ(all["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(all["choices"][0]["stop_reason"], "END");
}

TEST(OpenAiJsonTest, TokenPiecesAndInvalidUtf8) {
  EXPECT_EQ(TokenPieceToText("\xE2\x96\x81Hello"), " Hello");
  EXPECT_EQ(TokenPieceToText("<0x0A>"), "\n");
  EXPECT_EQ(TokenPieceToText("<0xZZ>"), "<0xZZ>");
  EXPECT_EQ(Dump(json("\xff")), "\"\xEF\xBF\xBD\"");  // replaced, not thrown
  EXPECT_STREQ(OpenAiFinishReason(FinishReason::kCancelled), "abort");
}

}  // namespace
}  // namespace phimoe::gateway
