// The expert protocol's version (protos/phimoe/v1/expert.proto), exchanged in Info both ways: the
// attention node sends its own in ExpertInfoRequest and an expert node answers with its own, and
// either side refuses a peer of another version with FAILED_PRECONDITION naming both. Raise it
// when a change makes old and new peers misread each other (a new field that old peers may ignore
// needs no new version). 0 on the wire is a peer from before versions were sent: it speaks 1.
#pragma once

#include <cstdint>

namespace phimoe::router {

inline constexpr uint32_t kExpertProtocolVersion = 1;

// The version a peer speaks, given what it sent (0: it predates the field, so 1).
constexpr uint32_t PeerProtocolVersion(uint32_t sent) { return sent == 0 ? 1 : sent; }

}  // namespace phimoe::router
