#include "core/data/synthetic_dataset.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <vector>

#include "base/error.h"
#include "core/data/dataset.h"

namespace thinwire::core {
namespace {

SyntheticDataConfig smallConfig() {
  SyntheticDataConfig config;
  config.trainSamples = 2000;
  config.testSamples = 500;
  config.features = 32;
  config.classes = 5;
  return config;
}

std::vector<int64_t> allIndices(const Dataset& data) {
  std::vector<int64_t> all(static_cast<size_t>(data.size()));
  std::iota(all.begin(), all.end(), int64_t{0});
  return all;
}

TEST(SyntheticDatasetTest, ShapesFollowTheConfig) {
  const SyntheticDataset train(smallConfig(), Split::kTrain, 1);
  const SyntheticDataset test(smallConfig(), Split::kTest, 1);
  EXPECT_EQ(train.size(), 2000);
  EXPECT_EQ(test.size(), 500);
  EXPECT_EQ(train.sampleShape(), (std::vector<int64_t>{32}));
  EXPECT_EQ(train.numClasses(), 5);
  const Batch batch = train.batch({4, 1, 4});
  EXPECT_EQ(batch.inputs.sizes(), (std::vector<int64_t>{3, 32}));
  EXPECT_EQ(batch.inputs.scalar_type(), at::kFloat);
  EXPECT_EQ(batch.labels.scalar_type(), at::kLong);
  EXPECT_TRUE(batch.inputs[0].equal(batch.inputs[2]));
  EXPECT_THROW(train.batch({2000}), InvalidArgument);
  EXPECT_NE(train.describe().find("synthetic train (2000 x 32, 5 classes, seed 1)"),
            std::string::npos);
}

TEST(SyntheticDatasetTest, SameSeedSameDataWhateverTheGlobalRng) {
  at::manual_seed(1);
  const SyntheticDataset a(smallConfig(), Split::kTrain, 9);
  at::manual_seed(2);
  (void)at::rand({100});
  const SyntheticDataset b(smallConfig(), Split::kTrain, 9);
  const Batch batchA = a.batch(allIndices(a));
  const Batch batchB = b.batch(allIndices(b));
  EXPECT_TRUE(batchA.inputs.equal(batchB.inputs));
  EXPECT_TRUE(batchA.labels.equal(batchB.labels));
}

TEST(SyntheticDatasetTest, DifferentSeedsAndSplitsDiffer) {
  const SyntheticDataset a(smallConfig(), Split::kTrain, 1);
  const SyntheticDataset b(smallConfig(), Split::kTrain, 2);
  EXPECT_FALSE(a.batch({0, 1, 2}).inputs.equal(b.batch({0, 1, 2}).inputs));
  EXPECT_FALSE(a.classMeans().equal(b.classMeans()));
  const SyntheticDataset test(smallConfig(), Split::kTest, 1);
  EXPECT_TRUE(a.classMeans().equal(test.classMeans()));
  EXPECT_FALSE(a.batch({0, 1, 2}).inputs.equal(test.batch({0, 1, 2}).inputs));
}

TEST(SyntheticDatasetTest, SamplesAreClassMeanPlusUnitNoise) {
  const SyntheticDataset train(smallConfig(), Split::kTrain, 3);
  const Batch all = train.batch(allIndices(train));
  for (int64_t c = 0; c < train.numClasses(); ++c) {
    const at::Tensor rows = all.inputs.index_select(0, all.labels.eq(c).nonzero().view({-1}));
    const int64_t count = rows.size(0);
    // Uniform labels: 400 expected per class, standard deviation ~18.
    EXPECT_NEAR(count, 400, 100) << "class " << c;
    const at::Tensor noise = rows - train.classMeans()[c];
    EXPECT_NEAR(noise.mean().item<double>(), 0.0, 0.02) << "class " << c;
    EXPECT_NEAR(noise.std().item<double>(), 1.0, 0.03) << "class " << c;
  }
  // Means are spread 4/sqrt(features) per coordinate.
  EXPECT_NEAR(train.classMeans().std().item<double>(), 4.0 / std::sqrt(32.0), 0.1);
}

TEST(SyntheticDatasetTest, TestSetIsLearnableFromTheTrainSet) {
  // Nearest class centroid, estimated on train, classifies the held-out test split.
  const SyntheticDataset train(smallConfig(), Split::kTrain, 5);
  const SyntheticDataset test(smallConfig(), Split::kTest, 5);
  const Batch trainBatch = train.batch(allIndices(train));
  const Batch testBatch = test.batch(allIndices(test));
  std::vector<at::Tensor> centroids;
  for (int64_t c = 0; c < train.numClasses(); ++c) {
    centroids.push_back(
        trainBatch.inputs.index_select(0, trainBatch.labels.eq(c).nonzero().view({-1})).mean(0));
  }
  const at::Tensor distances = at::cdist(testBatch.inputs, at::stack(centroids));
  const double accuracy =
      distances.argmin(1).eq(testBatch.labels).to(at::kDouble).mean().item<double>();
  EXPECT_GT(accuracy, 0.9);
}

TEST(SyntheticDatasetTest, InvalidSizesAreConfigErrors) {
  SyntheticDataConfig config = smallConfig();
  config.classes = 1;
  EXPECT_THROW(SyntheticDataset(config, Split::kTrain, 0), ConfigError);
  config = smallConfig();
  config.features = 0;
  EXPECT_THROW(SyntheticDataset(config, Split::kTrain, 0), ConfigError);
}

TEST(SyntheticDatasetTest, MakeDatasetBuildsSyntheticFromConfig) {
  DataConfig config;
  config.dataset = "synthetic";
  config.synthetic = smallConfig();
  const std::unique_ptr<Dataset> train = makeDataset(config, Split::kTrain, 4);
  const std::unique_ptr<Dataset> test = makeDataset(config, Split::kTest, 4);
  EXPECT_EQ(train->size(), 2000);
  EXPECT_EQ(test->size(), 500);
  const SyntheticDataset direct(smallConfig(), Split::kTrain, 4);
  EXPECT_TRUE(train->batch({0, 7}).inputs.equal(direct.batch({0, 7}).inputs));
}

}  // namespace
}  // namespace thinwire::core
