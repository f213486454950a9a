// Tests for common/safetensors: writer → reader round trips (single file and sharded folders), and
// hostile files, each of which must give INVALID_ARGUMENT or NOT_FOUND naming the file and tensor
// (never a crash or an over-read), plus the shared tiny fixture when it is present.
#include "common/safetensors.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace phimoe {
namespace {

using ::phimoe::testing::IsOk;
using ::phimoe::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string MakeTempDir() {
  std::string tmpl = ::testing::TempDir() + "/safetensors_test_XXXXXX";
  char* dir = ::mkdtemp(tmpl.data());
  EXPECT_NE(dir, nullptr);
  return tmpl;
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string LengthPrefix(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(n >> (8 * i));
  return s;
}

// A file with the given header text (padded to 8) and `data_bytes` bytes of data.
std::string RawFile(const std::string& header, size_t data_bytes) {
  std::string h = header;
  h.append((8 - h.size() % 8) % 8, ' ');
  return LengthPrefix(h.size()) + h + std::string(data_bytes, '\x11');
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = MakeTempDir(); }
  void TearDown() override { std::system(("rm -rf '" + dir_ + "'").c_str()); }

  // Writes `bytes` to a file and opens it.
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> OpenBytes(
      const std::string& bytes, const std::string& name = "t.safetensors") {
    path_ = dir_ + "/" + name;
    WriteBytes(path_, bytes);
    return SafetensorsFile::Open(path_);
  }
  // Expects Open of a file with `header` and `data_bytes` to fail with INVALID_ARGUMENT naming the
  // file and every string in `mentions`.
  void ExpectRejected(const std::string& header, size_t data_bytes,
                      const std::vector<std::string>& mentions) {
    auto file = OpenBytes(RawFile(header, data_bytes));
    ASSERT_THAT(file, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(path_))) << header;
    for (const auto& m : mentions) {
      EXPECT_THAT(std::string(file.status().message()), HasSubstr(m)) << header;
    }
  }

  std::string dir_;
  std::string path_;
};

TEST_F(SafetensorsTest, WriterRoundTrip) {
  const std::string path = dir_ + "/rt.safetensors";
  std::vector<SafetensorsWriter::Entry> entries = {
      {"a.f32", DType::kF32, {2, 3}},   {"b.bf16", DType::kBF16, {4}},
      {"c.i64", DType::kI64, {2}},      {"d.u8", DType::kU8, {3}},
      {"e.empty", DType::kF32, {0, 5}}, {"f.scalar", DType::kU8, {}},
  };
  ASSERT_OK_AND_ASSIGN(auto writer, SafetensorsWriter::Create(path, entries, {{"format", "pt"}}));
  EXPECT_EQ(writer->data_bytes(), 24u + 8u + 16u + 3u + 0u + 1u);
  std::string data;
  for (size_t i = 0; i < writer->data_bytes(); ++i) data.push_back(static_cast<char>(i * 7 + 1));
  // Odd chunk sizes, including empty writes.
  size_t pos = 0;
  for (size_t chunk : {0, 5, 1, 13, 0, 100}) {
    size_t n = std::min(chunk, data.size() - pos);
    ASSERT_OK(writer->Write(data.data() + pos, n));
    pos += n;
  }
  ASSERT_EQ(pos, data.size());
  ASSERT_OK(writer->Finish());
  EXPECT_NE(::access((path + ".partial").c_str(), F_OK), 0);

  const std::string bytes = ReadBytes(path);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  EXPECT_EQ(header_len % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + header_len + data.size());

  ASSERT_OK_AND_ASSIGN(auto file, SafetensorsFile::Open(path));
  EXPECT_THAT(file->names(),
              ElementsAre("a.f32", "b.bf16", "c.i64", "d.u8", "e.empty", "f.scalar"));
  EXPECT_EQ(file->metadata().at("format"), "pt");
  ASSERT_OK_AND_ASSIGN(TensorView a, file->Get("a.f32"));
  EXPECT_EQ(a.info->dtype, DType::kF32);
  EXPECT_THAT(a.info->shape, ElementsAre(2, 3));
  EXPECT_EQ(a.info->numel(), 6);
  EXPECT_EQ(a.n_bytes, 24u);
  EXPECT_EQ(a.file, path);
  EXPECT_EQ(std::memcmp(a.data, data.data(), 24), 0);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data) % 4, 0u);
  ASSERT_OK_AND_ASSIGN(TensorView c, file->Get("c.i64"));
  EXPECT_EQ(std::memcmp(c.data, data.data() + 32, 16), 0);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(c.data) % 8, 0u);
  ASSERT_OK_AND_ASSIGN(TensorView d, file->Get("d.u8"));
  EXPECT_EQ(std::memcmp(d.data, data.data() + 48, 3), 0);
  ASSERT_OK_AND_ASSIGN(TensorView e, file->Get("e.empty"));
  EXPECT_EQ(e.n_bytes, 0u);
  EXPECT_EQ(e.info->numel(), 0);
  ASSERT_OK_AND_ASSIGN(TensorView f, file->Get("f.scalar"));
  EXPECT_EQ(f.info->numel(), 1);
  EXPECT_EQ(f.n_bytes, 1u);
  file->Prefetch(a);  // a hint; must not fail or crash
  file->Prefetch(TensorView{});
  EXPECT_THAT(file->Get("nope"),
              StatusIs(absl::StatusCode::kNotFound, AllOf(HasSubstr(path), HasSubstr("\"nope\""))));
  EXPECT_EQ(file->Find("nope"), nullptr);
}

