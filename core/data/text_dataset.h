// File: core/data/text_dataset.h
//
// TextDataset: byte-level language-model data from a directory of UTF-8 text files (default: the
// Debian package fortunes, /usr/share/games/fortunes).
//   - Every regular file under the directory (recursively, in sorted path order) is read, except
//     the `*.dat` and `*.u8` index files that strfile writes next to fortune files.
//   - A file splits into documents at lines holding a single "%" (the fortune format); a file
//     without such lines is one document.
//   - The split is by document: a document goes to validation when a hash of its bytes, mapped
//     to [0, 1), is below validationFraction. The same text always lands on the same side, on
//     every machine, so duplicated documents cannot leak from train into validation.
//   - Each split is its documents concatenated in file order. Sample i is the window of
//     seqLen + 1 bytes starting at byte i * seqLen: inputs are its first seqLen bytes, labels its
//     last seqLen. Windows of different indices share at most one byte, so disjoint index sets
//     (DistributedSampler's shards) are disjoint text.
//
// Errors are DataError naming the directory, e.g.
//   text: cannot read directory '/usr/share/games/fortunes': No such file or directory
//     (install the Debian package fortunes or set data.path)
//
// Ownership: the dataset owns its bytes. Threading: immutable after construction; every const
// method may be called from many threads at once.
//
// Example:
//   TextDataset train({.split = Split::kTrain, .seqLen = 128});
//   Batch batch = train.batch({0, 1});   // inputs [2, 128] int64, labels [2, 128] int64
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/data/dataset.h"

namespace thinwire::core {

struct TextDatasetOptions {
  std::string directory = "/usr/share/games/fortunes";
  Split split = Split::kTrain;       // kTest is the validation split
  int64_t seqLen = 128;              // bytes of context per sample (>= 1)
  double validationFraction = 0.05;  // in (0, 1)
};

// Splits `text` into documents at lines that hold a single "%" (fortune format; a trailing
// "\r" is tolerated). Every document keeps its lines with their "\n"; empty documents are
// dropped. Pure function.
std::vector<std::string> splitDocuments(const std::string& text);

// True when `document` belongs to the validation split for `fraction` (hash rule above).
bool isValidationDocument(const std::string& document, double fraction);

class TextDataset : public Dataset {
 public:
  // Reads the directory (blocking; ~50 ms for fortunes). Throws DataError when the directory is
  // missing, unreadable or holds no text, or when this split is shorter than one window;
  // ConfigError for seqLen < 1 or a fraction outside (0, 1).
  explicit TextDataset(TextDatasetOptions options);

  // Number of windows: (bytes - 1) / seqLen.
  int64_t size() const override;
  std::vector<int64_t> sampleShape() const override { return {options_.seqLen}; }
  int64_t numClasses() const override { return 256; }
  // inputs and labels int64 [n, seqLen] (byte values 0..255). InvalidArgument for an index
  // outside [0, size()).
  Batch batch(const std::vector<int64_t>& indices) const override;
  std::string describe() const override;

  // This split's concatenated bytes.
  const std::string& text() const { return text_; }
  int64_t documents() const { return documents_; }

 private:
  TextDatasetOptions options_;
  std::string text_;
  int64_t documents_ = 0;
};

}  // namespace thinwire::core
