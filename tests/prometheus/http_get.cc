// HttpGet (see http_get.h): blocking connect/send/read on a non-blocking socket driven by poll(),
// so that one deadline bounds the whole exchange.
#include "tests/prometheus/http_get.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace phimoe::testing {
namespace {

// Waits for `events` on `fd` until `deadline`; false on timeout or a poll error.
bool WaitFor(int fd, short events, absl::Time deadline) {
  while (true) {
    const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (ms <= 0) return false;
    pollfd p{fd, events, 0};
    const int r = poll(&p, 1, static_cast<int>(std::min<int64_t>(ms, 1000)));
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) return false;
  }
}

class Socket {
 public:
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() {
    if (fd_ >= 0) close(fd_);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

absl::StatusOr<HttpResponse> HttpGet(const std::string& address, const std::string& target,
                                     absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port)) {
    return absl::InvalidArgumentError(absl::StrCat("not HOST:PORT: ", address));
  }
  std::string host = address.substr(0, colon);
  if (host == "localhost" || host == "0.0.0.0") host = "127.0.0.1";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("not a numeric IPv4 host: ", address));
  }
  Socket sock(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (sock.fd() < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  if (connect(sock.fd(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno != EINPROGRESS) {
      return absl::UnavailableError(absl::StrCat("connect ", address, ": ", std::strerror(errno)));
    }
    if (!WaitFor(sock.fd(), POLLOUT, deadline)) {
      return absl::DeadlineExceededError(absl::StrCat("connect ", address, ": timed out"));
    }
    int error = 0;
    socklen_t len = sizeof error;
    getsockopt(sock.fd(), SOL_SOCKET, SO_ERROR, &error, &len);
    if (error != 0) {
      return absl::UnavailableError(absl::StrCat("connect ", address, ": ", std::strerror(error)));
    }
  }
  const std::string request = absl::StrCat("GET ", target, " HTTP/1.0\r\nHost: ", address,
                                           "\r\nAccept: */*\r\nConnection: close\r\n\r\n");
  for (size_t sent = 0; sent < request.size();) {
    const ssize_t n = send(sock.fd(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
      return absl::UnavailableError(absl::StrCat("send to ", address, ": ", std::strerror(errno)));
    } else if (!WaitFor(sock.fd(), POLLOUT, deadline)) {
      return absl::DeadlineExceededError(absl::StrCat("send to ", address, ": timed out"));
    }
  }
  std::string raw;
  char chunk[16384];
  while (true) {
    const ssize_t n = recv(sock.fd(), chunk, sizeof chunk, 0);
    if (n > 0) {
      raw.append(chunk, static_cast<size_t>(n));
    } else if (n == 0) {
      break;
    } else if (errno != EAGAIN && errno != EINTR) {
      return absl::UnavailableError(
          absl::StrCat("read from ", address, ": ", std::strerror(errno)));
    } else if (!WaitFor(sock.fd(), POLLIN, deadline)) {
      return absl::DeadlineExceededError(
          absl::StrCat("GET http://", address, target, ": no complete response in time"));
    }
  }
  // "HTTP/1.x NNN reason\r\n" headers "\r\n\r\n" body
  const size_t end = raw.find("\r\n\r\n");
  HttpResponse response;
  if (raw.rfind("HTTP/1.", 0) != 0 || raw.size() < 12 || end == std::string::npos ||
      !absl::SimpleAtoi(raw.substr(9, 3), &response.status)) {
    return absl::InternalError(absl::StrCat("GET http://", address, target,
                                            ": not an HTTP response: ", raw.substr(0, 80)));
  }
  response.body = raw.substr(end + 4);
  return response;
}

std::string UrlEncode(const std::string& text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

}  // namespace phimoe::testing