TEST_F(SafetensorsTest, WriterChecksByteCount) {
  const std::string path = dir_ + "/short.safetensors";
  {
    ASSERT_OK_AND_ASSIGN(auto writer, SafetensorsWriter::Create(path, {{"x", DType::kF32, {4}}}));
    char buf[20] = {};
    EXPECT_THAT(writer->Write(buf, 20),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(path)));
    ASSERT_OK(writer->Write(buf, 8));
    EXPECT_THAT(writer->Finish(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("8")));
    EXPECT_FALSE(writer->Finish().ok());  // closed
  }
  EXPECT_NE(::access(path.c_str(), F_OK), 0);
  EXPECT_NE(::access((path + ".partial").c_str(), F_OK), 0);
  {  // abandoned writer: nothing left behind
    ASSERT_OK_AND_ASSIGN(auto writer, SafetensorsWriter::Create(path, {{"x", DType::kF32, {4}}}));
    EXPECT_EQ(::access((path + ".partial").c_str(), F_OK), 0);
  }
  EXPECT_NE(::access((path + ".partial").c_str(), F_OK), 0);
  EXPECT_NE(::access(path.c_str(), F_OK), 0);
}

TEST_F(SafetensorsTest, WriterRejectsBadEntries) {
  const std::string path = dir_ + "/bad.safetensors";
  EXPECT_THAT(SafetensorsWriter::Create(path, {{"x", DType::kF32, {-1}}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"x\"")));
  EXPECT_THAT(SafetensorsWriter::Create(path, {{"x", DType::kF32, {1}}, {"x", DType::kF32, {1}}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("twice")));
  EXPECT_THAT(SafetensorsWriter::Create(path, {{"", DType::kF32, {1}}}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(SafetensorsWriter::Create(path, {{"__metadata__", DType::kF32, {1}}}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(SafetensorsWriter::Create(path, {{"u8", DType::kU8, {3}}, {"f", DType::kF32, {1}}}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("aligned")));
  EXPECT_THAT(SafetensorsWriter::Create(path, {{"bad\xff", DType::kF32, {1}}}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(
      SafetensorsWriter::Create(dir_ + "/no/such/dir/x.safetensors", {{"x", DType::kF32, {1}}}),
      StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(SafetensorsTest, DTypes) {
  for (DType d : {DType::kBF16, DType::kF16, DType::kF32, DType::kF64, DType::kI64, DType::kI32,
                  DType::kI16, DType::kI8, DType::kU8, DType::kBool}) {
    ASSERT_OK_AND_ASSIGN(DType back, ParseDType(DTypeName(d)));
    EXPECT_EQ(back, d);
  }
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kF64), 8u);
  EXPECT_THAT(ParseDType("bf16"), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bf16")));
}

TEST_F(SafetensorsTest, MissingFile) {
  EXPECT_THAT(SafetensorsFile::Open(dir_ + "/none.safetensors"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("none.safetensors")));
  EXPECT_THAT(SafetensorsFile::Open(dir_), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(SafetensorsTest, TruncatedFile) {
  auto empty = OpenBytes("", "empty.safetensors");
  EXPECT_THAT(empty, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(path_)));
  auto short_file = OpenBytes(std::string("\x10\0\0\0", 4), "short.safetensors");
  EXPECT_THAT(short_file, StatusIs(absl::StatusCode::kInvalidArgument,
                                   AllOf(HasSubstr(path_), HasSubstr("too short"))));
  // Every truncation of a valid file fails cleanly (none is accepted: each cuts the header or
  // data).
  const std::string valid =
      RawFile(R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})", 16);
  ASSERT_THAT(OpenBytes(valid), IsOk());
  for (size_t n = 0; n < valid.size(); ++n) {
    auto file = OpenBytes(valid.substr(0, n), "cut.safetensors");
    EXPECT_THAT(file, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(path_))) << n;
  }
}

TEST_F(SafetensorsTest, HeaderLengthChecks) {
  EXPECT_THAT(OpenBytes(LengthPrefix(0) + "{}"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("length is 0")));
  auto beyond = OpenBytes(LengthPrefix(64) + "{}", "beyond.safetensors");
  EXPECT_THAT(beyond, StatusIs(absl::StatusCode::kInvalidArgument,
                               AllOf(HasSubstr(path_), HasSubstr("past the end of the file"))));
  EXPECT_THAT(OpenBytes(LengthPrefix(uint64_t{1} << 63) + "{}"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("limit")));
  EXPECT_THAT(OpenBytes(LengthPrefix(~uint64_t{0}) + "{}"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("limit")));
  EXPECT_THAT(OpenBytes(LengthPrefix(200u << 20) + "{}"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("limit")));
}

TEST_F(SafetensorsTest, BadJson) {
  ExpectRejected(R"({"w":{"dtype":"F32",)", 0, {"not valid JSON"});
  ExpectRejected(R"([1, 2, 3])", 0, {"not a JSON object"});
  ExpectRejected(R"({"w": [1, 2]})", 0, {"\"w\"", "not a JSON object"});
  ExpectRejected(R"({"__metadata__": {"format": 1}})", 0, {"__metadata__", "format"});
  ExpectRejected(R"({"__metadata__": [1]})", 0, {"__metadata__"});
}

TEST_F(SafetensorsTest, BadEntries) {
  ExpectRejected(R"({"w":{"dtype":"Q8","shape":[4],"data_offsets":[0,4]}})", 4, {"\"w\"", "Q8"});
  ExpectRejected(R"({"w":{"shape":[4],"data_offsets":[0,4]}})", 4, {"\"w\"", "dtype"});
  ExpectRejected(R"({"w":{"dtype":"U8","shape":[-1,4],"data_offsets":[0,4]}})", 4,
                 {"\"w\"", "shape"});
  ExpectRejected(R"({"w":{"dtype":"U8","shape":[1.5],"data_offsets":[0,4]}})", 4,
                 {"\"w\"", "shape"});
  ExpectRejected(R"({"w":{"dtype":"U8","shape":"4","data_offsets":[0,4]}})", 4, {"\"w\"", "shape"});
  ExpectRejected(R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[0]}})", 4,
                 {"\"w\"", "data_offsets"});
  ExpectRejected(R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4,8]}})", 8,
                 {"\"w\"", "data_offsets"});
  ExpectRejected(R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[-4,0]}})", 4,
                 {"\"w\"", "data_offsets"});
  ExpectRejected(R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}})", 4,
                 {"\"w\"", "backwards"});
}

