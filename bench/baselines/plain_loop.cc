// The reference for thinwire's trainer overhead: the same data-parallel training step written
// directly against libtorch and MPI — forward, backward, one MPI_Allreduce over all gradients
// flattened into one buffer, divide, torch::optim::SGD — on the same data, model and sample order
// (thinwire's dataset, model factory and sampler, so only the loop differs).
//
//   mpirun -n 4 build/release/bin/thinwire_plain_loop CONFIG [--set path=value]...
// Prints on rank 0: "plain-loop: steps=N seconds_per_step=S" (mean over all steps, rank 0).
#include <ATen/Parallel.h>
#include <mpi.h>
#include <torch/optim/sgd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/data/dataset.h"
#include "core/data/distributed_sampler.h"
#include "core/models/model.h"

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (argc < 2) {
    if (rank == 0) std::fprintf(stderr, "usage: thinwire_plain_loop CONFIG [--set k=v]...\n");
    MPI_Finalize();
    return 2;
  }
  std::vector<std::string> overrides;
  for (int i = 2; i + 1 < argc; i += 2) overrides.push_back(argv[i + 1]);
  using namespace thinwire::core;
  const Config config = Config::fromFile(argv[1], overrides);
  at::set_num_threads(static_cast<int>(config.train.threads));
  auto train = makeDataset(config.data, Split::kTrain, config.run.seed);
  auto model = makeModel(config.model, train->sampleShape(), train->numClasses(), config.run.seed);
  DistributedSampler sampler({.datasetSize = train->size(),
                              .batchPerRank = config.train.batchPerRank,
                              .rank = rank,
                              .worldSize = size,
                              .seed = config.run.seed});
  std::vector<at::Tensor> parameters = model->parameters();
  int64_t total = 0;
  for (auto& p : parameters) total += p.numel();
  at::Tensor flat = at::zeros({total}, at::kFloat);
  torch::optim::SGD optimizer(parameters, torch::optim::SGDOptions(config.optim.lr)
                                              .momentum(config.optim.momentum)
                                              .nesterov(config.optim.nesterov));
  double seconds = 0;
  for (int64_t step = 0; step < config.train.steps; ++step) {
    const auto start = std::chrono::steady_clock::now();
    Batch batch = train->batch(sampler.indices(step));
    optimizer.zero_grad();
    at::Tensor loss = at::cross_entropy_loss(model->forward(batch.inputs), batch.labels);
    loss.backward();
    int64_t offset = 0;
    for (auto& p : parameters) {
      flat.narrow(0, offset, p.numel()).copy_(p.grad().reshape({-1}));
      offset += p.numel();
    }
    MPI_Allreduce(MPI_IN_PLACE, flat.data_ptr<float>(), static_cast<int>(total), MPI_FLOAT, MPI_SUM,
                  MPI_COMM_WORLD);
    flat.div_(size);
    offset = 0;
    for (auto& p : parameters) {
      p.mutable_grad().copy_(flat.narrow(0, offset, p.numel()).view(p.sizes()));
      offset += p.numel();
    }
    optimizer.step();
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  if (rank == 0) {
    std::printf("plain-loop: steps=%lld seconds_per_step=%.6f\n",
                static_cast<long long>(config.train.steps),
                seconds / static_cast<double>(config.train.steps));
  }
  MPI_Finalize();
  return 0;
}
