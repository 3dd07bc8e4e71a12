// The PV export: safetensors layout readable by an independent Python reader (json + struct),
// and a model loaded from it computes exactly the loss of the tuned, dequantized model.
#include "qat/pv_safetensors.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "base/error.h"
#include "core/models/llama.h"
#include "qat/pv_tuner.h"

namespace thinwire::qat {
namespace {

std::string tempPath(const std::string& name) {
  auto dir =
      std::filesystem::temp_directory_path() / ("pv_safetensors_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

std::string runCommand(const std::string& command) {
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return out;
  char chunk[512];
  while (fgets(chunk, sizeof(chunk), pipe) != nullptr) out += chunk;
  pclose(pipe);
  return out;
}

TEST(PvSafetensorsTest, RoundTripsAndPythonReadsTheLayout) {
  StateDict tensors;
  tensors["layer.codes"] = at::arange(12, at::kLong).remainder(4).to(at::kByte).reshape({3, 4});
  tensors["layer.scales"] = at::tensor({0.5f, 0.25f, 2.0f}).reshape({3, 1});
  tensors["layer.zeros"] = at::tensor({1.5f, 1.0f, 0.0f}).reshape({3, 1});
  tensors["norm.weight"] = at::tensor({1.0f, -2.0f, 3.5f});
  const std::string path = tempPath("roundtrip.safetensors");
  writePvSafetensors(path, tensors,
                     {{"format", kPvFormatName}, {"version", "1"}, {"group_size", "4"}});
  PvSafetensors file = readPvSafetensors(path);
  ASSERT_EQ(file.tensors.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    EXPECT_TRUE(at::equal(file.tensors.at(name), t)) << name;
    EXPECT_EQ(file.tensors.at(name).scalar_type(), t.scalar_type()) << name;
  }
  EXPECT_EQ(file.metadata.at("group_size"), "4");

  // An independent reader: the 8-byte length, the JSON header, raw little-endian data.
  const std::string script = tempPath("read.py");
  std::ofstream(script) << R"(import json, struct, sys
raw = open(sys.argv[1], 'rb').read()
n = struct.unpack('<Q', raw[:8])[0]
header = json.loads(raw[8:8 + n])
data = raw[8 + n:]
def tensor(name):
    e = header[name]
    b = data[e['data_offsets'][0]:e['data_offsets'][1]]
    fmt = {'U8': 'B', 'F32': 'f', 'I64': 'q'}[e['dtype']]
    return e['shape'], list(struct.unpack('<%d%s' % (len(b) // struct.calcsize(fmt), fmt), b))
g = int(header['__metadata__']['group_size'])
shape, q = tensor('layer.codes')
_, s = tensor('layer.scales')
_, z = tensor('layer.zeros')
w = [s[i // shape[1] * (shape[1] // g) + (i % shape[1]) // g] *
     (q[i] - z[i // shape[1] * (shape[1] // g) + (i % shape[1]) // g]) for i in range(len(q))]
print(header['__metadata__']['format'], shape, ' '.join('%g' % x for x in w))
)";
  const std::string out = runCommand("/usr/bin/python3 " + script + " " + path);
  // Rows: 0.5 * ([0 1 2 3] - 1.5), 0.25 * ([0 1 2 3] - 1), 2 * [0 1 2 3].
  EXPECT_EQ(
      out, std::string(kPvFormatName) + " [3, 4] -0.75 -0.25 0.25 0.75 -0.25 0 0.25 0.5 0 2 4 6\n");
}

TEST(PvSafetensorsTest, RejectsTruncatedAndForeignFiles) {
  const std::string path = tempPath("bad.safetensors");
  std::ofstream(path, std::ios::binary) << "abc";
  EXPECT_THROW(readPvSafetensors(path), DataError);
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      << std::string("\x10\0\0\0\0\0\0\0", 8) << "{\"x\":{\"dtype\":";
  EXPECT_THROW(readPvSafetensors(path), DataError);
  writePvSafetensors(path, {{"w", at::ones({2})}}, {{"format", "other"}, {"version", "1"}});
  torch::nn::Module module;
  module.register_parameter("w", at::zeros({2}));
  EXPECT_THROW(loadPvQuantized(module, readPvSafetensors(path)), DataError);
}

// The export evaluated by a fresh model (what `thinwire eval --quantized` does) gives exactly
// the loss of the model the tuner left behind.
TEST(PvSafetensorsTest, LoadedExportHasTheTunedModelsLoss) {
  core::LlamaOptions options;
  options.dModel = 64;
  options.layers = 2;
  options.heads = 2;
  options.maxSeqLen = 16;
  options.mlpMultiple = 64;
  auto model = std::make_shared<core::Llama>(options);
  model->initFromSeed(3);
  std::vector<optim::NamedParameter> quantized, others;
  for (const auto& item : model->named_parameters(/*recurse=*/true)) {
    const bool q =
        item.value().dim() == 2 && (item.key().find(".attention.") != std::string::npos ||
                                    item.key().find(".mlp.") != std::string::npos);
    (q ? quantized : others).push_back({item.key(), item.value()});
  }
  ASSERT_EQ(quantized.size(), 14u);
  PvTunerOptions o;
  o.grid = {.bits = 2, .groupSize = 32};
  o.maxCodeChange = 0.05;
  PvTuner tuner(quantized, others, o);
  auto generator = at::make_generator<at::CPUGeneratorImpl>(5);
  const at::Tensor tokens = at::randint(0, 256, {4, 17}, generator, at::kLong);
  const at::Tensor inputs = tokens.slice(1, 0, 16), labels = tokens.slice(1, 1, 17);
  auto loss = [&](core::Llama& m) {
    at::Tensor logits = m.forward(inputs);
    return at::cross_entropy_loss(logits.reshape({-1, 256}), labels.reshape({-1}));
  };
  int64_t changed = 0;
  for (int step = 0; step < 3; ++step) {
    loss(*model).backward();
    changed += tuner.step().changed;
  }
  EXPECT_GT(changed, 0);
  const std::string path = tempPath("llama.safetensors");
  writePvSafetensors(path, tuner.exportState(),
                     {{"format", kPvFormatName}, {"version", "1"}, {"group_size", "32"}});
  auto fresh = std::make_shared<core::Llama>(options);
  fresh->initFromSeed(99);
  loadPvQuantized(*fresh, readPvSafetensors(path));
  at::NoGradGuard noGrad;
  const double tuned = loss(*model).item<double>();
  const double loaded = loss(*fresh).item<double>();
  EXPECT_EQ(tuned, loaded);
  const double before = loss(*std::make_shared<core::Llama>(options)).item<double>();
  EXPECT_NE(before, loaded);  // the fresh model's own weights were really replaced
}

}  // namespace
}  // namespace thinwire::qat
