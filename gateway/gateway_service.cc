// phimoe.v1.InferenceService on the gateway (see gateway_service.h).
#include "gateway/gateway_service.h"

#include <limits>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/status.h"

namespace phimoe::gateway {
namespace {

using phimoe::v1::GenerateResponse;

phimoe::v1::FinishReason ToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return phimoe::v1::FINISH_REASON_STOP;
    case FinishReason::kLength: return phimoe::v1::FINISH_REASON_LENGTH;
    case FinishReason::kCancelled: return phimoe::v1::FINISH_REASON_CANCELLED;
    case FinishReason::kError: return phimoe::v1::FINISH_REASON_ERROR;
    case FinishReason::kNone: break;
  }
  return phimoe::v1::FINISH_REASON_UNSPECIFIED;
}

class StreamCall;

// The output side of one streaming call; shared with the Request, which may outlive the call.
// Once Finish has been called on the call, the call is never touched again.
class CallSink final : public ResponseSink {
 public:
  explicit CallSink(StreamCall* call) : call_(call) {}

  void Deliver(OutputDelta delta) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (finish_called_ || broken_) return;
    for (int32_t id : delta.token_ids) pending_.add_token_ids(id);
    for (float lp : delta.logprobs) pending_.add_logprobs(lp);
    pending_.mutable_text()->append(delta.text);
    has_pending_ = true;
    Pump(lock);
  }

  void End(OutputEnd end) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (ended_) return;
    ended_ = true;
    end_ = std::move(end);
    Pump(lock);
  }

  // The reactor's OnWriteDone.
  void WriteDone(bool ok) {
    std::unique_lock<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) broken_ = true;  // the client is gone; the request gets cancelled by the reactor
    Pump(lock);
  }

  // Ends a call that never started a request.
  void Abort(const grpc::Status& status);

 private:
  // Starts the next write, or finishes the call once the end is known and everything is written.
  // Called with the lock held; releases it before calling into gRPC.
  void Pump(std::unique_lock<std::mutex>& lock);

  std::mutex mu_;
  StreamCall* const call_;
  GenerateResponse pending_;
  GenerateResponse in_flight_;
  bool has_pending_ = false;
  bool writing_ = false;
  bool wrote_any_ = false;
  bool ended_ = false;
  bool end_written_ = false;
  bool broken_ = false;
  bool finish_called_ = false;
  OutputEnd end_;
};

class StreamCall final : public grpc::ServerWriteReactor<GenerateResponse> {
 public:
  StreamCall() : sink_(std::make_shared<CallSink>(this)) {}

  void Begin(const std::function<absl::StatusOr<std::shared_ptr<Request>>(
                 std::shared_ptr<ResponseSink>)>& start) {
    absl::StatusOr<std::shared_ptr<Request>> request = start(sink_);
    if (!request.ok()) {
      sink_->Abort(ToGrpcStatus(request.status()));
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    request_ = *request;
    if (cancelled_) request_->Cancel();
  }

  void OnWriteDone(bool ok) override {
    sink_->WriteDone(ok);
    if (!ok) CancelRequest();
  }
  void OnCancel() override { CancelRequest(); }
  void OnDone() override { delete this; }

 private:
  void CancelRequest() {
    std::shared_ptr<Request> request;
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled_ = true;
      request = request_;
    }
    if (request != nullptr) request->Cancel();
  }

  std::shared_ptr<CallSink> sink_;
  std::mutex mu_;
  std::shared_ptr<Request> request_;  // guarded by mu_
  bool cancelled_ = false;            // guarded by mu_
};

void CallSink::Abort(const grpc::Status& status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finish_called_) return;
    finish_called_ = true;
    ended_ = true;
  }
  call_->Finish(status);
}

