#include "core/data/idx_dataset.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "base/error.h"
#include "core/data/dataset.h"
#include "tests/testing/error_message.h"
#include "tests/testing/temp_dir.h"

namespace thinwire::core {
namespace {

namespace fs = std::filesystem;

constexpr const char* kSystemDirectory = "/usr/share/datasets/fashion-mnist";

using ::thinwire::testing::TempDir;

void putBigEndian(std::string& out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>(value >> shift));
}

// An IDX file: magic, big-endian dims, payload.
std::string idxBytes(uint32_t magic,
                     const std::vector<uint32_t>& dims,
                     const std::string& payload) {
  std::string out;
  putBigEndian(out, magic);
  for (uint32_t dim : dims) putBigEndian(out, dim);
  return out + payload;
}

void writePlain(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

void writeGzip(const std::string& path, const std::string& bytes) {
  gzFile file = gzopen(path.c_str(), "wb");
  ASSERT_NE(file, nullptr);
  ASSERT_EQ(gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())),
            static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(file), Z_OK);
}

std::string readGzip(const std::string& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  EXPECT_NE(file, nullptr);
  std::string out;
  char chunk[1 << 16];
  int got = 0;
  while ((got = gzread(file, chunk, sizeof(chunk))) > 0) out.append(chunk, got);
  gzclose(file);
  return out;
}

// Pixel i of a small test set: a simple pattern that covers 0..255.
std::string pixelPattern(uint32_t images) {
  std::string pixels(images * 28 * 28, '\0');
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<char>((i * 7 + 3) % 256);
  return pixels;
}

IdxDatasetOptions optionsFor(const std::string& directory, Split split = Split::kTrain) {
  IdxDatasetOptions options;
  options.directory = directory;
  options.split = split;
  return options;
}

std::string messageOf(const std::function<void()>& action) {
  return ::thinwire::testing::errorMessageOf<DataError>(action);
}

// Writes a valid 3-image train set into `dir`, gzip-compressed or plain.
void writeValidSet(const std::string& dir, bool compressed, const std::string& prefix = "train") {
  const std::string images = idxBytes(0x803, {3, 28, 28}, pixelPattern(3));
  const std::string labels = idxBytes(0x801, {3}, std::string("\x09\x00\x04", 3));
  if (compressed) {
    writeGzip(dir + "/" + prefix + "-images-idx3-ubyte.gz", images);
    writeGzip(dir + "/" + prefix + "-labels-idx1-ubyte.gz", labels);
  } else {
    writePlain(dir + "/" + prefix + "-images-idx3-ubyte", images);
    writePlain(dir + "/" + prefix + "-labels-idx1-ubyte", labels);
  }
}

void expectNormalisedPixels(const at::Tensor& inputs, const std::string& raw, size_t offset) {
  ASSERT_EQ(inputs.scalar_type(), at::kFloat);
  const at::Tensor flat = inputs.contiguous().view({-1});
  const float* values = flat.data_ptr<float>();
  for (int64_t i = 0; i < flat.numel(); ++i) {
    const double pixel = static_cast<unsigned char>(raw[offset + static_cast<size_t>(i)]);
    const double expected = (pixel / 255.0 - 0.2860) / 0.3530;
    ASSERT_NEAR(values[i], expected, 1e-5) << "element " << i;
  }
}

TEST(IdxDatasetTest, ReadsGzipFilesAndNormalisesPixels) {
  TempDir dir;
  writeValidSet(dir.path(), /*compressed=*/true);
  IdxDataset data(optionsFor(dir.path()));
  EXPECT_EQ(data.size(), 3);
  EXPECT_EQ(data.sampleShape(), (std::vector<int64_t>{1, 28, 28}));
  EXPECT_EQ(data.numClasses(), 10);
  const Batch batch = data.batch({2, 0});
  ASSERT_EQ(batch.inputs.sizes(), (std::vector<int64_t>{2, 1, 28, 28}));
  ASSERT_EQ(batch.labels.scalar_type(), at::kLong);
  EXPECT_EQ(batch.labels[0].item<int64_t>(), 4);
  EXPECT_EQ(batch.labels[1].item<int64_t>(), 9);
  const std::string pixels = pixelPattern(3);
  expectNormalisedPixels(batch.inputs[0], pixels, 2 * 784);
  expectNormalisedPixels(batch.inputs[1], pixels, 0);
  EXPECT_NE(data.describe().find("fashion-mnist train (3) from " + dir.path()), std::string::npos);
}

