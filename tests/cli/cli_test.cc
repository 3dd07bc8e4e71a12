// Bad input to the `thinwire` executable: each case must exit non-zero with one clear line that
// names the problem (and never hang).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/cli/run_process.h"
#include "tests/testing/temp_dir.h"

namespace thinwire::testing {
namespace {

class CliTest : public ::testing::Test {
 protected:
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // A tiny single-process job (threads as ranks) so no mpirun is needed.
  std::string smallConfig(const std::string& extra = "") const {
    return "run:\n  name: cli\n  output_dir: " + path("runs") +
           "\n  progress: false\n"
           "data:\n  dataset: synthetic\n  synthetic:\n    train_samples: 256\n"
           "    test_samples: 64\n    features: 8\n    classes: 2\n"
           "model:\n  hidden: [16]\n"
           "train:\n  steps: 6\n  batch_per_rank: 8\n"
           "comm:\n  backend: local\n"
           "launch:\n  ranks: 1\n" +
           extra;
  }

  ProcessResult thinwire(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {thinwireBinary()};
    argv.insert(argv.end(), args.begin(), args.end());
    return runCommand(argv, path("log.txt"), 120);
  }

  // The output has a line containing every fragment.
  static bool hasLineWith(const std::string& output, const std::vector<std::string>& fragments) {
    std::istringstream lines(output);
    std::string line;
    while (std::getline(lines, line)) {
      bool all = true;
      for (const auto& f : fragments) all = all && line.find(f) != std::string::npos;
      if (all) return true;
    }
    return false;
  }