void CallSink::Pump(std::unique_lock<std::mutex>& lock) {
  if (finish_called_ || writing_) return;
  if (!broken_) {
    // A request that failed before any output ends with its status alone (clients may retry).
    const bool status_only = ended_ && !wrote_any_ && !has_pending_ && !end_.status.ok() &&
                             end_.reason != FinishReason::kNone;
    const bool write_end = ended_ && !end_written_ && !status_only;
    if (has_pending_ || write_end) {
      in_flight_ = std::move(pending_);
      pending_.Clear();
      has_pending_ = false;
      if (ended_) {
        in_flight_.set_finish_reason(ToProto(end_.reason));
        in_flight_.mutable_usage()->set_prompt_tokens(end_.prompt_tokens);
        in_flight_.mutable_usage()->set_completion_tokens(end_.completion_tokens);
        if (end_.reason == FinishReason::kError) {
          in_flight_.set_error(std::string(end_.status.message()));
        }
        if (!end_.stop_string.empty()) in_flight_.set_stop_string(end_.stop_string);
        end_written_ = true;
      }
      writing_ = true;
      wrote_any_ = true;
      lock.unlock();
      call_->StartWrite(&in_flight_);
      return;
    }
  }
  if (!ended_) return;
  // Everything is written (or the client is gone): the RPC's status. Errors keep their code; a
  // stream cut short by the server (drain) or by a stop rule is OK with its finish reason.
  grpc::Status status = grpc::Status::OK;
  if (end_.reason == FinishReason::kError || (!wrote_any_ && !end_.status.ok()) ||
      (end_.reason == FinishReason::kCancelled &&
       end_.status.code() == absl::StatusCode::kCancelled)) {
    status = ToGrpcStatus(end_.status);
  }
  finish_called_ = true;
  lock.unlock();
  call_->Finish(status);
}

}  // namespace

InferenceService::InferenceService(Gateway* gateway, const tokenizer::Tokenizer* tokenizer,
                                   ServiceInfo info, GatewayObserver* observer)
    : gateway_(gateway), tokenizer_(tokenizer), info_(std::move(info)), observer_(observer) {}

absl::StatusOr<std::shared_ptr<Request>> InferenceService::Counted(
    absl::StatusOr<std::shared_ptr<Request>> r) {
  if (!r.ok() && observer_ != nullptr) observer_->OnRejected(r.status().code());
  return r;
}

absl::StatusOr<std::shared_ptr<Request>> InferenceService::Start(
    std::vector<int32_t> prompt, const phimoe::v1::GenerationParams& params, const Limits& limits,
    absl::Time deadline, std::shared_ptr<ResponseSink> sink) {
  ASSIGN_OR_RETURN(GenerationSpec spec,
                   ToSpec(params, static_cast<int64_t>(prompt.size()), limits, info_.defaults,
                          static_cast<int64_t>(tokenizer_->vocab_size())));
  tokenizer::StreamDecoder decoder =
      tokenizer_->NewStream(spec.stop_strings, !spec.include_special_tokens);
  auto request = std::make_shared<Request>(std::move(prompt), std::move(spec), deadline,
                                           std::move(sink), std::move(decoder));
  RETURN_IF_ERROR(gateway_->Submit(request));
  return request;
}

absl::StatusOr<std::shared_ptr<Request>> InferenceService::StartGenerate(
    const phimoe::v1::GenerateRequest& request, absl::Time deadline,
    std::shared_ptr<ResponseSink> sink) {
  const Limits limits = gateway_->CurrentLimits();
  absl::StatusOr<std::vector<int32_t>> prompt = GeneratePrompt(request, *tokenizer_, limits);
  if (!prompt.ok()) return Counted(prompt.status());
  return Counted(Start(std::move(*prompt), request.params(), limits, deadline, std::move(sink)));
}

absl::StatusOr<std::shared_ptr<Request>> InferenceService::StartChat(
    const phimoe::v1::ChatRequest& request, absl::Time deadline,
    std::shared_ptr<ResponseSink> sink) {
  const Limits limits = gateway_->CurrentLimits();
  absl::StatusOr<std::vector<int32_t>> prompt = ChatPrompt(request, *tokenizer_, limits);
  if (!prompt.ok()) return Counted(prompt.status());
  return Counted(Start(std::move(*prompt), request.params(), limits, deadline, std::move(sink)));
}

grpc::ServerWriteReactor<GenerateResponse>* InferenceService::Stream(
    grpc::CallbackServerContext* context,
    const std::function<absl::StatusOr<std::shared_ptr<Request>>(std::shared_ptr<ResponseSink>)>&
        start) {
  (void)context;
  auto* call = new StreamCall();
  call->Begin(start);
  return call;
}

