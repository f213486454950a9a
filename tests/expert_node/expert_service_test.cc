// ExpertServiceImpl in process on 127.0.0.1:0 with the tiny fixture, hosting experts 0-7: results
// equal ExpertCompute::Run (f32 exactly, bf16 within its rounding), pipelined requests come back in
// order, two streams share the node, every malformed message gets INVALID_ARGUMENT naming the
// field while the stream keeps working, oversized messages are refused by gRPC, Info, draining.
#include "expert_node/expert_service.h"

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <mutex>
#include <thread>

#include "common/bf16.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace phimoe::expert {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kMaxMessageBytes = 1 << 20;
using Stream = grpc::ClientReaderWriter<v1::ExpertRequest, v1::ExpertResponse>;

struct Case {
  uint32_t layer = 1;
  int64_t n_tokens = 5;
  std::vector<float> hidden;
  std::vector<ExpertAssignment> assignments;
};

// Deterministic inputs; `salt` varies them between requests.
Case MakeCase(int64_t d_model, int salt, int64_t n_tokens = 5) {
  Case c;
  c.layer = static_cast<uint32_t>(salt % 2);
  c.n_tokens = n_tokens;
  c.hidden.resize(static_cast<size_t>(n_tokens * d_model));
  for (size_t i = 0; i < c.hidden.size(); ++i) {
    c.hidden[i] = std::sin(0.37f * static_cast<float>(i) + 0.11f * static_cast<float>(salt));
  }
  for (int64_t t = 0; t < n_tokens; ++t) {
    if (t == 1) continue;  // a token without assignments gives a zero row
    const int32_t e1 = static_cast<int32_t>((t + salt) % 8);
    const int32_t e2 = static_cast<int32_t>((t + salt + 3) % 8);
    c.assignments.push_back({static_cast<int32_t>(t), e1, 1.0f});
    c.assignments.push_back({static_cast<int32_t>(t), e2, 0.25f + 0.125f * static_cast<float>(t)});
  }
  return c;
}

std::vector<float> RoundToBf16(const std::vector<float>& v) {
  std::vector<float> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = Bf16ToFloat(FloatToBf16(v[i]));
  return r;
}

v1::ExpertRequest ToRequest(uint64_t id, const Case& c, v1::DType dtype) {
  v1::ExpertRequest r;
  r.set_request_id(id);
  r.set_layer(c.layer);
  r.set_n_tokens(static_cast<uint32_t>(c.n_tokens));
  r.set_dtype(dtype);
  std::string* h = r.mutable_hidden();
  if (dtype == v1::DTYPE_BF16) {
    h->resize(c.hidden.size() * 2);
    for (size_t i = 0; i < c.hidden.size(); ++i) {
      const bf16_t b = FloatToBf16(c.hidden[i]);
      std::memcpy(h->data() + 2 * i, &b, 2);
    }
  } else {
    h->resize(c.hidden.size() * 4);
    if (!h->empty()) std::memcpy(h->data(), c.hidden.data(), h->size());
  }
  for (const ExpertAssignment& a : c.assignments) {
    r.add_token(static_cast<uint32_t>(a.token));
    r.add_expert(static_cast<uint32_t>(a.expert));
    r.add_weight(a.weight);
  }
  return r;
}

std::vector<float> Decode(const v1::ExpertResponse& r) {
  std::vector<float> out;
  if (r.dtype() == v1::DTYPE_BF16) {
    out.resize(r.output().size() / 2);
    for (size_t i = 0; i < out.size(); ++i) {
      bf16_t b;
      std::memcpy(&b, r.output().data() + 2 * i, 2);
      out[i] = Bf16ToFloat(b);
    }
  } else {
    out.resize(r.output().size() / 4);
    if (!out.empty()) std::memcpy(out.data(), r.output().data(), out.size() * 4);
  }
  return out;
}

class ExpertServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string tiny = std::string(PHIMOE_SHARED_DIR) + "/fixtures/tiny";
    if (!std::filesystem::exists(tiny + "/model.safetensors")) {
      GTEST_SKIP() << "no fixtures at " << tiny;
    }
    ASSERT_OK_AND_ASSIGN(config_, ModelConfig::FromFile(tiny + "/config.json"));
    ASSERT_OK_AND_ASSIGN(ckpt_, Checkpoint::Open(tiny));
    backend_ = kernels::CreateCpuBackend(2);
    ref_backend_ = kernels::CreateCpuBackend(2);
    ASSERT_OK_AND_ASSIGN(ExpertSet half,
                         ExpertSet::Parse("0-7", config_.n_layers, config_.n_experts));
    ASSERT_OK_AND_ASSIGN(compute_, ExpertCompute::Create(config_, *ckpt_, half, backend_.get()));
    ASSERT_OK_AND_ASSIGN(reference_,
                         ExpertCompute::Create(config_, *ckpt_, half, ref_backend_.get()));
    ExpertServiceOptions options;
    options.node_name = "test-node";
    service_ = std::make_unique<ExpertServiceImpl>(compute_.get(), options);
    ExpertServerOptions server_options;
    server_options.listen = "127.0.0.1:0";
    server_options.max_message_bytes = kMaxMessageBytes;
    ASSERT_OK_AND_ASSIGN(server_, StartExpertServer(service_.get(), server_options, &address_));
    grpc::ChannelArguments args;
    args.SetMaxSendMessageSize(-1);
    args.SetMaxReceiveMessageSize(-1);
    channel_ = grpc::CreateCustomChannel(address_, grpc::InsecureChannelCredentials(), args);
    stub_ = v1::ExpertService::NewStub(channel_);
  }

  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    server_.reset();
    service_.reset();
  }

  std::vector<float> Expected(const Case& c) {
    std::vector<float> out(static_cast<size_t>(c.n_tokens * config_.d_model));
    std::lock_guard<std::mutex> lock(reference_mu_);  // Run: one call at a time
    EXPECT_OK(reference_->Run(static_cast<int32_t>(c.layer), c.hidden.data(), c.n_tokens,
                              c.assignments, out.data()));
    return out;
  }

  // Checks a successful response to `c` sent as `dtype` with id `id`.
  void ExpectResult(const v1::ExpertResponse& r, uint64_t id, const Case& c, v1::DType dtype) {
    ASSERT_EQ(r.error_code(), 0) << r.error_message();
    EXPECT_EQ(r.request_id(), id);
    EXPECT_EQ(r.n_tokens(), c.n_tokens);
    EXPECT_EQ(r.dtype(), dtype);
    EXPECT_GT(r.compute_ns(), 0);
    if (dtype == v1::DTYPE_F32) {
      EXPECT_EQ(Decode(r), Expected(c));  // the same computation: exactly equal
      return;
    }
    Case rounded = c;
    rounded.hidden = RoundToBf16(c.hidden);  // what the node saw
    const std::vector<float> want = Expected(rounded);
    const std::vector<float> got = Decode(r);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      // Output rounded to nearest bf16: relative error at most 2^-9 (plus denormal slack).
      EXPECT_NEAR(got[i], want[i], std::abs(want[i]) * (1.0f / 256) + 1e-30f) << i;
    }
  }

  ModelConfig config_;
  std::unique_ptr<Checkpoint> ckpt_;
  std::unique_ptr<kernels::Backend> backend_, ref_backend_;
  std::unique_ptr<ExpertCompute> compute_, reference_;
  std::mutex reference_mu_;
  std::unique_ptr<ExpertServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ExpertService::Stub> stub_;
};

