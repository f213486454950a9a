// A minimal HTTP/1.0 GET over a plain TCP socket for tests that read /metrics pages and
// Prometheus' HTTP API on loopback, without another client library: one request per connection,
// the whole response read until the server closes. No TLS, redirects or chunked bodies (an
// HTTP/1.0 request is never answered chunked).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace phimoe::testing {

struct HttpResponse {
  int status = 0;    // e.g. 200
  std::string body;  // after the blank line that ends the headers
};

// GET http://`address``target` (address "HOST:PORT" with a numeric IPv4 host, or "localhost";
// target "/path?query", already URL-encoded). UNAVAILABLE when the connection fails,
// DEADLINE_EXCEEDED after `timeout`, INTERNAL for a response that is not HTTP.
absl::StatusOr<HttpResponse> HttpGet(const std::string& address, const std::string& target,
                                     absl::Duration timeout = absl::Seconds(5));

// Percent-encodes everything but unreserved characters (RFC 3986), for query values.
std::string UrlEncode(const std::string& text);

}  // namespace phimoe::testing
