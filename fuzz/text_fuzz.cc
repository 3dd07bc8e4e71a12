// libFuzzer target: the text loader (core::TextDataset over a directory holding one file, and
// splitDocuments). Byte 0 chooses the split (bit 0: validation) and the window (1 + byte0 / 2 %
// 32 bytes); the rest is the file. A dataset that loads is then read: its first and last
// windows, whose bytes must equal the text's (inputs) and the text shifted by one (labels).
#include <ATen/ATen.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/data/text_dataset.h"
#include "fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  thinwire::fuzz::maybeWriteSeeds({
      std::string("\x08") + "A fortune.\n%\nAnother one,\n  indented.\n%\nThe third.\n%\n",
      std::string("\x01") + "one\r\n%\r\ntwo\r\n%\r\n" + std::string(300, 'x') + "\n%\n",
      std::string("\x40") + "\xc3\xa9t\xc3\xa9 \xe2\x82\xac\n%\n%\n%\n\n\nend\n",
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string text = thinwire::fuzz::asText(data + 1, size - 1);
  const bool validation = (data[0] & 1) != 0;
  const int64_t seqLen = 1 + (data[0] / 2) % 32;
  (void)thinwire::core::splitDocuments(text);
  const auto dir = thinwire::fuzz::scratch("text");
  thinwire::fuzz::writeFile(dir / "fortunes", text);
  thinwire::fuzz::expectOnlyThinwireErrors([&] {
    thinwire::core::TextDataset dataset(
        {.directory = dir.string(),
         .split = validation ? thinwire::core::Split::kTest : thinwire::core::Split::kTrain,
         .seqLen = seqLen,
         .validationFraction = 0.5});
    const int64_t n = dataset.size();
    if (n <= 0) return;
    const thinwire::core::Batch batch = dataset.batch({0, n - 1});
    const std::string& bytes = dataset.text();
    for (int64_t t = 0; t < seqLen; ++t) {
      const auto first = static_cast<unsigned char>(bytes.at(static_cast<size_t>(t)));
      const auto next = static_cast<unsigned char>(bytes.at(static_cast<size_t>(t + 1)));
      if (batch.inputs[0][t].item<int64_t>() != first ||
          batch.labels[0][t].item<int64_t>() != next) {
        std::fprintf(stderr, "window 0 byte %lld differs from the text\n",
                     static_cast<long long>(t));
        std::abort();
      }
    }
    (void)dataset.describe();
  });
  return 0;
}
