// A stand-in for phimoe-gateway in phimoe-local's tests: takes the gateway's flags, checks that the
// attention node it is given reports SERVING, then serves grpc.health.v1 (SERVING) and an
// InferenceService whose RPCs are all UNIMPLEMENTED; prints
// `listening on HOST:PORT`, and exits 0 on SIGTERM/SIGINT. It lets the launcher's start-up, stop
// order and failure handling be tested without the real gateway.
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <string>

#include "common/flags.h"
#include "phimoe/v1/inference.grpc.pb.h"
#include "tools/local/health_check.h"

int main(int argc, char** argv) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::string model, tokenizer, attention_nodes, listen;
  phimoe::CommonFlags common;
  phimoe::FlagParser flags("fake-gateway",
                           "--model DIR --tokenizer DIR --attention-nodes ADDR --listen ADDR",
                           "Test double of phimoe-gateway: health only.");
  flags.AddString("model", &model, "model folder");
  flags.AddString("tokenizer", &tokenizer, "tokenizer folder");
  flags.AddString("attention-nodes", &attention_nodes, "attention node address");
  flags.AddString("listen", &listen, "HOST:PORT");
  common.Register(flags);
  flags.ParseOrExit(argc, argv);
  if (model.empty() || tokenizer.empty() || attention_nodes.empty() || listen.empty()) {
    std::fprintf(stderr, "fake-gateway: missing flags\n");
    return 2;
  }
  auto health = phimoe::local::CheckHealth(attention_nodes, absl::Seconds(10));
  if (!health.ok() || *health != phimoe::local::ServingStatus::kServing) {
    std::fprintf(stderr, "fake-gateway: attention node %s not serving\n", attention_nodes.c_str());
    return 1;
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  phimoe::v1::InferenceService::Service unimplemented;  // every RPC answers UNIMPLEMENTED
  builder.RegisterService(&unimplemented);
  int port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) return 1;
  std::fprintf(stderr, "fake-gateway: serving health only\n");
  std::printf("listening on %s:%d\n", listen.substr(0, listen.rfind(':')).c_str(), port);
  std::fflush(stdout);
  int sig = 0;
  sigwait(&signals, &sig);
  server->Shutdown();
  std::fprintf(stderr, "fake-gateway: stopped\n");
  return 0;
}
