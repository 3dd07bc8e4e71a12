// libFuzzer target: the IDX loader (core::IdxDataset) on an image file and a label file, plain
// or gzip-compressed. Input layout: byte 0 = flags (bit 0: the images file is named *.gz, bit 1:
// the labels file), bytes 1-4 = the images file's length (big-endian, taken modulo what is
// left), then the images file, then the labels file. A dataset that loads is then read: every
// sample's batch and describe().
#include <algorithm>
#include <cstdint>
#include <string>

#include "core/data/idx_dataset.h"
#include "fuzz/fuzz_support.h"

namespace {

using thinwire::fuzz::bigEndian32;

std::string idxFile(uint32_t magic, const std::vector<uint32_t>& dims, size_t payload, int fill) {
  std::string out = bigEndian32(magic);
  for (uint32_t d : dims) out += bigEndian32(d);
  for (size_t i = 0; i < payload; ++i) out += static_cast<char>((fill + 37 * i) & 0xff);
  return out;
}

std::string input(int flags, const std::string& images, const std::string& labels) {
  return std::string(1, static_cast<char>(flags)) +
         bigEndian32(static_cast<uint32_t>(images.size())) + images + labels;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // IDX: magic 0x00000803 (uint8, 3 dims) for images, 0x00000801 for labels; then the dims.
  const std::string images = idxFile(0x803, {3, 4, 4}, 3 * 4 * 4, 1);
  std::string labels = bigEndian32(0x801) + bigEndian32(3);
  labels += std::string{0, 5, 9};
  thinwire::fuzz::maybeWriteSeeds({
      input(0, images, labels),
      input(0, idxFile(0x803, {1, 28, 28}, 28 * 28, 7),
            bigEndian32(0x801) + bigEndian32(1) + "\x02"),
      input(0, images, bigEndian32(0x801) + bigEndian32(3) + std::string{0, 10, 1}),  // label 10
      input(0, images.substr(0, images.size() - 5), labels),                          // short
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 5) return 0;
  const std::string all = thinwire::fuzz::asText(data, size);
  const int flags = static_cast<uint8_t>(all[0]);
  const uint32_t declared = (static_cast<uint32_t>(static_cast<uint8_t>(all[1])) << 24) |
                            (static_cast<uint32_t>(static_cast<uint8_t>(all[2])) << 16) |
                            (static_cast<uint32_t>(static_cast<uint8_t>(all[3])) << 8) |
                            static_cast<uint32_t>(static_cast<uint8_t>(all[4]));
  const std::string rest = all.substr(5);
  const size_t split = rest.empty() ? 0 : declared % (rest.size() + 1);
  const auto dir = thinwire::fuzz::scratch("idx");
  const std::string imagesName = "train-images-idx3-ubyte";
  const std::string labelsName = "train-labels-idx1-ubyte";
  for (const std::string& name : {imagesName, labelsName}) {
    std::filesystem::remove(dir / name);
    std::filesystem::remove(dir / (name + ".gz"));
  }
  thinwire::fuzz::writeFile(dir / (imagesName + ((flags & 1) ? ".gz" : "")), rest.substr(0, split));
  thinwire::fuzz::writeFile(dir / (labelsName + ((flags & 2) ? ".gz" : "")), rest.substr(split));
  thinwire::fuzz::expectOnlyThinwireErrors([&] {
    thinwire::core::IdxDataset dataset({.directory = dir.string(), .name = "fuzz"});
    std::vector<int64_t> indices(static_cast<size_t>(std::min<int64_t>(dataset.size(), 64)));
    for (size_t i = 0; i < indices.size(); ++i) indices[i] = static_cast<int64_t>(i);
    if (!indices.empty()) (void)dataset.batch(indices);
    (void)dataset.describe();
  });
  return 0;
}