TEST_F(SafetensorsTest, OffsetsPastTheEnd) {
  ExpectRejected(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 12,
                 {"\"w\"", "past the data section"});
  ExpectRejected(R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[99,99]}})", 12,
                 {"\"w\"", "past the data section"});
  ExpectRejected(
      R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[18446744073709551615,18446744073709551615]}})",
      4, {"\"w\""});
}

TEST_F(SafetensorsTest, ShapeTimesDtypeMismatch) {
  ExpectRejected(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,16]}})", 16,
                 {"\"w\"", "[2, 3]", "16 data bytes"});
  ExpectRejected(R"({"w":{"dtype":"BF16","shape":[3],"data_offsets":[0,3]}})", 4, {"\"w\""});
  // The product overflows 64 bits; a naive multiplication would wrap to 0 and match [0, 0].
  ExpectRejected(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0,
                 {"\"w\""});
  ExpectRejected(R"({"w":{"dtype":"U8","shape":[9223372036854775808],"data_offsets":[0,0]}})", 0,
                 {"\"w\""});
}

TEST_F(SafetensorsTest, OverlapsAndAlignment) {
  ExpectRejected(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                 R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                 12, {"\"a\"", "\"b\"", "overlaps"});
  ExpectRejected(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                 R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                 8, {"overlaps"});
  ExpectRejected(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}})", 8,
                 {"\"a\"", "aligned"});
  // Empty tensors may sit anywhere; adjacent ranges are fine.
  EXPECT_THAT(OpenBytes(RawFile(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},)"
                                R"("z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
                                8)),
              IsOk());
}

