// libFuzzer target: the YAML experiment-config parser and validator (core::Config::fromString,
// then toYaml() and a re-parse of its output, which must succeed: what the parser accepted and
// printed, it must accept again). Seeds: a few configs written here; scripts/fuzz.sh adds every
// examples/**/*.yaml.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/config.h"
#include "fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  thinwire::fuzz::maybeWriteSeeds({
      "run:\n  name: a\n  seed: 3\ntrain:\n  steps: 10\n  batch_per_rank: 4\n",
      "model:\n  type: llama\n  d_model: 128\n  layers: 1\n  heads: 2\n  seq_len: 32\n"
      "qat:\n  method: quest\n  w_bits: 4\n  a_bits: 4\n",
      "compression:\n  method: topk\n  ratio: 0.01\n  feedback: ef\n  layerwise:\n"
      "    enabled: true\noptim:\n  name: adamw\n  lr: 0.003\n",
      "comm: {backend: mpi, bucket_mb: 4, timeout_s: 30}\nlaunch: {ranks: 4}\n",
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string yaml = thinwire::fuzz::asText(data, size);
  thinwire::fuzz::expectOnlyThinwireErrors([&] {
    // A `base:` key reads that file (relative to the current directory): harmless here.
    const thinwire::core::Config config = thinwire::core::Config::fromString(yaml, "<fuzz>");
    const std::string printed = config.toYaml();
    try {
      (void)thinwire::core::Config::fromString(printed, "<fuzz: toYaml>");
    } catch (const thinwire::Error& e) {
      // Accepted, printed, then refused: a real bug, reported as a crash with both texts.
      std::fprintf(stderr, "toYaml() output is refused: %s\n--- input\n%s\n--- printed\n%s\n",
                   e.what(), yaml.c_str(), printed.c_str());
      std::abort();
    }
  });
  return 0;
}
