// The fake InferenceService: each stream call becomes a Script (messages, a delay between them,
// a final status) played by a ScriptedStream reactor. Delays use callback grpc::Alarms, so no
// reactor ever blocks a gRPC thread.
#include "tests/sdk/fake_inference_service.h"

#include <grpcpp/alarm.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include <chrono>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace phimoe::testing {
namespace {

struct Script {
  std::vector<v1::GenerateResponse> messages;
  absl::Duration delay = absl::ZeroDuration();  // before every message but the first
  grpc::Status final_status = grpc::Status::OK;
};

Script Fail(grpc::StatusCode code, const std::string& message) {
  Script script;
  script.final_status = grpc::Status(code, message);
  return script;
}

grpc::StatusCode ParseCode(absl::string_view name) {
  for (int c = 0; c <= 16; ++c) {
    if (absl::StatusCodeToString(static_cast<absl::StatusCode>(c)) == name) {
      return static_cast<grpc::StatusCode>(c);
    }
  }
  return grpc::StatusCode::UNKNOWN;
}

// One message per id; the last one carries finish_reason and usage. max_tokens truncates (LENGTH).
Script TokenScript(std::vector<int32_t> ids, std::vector<std::string> pieces,
                   const v1::GenerationParams& params, int64_t prompt_tokens) {
  v1::FinishReason finish = v1::FINISH_REASON_STOP;
  if (params.has_max_tokens() && static_cast<int64_t>(ids.size()) > params.max_tokens()) {
    ids.resize(params.max_tokens());
    pieces.resize(params.max_tokens());
    finish = v1::FINISH_REASON_LENGTH;
  } else if (params.has_max_tokens() && static_cast<int64_t>(ids.size()) == params.max_tokens()) {
    finish = v1::FINISH_REASON_LENGTH;
  }
  Script script;
  for (size_t i = 0; i < ids.size(); ++i) {
    v1::GenerateResponse& m = script.messages.emplace_back();
    m.add_token_ids(ids[i]);
    m.set_text(pieces[i]);
    if (params.logprobs()) m.add_logprobs(-0.1f * static_cast<float>(i + 1));
  }
  if (script.messages.empty()) script.messages.emplace_back();
  v1::GenerateResponse& last = script.messages.back();
  last.set_finish_reason(finish);
  last.mutable_usage()->set_prompt_tokens(prompt_tokens);
  last.mutable_usage()->set_completion_tokens(static_cast<int64_t>(ids.size()));
  return script;
}

// Ids as text pieces "a", " b", " c".
Script EchoIds(const std::vector<int32_t>& ids, const v1::GenerationParams& params,
               int64_t prompt_tokens) {
  std::vector<int32_t> out;
  std::vector<std::string> pieces;
  const size_t n = params.has_max_tokens() ? static_cast<size_t>(params.max_tokens()) : ids.size();
  for (size_t i = 0; i < n && !ids.empty(); ++i) {
    out.push_back(ids[i % ids.size()]);
    pieces.push_back(absl::StrCat(i == 0 ? "" : " ", out.back()));
  }
  return TokenScript(out, pieces, params, prompt_tokens);
}

absl::Status CheckParams(const v1::GenerationParams& params) {
  if (params.has_temperature() && (params.temperature() < 0 || params.temperature() > 2)) {
    return absl::InvalidArgumentError(
        absl::StrCat("params.temperature: must be in [0, 2], got ", params.temperature()));
  }
  if (params.has_max_tokens() && params.max_tokens() < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("params.max_tokens: must be at least 1, got ", params.max_tokens()));
  }
  return absl::OkStatus();
}

// The error commands shared by Generate and Chat; nullopt-like `false` when `text` is none.
bool ErrorCommand(const std::string& text, Script* script) {
  if (absl::StartsWith(text, "error:")) {
    std::vector<std::string> parts = absl::StrSplit(text, absl::MaxSplits(':', 2));
    if (parts.size() != 3) return false;
    *script = Fail(ParseCode(parts[1]), parts[2]);
    return true;
  }
  if (absl::StartsWith(text, "error-after:")) {
    std::vector<std::string> parts = absl::StrSplit(text, absl::MaxSplits(':', 3));
    int n = 0;
    if (parts.size() != 4 || !absl::SimpleAtoi(parts[1], &n)) return false;
    std::vector<int32_t> ids;
    for (int i = 1; i <= n; ++i) ids.push_back(i);
    *script = EchoIds(ids, v1::GenerationParams(), 1);
    v1::GenerateResponse& last = script->messages.back();
    if (n > 0) {
      last.set_finish_reason(v1::FINISH_REASON_UNSPECIFIED);
      last.clear_usage();
      script->messages.emplace_back();
    }
    script->messages.back().set_finish_reason(v1::FINISH_REASON_ERROR);
    script->messages.back().set_error(parts[3]);
    script->final_status = grpc::Status(ParseCode(parts[2]), parts[3]);
    return true;
  }
  return false;
}