// Random corruption of a valid file's header and data: Open either fails cleanly or returns
// tensors whose bytes lie inside the file.
TEST_F(SafetensorsTest, CorruptedHeadersNeverCrash) {
  const std::string valid = RawFile(
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
      R"("b":{"dtype":"BF16","shape":[4],"data_offsets":[16,24]}})",
      24);
  std::mt19937 rng(7);
  const char kAlphabet[] = "0123456789[]{},:\"-.eE ABFUI";
  int accepted = 0;
  for (int iter = 0; iter < 600; ++iter) {
    std::string bytes = valid;
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      size_t pos = rng() % bytes.size();
      bytes[pos] =
          (rng() % 2) ? kAlphabet[rng() % (sizeof(kAlphabet) - 1)] : static_cast<char>(rng());
    }
    if (rng() % 8 == 0) bytes.resize(rng() % bytes.size());
    auto file = OpenBytes(bytes, "fuzz.safetensors");
    if (!file.ok()) {
      EXPECT_TRUE(absl::IsInvalidArgument(file.status())) << file.status();
      EXPECT_THAT(std::string(file.status().message()), HasSubstr(path_));
      continue;
    }
    ++accepted;
    for (const std::string& name : (*file)->names()) {
      ASSERT_OK_AND_ASSIGN(TensorView v, (*file)->Get(name));
      const char* lo = reinterpret_cast<const char*>(v.data);
      uint64_t header_len = 0;
      std::memcpy(&header_len, bytes.data(), 8);
      EXPECT_LE(8 + header_len + v.info->end, bytes.size());
      volatile char sink = 0;
      for (size_t i = 0; i < v.n_bytes; ++i) sink = sink + lo[i];  // touches every byte
    }
  }
  EXPECT_GT(accepted, 0);  // some edits (e.g. in padding) keep the file valid
}

// --- Checkpoint folders -------------------------------------------------------------------------

// Writes a shard holding `names` (F32 [2, n] each, value = index) into dir/file.
void WriteShard(const std::string& path, const std::vector<std::string>& names, int64_t n = 4) {
  std::vector<SafetensorsWriter::Entry> entries;
  for (const auto& name : names) entries.push_back({name, DType::kF32, {2, n}});
  auto writer = SafetensorsWriter::Create(path, entries);
  ASSERT_TRUE(writer.ok()) << writer.status();
  for (size_t t = 0; t < names.size(); ++t) {
    std::vector<float> v(2 * n, static_cast<float>(t));
    ASSERT_OK((*writer)->Write(v.data(), v.size() * sizeof(float)));
  }
  ASSERT_OK((*writer)->Finish());
}

