// The backend registry: --device parsing, creation through factories, unavailable backends
// reported with their reason, registration rules, and a backend added by registration alone.
#include "kernels/backend_registry.h"

#include <memory>
#include <string>

#include "common/status_matchers.h"
#include "gtest/gtest.h"

namespace phimoe::kernels {
namespace {

using ::phimoe::testing::StatusIs;

TEST(BackendRegistryTest, ParsesDeviceStrings) {
  ASSERT_OK_AND_ASSIGN(DeviceSpec cpu, ParseDevice("cpu"));
  EXPECT_EQ(cpu.backend, "cpu");
  EXPECT_EQ(cpu.ordinal, 0);
  ASSERT_OK_AND_ASSIGN(DeviceSpec cuda, ParseDevice("cuda"));
  EXPECT_EQ(cuda.backend, "cuda");
  EXPECT_EQ(cuda.ordinal, 0);
  ASSERT_OK_AND_ASSIGN(DeviceSpec cuda3, ParseDevice("cuda:3"));
  EXPECT_EQ(cuda3.ordinal, 3);
  for (const char* bad : {"gpu", "", "cuda:-1", "cuda:", "cuda:x", "cpu:0", "CPU", "cuda:1:2"}) {
    EXPECT_THAT(ParseDevice(bad), StatusIs(absl::StatusCode::kInvalidArgument)) << bad;
  }
  // The message lists what is accepted.
  absl::StatusOr<DeviceSpec> gpu = ParseDevice("gpu");
  EXPECT_NE(gpu.status().message().find("cpu, cuda, cuda:N"), std::string::npos)
      << gpu.status().message();
}

TEST(BackendRegistryTest, CpuFirstAndCreatable) {
  const auto entries = BackendRegistry::Global().entries();
  ASSERT_GE(entries.size(), 2u);
  EXPECT_EQ(entries[0].name, "cpu");
  EXPECT_TRUE(entries[0].available());
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Backend> b, CreateBackend("cpu", 1));
  EXPECT_TRUE(b->host_memory());
  EXPECT_TRUE(b->SupportsOp(Op::kMatMul));
}

TEST(BackendRegistryTest, CudaIsListedAndSaysWhyItCannotStart) {
  bool listed = false;
  for (const BackendEntry& e : BackendRegistry::Global().entries()) {
    if (e.name != "cuda") continue;
    listed = true;
    EXPECT_TRUE(e.has_ordinal);
    if (!e.available()) {
      EXPECT_NE(e.unavailable_reason.find("PHIMOE_WITH_CUDA"), std::string::npos);
    }
  }
  EXPECT_TRUE(listed);
  // Without a device (or without CUDA in the build) creation is UNAVAILABLE, never a crash.
  absl::StatusOr<std::unique_ptr<Backend>> gpu = CreateBackend("cuda:7", 1);
  if (!gpu.ok()) {
    EXPECT_THAT(gpu.status(), StatusIs(absl::StatusCode::kUnavailable));
  }
}

TEST(BackendRegistryTest, RegistrationRules) {
  BackendRegistry registry;
  BackendEntry a;
  a.name = "fake";
  a.create = [](const BackendOptions& o) -> absl::StatusOr<std::unique_ptr<Backend>> {
    return CreateCpuBackend(o.n_threads, o.precision);
  };
  ASSERT_OK(registry.Register(a));
  EXPECT_THAT(registry.Register(a), StatusIs(absl::StatusCode::kAlreadyExists));
  BackendEntry colon = a;
  colon.name = "fa:ke";
  EXPECT_THAT(registry.Register(colon), StatusIs(absl::StatusCode::kInvalidArgument));
  BackendEntry empty = a;
  empty.name = "";
  EXPECT_THAT(registry.Register(empty), StatusIs(absl::StatusCode::kInvalidArgument));
  BackendEntry missing;
  missing.name = "missing";
  missing.unavailable_reason = "not in this build";
  ASSERT_OK(registry.Register(missing));

  EXPECT_EQ(registry.available_names(), std::vector<std::string>{"fake"});
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Backend> b, registry.Create("fake", 1));
  EXPECT_EQ(b->name().substr(0, 3), "cpu");
  EXPECT_THAT(registry.Create("fake:1", 1), StatusIs(absl::StatusCode::kInvalidArgument));
  absl::StatusOr<std::unique_ptr<Backend>> m = registry.Create("missing", 1);
  EXPECT_THAT(m.status(), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(m.status().message(), "not in this build");
  EXPECT_THAT(registry.Create("cpu", 1), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace phimoe::kernels
