// Reading small files (configs, indexes, tokenizer files) whole, with a size cap so a hostile or
// mistaken path cannot make us allocate without bound.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace phimoe {

// The file's bytes. NOT_FOUND when missing, INVALID_ARGUMENT when not a regular file or larger
// than `max_bytes`, errno-derived codes for read failures; every message names the path.
absl::StatusOr<std::string> ReadSmallFile(const std::string& path, uint64_t max_bytes);

}  // namespace phimoe
