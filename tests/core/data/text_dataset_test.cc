#include "core/data/text_dataset.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "base/error.h"
#include "core/data/dataset.h"
#include "core/data/distributed_sampler.h"
#include "tests/testing/error_message.h"
#include "tests/testing/temp_dir.h"

namespace thinwire::core {
namespace {

using ::thinwire::testing::errorMessageOf;
using ::thinwire::testing::TempDir;

TextDatasetOptions textOptions(const std::string& directory,
                               Split split = Split::kTrain,
                               int64_t seqLen = 128,
                               double validationFraction = 0.05) {
  TextDatasetOptions options;
  options.directory = directory;
  options.split = split;
  options.seqLen = seqLen;
  options.validationFraction = validationFraction;
  return options;
}

void writeFile(const std::string& path, const std::string& content) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << content;
}

// A fortune-format corpus of `count` distinct documents over two files and a sub-directory,
// plus index files that must be ignored. Returns the documents as the dataset should see them.
std::vector<std::string> writeCorpus(const TempDir& dir, int count) {
  std::vector<std::string> documents;
  std::string files[2];
  for (int i = 0; i < count; ++i) {
    std::string document = "fortune number " + std::to_string(i) + "\n";
    if (i % 3 == 0) document += "  -- a second line " + std::to_string(i * 7) + "\n";
    documents.push_back(document);
    files[i % 2] += document + "%\n";
  }
  writeFile(dir.file("first"), files[0]);
  writeFile(dir.file("sub/second"), files[1]);
  writeFile(dir.file("first.dat"), "INDEX-MARKER-DAT");
  writeFile(dir.file("sub/second.u8"), "INDEX-MARKER-U8");
  return documents;
}

TEST(TextDatasetTest, SplitDocumentsCutsAtPercentLines) {
  EXPECT_EQ(splitDocuments("a\n%\nb\nc\n%\n"), (std::vector<std::string>{"a\n", "b\nc\n"}));
  EXPECT_EQ(splitDocuments("x 100%\n%\r\n%\ny"), (std::vector<std::string>{"x 100%\n", "y\n"}));
  EXPECT_EQ(splitDocuments("no separator\nat all\n"),
            (std::vector<std::string>{"no separator\nat all\n"}));
}

TEST(TextDatasetTest, SplitIsByDocumentDeterministicAndSkipsIndexFiles) {
  TempDir dir("text-split");
  const std::vector<std::string> documents = writeCorpus(dir, 400);
  auto load = [&](Split split) {
    return TextDataset(
        {.directory = dir.path(), .split = split, .seqLen = 8, .validationFraction = 0.25});
  };
  const TextDataset train = load(Split::kTrain), validation = load(Split::kTest);
  EXPECT_EQ(train.text(), load(Split::kTrain).text());
  EXPECT_EQ(validation.text(), load(Split::kTest).text());
  size_t total = 0;
  int inValidation = 0;
  for (const std::string& document : documents) {
    const bool inTrain = train.text().find(document) != std::string::npos;
    const bool inVal = validation.text().find(document) != std::string::npos;
    EXPECT_NE(inTrain, inVal) << document;  // whole, and on exactly one side
    inValidation += inVal ? 1 : 0;
    total += document.size();
  }
  EXPECT_EQ(train.text().size() + validation.text().size(), total);
  EXPECT_EQ(train.documents() + validation.documents(), 400);
  EXPECT_EQ(validation.documents(), inValidation);
  EXPECT_GT(inValidation, 60);  // about 100 of 400 for a fraction of 0.25
  EXPECT_LT(inValidation, 140);
  EXPECT_EQ(train.text().find("INDEX-MARKER"), std::string::npos);
  EXPECT_EQ(validation.text().find("INDEX-MARKER"), std::string::npos);
}

TEST(TextDatasetTest, WindowsAreShiftedByOneAndRanksCoverDisjointText) {
  TempDir dir("text-windows");
  writeCorpus(dir, 300);
  constexpr int64_t kSeqLen = 16;
  const TextDataset train({.directory = dir.path(), .seqLen = kSeqLen});
  const std::string& text = train.text();
  EXPECT_EQ(train.size(), static_cast<int64_t>(text.size() - 1) / kSeqLen);
  EXPECT_EQ(train.sampleShape(), (std::vector<int64_t>{kSeqLen}));
  constexpr int kWorld = 4;
  constexpr int64_t kBatch = 3;
  std::vector<int> covered(text.size(), 0);
  for (int rank = 0; rank < kWorld; ++rank) {
    DistributedSampler sampler({.datasetSize = train.size(),
                                .batchPerRank = kBatch,
                                .rank = rank,
                                .worldSize = kWorld,
                                .seed = 9});
    for (int64_t step = 0; step < sampler.stepsPerEpoch(); ++step) {
      const std::vector<int64_t> indices = sampler.indices(step);
      const Batch batch = train.batch(indices);
      ASSERT_EQ(batch.inputs.sizes(), (std::vector<int64_t>{kBatch, kSeqLen}));
      ASSERT_EQ(batch.labels.sizes(), (std::vector<int64_t>{kBatch, kSeqLen}));
      for (int64_t row = 0; row < kBatch; ++row) {
        const int64_t start = indices[static_cast<size_t>(row)] * kSeqLen;
        for (int64_t t = 0; t < kSeqLen; ++t) {
          ASSERT_EQ(batch.inputs[row][t].item<int64_t>(),
                    static_cast<unsigned char>(text[static_cast<size_t>(start + t)]));
          ASSERT_EQ(batch.labels[row][t].item<int64_t>(),
                    static_cast<unsigned char>(text[static_cast<size_t>(start + t + 1)]));
          ++covered[static_cast<size_t>(start + t)];
        }
      }
    }
  }
  for (size_t i = 0; i < covered.size(); ++i) ASSERT_LE(covered[i], 1) << "byte " << i;
  EXPECT_THROW(train.batch({train.size()}), InvalidArgument);
}

TEST(TextDatasetTest, MissingOrEmptyDirectoryIsADataErrorNamingThePackage) {
  TempDir dir("text-errors");
  const std::string missing =
      errorMessageOf<DataError>([&] { TextDataset(textOptions(dir.file("nope"))); });
  EXPECT_NE(missing.find(dir.file("nope")), std::string::npos) << missing;
  EXPECT_NE(missing.find("fortunes"), std::string::npos) << missing;
  EXPECT_THROW(TextDataset(textOptions(dir.file("nope"))), DataError);
  // Empty, then index files only: no text either way.
  EXPECT_THROW(TextDataset(textOptions(dir.path())), DataError);
  writeFile(dir.file("only.dat"), "binary index");
  const std::string empty =
      errorMessageOf<DataError>([&] { TextDataset(textOptions(dir.path())); });
  EXPECT_NE(empty.find("fortunes"), std::string::npos) << empty;
  // Text shorter than one window.
  writeFile(dir.file("tiny"), "abc\n");
  EXPECT_THROW(TextDataset(textOptions(dir.path(), Split::kTrain, 64)), DataError);
  EXPECT_THROW(TextDataset(textOptions(dir.path(), Split::kTrain, 0)), ConfigError);
}

TEST(TextDatasetTest, MakeDatasetBuildsTextWithTheModelWindow) {
  TempDir dir("text-factory");
  writeCorpus(dir, 50);
  DataConfig config;
  config.dataset = "text";
  config.path = dir.path();
  auto data = makeDataset(config, Split::kTrain, 0, /*seqLen=*/12);
  EXPECT_EQ(data->sampleShape(), (std::vector<int64_t>{12}));
  EXPECT_EQ(data->numClasses(), 256);
}

}  // namespace
}  // namespace thinwire::core