// The derived message limit holds the largest valid request and response of the model (every
// field at its widest), and the default max_tokens follows what a dispatcher ever sends.
TEST_F(ExpertServiceTest, MessageLimitHoldsTheLargestValidMessages) {
  EXPECT_EQ(DefaultMaxTokens(config_), 65536);  // d_model 64: 256-byte rows
  ModelConfig full = config_;
  full.d_model = 4096;
  EXPECT_EQ(DefaultMaxTokens(full), 8192);      // 16 KiB rows under 128 MiB
  EXPECT_EQ(ExpertMessageLimit(full, 1 << 20), INT32_MAX);
  for (int64_t max_tokens : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{300}}) {
    const int64_t limit = ExpertMessageLimit(config_, max_tokens);
    v1::ExpertRequest r;
    r.set_request_id(std::numeric_limits<uint64_t>::max());
    r.set_layer(std::numeric_limits<uint32_t>::max());
    r.set_n_tokens(static_cast<uint32_t>(max_tokens));
    r.set_dtype(v1::DTYPE_F32);
    r.mutable_hidden()->assign(static_cast<size_t>(max_tokens * config_.d_model * 4), 'x');
    for (int64_t i = 0; i < max_tokens * config_.top_k; ++i) {
      r.add_token(std::numeric_limits<uint32_t>::max());
      r.add_expert(std::numeric_limits<uint32_t>::max());
      r.add_weight(1.0f);
    }
    EXPECT_LE(static_cast<int64_t>(r.ByteSizeLong()), limit) << max_tokens;
    v1::ExpertResponse out;
    out.set_request_id(std::numeric_limits<uint64_t>::max());
    out.set_n_tokens(std::numeric_limits<uint32_t>::max());
    out.set_dtype(v1::DTYPE_F32);
    out.mutable_output()->assign(static_cast<size_t>(max_tokens * config_.d_model * 4), 'x');
    out.set_compute_ns(std::numeric_limits<int64_t>::max());
    EXPECT_LE(static_cast<int64_t>(out.ByteSizeLong()), limit) << max_tokens;
    // Not wildly more than needed: within 4 KiB of the request.
    EXPECT_LE(limit - static_cast<int64_t>(r.ByteSizeLong()), 4096 + 14 * max_tokens) << max_tokens;
  }
}

