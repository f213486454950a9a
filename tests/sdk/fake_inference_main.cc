// phimoe-fake-inference: the FakeInferenceService (tests/sdk/fake_inference_service.h) as a
// process, for the `phimoe` CLI tests. Prints `listening on HOST:PORT` once serving; SIGTERM or
// SIGINT stops it (exit 0).
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <string>

#include "common/flags.h"
#include "tests/sdk/fake_inference_service.h"

int main(int argc, char** argv) {
  // Blocked before gRPC starts its threads, so only the sigwait below takes them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  std::string host = "127.0.0.1";
  int64_t port = 0;
  phimoe::FlagParser parser("phimoe-fake-inference", "[--host H] [--port P]",
                            "A fake phimoe.v1.InferenceService with canned answers, for tests.");
  parser.AddString("host", &host, "address to bind");
  parser.AddInt("port", &port, "port to bind (0 = a free one)");
  parser.ParseOrExit(argc, argv);

  auto server = phimoe::testing::FakeInferenceServer::Start(host, static_cast<int>(port));
  if (!server.ok()) {
    std::fprintf(stderr, "phimoe-fake-inference: %s\n", server.status().ToString().c_str());
    return 1;
  }
  std::printf("listening on %s\n", (*server)->address().c_str());
  std::fflush(stdout);
  int signal = 0;
  sigwait(&stop_signals, &signal);
  (*server)->Shutdown();
  return 0;
}