TEST_F(SafetensorsTest, CheckpointSingleFile) {
  WriteShard(dir_ + "/model.safetensors", {"x.weight", "y.weight"});
  ASSERT_OK_AND_ASSIGN(auto ckpt, Checkpoint::Open(dir_));
  EXPECT_EQ(ckpt->dir(), dir_);
  EXPECT_THAT(ckpt->names(), ElementsAre("x.weight", "y.weight"));
  EXPECT_TRUE(ckpt->Has("y.weight"));
  EXPECT_FALSE(ckpt->Has("z"));
  ASSERT_OK_AND_ASSIGN(TensorView y, ckpt->GetChecked("y.weight", DType::kF32, {2, 4}));
  EXPECT_EQ(y.as<float>()[7], 1.0f);
  ckpt->Prefetch(y);
  EXPECT_EQ(ckpt->shards_opened(), 1);
  EXPECT_THAT(ckpt->Get("z"),
              StatusIs(absl::StatusCode::kNotFound, AllOf(HasSubstr("\"z\""), HasSubstr(dir_))));
  EXPECT_THAT(
      ckpt->GetChecked("x.weight", DType::kBF16, {2, 4}),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("model.safetensors: tensor \"x.weight\" has dtype F32, expected BF16")));
}

TEST_F(SafetensorsTest, CheckpointShardedRoundTripAndLazyOpen) {
  const std::string a = "model-00001-of-00002.safetensors", b = "model-00002-of-00002.safetensors";
  WriteShard(dir_ + "/" + a, {"model.layers.0.self_attn.q_proj.weight", "p"}, 32);
  WriteShard(dir_ + "/" + b, {"q", "r"});
  WriteBytes(
      dir_ + "/model.safetensors.index.json",
      R"({"metadata":{"total_size":576},"weight_map":{"model.layers.0.self_attn.q_proj.weight":")" +
          a + R"(","p":")" + a + R"(","q":")" + b + R"(","r":")" + b + R"("}})");
  ASSERT_OK_AND_ASSIGN(auto ckpt, Checkpoint::Open(dir_));
  EXPECT_EQ(ckpt->shards_opened(), 0);
  EXPECT_THAT(ckpt->names(), ElementsAre("model.layers.0.self_attn.q_proj.weight", "p", "q", "r"));
  ASSERT_OK_AND_ASSIGN(TensorView r, ckpt->GetChecked("r", DType::kF32, {2, 4}));
  EXPECT_EQ(r.as<float>()[0], 1.0f);
  EXPECT_THAT(r.file, HasSubstr(b));
  EXPECT_EQ(ckpt->shards_opened(), 1);
  ASSERT_OK_AND_ASSIGN(TensorView q, ckpt->Get("q"));
  EXPECT_EQ(q.as<float>()[0], 0.0f);
  EXPECT_EQ(ckpt->shards_opened(), 1);
  EXPECT_THAT(ckpt->GetChecked("model.layers.0.self_attn.q_proj.weight", DType::kF32, {64, 64}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("model-00001-of-00002.safetensors: tensor "
                                 "\"model.layers.0.self_attn.q_proj.weight\" has shape [2, 32], "
                                 "expected [64, 64]")));
  EXPECT_EQ(ckpt->shards_opened(), 2);
}

TEST_F(SafetensorsTest, CheckpointConcurrentGets) {
  std::string map;
  for (int s = 0; s < 8; ++s) {
    std::string file = absl::StrCat("model-0000", s + 1, "-of-00008.safetensors");
    std::string name = absl::StrCat("t", s);
    WriteShard(dir_ + "/" + file, {name});
    absl::StrAppend(&map, s ? "," : "", "\"", name, "\":\"", file, "\"");
  }
  WriteBytes(dir_ + "/model.safetensors.index.json", "{\"weight_map\":{" + map + "}}");
  ASSERT_OK_AND_ASSIGN(auto ckpt, Checkpoint::Open(dir_));
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 64; ++i) {
        if (ckpt->Get(absl::StrCat("t", (t + i) % 8)).ok()) ok++;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), 4 * 64);
  EXPECT_EQ(ckpt->shards_opened(), 8);
}

