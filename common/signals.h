// The servers' shutdown signals: SIGTERM and SIGINT are blocked in every thread (call this first
// in main, before any thread starts, so all inherit the mask) and taken by sigwait/sigtimedwait on
// the returned set from the main thread.
#pragma once

#include <pthread.h>
#include <signal.h>

namespace phimoe {

inline sigset_t BlockShutdownSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

}  // namespace phimoe
