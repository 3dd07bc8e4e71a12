#include "core/checkpoint.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string_view>
#include <vector>

#include "base/checksum.h"
#include "base/error.h"

namespace thinwire::core {
namespace {

namespace fs = std::filesystem;

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the checkpoint format stores raw little-endian element bytes");

constexpr std::string_view kMagic = "TWCKPT01";
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 24;  // magic, version, crc, payload size
constexpr std::string_view kStepPrefix = "step-";
constexpr std::string_view kPendingSuffix = ".tmp";

// The dtype codes of the file format (see the banner of checkpoint.h); never renumber.
struct DtypeCode {
  at::ScalarType type;
  uint8_t code;
};
constexpr DtypeCode kDtypeCodes[] = {
    {at::kFloat, 1}, {at::kDouble, 2}, {at::kHalf, 3}, {at::kBFloat16, 4},
    {at::kLong, 5},  {at::kInt, 6},    {at::kByte, 7}, {at::kBool, 8},
};

uint8_t codeOf(at::ScalarType type, const std::string& key) {
  for (const DtypeCode& entry : kDtypeCodes) {
    if (entry.type == type) return entry.code;
  }
  TW_THROW(InvalidArgument, "checkpoint entry '", key, "' has unsupported dtype ", type,
           " (supported: float32, float64, float16, bfloat16, int64, int32, uint8, bool)");
}

bool typeOf(uint8_t code, at::ScalarType* type) {
  for (const DtypeCode& entry : kDtypeCodes) {
    if (entry.code == code) {
      *type = entry.type;
      return true;
    }
  }
  return false;
}

template <typename T>
void append(std::string& out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));
  out.append(bytes, sizeof(T));
}

std::string errnoText(int error) { return std::strerror(error); }

// Reads the payload back with bounds checks; any overrun means a malformed file.
class PayloadReader {
 public:
  PayloadReader(const std::string& path, const char* data, size_t size)
      : path_(path), data_(data), size_(size) {}

  template <typename T>
  T read(const char* what) {
    T value;
    std::memcpy(&value, take(sizeof(T), what), sizeof(T));
    return value;
  }

  const char* take(size_t bytes, const char* what) {
    if (bytes > size_ - offset_) {
      TW_THROW(DataError, "checkpoint '", path_, "' is malformed: ", what, " at payload offset ",
               offset_, " needs ", bytes, " bytes, ", size_ - offset_, " left");
    }
    const char* at = data_ + offset_;
    offset_ += bytes;
    return at;
  }

  size_t remaining() const { return size_ - offset_; }

 private:
  const std::string& path_;
  const char* data_;
  size_t size_;
  size_t offset_ = 0;
};

std::string encodePayload(const StateDict& state) {
  std::string payload;
  append<uint64_t>(payload, state.size());
  for (const auto& [key, value] : state) {
    TW_CHECK(value.defined(), "checkpoint entry '", key, "' is an undefined tensor");
    const uint8_t code = codeOf(value.scalar_type(), key);
    const at::Tensor tensor = value.to(at::kCPU).contiguous();
    append<uint32_t>(payload, static_cast<uint32_t>(key.size()));
    payload.append(key);
    append<uint8_t>(payload, code);
    append<uint32_t>(payload, static_cast<uint32_t>(tensor.dim()));
    for (int64_t size : tensor.sizes()) append<int64_t>(payload, size);
    const size_t bytes = tensor.numel() * tensor.element_size();
    append<uint64_t>(payload, bytes);
    if (bytes > 0) payload.append(static_cast<const char*>(tensor.data_ptr()), bytes);
  }
  return payload;
}

void writeAll(int fd, const std::string& bytes, const std::string& path) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t written = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (written < 0) {
      if (errno == EINTR) continue;
      TW_THROW(DataError, "cannot write checkpoint '", path, "': ", errnoText(errno));
    }
    done += static_cast<size_t>(written);
  }
}

// fsync of a directory makes a rename or a new entry in it durable.
void syncDirectory(const std::string& directory) {
  const int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    TW_THROW(DataError, "cannot open directory '", directory, "' to sync it: ", errnoText(errno));
  }
  const int result = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  if (result != 0) {
    TW_THROW(DataError, "cannot sync directory '", directory, "': ", errnoText(error));
  }
}

std::string stepName(int64_t step) {
  char name[32];
  std::snprintf(name, sizeof(name), "step-%08lld", static_cast<long long>(step));
  return name;
}

// Parses "step-<digits>" (committed) or "step-<digits>.tmp" (pending); -1 for any other name.
int64_t parseStep(const std::string& name, bool pending) {
  if (name.compare(0, kStepPrefix.size(), kStepPrefix) != 0) return -1;
  std::string digits = name.substr(kStepPrefix.size());
  if (pending) {
    if (digits.size() <= kPendingSuffix.size() ||
        digits.compare(digits.size() - kPendingSuffix.size(), kPendingSuffix.size(),
                       kPendingSuffix) != 0) {
      return -1;
    }
    digits.resize(digits.size() - kPendingSuffix.size());
  }
  if (digits.empty() || digits.size() > 18) return -1;
  int64_t step = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return -1;
    step = step * 10 + (c - '0');
  }
  return step;
}

