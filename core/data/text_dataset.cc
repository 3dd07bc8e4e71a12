#include "core/data/text_dataset.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include "base/error.h"
#include "core/data/seeded_random.h"

namespace thinwire::core {
namespace {

constexpr const char* kMissingHint = "install the Debian package fortunes or set data.path";

bool isIndexFile(const std::filesystem::path& path) {
  const std::string extension = path.extension().string();
  return extension == ".dat" || extension == ".u8";
}

// Every corpus file under `directory`, sorted so the concatenation order never depends on the
// file system's directory order.
std::vector<std::filesystem::path> corpusFiles(const std::string& directory) {
  namespace fs = std::filesystem;
  std::error_code error;
  if (!fs::is_directory(directory, error)) {
    const std::string reason =
        fs::exists(directory, error) ? "not a directory" : "No such file or directory";
    TW_THROW(DataError, "text: cannot read directory '", directory, "': ", reason, " (",
             kMissingHint, ")");
  }
  std::vector<fs::path> files;
  fs::recursive_directory_iterator it(directory, fs::directory_options::follow_directory_symlink,
                                      error);
  if (error) {
    TW_THROW(DataError, "text: cannot read directory '", directory, "': ", error.message(), " (",
             kMissingHint, ")");
  }
  for (; it != fs::recursive_directory_iterator(); it.increment(error)) {
    if (error) break;
    if (it->is_regular_file(error) && !isIndexFile(it->path())) files.push_back(it->path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::string readFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) TW_THROW(DataError, "text: cannot open '", path.string(), "'");
  std::ostringstream content;
  content << in.rdbuf();
  return content.str();
}

}  // namespace

std::vector<std::string> splitDocuments(const std::string& text) {
  std::vector<std::string> documents;
  std::string current;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    const bool lastLine = end == std::string::npos;
    if (lastLine) end = text.size();
    const std::string_view line(text.data() + start, end - start);
    if (line == "%" || line == "%\r") {
      if (!current.empty()) documents.push_back(std::move(current));
      current.clear();
    } else {
      current.append(line);
      current.push_back('\n');
    }
    start = end + 1;
  }
  if (!current.empty()) documents.push_back(std::move(current));
  return documents;
}

bool isValidationDocument(const std::string& document, double fraction) {
  const uint64_t bits = mixBits(hashName(document));
  const double unit = static_cast<double>(bits >> 11) * 0x1.0p-53;  // uniform in [0, 1)
  return unit < fraction;
}

TextDataset::TextDataset(TextDatasetOptions options) : options_(std::move(options)) {
  if (options_.seqLen < 1)
    TW_THROW(ConfigError, "text: seq_len must be >= 1, got ", options_.seqLen);
  if (!(options_.validationFraction > 0 && options_.validationFraction < 1)) {
    TW_THROW(ConfigError, "text: validation fraction must be in (0, 1), got ",
             options_.validationFraction);
  }
  const bool wantValidation = options_.split == Split::kTest;
  int64_t files = 0;
  for (const auto& path : corpusFiles(options_.directory)) {
    ++files;
    for (std::string& document : splitDocuments(readFile(path))) {
      if (isValidationDocument(document, options_.validationFraction) != wantValidation) continue;
      text_ += document;
      ++documents_;
    }
  }
  if (files == 0) {
    TW_THROW(DataError, "text: no text files in '", options_.directory, "' (", kMissingHint, ")");
  }
  const char* splitName = wantValidation ? "validation" : "train";
  if (static_cast<int64_t>(text_.size()) < options_.seqLen + 1) {
    TW_THROW(DataError, "text: the ", splitName, " split of '", options_.directory, "' has ",
             text_.size(), " bytes in ", documents_, " documents, fewer than one window of ",
             options_.seqLen + 1, " (", kMissingHint, ")");
  }
}

int64_t TextDataset::size() const {
  return (static_cast<int64_t>(text_.size()) - 1) / options_.seqLen;
}

Batch TextDataset::batch(const std::vector<int64_t>& indices) const {
  const int64_t n = static_cast<int64_t>(indices.size());
  const int64_t length = options_.seqLen;
  at::Tensor inputs = at::empty({n, length}, at::TensorOptions().dtype(at::kLong));
  at::Tensor labels = at::empty({n, length}, at::TensorOptions().dtype(at::kLong));
  int64_t* in = inputs.data_ptr<int64_t>();
  int64_t* out = labels.data_ptr<int64_t>();
  const auto* bytes = reinterpret_cast<const unsigned char*>(text_.data());
  const int64_t count = size();
  for (int64_t row = 0; row < n; ++row) {
    const int64_t index = indices[static_cast<size_t>(row)];
    TW_CHECK(index >= 0 && index < count, "text: sample index ", index, " outside [0, ", count,
             ")");
    const unsigned char* window = bytes + index * length;
    for (int64_t t = 0; t < length; ++t) {
      in[row * length + t] = window[t];
      out[row * length + t] = window[t + 1];
    }
  }
  return {.inputs = inputs, .labels = labels};
}

std::string TextDataset::describe() const {
  std::ostringstream out;
  out << "text " << (options_.split == Split::kTest ? "validation" : "train") << " (" << documents_
      << " documents, " << text_.size() << " bytes, " << size() << " windows of " << options_.seqLen
      << ") from " << options_.directory;
  return out.str();
}

}  // namespace thinwire::core
