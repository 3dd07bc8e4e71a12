#include "core/data/idx_dataset.h"

#include <ATen/ATen.h>
#include <sys/stat.h>
#include <zlib.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <memory>
#include <sstream>
#include <type_traits>
#include <vector>

#include "base/error.h"

namespace thinwire::core {
namespace {

constexpr uint32_t kImagesMagic = 0x00000803;  // unsigned byte data, 3 dimensions
constexpr uint32_t kLabelsMagic = 0x00000801;  // unsigned byte data, 1 dimension
// gzread takes an unsigned length; read large payloads in pieces well below its limit.
constexpr size_t kReadChunkBytes = size_t{1} << 24;

struct GzFileCloser {
  void operator()(gzFile file) const { gzclose(file); }
};
using GzFilePtr = std::unique_ptr<std::remove_pointer_t<gzFile>, GzFileCloser>;

// One IDX array: its dimensions and its uint8 payload.
struct IdxArray {
  std::string path;
  std::vector<int64_t> dims;
  at::Tensor data;  // uint8, flat
};

bool isDirectory(const std::string& path) {
  struct stat info {};
  return ::stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode);
}

bool exists(const std::string& path) {
  struct stat info {};
  return ::stat(path.c_str(), &info) == 0;
}

std::string cannotOpen(const IdxDatasetOptions& options, const std::string& path, int error) {
  std::ostringstream out;
  out << options.name << ": cannot open '" << path << "': " << std::strerror(error) << " ("
      << options.missingHint << ")";
  return out.str();
}

// Reads up to `size` bytes; returns how many were read (fewer only at end of file).
size_t readBytes(gzFile file,
                 void* into,
                 size_t size,
                 const IdxDatasetOptions& options,
                 const std::string& path) {
  auto* bytes = static_cast<char*>(into);
  size_t done = 0;
  while (done < size) {
    const size_t want = std::min(size - done, kReadChunkBytes);
    const int got = gzread(file, bytes + done, static_cast<unsigned>(want));
    if (got < 0) {
      int code = 0;
      const char* message = gzerror(file, &code);
      TW_THROW(DataError, options.name, ": cannot read '", path,
               "': ", code == Z_ERRNO ? std::strerror(errno) : message);
    }
    if (got == 0) break;
    done += static_cast<size_t>(got);
  }
  return done;
}

uint32_t bigEndian32(const unsigned char* bytes) {
  return (uint32_t{bytes[0]} << 24) | (uint32_t{bytes[1]} << 16) | (uint32_t{bytes[2]} << 8) |
         uint32_t{bytes[3]};
}

// Opens "<directory>/<name>.gz", or "<directory>/<name>" when only the uncompressed file exists
// (gzread passes plain files through unchanged), and validates magic, dims and payload size.
IdxArray readIdx(const IdxDatasetOptions& options,
                 const std::string& name,
                 uint32_t magic,
                 size_t rank) {
  const std::string compressed = options.directory + "/" + name + ".gz";
  const std::string plain = options.directory + "/" + name;
  const std::string path = exists(compressed) || !exists(plain) ? compressed : plain;
  errno = 0;
  GzFilePtr file(gzopen(path.c_str(), "rb"));
  if (!file) {
    TW_THROW(DataError, cannotOpen(options, path, errno != 0 ? errno : ENOENT));
  }
  gzbuffer(file.get(), 1 << 18);

  std::array<unsigned char, 4> word{};
  const size_t headerBytes = 4 * (1 + rank);
  auto readWord = [&](size_t offset) {
    const size_t got = readBytes(file.get(), word.data(), word.size(), options, path);
    if (got != word.size()) {
      TW_THROW(DataError, options.name, ": '", path, "' is truncated: expected a ", headerBytes,
               "-byte IDX header, found ", offset + got, " bytes");
    }
    return bigEndian32(word.data());
  };

  IdxArray array;
  array.path = path;
  const uint32_t found = readWord(0);
  if (found != magic) {
    TW_THROW(DataError, options.name, ": '", path, "' is not an IDX file of ", rank,
             "-dimensional unsigned bytes: magic 0x", std::hex, found, ", expected 0x", magic);
  }
  constexpr int64_t kMaxPayloadBytes = int64_t{1} << 34;
  int64_t payloadBytes = 1;
  for (size_t d = 0; d < rank; ++d) {
    const uint32_t dim = readWord(4 * (d + 1));
    if (dim == 0 || dim > (uint32_t{1} << 30)) {
      TW_THROW(DataError, options.name, ": '", path, "' declares dimension ", d, " = ", dim,
               ", expected 1 to 2^30");
    }
    array.dims.push_back(static_cast<int64_t>(dim));
    // Checked before multiplying: three dimensions of up to 2^30 overflow int64.
    if (payloadBytes > kMaxPayloadBytes / static_cast<int64_t>(dim)) {
      TW_THROW(DataError, options.name, ": '", path,
               "' declares dimensions whose product is "
               "more than 16 GiB of payload");
    }
    payloadBytes *= static_cast<int64_t>(dim);
  }

  // Read in pieces into a growing buffer: a short (or gzip) file that declares gigabytes must
  // fail as truncated, not allocate what its header claims first.
  const size_t expected = static_cast<size_t>(payloadBytes);
  std::vector<uint8_t> buffer;
  size_t actual = 0;
  constexpr size_t kPieceBytes = size_t{64} << 20;
  while (actual < expected) {
    const size_t piece = std::min(expected - actual, kPieceBytes);
    buffer.resize(actual + piece);
    const size_t got = readBytes(file.get(), buffer.data() + actual, piece, options, path);
    actual += got;
    if (got < piece) break;
  }
  buffer.resize(actual);
  // A payload longer than declared is as wrong as a short one: count the excess to report it.
  std::array<char, 4096> rest{};
  size_t extra = 0;
  while (actual == expected) {
    const size_t got = readBytes(file.get(), rest.data(), rest.size(), options, path);
    if (got == 0) break;
    extra += got;
  }
  if (actual != expected || extra != 0) {
    TW_THROW(DataError, options.name, ": '", path, "' is ",
             actual < expected ? "truncated" : "longer than declared", ": expected ", expected,
             " payload bytes, found ", actual + extra);
  }
  array.data = at::empty({payloadBytes}, at::TensorOptions().dtype(at::kByte));
  std::memcpy(array.data.data_ptr<uint8_t>(), buffer.data(), expected);
  return array;
}

}  // namespace