// (step, path) of the directories under `root` that parseStep accepts, sorted by step.
std::vector<std::pair<int64_t, fs::path>> listSteps(const std::string& root, bool pending) {
  std::vector<std::pair<int64_t, fs::path>> found;
  std::error_code error;
  fs::directory_iterator it(root, error);
  if (error) return found;
  for (const fs::directory_entry& entry : it) {
    std::error_code typeError;
    if (!entry.is_directory(typeError)) continue;
    const int64_t step = parseStep(entry.path().filename().string(), pending);
    if (step >= 0) found.emplace_back(step, entry.path());
  }
  std::sort(found.begin(), found.end());
  return found;
}

void removeTree(const fs::path& path) {
  std::error_code error;
  fs::remove_all(path, error);
  if (error) {
    TW_THROW(DataError, "cannot remove '", path.string(), "': ", error.message());
  }
}

}  // namespace

void writeStateFile(const std::string& path, const StateDict& state) {
  const std::string payload = encodePayload(state);
  std::string header;
  header.append(kMagic);
  append<uint32_t>(header, kVersion);
  append<uint32_t>(header, crc32(payload.data(), payload.size()));
  append<uint64_t>(header, payload.size());
  TW_ASSERT(header.size() == kHeaderBytes, "header is ", header.size(), " bytes");

  const std::string tmpPath = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmpPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    TW_THROW(DataError, "cannot create checkpoint '", tmpPath, "': ", errnoText(errno));
  }
  try {
    writeAll(fd, header, tmpPath);
    writeAll(fd, payload, tmpPath);
    if (::fsync(fd) != 0) {
      TW_THROW(DataError, "cannot sync checkpoint '", tmpPath, "': ", errnoText(errno));
    }
    if (::close(fd) != 0) {
      TW_THROW(DataError, "cannot close checkpoint '", tmpPath, "': ", errnoText(errno));
    }
  } catch (...) {
    ::close(fd);
    ::unlink(tmpPath.c_str());
    throw;
  }
  if (::rename(tmpPath.c_str(), path.c_str()) != 0) {
    const int error = errno;
    ::unlink(tmpPath.c_str());
    TW_THROW(DataError, "cannot rename '", tmpPath, "' to '", path, "': ", errnoText(error));
  }
  const fs::path parent = fs::path(path).parent_path();
  syncDirectory(parent.empty() ? "." : parent.string());
}