TEST_F(SafetensorsTest, CheckpointBadIndexes) {
  WriteShard(dir_ + "/s1.safetensors", {"a"});
  const std::string index = dir_ + "/model.safetensors.index.json";
  auto open_with = [&](const std::string& text) {
    WriteBytes(index, text);
    return Checkpoint::Open(dir_);
  };
  EXPECT_THAT(open_with(R"({"weight_map":{"a":"s1.safetensors", "b":"s2.safetensors"}})"),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(HasSubstr("s2.safetensors"), HasSubstr("\"b\""), HasSubstr(index))));
  EXPECT_THAT(open_with(R"({"weight_map":{"a":"../s1.safetensors"}})"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("../s1.safetensors"), HasSubstr("\"a\""))));
  EXPECT_THAT(open_with(R"({"weight_map":{"a":"sub/s1.safetensors"}})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("sub/s1.safetensors")));
  EXPECT_THAT(open_with(R"({"weight_map":{"a":".."}})"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(open_with(R"({"weight_map":{"a":""}})"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(open_with(R"({"weight_map":{"a":7}})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"a\"")));
  EXPECT_THAT(
      open_with(R"({"weight_map":{"a":"s1.safetensors")"),
      StatusIs(absl::StatusCode::kInvalidArgument, AllOf(HasSubstr(index), HasSubstr("JSON"))));
  EXPECT_THAT(open_with(R"({"weight_map":["a"]})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("weight_map")));
  EXPECT_THAT(open_with(R"({"metadata":{}})"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("weight_map")));
  EXPECT_THAT(open_with(R"("x")"), StatusIs(absl::StatusCode::kInvalidArgument));

  // Listed in the index but absent from its shard.
  ASSERT_OK_AND_ASSIGN(
      auto ckpt, open_with(R"({"weight_map":{"a":"s1.safetensors","ghost":"s1.safetensors"}})"));
  EXPECT_OK(ckpt->Get("a").status());
  EXPECT_THAT(ckpt->Get("ghost"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("s1.safetensors"), HasSubstr("\"ghost\""))));

  // A corrupt shard is reported when first used, naming the shard and the tensor asked for.
  WriteBytes(dir_ + "/s1.safetensors", "garbage!garbage!");
  ASSERT_OK_AND_ASSIGN(auto broken, open_with(R"({"weight_map":{"a":"s1.safetensors"}})"));
  EXPECT_THAT(broken->Get("a"), StatusIs(absl::StatusCode::kInvalidArgument,
                                         AllOf(HasSubstr("s1.safetensors"), HasSubstr("\"a\""))));
  EXPECT_EQ(broken->shards_opened(), 0);
}

TEST_F(SafetensorsTest, CheckpointMissingFolderOrFiles) {
  EXPECT_THAT(Checkpoint::Open(dir_), StatusIs(absl::StatusCode::kNotFound, HasSubstr(dir_)));
  EXPECT_THAT(Checkpoint::Open(dir_ + "/nope"), StatusIs(absl::StatusCode::kNotFound));
  WriteBytes(dir_ + "/model.safetensors", "short");
  EXPECT_THAT(Checkpoint::Open(dir_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("model.safetensors")));
}

// The shared tiny fixture: 2 layers × 61 tensors + embeddings, final norm (2) and lm_head (2).
TEST(SafetensorsFixtureTest, TinyFixtureOpens) {
  const std::string dir = std::string(PHIMOE_SHARED_DIR) + "/fixtures/tiny";
  if (::access((dir + "/model.safetensors").c_str(), R_OK) != 0) {
    GTEST_SKIP() << "fixture not found in " << dir;
  }
  ASSERT_OK_AND_ASSIGN(auto file, SafetensorsFile::Open(dir + "/model.safetensors"));
  EXPECT_EQ(file->names().size(), 127u);
  EXPECT_EQ(file->metadata().at("format"), "pt");
  ASSERT_OK_AND_ASSIGN(auto ckpt, Checkpoint::Open(dir));
  EXPECT_EQ(ckpt->names().size(), 127u);
  EXPECT_OK(
      ckpt->GetChecked("model.layers.0.self_attn.q_proj.weight", DType::kBF16, {64, 64}).status());
  EXPECT_OK(ckpt->GetChecked("model.layers.1.block_sparse_moe.experts.15.w2.weight", DType::kBF16,
                             {64, 96})
                .status());
  EXPECT_OK(ckpt->GetChecked("lm_head.bias", DType::kBF16, {32064}).status());
}

}  // namespace
}  // namespace phimoe