// "slow:MS": ids 1, 2, ... one every MS ms, up to max_tokens (default 1000).
Script SlowScript(const std::string& command, const v1::GenerationParams& params) {
  int ms = 0;
  (void)absl::SimpleAtoi(command.substr(5), &ms);
  const int n = params.has_max_tokens() ? params.max_tokens() : 1000;
  std::vector<int32_t> ids;
  for (int i = 1; i <= n; ++i) ids.push_back(i);
  Script script = EchoIds(ids, params, 1);
  script.delay = absl::Milliseconds(ms);
  return script;
}

class ScriptedStream final : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  ScriptedStream(FakeInferenceService* service, Script script)
      : service_(service), script_(std::move(script)) {
    Next();
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      return;
    }
    ++next_;
    Next();
  }

  // gRPC runs OnDone only after OnCancel has returned, so the alarm stays alive here.
  void OnCancel() override {
    service_->NoteCancelled();
    grpc::Alarm* pending = nullptr;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      pending = pending_alarm_;
    }
    // Outside the lock: Cancel may run the alarm's callback on this thread.
    if (pending != nullptr) pending->Cancel();
  }

  void OnDone() override { delete this; }

 private:
  void Next() {
    if (next_ >= script_.messages.size()) {
      Finish(script_.final_status);
      return;
    }
    if (next_ == 0 || script_.delay <= absl::ZeroDuration()) {
      StartWrite(&script_.messages[next_]);
      return;
    }
    grpc::Alarm* alarm = nullptr;
    {
      absl::MutexLock lock(&mu_);
      if (!cancelled_) {
        alarms_.push_back(std::make_unique<grpc::Alarm>());
        alarm = pending_alarm_ = alarms_.back().get();
      }
    }
    if (alarm == nullptr) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
      return;
    }
    alarm->Set(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(script_.delay),
               [this](bool fired) {
                 bool cancelled;
                 {
                   absl::MutexLock lock(&mu_);
                   pending_alarm_ = nullptr;
                   cancelled = cancelled_;
                 }
                 // Either call may let OnDone delete this: nothing touches `this` after it.
                 if (!fired || cancelled) {
                   Finish(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
                 } else {
                   StartWrite(&script_.messages[next_]);
                 }
               });
  }

  FakeInferenceService* service_;
  Script script_;
  size_t next_ = 0;
  absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Alarm* pending_alarm_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::vector<std::unique_ptr<grpc::Alarm>> alarms_ ABSL_GUARDED_BY(mu_);
};

std::string RenderChat(const v1::ChatRequest& chat) {
  std::string out;
  for (const v1::ChatMessage& m : chat.messages()) {
    absl::StrAppend(&out, "<|", m.role(), "|>\n", m.content(), "<|end|>\n");
  }
  return out + "<|assistant|>\n";
}

}  // namespace

int FakeInferenceService::Hit(const std::string& key) {
  absl::MutexLock lock(&mu_);
  return hits_[key]++;
}

grpc::ServerWriteReactor<v1::GenerateResponse>* FakeInferenceService::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  {
    absl::MutexLock lock(&mu_);
    ++generate_calls_;
  }
  const v1::GenerationParams& params = request->params();
  Script script;
  if (absl::Status s = CheckParams(params); !s.ok()) {
    script = Fail(grpc::StatusCode::INVALID_ARGUMENT, std::string(s.message()));
  } else if (request->has_token_ids()) {
    const std::vector<int32_t> ids(request->token_ids().ids().begin(),
                                   request->token_ids().ids().end());
    if (ids.empty()) {
      script = Fail(grpc::StatusCode::INVALID_ARGUMENT, "prompt: empty");
    } else {
      script = EchoIds(ids, params, static_cast<int64_t>(ids.size()));
    }
  } else if (request->text().empty()) {
    script = Fail(grpc::StatusCode::INVALID_ARGUMENT, "prompt: empty");
  } else if (ErrorCommand(request->text(), &script)) {
  } else if (absl::StartsWith(request->text(), "unavailable:")) {
    int k = 0;
    (void)absl::SimpleAtoi(request->text().substr(12), &k);
    if (Hit(request->text()) < k) {
      script = Fail(grpc::StatusCode::UNAVAILABLE, "fake: not ready yet");
    } else {
      script = EchoIds({7, 8, 9}, params, 3);
    }
  } else if (absl::StartsWith(request->text(), "slow:")) {
    script = SlowScript(request->text(), params);
  } else {
    std::vector<int32_t> ids;
    std::vector<std::string> pieces;
    for (unsigned char c : request->text()) {
      ids.push_back(c);
      pieces.emplace_back(1, static_cast<char>(c));
    }
    script = TokenScript(ids, pieces, params, static_cast<int64_t>(ids.size()));
  }
  return new ScriptedStream(this, std::move(script));
}