grpc::ServerWriteReactor<GenerateResponse>* InferenceService::Generate(
    grpc::CallbackServerContext* context, const phimoe::v1::GenerateRequest* request) {
  const absl::Time deadline = absl::FromChrono(context->deadline());
  return Stream(context, [this, request, deadline](std::shared_ptr<ResponseSink> sink) {
    return StartGenerate(*request, deadline, std::move(sink));
  });
}

grpc::ServerWriteReactor<GenerateResponse>* InferenceService::Chat(
    grpc::CallbackServerContext* context, const phimoe::v1::ChatRequest* request) {
  const absl::Time deadline = absl::FromChrono(context->deadline());
  return Stream(context, [this, request, deadline](std::shared_ptr<ResponseSink> sink) {
    return StartChat(*request, deadline, std::move(sink));
  });
}

grpc::ServerUnaryReactor* InferenceService::Tokenize(grpc::CallbackServerContext* context,
                                                     const phimoe::v1::TokenizeRequest* request,
                                                     phimoe::v1::TokenizeResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Limits limits = gateway_->CurrentLimits();
  // Tokenize only counts: any length the byte limit allows.
  limits.max_prompt_tokens = std::numeric_limits<int64_t>::max();
  absl::StatusOr<std::vector<int32_t>> ids;
  switch (request->input_case()) {
    case phimoe::v1::TokenizeRequest::kText: {
      if (static_cast<int64_t>(request->text().size()) > limits.max_prompt_bytes) {
        ids = absl::InvalidArgumentError(absl::StrCat("text: ", request->text().size(),
                                                      " bytes, over the limit of ",
                                                      limits.max_prompt_bytes));
        break;
      }
      ids = tokenizer_->Encode(request->text());
      if (!ids.ok() && ids.status().code() == absl::StatusCode::kInvalidArgument) {
        ids = absl::InvalidArgumentError(absl::StrCat("text: ", ids.status().message()));
      }
      break;
    }
    case phimoe::v1::TokenizeRequest::kChat:
      ids = ChatPrompt(request->chat(), *tokenizer_, limits, response->mutable_rendered());
      if (!ids.ok() && ids.status().code() == absl::StatusCode::kInvalidArgument) {
        ids = absl::InvalidArgumentError(absl::StrCat("chat.", ids.status().message()));
      }
      break;
    case phimoe::v1::TokenizeRequest::INPUT_NOT_SET:
      ids = absl::InvalidArgumentError("input: set text or chat");
      break;
  }
  if (!ids.ok()) {
    reactor->Finish(ToGrpcStatus(ids.status()));
    return reactor;
  }
  for (int32_t id : *ids) {
    response->add_token_ids(id);
    response->add_tokens(tokenizer_->IdToToken(id).value_or(""));
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::ModelInfo(grpc::CallbackServerContext* context,
                                                      const phimoe::v1::ModelInfoRequest* request,
                                                      phimoe::v1::ModelInfoResponse* response) {
  (void)request;
  const Limits limits = gateway_->CurrentLimits();
  response->set_model_name(info_.model_name);
  response->set_version(info_.version);
  for (const NodeInfo& node : gateway_->node_infos()) {
    if (node.up) {
      *response->mutable_identity() = node.identity;
      break;
    }
  }
  response->set_context_length(limits.context_length);
  response->set_vocab_size(static_cast<int64_t>(tokenizer_->vocab_size()));
  for (int32_t id : info_.defaults.eos_token_ids) response->add_eos_token_ids(id);
  response->set_max_prompt_tokens(limits.max_prompt_tokens);
  response->set_max_prompt_bytes(limits.max_prompt_bytes);
  response->set_max_tokens_limit(limits.max_tokens_limit);
  response->set_default_temperature(info_.defaults.temperature);
  response->set_default_top_p(info_.defaults.top_p);
  response->set_default_top_k(info_.defaults.top_k);
  response->set_attention_nodes(gateway_->nodes());
  response->set_attention_nodes_up(gateway_->nodes_up());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace phimoe::gateway