  TempDir tmp_{"thinwire-cli"};
  const std::filesystem::path dir_ = tmp_.path();
};

TEST_F(CliTest, MalformedYamlNamesFileAndLine) {
  writeFile(path("bad.yaml"), "run:\n  name: x\ntrain: [1, 2\n");
  ProcessResult r = thinwire({"train", path("bad.yaml")});
  EXPECT_EQ(r.exitCode, 2) << r.output;
  EXPECT_TRUE(hasLineWith(r.output, {"bad.yaml:", "malformed YAML"})) << r.output;
}

TEST_F(CliTest, UnknownKeyNamesThePathAndSuggestsTheRightOne) {
  writeFile(path("bad.yaml"), smallConfig("optim:\n  lrr: 0.1\n"));
  ProcessResult r = thinwire({"train", path("bad.yaml")});
  EXPECT_EQ(r.exitCode, 2) << r.output;
  EXPECT_TRUE(hasLineWith(r.output, {"bad.yaml:", "optim.lrr", "unknown key", "optim.lr"}))
      << r.output;
}

TEST_F(CliTest, WrongTypeNamesThePathAndTheValue) {
  writeFile(path("bad.yaml"), smallConfig() + "optim:\n  lr: fast\n");
  ProcessResult r = thinwire({"train", path("bad.yaml")});
  EXPECT_EQ(r.exitCode, 2) << r.output;
  EXPECT_TRUE(hasLineWith(r.output, {"optim.lr", "fast"})) << r.output;
}

TEST_F(CliTest, BadOverrideIsRejected) {
  writeFile(path("ok.yaml"), smallConfig());
  ProcessResult r = thinwire({"train", path("ok.yaml"), "--set", "train.steps=-3"});
  EXPECT_EQ(r.exitCode, 2) << r.output;
  EXPECT_TRUE(hasLineWith(r.output, {"train.steps", "-3"})) << r.output;
}

TEST_F(CliTest, MissingDataDirectoryIsNamed) {
  writeFile(path("bad.yaml"), "run:\n  output_dir: " + path("runs") +
                                  "\n  progress: false\ndata:\n  dataset: fashion_mnist\n  path: " +
                                  path("no-such-dir") +
                                  "\ncomm:\n  backend: local\nlaunch:\n  ranks: 1\n");
  ProcessResult r = thinwire({"train", path("bad.yaml")});
  EXPECT_EQ(r.exitCode, 1) << r.output;
  EXPECT_TRUE(hasLineWith(r.output, {"no-such-dir"})) << r.output;
}

// Writes an uncompressed IDX file: `dims` as big-endian 32-bit values after the magic, then
// `payloadBytes` bytes of pixels/labels (fewer than the dims declare = truncated).
void writeIdx(const std::string& file,
              uint32_t magic,
              const std::vector<uint32_t>& dims,
              size_t payloadBytes) {
  std::ofstream out(file, std::ios::binary);
  auto be = [&](uint32_t v) {
    const unsigned char b[4] = {static_cast<unsigned char>(v >> 24),
                                static_cast<unsigned char>(v >> 16),
                                static_cast<unsigned char>(v >> 8), static_cast<unsigned char>(v)};
    out.write(reinterpret_cast<const char*>(b), 4);
  };
  be(magic);
  for (uint32_t d : dims) be(d);
  std::string payload(payloadBytes, '\1');
  out.write(payload.data(), static_cast<std::streamsize>(payload.size()));
}

TEST_F(CliTest, TruncatedIdxFileIsNamedWithExpectedAndActualSize) {
  const std::string data = path("fmnist");
  std::filesystem::create_directories(data);
  // 100 images declared, 40 present.
  writeIdx(data + "/train-images-idx3-ubyte", 0x803, {100, 28, 28}, 40 * 28 * 28);
  writeIdx(data + "/train-labels-idx1-ubyte", 0x801, {100}, 100);
  writeIdx(data + "/t10k-images-idx3-ubyte", 0x803, {10, 28, 28}, 10 * 28 * 28);
  writeIdx(data + "/t10k-labels-idx1-ubyte", 0x801, {10}, 10);
  writeFile(path("bad.yaml"), "run:\n  output_dir: " + path("runs") +
                                  "\n  progress: false\ndata:\n  path: " + data +
                                  "\ncomm:\n  backend: local\nlaunch:\n  ranks: 1\n");
  ProcessResult r = thinwire({"train", path("bad.yaml")});
  EXPECT_EQ(r.exitCode, 1) << r.output;
  EXPECT_TRUE(hasLineWith(r.output, {"train-images-idx3-ubyte", "truncated"})) << r.output;
}

TEST_F(CliTest, CorruptCheckpointIsRefused) {
  writeFile(path("ok.yaml"), smallConfig());
  ProcessResult first = thinwire({"train", path("ok.yaml"), "--set", "train.stop_after=3"});
  ASSERT_EQ(first.exitCode, 0) << first.output;
  std::filesystem::path shared;
  for (const auto& entry :
       std::filesystem::recursive_directory_iterator(path("runs") + "/cli/checkpoints")) {
    if (entry.path().filename() == "shared.twc") shared = entry.path();
  }
  ASSERT_FALSE(shared.empty());
  {
    std::fstream f(shared, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-5, std::ios::end);
    f.put('\x7f');
  }
  ProcessResult second = thinwire({"train", path("ok.yaml"), "--set", "train.resume=auto"});
  EXPECT_EQ(second.exitCode, 1) << second.output;
  EXPECT_TRUE(hasLineWith(second.output, {"shared.twc", "checksum"})) << second.output;
}

TEST_F(CliTest, TrainsAndReportsTheFinalAccuracy) {
  writeFile(path("ok.yaml"), smallConfig());
  ProcessResult r = thinwire({"train", path("ok.yaml")});
  EXPECT_EQ(r.exitCode, 0) << r.output;
  EXPECT_TRUE(hasLineWith(r.output, {"final test_acc="})) << r.output;
  EXPECT_TRUE(std::filesystem::exists(path("runs") + "/cli/metrics.jsonl"));
}

TEST_F(CliTest, LaunchDryRunPrintsTheMpirunCommandWithoutRunningIt) {
  writeFile(path("ok.yaml"), smallConfig());
  ProcessResult r =
      thinwire({"launch", path("ok.yaml"), "-n", "3", "--dry-run", "--set", "optim.lr=0.2"});
  EXPECT_EQ(r.exitCode, 0) << r.output;
  const std::string root = ::geteuid() == 0 ? " --allow-run-as-root" : "";
  const std::string binary = std::filesystem::canonical(thinwireBinary()).string();
  const std::string expected = "mpirun -n 3 --oversubscribe --bind-to none" + root +
                               " -x OMP_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS=1 " + binary +
                               " train " + path("ok.yaml") + " --set optim.lr=0.2\n";
  EXPECT_EQ(r.output, expected);
  EXPECT_FALSE(std::filesystem::exists(path("runs")));  // nothing ran
}

TEST_F(CliTest, UnknownCommandAndMissingConfigAreUsageErrors) {
  EXPECT_EQ(thinwire({"trian"}).exitCode, 2);
  ProcessResult r = thinwire({"train", path("absent.yaml")});
  EXPECT_NE(r.exitCode, 0);
  EXPECT_TRUE(hasLineWith(r.output, {"absent.yaml"})) << r.output;
}

}  // namespace
}  // namespace thinwire::testing