TEST(IdxDatasetTest, AcceptsUncompressedFilesAndReadsT10kForTheTestSplit) {
  TempDir dir;
  writeValidSet(dir.path(), /*compressed=*/false, "t10k");
  IdxDataset data(optionsFor(dir.path(), Split::kTest));
  EXPECT_EQ(data.size(), 3);
  expectNormalisedPixels(data.batch({1}).inputs, pixelPattern(3), 784);
  // No train files there: the train split must fail and name the missing file.
  const std::string message = messageOf([&] { IdxDataset train(optionsFor(dir.path())); });
  EXPECT_NE(message.find("train-images-idx3-ubyte.gz"), std::string::npos) << message;
}

TEST(IdxDatasetTest, MissingDirectoryNamesThePathAndTheFix) {
  const std::string missing = "/nonexistent/thinwire-fashion-mnist";
  const std::string message = messageOf([&] { IdxDataset data(optionsFor(missing)); });
  EXPECT_NE(message.find("fashion-mnist: cannot open '" + missing +
                         "': No such file or directory (install the Debian package "
                         "dataset-fashion-mnist or set data.path)"),
            std::string::npos)
      << message;
}

TEST(IdxDatasetTest, MissingLabelFileIsDataError) {
  TempDir dir;
  writeGzip(dir.path() + "/train-images-idx3-ubyte.gz",
            idxBytes(0x803, {3, 28, 28}, pixelPattern(3)));
  const std::string message = messageOf([&] { IdxDataset data(optionsFor(dir.path())); });
  EXPECT_NE(message.find("cannot open '" + dir.path() +
                         "/train-labels-idx1-ubyte.gz': No such "
                         "file or directory"),
            std::string::npos)
      << message;
}

TEST(IdxDatasetTest, WrongMagicIsDataError) {
  TempDir dir;
  writeValidSet(dir.path(), true);
  // A labels file (magic 0x801) where the images belong.
  writeGzip(dir.path() + "/train-images-idx3-ubyte.gz", idxBytes(0x801, {3}, "abc"));
  const std::string message = messageOf([&] { IdxDataset data(optionsFor(dir.path())); });
  EXPECT_NE(message.find("magic 0x801, expected 0x803"), std::string::npos) << message;
}

TEST(IdxDatasetTest, TruncatedPayloadNamesFileExpectedAndActualBytes) {
  TempDir dir;
  writeValidSet(dir.path(), true);
  const std::string path = dir.path() + "/train-images-idx3-ubyte.gz";
  writeGzip(path, idxBytes(0x803, {3, 28, 28}, pixelPattern(3).substr(0, 2000)));
  const std::string message = messageOf([&] { IdxDataset data(optionsFor(dir.path())); });
  EXPECT_NE(message.find("'" + path + "' is truncated: expected 2352 payload bytes, found 2000"),
            std::string::npos)
      << message;
}

// Found by fuzz/idx_fuzz: three dimensions of up to 2^30 each overflowed the int64 product.
TEST(IdxDatasetTest, DimensionsWhoseProductOverflowsAreDataErrors) {
  TempDir dir;
  writeValidSet(dir.path(), true);
  writeGzip(dir.path() + "/train-images-idx3-ubyte.gz",
            idxBytes(0x803, {1u << 30, 1u << 30, 1u << 30}, "abc"));
  const std::string message = messageOf([&] { IdxDataset data(optionsFor(dir.path())); });
  EXPECT_NE(message.find("more than 16 GiB of payload"), std::string::npos) << message;
}

// A short file that declares the 16 GiB maximum is truncated (and is read in pieces, so the
// declared size is never allocated up front; fuzz/idx_fuzz runs with a 1 GiB malloc limit).
TEST(IdxDatasetTest, AShortFileDeclaringSixteenGibIsTruncated) {
  TempDir dir;
  writeValidSet(dir.path(), false);
  const std::string path = dir.path() + "/train-images-idx3-ubyte";
  writePlain(path, idxBytes(0x803, {1u << 14, 1u << 10, 1u << 10}, std::string(10, 'x')));
  const std::string message = messageOf([&] { IdxDataset data(optionsFor(dir.path())); });
  EXPECT_NE(message.find("is truncated: expected 17179869184 payload bytes, found 10"),
            std::string::npos)
      << message;
}

TEST(IdxDatasetTest, TruncatedHeaderAndTrailingBytesAreDataErrors) {
  TempDir dir;
  writeValidSet(dir.path(), true);
  writeGzip(dir.path() + "/train-labels-idx1-ubyte.gz", std::string("\0\0\x08", 3));
  EXPECT_NE(messageOf([&] { IdxDataset data(optionsFor(dir.path())); }).find("truncated"),
            std::string::npos);
  writeGzip(dir.path() + "/train-labels-idx1-ubyte.gz",
            idxBytes(0x801, {3}, std::string("\x01\x02\x03\x04", 4)));
  const std::string message = messageOf([&] { IdxDataset data(optionsFor(dir.path())); });
  EXPECT_NE(message.find("longer than declared: expected 3 payload bytes, found 4"),
            std::string::npos)
      << message;
}