IdxDataset::IdxDataset(IdxDatasetOptions options) : options_(std::move(options)) {
  TW_CHECK(options_.numClasses >= 1 && options_.numClasses <= 256,
           "IDX numClasses must be in [1, 256], got ", options_.numClasses);
  TW_CHECK(options_.pixelStd > 0, "IDX pixelStd must be > 0, got ", options_.pixelStd);
  if (!isDirectory(options_.directory)) {
    TW_THROW(DataError, cannotOpen(options_, options_.directory,
                                   exists(options_.directory) ? ENOTDIR : ENOENT));
  }
  const std::string prefix = options_.split == Split::kTrain ? "train" : "t10k";
  IdxArray images = readIdx(options_, prefix + "-images-idx3-ubyte", kImagesMagic, 3);
  IdxArray labels = readIdx(options_, prefix + "-labels-idx1-ubyte", kLabelsMagic, 1);
  if (images.dims[0] != labels.dims[0]) {
    TW_THROW(DataError, options_.name, ": '", images.path, "' holds ", images.dims[0],
             " images but '", labels.path, "' holds ", labels.dims[0], " labels");
  }
  const uint8_t maxLabel = labels.data.max().item<uint8_t>();
  if (maxLabel >= options_.numClasses) {
    const int64_t where = labels.data.ge(options_.numClasses).nonzero()[0][0].item<int64_t>();
    TW_THROW(DataError, options_.name, ": '", labels.path, "' has label ",
             static_cast<int>(labels.data[where].item<uint8_t>()), " at index ", where,
             ", expected labels in [0, ", options_.numClasses, ")");
  }
  pixels_ = images.data.view({images.dims[0], 1, images.dims[1], images.dims[2]});
  labels_ = labels.data.to(at::kLong);
}

std::vector<int64_t> IdxDataset::sampleShape() const {
  return {1, pixels_.size(2), pixels_.size(3)};
}

Batch IdxDataset::batch(const std::vector<int64_t>& indices) const {
  const int64_t count = size();
  for (int64_t index : indices) {
    TW_CHECK(index >= 0 && index < count, options_.name, " sample index ", index,
             " is outside [0, ", count, ")");
  }
  const at::Tensor rows =
      at::tensor(at::ArrayRef<int64_t>(indices), at::TensorOptions().dtype(at::kLong));
  Batch out;
  out.inputs = pixels_.index_select(0, rows).to(at::kFloat);
  // (x / 255 - mean) / std as one multiply-add per pixel.
  const double scale = 1.0 / (255.0 * options_.pixelStd);
  const double shift = -options_.pixelMean / options_.pixelStd;
  out.inputs.mul_(scale).add_(shift);
  out.labels = labels_.index_select(0, rows);
  return out;
}

std::string IdxDataset::describe() const {
  std::ostringstream out;
  out << options_.name << (options_.split == Split::kTrain ? " train" : " test") << " (" << size()
      << ") from " << options_.directory;
  return out.str();
}

}  // namespace thinwire::core