grpc::ServerWriteReactor<v1::GenerateResponse>* FakeInferenceService::Chat(
    grpc::CallbackServerContext* context, const v1::ChatRequest* request) {
  {
    absl::MutexLock lock(&mu_);
    ++chat_calls_;
  }
  Script script;
  if (absl::Status s = CheckParams(request->params()); !s.ok()) {
    script = Fail(grpc::StatusCode::INVALID_ARGUMENT, std::string(s.message()));
  } else if (request->messages().empty()) {
    script = Fail(grpc::StatusCode::INVALID_ARGUMENT, "messages: at least one is required");
  } else if (ErrorCommand(request->messages().rbegin()->content(), &script)) {
  } else if (absl::StartsWith(request->messages().rbegin()->content(), "slow:")) {
    script = SlowScript(request->messages().rbegin()->content(), request->params());
  } else {
    const std::vector<std::string> pieces = {
        absl::StrCat("messages=", request->messages_size()),
        absl::StrCat(" last=", request->messages().rbegin()->content())};
    v1::GenerationParams params = request->params();
    params.clear_max_tokens();
    script = TokenScript({1000, 1001}, pieces, params, RenderChat(*request).size());
  }
  return new ScriptedStream(this, std::move(script));
}

grpc::ServerUnaryReactor* FakeInferenceService::Tokenize(grpc::CallbackServerContext* context,
                                                         const v1::TokenizeRequest* request,
                                                         v1::TokenizeResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  {
    absl::MutexLock lock(&mu_);
    ++tokenize_calls_;
  }
  std::string text;
  if (request->has_chat()) {
    text = RenderChat(request->chat());
    response->set_rendered(text);
  } else if (request->input_case() == v1::TokenizeRequest::kText) {
    text = request->text();
    if (absl::StartsWith(text, "unavailable:")) {
      int k = 0;
      (void)absl::SimpleAtoi(text.substr(12), &k);
      if (Hit("tokenize " + text) < k) {
        reactor->Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "fake: not ready yet"));
        return reactor;
      }
    }
  } else {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "input: text or chat"));
    return reactor;
  }
  for (unsigned char c : text) {
    response->add_token_ids(c);
    response->add_tokens(std::string(1, static_cast<char>(c)));
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* FakeInferenceService::ModelInfo(grpc::CallbackServerContext* context,
                                                          const v1::ModelInfoRequest* request,
                                                          v1::ModelInfoResponse* response) {
  response->set_model_name("fake-model");
  response->set_context_length(4096);
  response->set_vocab_size(1000);
  response->add_eos_token_ids(2);
  response->set_max_prompt_tokens(4000);
  response->set_max_prompt_bytes(1 << 20);
  response->set_max_tokens_limit(4096);
  response->set_default_temperature(1.0f);
  response->set_default_top_p(1.0f);
  response->set_default_top_k(0);
  response->set_attention_nodes(1);
  response->set_attention_nodes_up(1);
  response->set_version("fake");
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

int FakeInferenceService::generate_calls() const {
  absl::MutexLock lock(&mu_);
  return generate_calls_;
}
int FakeInferenceService::chat_calls() const {
  absl::MutexLock lock(&mu_);
  return chat_calls_;
}
int FakeInferenceService::tokenize_calls() const {
  absl::MutexLock lock(&mu_);
  return tokenize_calls_;
}
int FakeInferenceService::cancelled_calls() const {
  absl::MutexLock lock(&mu_);
  return cancelled_calls_;
}
void FakeInferenceService::NoteCancelled() {
  absl::MutexLock lock(&mu_);
  ++cancelled_calls_;
}
bool FakeInferenceService::WaitForCancelledCalls(int n, absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  auto reached = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return cancelled_calls_ >= n; };
  return mu_.AwaitWithTimeout(absl::Condition(&reached), timeout);
}

absl::StatusOr<std::unique_ptr<FakeInferenceServer>> FakeInferenceServer::Start(
    const std::string& host, int port) {
  std::unique_ptr<FakeInferenceServer> server(new FakeInferenceServer());
  int bound_port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat(host, ":", port), grpc::InsecureServerCredentials(),
                           &bound_port);
  builder.RegisterService(&server->service_);
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || bound_port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", host, ":", port));
  }
  server->address_ = absl::StrCat(host, ":", bound_port);
  return server;
}

void FakeInferenceServer::Shutdown() {
  if (server_ == nullptr) return;
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  server_->Wait();
  server_.reset();
}

FakeInferenceServer::~FakeInferenceServer() { Shutdown(); }

}  // namespace phimoe::testing