StateDict readStateFile(const std::string& path) {
  std::error_code statusError;
  const fs::file_status status = fs::status(path, statusError);
  if (!fs::exists(status)) {
    TW_THROW(DataError, "cannot open checkpoint '", path, "': No such file or directory");
  }
  if (!fs::is_regular_file(status)) {
    TW_THROW(DataError, "cannot open checkpoint '", path, "': not a regular file");
  }
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) {
    TW_THROW(DataError, "cannot open checkpoint '", path, "': ", errnoText(errno));
  }
  std::string file(static_cast<size_t>(in.tellg()), '\0');
  in.seekg(0);
  if (!in.read(file.data(), static_cast<std::streamsize>(file.size()))) {
    TW_THROW(DataError, "cannot read checkpoint '", path, "': ", errnoText(errno));
  }

  const size_t magicBytes = std::min(file.size(), kMagic.size());
  if (file.compare(0, magicBytes, kMagic.substr(0, magicBytes)) != 0 || file.empty()) {
    TW_THROW(DataError, "'", path, "' is not a thinwire checkpoint (bad magic)");
  }
  if (file.size() < kHeaderBytes) {
    TW_THROW(DataError, "checkpoint '", path, "' is truncated: expected at least ", kHeaderBytes,
             " bytes, found ", file.size());
  }
  uint32_t version = 0;
  uint32_t storedCrc = 0;
  uint64_t payloadBytes = 0;
  std::memcpy(&version, file.data() + 8, 4);
  std::memcpy(&storedCrc, file.data() + 12, 4);
  std::memcpy(&payloadBytes, file.data() + 16, 8);
  if (version != kVersion) {
    TW_THROW(DataError, "checkpoint '", path, "' has unsupported version ", version,
             " (this build reads version ", kVersion, ")");
  }
  const size_t actual = file.size() - kHeaderBytes;
  if (payloadBytes > actual) {
    TW_THROW(DataError, "checkpoint '", path, "' is truncated: expected ",
             kHeaderBytes + payloadBytes, " bytes, found ", file.size());
  }
  if (payloadBytes < actual) {
    TW_THROW(DataError, "checkpoint '", path, "' has trailing data: expected ",
             kHeaderBytes + payloadBytes, " bytes, found ", file.size());
  }
  const char* payload = file.data() + kHeaderBytes;
  if (crc32(payload, actual) != storedCrc) {
    TW_THROW(DataError, "checkpoint '", path, "': checksum mismatch: file is corrupt");
  }

  PayloadReader reader(path, payload, actual);
  StateDict state;
  const uint64_t count = reader.read<uint64_t>("entry count");
  for (uint64_t i = 0; i < count; ++i) {
    const uint32_t keyBytes = reader.read<uint32_t>("key length");
    std::string key(reader.take(keyBytes, "key"), keyBytes);
    at::ScalarType type = at::kFloat;
    const uint8_t code = reader.read<uint8_t>("dtype");
    if (!typeOf(code, &type)) {
      TW_THROW(DataError, "checkpoint '", path, "' entry '", key, "' has unknown dtype code ",
               static_cast<int>(code));
    }
    const uint32_t dims = reader.read<uint32_t>("ndim");
    if (dims > 64) {
      TW_THROW(DataError, "checkpoint '", path, "' entry '", key, "' claims ", dims, " dimensions");
    }
    std::vector<int64_t> sizes;
    uint64_t numel = 1;
    for (uint32_t d = 0; d < dims; ++d) {
      const int64_t size = reader.read<int64_t>("dim");
      if (size < 0 || (size > 0 && numel > reader.remaining() / static_cast<uint64_t>(size))) {
        TW_THROW(DataError, "checkpoint '", path, "' entry '", key, "' has impossible dim ", size);
      }
      numel *= static_cast<uint64_t>(size);
      sizes.push_back(size);
    }
    const uint64_t bytes = reader.read<uint64_t>("byte count");
    at::Tensor tensor = at::empty(sizes, at::TensorOptions().dtype(type));
    if (bytes != numel * tensor.element_size()) {
      TW_THROW(DataError, "checkpoint '", path, "' entry '", key, "' has ", bytes, " bytes for ",
               numel, " elements of ", type);
    }
    const char* data = reader.take(bytes, "tensor data");
    if (bytes > 0) std::memcpy(tensor.data_ptr(), data, bytes);
    if (!state.emplace(std::move(key), std::move(tensor)).second) {
      TW_THROW(DataError, "checkpoint '", path, "' repeats an entry key");
    }
  }
  if (reader.remaining() != 0) {
    TW_THROW(DataError, "checkpoint '", path, "' is malformed: ", reader.remaining(),
             " bytes after the last entry");
  }
  return state;
}

std::string pendingCheckpointDir(const std::string& root, int64_t step) {
  TW_CHECK(step >= 0, "checkpoint step must be >= 0, got ", step);
  const fs::path dir = fs::path(root) / (stepName(step) + std::string(kPendingSuffix));
  std::error_code error;
  fs::create_directories(dir, error);
  // Another rank may have created it between our check and our mkdir; that is success.
  if (error && !fs::is_directory(dir)) {
    TW_THROW(DataError, "cannot create checkpoint directory '", dir.string(),
             "': ", error.message());
  }
  return dir.string();
}

std::string commitCheckpoint(const std::string& root, int64_t step, int64_t keep) {
  TW_CHECK(step >= 0, "checkpoint step must be >= 0, got ", step);
  TW_CHECK(keep >= 1, "checkpoints to keep must be >= 1, got ", keep);
  const fs::path pending = fs::path(root) / (stepName(step) + std::string(kPendingSuffix));
  const fs::path committed = fs::path(root) / stepName(step);
  if (!fs::is_directory(pending)) {
    TW_THROW(DataError, "cannot commit checkpoint: '", pending.string(), "' does not exist");
  }
  // rename() cannot replace a non-empty directory; an older checkpoint of the same step (a rerun
  // after resuming from an earlier one) goes first. The previous steps stay intact meanwhile.
  if (fs::exists(committed)) removeTree(committed);
  std::error_code error;
  fs::rename(pending, committed, error);
  if (error) {
    TW_THROW(DataError, "cannot rename '", pending.string(), "' to '", committed.string(),
             "': ", error.message());
  }
  syncDirectory(root);

  const auto steps = listSteps(root, /*pending=*/false);
  const size_t excess = steps.size() > static_cast<size_t>(keep) ? steps.size() - keep : 0;
  for (size_t i = 0; i < excess; ++i) removeTree(steps[i].second);
  for (const auto& [pendingStep, path] : listSteps(root, /*pending=*/true)) {
    if (pendingStep < step) removeTree(path);
  }
  return committed.string();
}

std::optional<std::string> latestCheckpoint(const std::string& root) {
  const auto steps = listSteps(root, /*pending=*/false);
  if (steps.empty()) return std::nullopt;
  return steps.back().second.string();
}

std::string sharedStateFile(const std::string& dir) { return dir + "/shared.twc"; }

std::string rankStateFile(const std::string& dir, int rank) {
  char name[32];
  std::snprintf(name, sizeof(name), "rank-%04d.twc", rank);
  return dir + "/" + name;
}

}  // namespace thinwire::core