// A node started with the derived limits: a request of max_tokens rows is served, a larger message
// is refused by gRPC before it is buffered, and streams beyond --max-streams are refused.
TEST_F(ExpertServiceTest, DerivedLimitsAndStreamCap) {
  const int64_t max_tokens = 16;
  ExpertServiceOptions options;
  options.max_tokens = max_tokens;
  options.max_streams = 2;
  ExpertServiceImpl service(compute_.get(), options);
  ExpertServerOptions server_options;
  server_options.max_message_bytes = ExpertMessageLimit(config_, max_tokens);
  std::string address;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<grpc::Server> server,
                       StartExpertServer(&service, server_options, &address));
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(-1);
  args.SetMaxReceiveMessageSize(-1);
  auto stub = v1::ExpertService::NewStub(
      grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));

  // Two streams: each served a request of max_tokens rows.
  grpc::ClientContext ctx1, ctx2;
  std::unique_ptr<Stream> s1 = stub->Dispatch(&ctx1), s2 = stub->Dispatch(&ctx2);
  const Case full = MakeCase(config_.d_model, 5, max_tokens);
  v1::ExpertResponse r;
  for (Stream* s : {s1.get(), s2.get()}) {
    ASSERT_TRUE(s->Write(ToRequest(1, full, v1::DTYPE_F32)));
    ASSERT_TRUE(s->Read(&r));
    ExpectResult(r, 1, full, v1::DTYPE_F32);
  }
  // A third stream is refused while two are open.
  {
    grpc::ClientContext ctx3;
    std::unique_ptr<Stream> s3 = stub->Dispatch(&ctx3);
    s3->Write(ToRequest(1, full, v1::DTYPE_F32));
    EXPECT_FALSE(s3->Read(&r));
    const grpc::Status st = s3->Finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
    EXPECT_THAT(st.error_message(), HasSubstr("--max-streams"));
  }
  // A message over the limit (4x the rows) ends its stream with RESOURCE_EXHAUSTED.
  const Case big = MakeCase(config_.d_model, 6, 4 * max_tokens);
  s1->Write(ToRequest(2, big, v1::DTYPE_F32));
  EXPECT_FALSE(s1->Read(&r));
  EXPECT_EQ(s1->Finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // That stream is gone, so a new one is accepted (once the server has seen it end).
  std::unique_ptr<grpc::ClientContext> ctx4;
  std::unique_ptr<Stream> s4;
  for (int attempt = 0; attempt < 100 && s4 == nullptr; ++attempt) {
    ctx4 = std::make_unique<grpc::ClientContext>();
    std::unique_ptr<Stream> s = stub->Dispatch(ctx4.get());
    if (s->Write(ToRequest(3, full, v1::DTYPE_F32)) && s->Read(&r)) {
      s4 = std::move(s);
    } else {
      s->Finish();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  ASSERT_NE(s4, nullptr);
  ExpectResult(r, 3, full, v1::DTYPE_F32);
  for (Stream* s : {s2.get(), s4.get()}) {
    s->WritesDone();
    EXPECT_TRUE(s->Finish().ok());
  }
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
}

TEST_F(ExpertServiceTest, F32AndBf16MatchCompute) {
  grpc::ClientContext ctx;
  std::unique_ptr<Stream> stream = stub_->Dispatch(&ctx);
  const Case c = MakeCase(config_.d_model, 3);
  v1::ExpertResponse r;
  ASSERT_TRUE(stream->Write(ToRequest(7, c, v1::DTYPE_F32)));
  ASSERT_TRUE(stream->Read(&r));
  ExpectResult(r, 7, c, v1::DTYPE_F32);
  // Rows without assignments are zero.
  const std::vector<float> out = Decode(r);
  for (int64_t i = 0; i < config_.d_model; ++i)
    EXPECT_EQ(out[static_cast<size_t>(config_.d_model + i)], 0.0f);
  ASSERT_TRUE(stream->Write(ToRequest(8, c, v1::DTYPE_BF16)));
  ASSERT_TRUE(stream->Read(&r));
  ExpectResult(r, 8, c, v1::DTYPE_BF16);
  EXPECT_EQ(r.output().size(), static_cast<size_t>(c.n_tokens * config_.d_model * 2));
  // Zero tokens: an empty answer.
  Case empty;
  empty.n_tokens = 0;
  ASSERT_TRUE(stream->Write(ToRequest(9, empty, v1::DTYPE_F32)));
  ASSERT_TRUE(stream->Read(&r));
  EXPECT_EQ(r.error_code(), 0) << r.error_message();
  EXPECT_EQ(r.request_id(), 9u);
  EXPECT_TRUE(r.output().empty());
  ASSERT_TRUE(stream->WritesDone());
  EXPECT_FALSE(stream->Read(&r));
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(ExpertServiceTest, PipelinedRequestsAnsweredInOrder) {
  grpc::ClientContext ctx;
  std::unique_ptr<Stream> stream = stub_->Dispatch(&ctx);
  std::vector<Case> cases;
  for (int i = 0; i < 12; ++i) cases.push_back(MakeCase(config_.d_model, i, 1 + i % 6));
  // Invalid requests interleaved: answered in their place, not ahead of queued work.
  for (int i = 0; i < 12; ++i) {
    v1::ExpertRequest req = ToRequest(100 + static_cast<uint64_t>(i), cases[static_cast<size_t>(i)],
                                      i % 3 == 0 ? v1::DTYPE_BF16 : v1::DTYPE_F32);
    if (i % 5 == 4) req.set_layer(99);
    ASSERT_TRUE(stream->Write(req));
  }
  ASSERT_TRUE(stream->WritesDone());
  for (int i = 0; i < 12; ++i) {
    v1::ExpertResponse r;
    ASSERT_TRUE(stream->Read(&r)) << i;
    if (i % 5 == 4) {
      EXPECT_EQ(r.request_id(), 100u + static_cast<uint64_t>(i));
      EXPECT_EQ(r.error_code(), 3);
      continue;
    }
    ExpectResult(r, 100 + static_cast<uint64_t>(i), cases[static_cast<size_t>(i)],
                 i % 3 == 0 ? v1::DTYPE_BF16 : v1::DTYPE_F32);
  }
  v1::ExpertResponse extra;
  EXPECT_FALSE(stream->Read(&extra));
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(ExpertServiceTest, ConcurrentStreams) {
  auto client = [&](int which) {
    grpc::ClientContext ctx;
    std::unique_ptr<Stream> stream = stub_->Dispatch(&ctx);
    std::vector<Case> cases;
    for (int i = 0; i < 16; ++i) cases.push_back(MakeCase(config_.d_model, which * 7 + i, 3));
    std::thread writer([&] {
      for (int i = 0; i < 16; ++i) {
        stream->Write(ToRequest(static_cast<uint64_t>(which * 1000 + i),
                                cases[static_cast<size_t>(i)], v1::DTYPE_F32));
      }
      stream->WritesDone();
    });
    for (int i = 0; i < 16; ++i) {
      v1::ExpertResponse r;
      if (!stream->Read(&r)) {
        ADD_FAILURE() << "stream " << which << " ended at " << i;
        break;
      }
      ExpectResult(r, static_cast<uint64_t>(which * 1000 + i), cases[static_cast<size_t>(i)],
                   v1::DTYPE_F32);
    }
    writer.join();
    EXPECT_TRUE(stream->Finish().ok());
  };
  std::thread a(client, 1), b(client, 2);
  a.join();
  b.join();
}

TEST_F(ExpertServiceTest, MalformedRequestsGetInvalidArgumentAndStreamGoesOn) {
  const int64_t d = config_.d_model;
  const Case c = MakeCase(d, 5);
  const v1::ExpertRequest good = ToRequest(1, c, v1::DTYPE_F32);
  struct Bad {
    const char* name;
    const char* field;  // expected in the message
    std::function<void(v1::ExpertRequest&)> mutate;
  };
  const std::vector<Bad> bads = {
      {"short hidden", "hidden",
       [](v1::ExpertRequest& r) { r.mutable_hidden()->resize(r.hidden().size() - 1); }},
      {"long hidden", "hidden", [](v1::ExpertRequest& r) { r.mutable_hidden()->append(4, '\0'); }},
      {"n_tokens lying", "hidden", [](v1::ExpertRequest& r) { r.set_n_tokens(r.n_tokens() + 1); }},
      {"n_tokens huge", "n_tokens", [](v1::ExpertRequest& r) { r.set_n_tokens(0xffffffffu); }},
      {"bf16 with f32 bytes", "hidden", [](v1::ExpertRequest& r) { r.set_dtype(v1::DTYPE_BF16); }},
      {"fewer weights", "weight", [](v1::ExpertRequest& r) { r.mutable_weight()->RemoveLast(); }},
      {"more experts", "expert", [](v1::ExpertRequest& r) { r.add_expert(0); }},
      {"token out of range", "token[", [](v1::ExpertRequest& r) { r.set_token(2, r.n_tokens()); }},
      {"unknown layer", "layer", [](v1::ExpertRequest& r) { r.set_layer(2); }},
      {"expert not hosted", "not hosted", [](v1::ExpertRequest& r) { r.set_expert(0, 9); }},
      {"expert out of range", "expert[", [](v1::ExpertRequest& r) { r.set_expert(0, 16); }},
      {"NaN weight", "weight[",
       [](v1::ExpertRequest& r) { r.set_weight(1, std::numeric_limits<float>::quiet_NaN()); }},
      {"inf weight", "weight[",
       [](v1::ExpertRequest& r) { r.set_weight(1, std::numeric_limits<float>::infinity()); }},
      {"unknown dtype", "dtype",
       [](v1::ExpertRequest& r) { r.set_dtype(static_cast<v1::DType>(7)); }},
      {"unspecified dtype", "dtype",
       [](v1::ExpertRequest& r) { r.set_dtype(v1::DTYPE_UNSPECIFIED); }},
  };
  grpc::ClientContext ctx;
  std::unique_ptr<Stream> stream = stub_->Dispatch(&ctx);
  uint64_t id = 1000;
  for (const Bad& bad : bads) {
    v1::ExpertRequest req = good;
    req.set_request_id(++id);
    bad.mutate(req);
    ASSERT_TRUE(stream->Write(req)) << bad.name;
    v1::ExpertResponse r;
    ASSERT_TRUE(stream->Read(&r)) << bad.name;
    EXPECT_EQ(r.request_id(), id) << bad.name;
    EXPECT_EQ(r.error_code(), 3) << bad.name;  // INVALID_ARGUMENT
    EXPECT_THAT(r.error_message(), HasSubstr(bad.field)) << bad.name;
    EXPECT_TRUE(r.output().empty()) << bad.name;
    // The stream still works.
    ASSERT_TRUE(stream->Write(ToRequest(++id, c, v1::DTYPE_F32))) << bad.name;
    ASSERT_TRUE(stream->Read(&r)) << bad.name;
    ExpectResult(r, id, c, v1::DTYPE_F32);
  }
  ASSERT_TRUE(stream->WritesDone());
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(ExpertServiceTest, OversizedMessageRefusedAndServerSurvives) {
  {
    grpc::ClientContext ctx;
    std::unique_ptr<Stream> stream = stub_->Dispatch(&ctx);
    const int64_t n = 2 * kMaxMessageBytes / (config_.d_model * 4);  // 2 MiB of hidden
    Case big = MakeCase(config_.d_model, 1, n);
    stream->Write(ToRequest(1, big, v1::DTYPE_F32));
    v1::ExpertResponse r;
    EXPECT_FALSE(stream->Read(&r));
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  grpc::ClientContext ctx;
  std::unique_ptr<Stream> stream = stub_->Dispatch(&ctx);
  const Case c = MakeCase(config_.d_model, 2);
  v1::ExpertResponse r;
  ASSERT_TRUE(stream->Write(ToRequest(2, c, v1::DTYPE_F32)));
  ASSERT_TRUE(stream->Read(&r));
  ExpectResult(r, 2, c, v1::DTYPE_F32);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(ExpertServiceTest, InfoRefusesAnotherProtocolVersionNamingBoth) {
  for (uint32_t version : {0u, 1u, 2u}) {
    grpc::ClientContext ctx;
    v1::ExpertInfoRequest request;
    request.set_protocol_version(version);
    v1::ExpertInfoResponse info;
    const grpc::Status s = stub_->Info(&ctx, request, &info);
    if (version == 2) {
      EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
      EXPECT_THAT(s.error_message(), HasSubstr("speaks expert protocol version 1; the caller "
                                               "speaks version 2"));
    } else {  // 0: a caller from before versions were sent, which speaks 1
      EXPECT_TRUE(s.ok()) << version << ": " << s.error_message();
      EXPECT_EQ(info.protocol_version(), 1u);
    }
  }
}

TEST_F(ExpertServiceTest, Info) {
  grpc::ClientContext ctx;
  v1::ExpertInfoResponse info;
  ASSERT_TRUE(stub_->Info(&ctx, v1::ExpertInfoRequest(), &info).ok());
  EXPECT_EQ(info.model().model_type(), "phimoe");
  EXPECT_EQ(info.model().config_hash(), config_.Hash());
  EXPECT_EQ(info.model().d_model(), config_.d_model);
  EXPECT_EQ(info.model().n_layers(), config_.n_layers);
  EXPECT_EQ(info.model().n_experts(), config_.n_experts);
  EXPECT_EQ(info.model().vocab_size(), config_.vocab_size);
  ASSERT_EQ(info.served_size(), config_.n_layers);
  for (int l = 0; l < info.served_size(); ++l) {
    EXPECT_EQ(info.served(l).layer(), static_cast<uint32_t>(l));
    EXPECT_THAT(info.served(l).experts(), ::testing::ElementsAre(0, 1, 2, 3, 4, 5, 6, 7));
  }
  EXPECT_EQ(info.dtype(), v1::DTYPE_F32);
  EXPECT_EQ(info.node_name(), "test-node");
}

TEST_F(ExpertServiceTest, DrainClosesStreamsWithUnavailable) {
  grpc::ClientContext ctx;
  std::unique_ptr<Stream> stream = stub_->Dispatch(&ctx);
  const Case c = MakeCase(config_.d_model, 4);
  v1::ExpertResponse r;
  ASSERT_TRUE(stream->Write(ToRequest(1, c, v1::DTYPE_F32)));
  ASSERT_TRUE(stream->Read(&r));
  service_->StartDrain();
  EXPECT_FALSE(stream->Read(&r));
  grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_TRUE(service_->WaitStreamsClosed(absl::Seconds(10)));
  // A new stream is refused.
  grpc::ClientContext ctx2;
  std::unique_ptr<Stream> late = stub_->Dispatch(&ctx2);
  late->Write(ToRequest(2, c, v1::DTYPE_F32));
  EXPECT_FALSE(late->Read(&r));
  EXPECT_EQ(late->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(ExpertServiceTest, DrainAnswersQueuedWorkFirst) {
  grpc::ClientContext ctx;
  std::unique_ptr<Stream> stream = stub_->Dispatch(&ctx);
  std::vector<Case> cases;
  for (int i = 0; i < 24; ++i) cases.push_back(MakeCase(config_.d_model, i, 128));
  for (int i = 0; i < 24; ++i) {
    ASSERT_TRUE(stream->Write(
        ToRequest(static_cast<uint64_t>(i), cases[static_cast<size_t>(i)], v1::DTYPE_F32)));
  }
  service_->StartDrain();
  // Requests read before the drain are computed and answered in order; at most the one read in
  // flight is answered UNAVAILABLE; then the stream closes with UNAVAILABLE.
  int answered = 0, unavailable = 0;
  v1::ExpertResponse r;
  while (stream->Read(&r)) {
    ASSERT_LT(answered, 24);
    EXPECT_EQ(r.request_id(), static_cast<uint64_t>(answered));
    if (r.error_code() == 0) {
      EXPECT_EQ(unavailable, 0) << "a computed answer after an UNAVAILABLE one";
      ExpectResult(r, static_cast<uint64_t>(answered), cases[static_cast<size_t>(answered)],
                   v1::DTYPE_F32);
    } else {
      EXPECT_EQ(r.error_code(), static_cast<int>(absl::StatusCode::kUnavailable));
      ++unavailable;
    }
    ++answered;
  }
  RecordProperty("answered", answered);
  EXPECT_LE(unavailable, 1);
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(ExpertServiceTest, ClientCancelWithQueuedWork) {
  for (int round = 0; round < 3; ++round) {
    grpc::ClientContext ctx;
    std::unique_ptr<Stream> stream = stub_->Dispatch(&ctx);
    for (int i = 0; i < 20; ++i) {
      stream->Write(
          ToRequest(static_cast<uint64_t>(i), MakeCase(config_.d_model, i, 64), v1::DTYPE_F32));
    }
    ctx.TryCancel();
    stream->Finish();
  }
  EXPECT_TRUE(service_->WaitStreamsClosed(absl::Seconds(10)));
  // Still serving.
  grpc::ClientContext ctx;
  std::unique_ptr<Stream> stream = stub_->Dispatch(&ctx);
  const Case c = MakeCase(config_.d_model, 9);
  v1::ExpertResponse r;
  ASSERT_TRUE(stream->Write(ToRequest(5, c, v1::DTYPE_F32)));
  ASSERT_TRUE(stream->Read(&r));
  ExpectResult(r, 5, c, v1::DTYPE_F32);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

}  // namespace
}  // namespace phimoe::expert
