#include "core/checkpoint.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "base/error.h"
#include "tests/testing/error_message.h"
#include "tests/testing/temp_dir.h"

namespace thinwire::core {
namespace {

namespace fs = std::filesystem;

class CheckpointTest : public ::testing::Test {
 protected:
  ::thinwire::testing::TempDir dir_{"thinwire-ckpt"};
  const std::string root_ = dir_.path();
};

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void writeFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Bitwise equality of dtype, shape and element bytes (NaN payloads included).
void expectBitExact(const at::Tensor& expected, const at::Tensor& actual, const std::string& key) {
  ASSERT_EQ(expected.scalar_type(), actual.scalar_type()) << key;
  ASSERT_EQ(expected.sizes(), actual.sizes()) << key;
  const at::Tensor a = expected.contiguous();
  const at::Tensor b = actual.contiguous();
  const size_t bytes = static_cast<size_t>(a.numel()) * a.element_size();
  // An empty tensor's data pointer may be null, and memcmp on null is undefined even for 0 bytes.
  if (bytes > 0) {
    EXPECT_EQ(std::memcmp(a.data_ptr(), b.data_ptr(), bytes), 0) << key;
  }
}

std::string dataErrorOf(const std::function<void()>& action) {
  return ::thinwire::testing::errorMessageOf<DataError>(action);
}

StateDict everyDtype() {
  StateDict state;
  at::Tensor floats = at::randn({3, 5});
  floats[0][0] = std::nan("");
  floats[0][1] = -0.0f;
  state["float32"] = floats;
  state["float64"] = at::randn({7}, at::kDouble);
  state["float16"] = at::randn({2, 3}).to(at::kHalf);
  state["bfloat16"] = at::randn({4, 1, 2}).to(at::kBFloat16);
  state["int64"] = at::randint(-(int64_t{1} << 40), int64_t{1} << 40, {6}, at::kLong);
  state["int32"] = at::randint(-100000, 100000, {2, 2}, at::kInt);
  state["uint8"] = at::randint(0, 256, {9}, at::kByte);
  state["bool"] = at::rand({5}).gt(0.5);
  state["scalar"] = at::scalar_tensor(3.5, at::kDouble);  // 0-dim
  state["empty"] = at::empty({0, 4});
  // A non-contiguous view: a transposed slice.
  state["transposed"] = at::arange(24, at::kFloat).view({4, 6}).t().slice(0, 1, 5);
  state["step"] = scalarTensor(int64_t{42});
  return state;
}

TEST_F(CheckpointTest, RoundTripIsBitExactForEveryDtypeAndLayout) {
  const StateDict state = everyDtype();
  ASSERT_FALSE(state.at("transposed").is_contiguous());
  const std::string path = root_ + "/state.twc";
  writeStateFile(path, state);
  const StateDict loaded = readStateFile(path);
  ASSERT_EQ(loaded.size(), state.size());
  for (const auto& [key, tensor] : state) {
    ASSERT_EQ(loaded.count(key), 1u) << key;
    expectBitExact(tensor, loaded.at(key), key);
    EXPECT_TRUE(loaded.at(key).is_contiguous()) << key;
  }
  // The transposed view comes back with the view's values, not its storage order.
  EXPECT_TRUE(loaded.at("transposed")
                  .equal(at::arange(24, at::kFloat).view({4, 6}).t().slice(0, 1, 5).contiguous()));
  EXPECT_FALSE(fs::exists(path + ".tmp." + std::to_string(::getpid())));
  // Nothing else left behind in the directory.
  EXPECT_EQ(std::distance(fs::directory_iterator(root_), fs::directory_iterator()), 1);
}

TEST_F(CheckpointTest, HeaderFollowsTheDocumentedLayout) {
  StateDict state;
  state["w"] = at::tensor({1.0f, 2.0f});
  const std::string path = root_ + "/small.twc";
  writeStateFile(path, state);
  const std::string bytes = readFile(path);
  // payload: count(8) + keylen(4) + "w"(1) + dtype(1) + ndim(4) + dim(8) + nbytes(8) + data(8)
  const uint64_t payloadBytes = 8 + 4 + 1 + 1 + 4 + 8 + 8 + 8;
  ASSERT_EQ(bytes.size(), 24 + payloadBytes);
  EXPECT_EQ(bytes.substr(0, 8), "TWCKPT01");
  uint32_t version = 0;
  uint64_t storedPayload = 0;
  std::memcpy(&version, bytes.data() + 8, 4);
  std::memcpy(&storedPayload, bytes.data() + 16, 8);
  EXPECT_EQ(version, 1u);
  EXPECT_EQ(storedPayload, payloadBytes);
  EXPECT_EQ(bytes[24 + 12], 'w');
  EXPECT_EQ(bytes[24 + 13], 1);  // float32
}

TEST_F(CheckpointTest, RefusesAFlippedPayloadByte) {
  const std::string path = root_ + "/state.twc";
  writeStateFile(path, everyDtype());
  std::string bytes = readFile(path);
  bytes[bytes.size() / 2] ^= 0x10;
  writeFile(path, bytes);
  const std::string message = dataErrorOf([&] { readStateFile(path); });
  EXPECT_NE(message.find("checksum mismatch: file is corrupt"), std::string::npos) << message;
  EXPECT_NE(message.find(path), std::string::npos) << message;
}

TEST_F(CheckpointTest, RefusesATruncatedFile) {
  const std::string path = root_ + "/state.twc";
  writeStateFile(path, everyDtype());
  const std::string bytes = readFile(path);
  writeFile(path, bytes.substr(0, bytes.size() - 10));
  const std::string message = dataErrorOf([&] { readStateFile(path); });
  EXPECT_NE(message.find("truncated: expected " + std::to_string(bytes.size()) + " bytes, found " +
                         std::to_string(bytes.size() - 10)),
            std::string::npos)
      << message;
  writeFile(path, bytes.substr(0, 12));
  EXPECT_NE(dataErrorOf([&] { readStateFile(path); }).find("truncated"), std::string::npos);
  writeFile(path, bytes + "x");
  EXPECT_NE(dataErrorOf([&] { readStateFile(path); }).find("trailing data"), std::string::npos);
}

TEST_F(CheckpointTest, RefusesWrongMagicWrongVersionAndMissingFile) {
  const std::string path = root_ + "/state.twc";
  writeStateFile(path, everyDtype());
  std::string bytes = readFile(path);
  std::string wrongMagic = bytes;
  wrongMagic[0] = 'X';
  writeFile(path, wrongMagic);
  EXPECT_NE(dataErrorOf([&] { readStateFile(path); }).find("not a thinwire checkpoint"),
            std::string::npos);
  writeFile(path, "hello world, this is not a checkpoint at all");
  EXPECT_NE(dataErrorOf([&] { readStateFile(path); }).find("not a thinwire checkpoint"),
            std::string::npos);
  std::string newer = bytes;
  newer[8] = 2;
  writeFile(path, newer);
  EXPECT_NE(dataErrorOf([&] { readStateFile(path); }).find("unsupported version 2"),
            std::string::npos);
  const std::string missing = root_ + "/absent.twc";
  const std::string message = dataErrorOf([&] { readStateFile(missing); });
  EXPECT_NE(message.find("cannot open checkpoint '" + missing + "': No such file or directory"),
            std::string::npos)
      << message;
}

TEST_F(CheckpointTest, RejectsUnsupportedDtypeAndUndefinedTensor) {
  StateDict state;
  state["complex"] = at::randn({2}, at::kComplexFloat);
  EXPECT_THROW(writeStateFile(root_ + "/c.twc", state), InvalidArgument);
  state.clear();
  state["undefined"] = at::Tensor();
  EXPECT_THROW(writeStateFile(root_ + "/u.twc", state), InvalidArgument);
  EXPECT_FALSE(fs::exists(root_ + "/c.twc"));
  EXPECT_THROW(writeStateFile(root_ + "/no/such/dir/x.twc", {}), DataError);
}

TEST_F(CheckpointTest, CommitMakesTheNewestStepLatestAndPrunes) {
  EXPECT_EQ(latestCheckpoint(root_), std::nullopt);
  EXPECT_EQ(latestCheckpoint(root_ + "/not-created"), std::nullopt);
  for (int64_t step : {10, 20, 30}) {
    const std::string pending = pendingCheckpointDir(root_, step);
    EXPECT_EQ(pending, root_ + "/step-" + std::string(step < 100 ? "000000" : "") +
                           std::to_string(step) + ".tmp");
    StateDict state;
    state["step"] = scalarTensor(step);
    writeStateFile(sharedStateFile(pending), state);
    writeStateFile(rankStateFile(pending, 3), state);
    const std::string committed = commitCheckpoint(root_, step, /*keep=*/2);
    EXPECT_EQ(committed, root_ + "/step-000000" + std::to_string(step));
    EXPECT_EQ(latestCheckpoint(root_), committed);
    EXPECT_FALSE(fs::exists(pending));
  }
  EXPECT_FALSE(fs::exists(root_ + "/step-00000010"));
  EXPECT_TRUE(fs::exists(root_ + "/step-00000020"));
  const std::string latest = *latestCheckpoint(root_);
  EXPECT_EQ(readStateFile(sharedStateFile(latest)).at("step").item<int64_t>(), 30);
  EXPECT_TRUE(fs::exists(latest + "/rank-0003.twc"));
  EXPECT_THROW(commitCheckpoint(root_, 40, 2), DataError);  // nothing pending for 40
  EXPECT_THROW(commitCheckpoint(root_, 30, 0), InvalidArgument);
}

TEST_F(CheckpointTest, LeftoverTmpDirectoryIsIgnoredAndStaleOnesArePruned) {
  pendingCheckpointDir(root_, 5);
  commitCheckpoint(root_, 5, 3);
  // A crash while writing step 7 (never committed) and a half-written later step 9.
  const std::string crashed = pendingCheckpointDir(root_, 7);
  writeFile(crashed + "/shared.twc", "partial");
  const std::string later = pendingCheckpointDir(root_, 9);
  fs::create_directories(root_ + "/unrelated");
  EXPECT_EQ(latestCheckpoint(root_), root_ + "/step-00000005");
  // Committing step 8 removes the stale pending step 7 but not the newer pending step 9.
  pendingCheckpointDir(root_, 8);
  commitCheckpoint(root_, 8, 3);
  EXPECT_FALSE(fs::exists(crashed));
  EXPECT_TRUE(fs::exists(later));
  EXPECT_TRUE(fs::exists(root_ + "/unrelated"));
  EXPECT_EQ(latestCheckpoint(root_), root_ + "/step-00000008");
}

TEST_F(CheckpointTest, RecommittingAStepReplacesIt) {
  StateDict first;
  first["v"] = scalarTensor(int64_t{1});
  writeStateFile(sharedStateFile(pendingCheckpointDir(root_, 4)), first);
  commitCheckpoint(root_, 4, 2);
  StateDict second;
  second["v"] = scalarTensor(int64_t{2});
  writeStateFile(sharedStateFile(pendingCheckpointDir(root_, 4)), second);
  const std::string dir = commitCheckpoint(root_, 4, 2);
  EXPECT_EQ(readStateFile(sharedStateFile(dir)).at("v").item<int64_t>(), 2);
  EXPECT_EQ(rankStateFile("d", 12), "d/rank-0012.twc");
}

}  // namespace
}  // namespace thinwire::core