TEST(IdxDatasetTest, ImageAndLabelCountsMustMatch) {
  TempDir dir;
  writeValidSet(dir.path(), true);
  writeGzip(dir.path() + "/train-labels-idx1-ubyte.gz",
            idxBytes(0x801, {2}, std::string("\x01\x02", 2)));
  const std::string message = messageOf([&] { IdxDataset data(optionsFor(dir.path())); });
  EXPECT_NE(message.find("holds 3 images but"), std::string::npos) << message;
  EXPECT_NE(message.find("holds 2 labels"), std::string::npos) << message;
}

TEST(IdxDatasetTest, LabelsMustBeBelowTheClassCount) {
  TempDir dir;
  writeValidSet(dir.path(), true);
  writeGzip(dir.path() + "/train-labels-idx1-ubyte.gz",
            idxBytes(0x801, {3}, std::string("\x01\x0a\x02", 3)));
  const std::string message = messageOf([&] { IdxDataset data(optionsFor(dir.path())); });
  EXPECT_NE(message.find("has label 10 at index 1"), std::string::npos) << message;
}

TEST(IdxDatasetTest, BatchRejectsOutOfRangeIndices) {
  TempDir dir;
  writeValidSet(dir.path(), true);
  IdxDataset data(optionsFor(dir.path()));
  EXPECT_THROW(data.batch({0, 3}), InvalidArgument);
  EXPECT_THROW(data.batch({-1}), InvalidArgument);
  EXPECT_EQ(data.batch({}).inputs.size(0), 0);
}

TEST(IdxDatasetTest, MakeDatasetBuildsFashionMnistFromConfigPath) {
  TempDir dir;
  writeValidSet(dir.path(), true);
  DataConfig config;
  config.dataset = "fashion_mnist";
  config.path = dir.path();
  const std::unique_ptr<Dataset> data = makeDataset(config, Split::kTrain, 0);
  EXPECT_EQ(data->size(), 3);
  config.dataset = "cifar";
  EXPECT_THROW(makeDataset(config, Split::kTrain, 0), ConfigError);
  config.dataset = "fashion_mnist";
  config.path = dir.path() + "/absent";
  EXPECT_THROW(makeDataset(config, Split::kTrain, 0), DataError);
}

// The installed Fashion-MNIST, checked against the raw files decoded here and against the
// published class balance (6000 per class in train, 1000 in t10k).
TEST(IdxDatasetTest, SystemFashionMnistMatchesRawFilesAndClassBalance) {
  if (!fs::is_directory(kSystemDirectory)) {
    GTEST_SKIP() << kSystemDirectory << " missing: install dataset-fashion-mnist";
  }
  for (Split split : {Split::kTrain, Split::kTest}) {
    const std::string prefix = split == Split::kTrain ? "train" : "t10k";
    const int64_t expectedSize = split == Split::kTrain ? 60000 : 10000;
    DataConfig config;
    const std::unique_ptr<Dataset> data = makeDataset(config, split, 0);
    ASSERT_EQ(data->size(), expectedSize);
    EXPECT_EQ(data->sampleShape(), (std::vector<int64_t>{1, 28, 28}));
    EXPECT_EQ(data->numClasses(), 10);

    const std::string images =
        readGzip(std::string(kSystemDirectory) + "/" + prefix + "-images-idx3-ubyte.gz");
    const std::string labels =
        readGzip(std::string(kSystemDirectory) + "/" + prefix + "-labels-idx1-ubyte.gz");
    ASSERT_EQ(images.size(), 16 + static_cast<size_t>(expectedSize) * 784);
    ASSERT_EQ(labels.size(), 8 + static_cast<size_t>(expectedSize));
    const std::vector<int64_t> picks = {0, 1, expectedSize / 2, expectedSize - 1};
    const Batch batch = data->batch(picks);
    for (size_t i = 0; i < picks.size(); ++i) {
      SCOPED_TRACE(prefix + " sample " + std::to_string(picks[i]));
      expectNormalisedPixels(batch.inputs[static_cast<int64_t>(i)], images,
                             16 + static_cast<size_t>(picks[i]) * 784);
      EXPECT_EQ(batch.labels[static_cast<int64_t>(i)].item<int64_t>(),
                static_cast<unsigned char>(labels[8 + static_cast<size_t>(picks[i])]));
    }

    const at::Tensor counts = at::bincount(dynamic_cast<const IdxDataset&>(*data).labels());
    ASSERT_EQ(counts.numel(), 10);
    for (int64_t c = 0; c < 10; ++c) EXPECT_EQ(counts[c].item<int64_t>(), expectedSize / 10);
  }
}

}  // namespace
}  // namespace thinwire::core
