#include "comm/world_info.h"

#include <charconv>
#include <cstdlib>
#include <optional>
#include <vector>

#include "base/error.h"
#include "base/text.h"

namespace thinwire::comm {
namespace {

std::optional<std::string> readVariable(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

int parseNonNegative(const char* name, const std::string& text) {
  int value = -1;
  const char* begin = text.data();
  const char* end = text.data() + text.size();
  auto [next, error] = std::from_chars(begin, end, value);
  TW_CHECK(!text.empty() && error == std::errc() && next == end && value >= 0, name, "='", text,
           "' is not a non-negative integer");
  return value;
}

std::optional<int> readInt(const char* name) {
  std::optional<std::string> text = readVariable(name);
  if (!text) return std::nullopt;
  return parseNonNegative(name, *text);
}

// SLURM_TASKS_PER_NODE lists tasks per node in node order, compressed as "2(x3),1" (three nodes
// with two tasks, then one with one). Returns the count for node `nodeIndex`.
std::optional<int> tasksOnNode(const std::string& text, int nodeIndex) {
  int node = 0;
  size_t position = 0;
  while (position < text.size()) {
    size_t comma = text.find(',', position);
    std::string entry =
        text.substr(position, comma == std::string::npos ? std::string::npos : comma - position);
    int repeat = 1;
    size_t paren = entry.find("(x");
    if (paren != std::string::npos) {
      TW_CHECK(entry.back() == ')', "SLURM_TASKS_PER_NODE='", text,
               "' is malformed: expected entries like 2 or 2(x3)");
      repeat = parseNonNegative("SLURM_TASKS_PER_NODE repeat",
                                entry.substr(paren + 2, entry.size() - paren - 3));
      entry = entry.substr(0, paren);
    }
    int tasks = parseNonNegative("SLURM_TASKS_PER_NODE", entry);
    if (nodeIndex < node + repeat) return tasks;
    node += repeat;
    if (comma == std::string::npos) break;
    position = comma + 1;
  }
  return std::nullopt;
}

void validate(const WorldInfo& info) {
  TW_CHECK(info.worldSize >= 1, info.launcher, " world size must be >= 1, got ", info.worldSize);
  TW_CHECK(info.rank < info.worldSize, info.launcher, " rank ", info.rank, " must be < world size ",
           info.worldSize);
  TW_CHECK(info.localSize >= 1, info.launcher, " local size must be >= 1, got ", info.localSize);
  TW_CHECK(info.localRank < info.localSize, info.launcher, " local rank ", info.localRank,
           " must be < local size ", info.localSize);
}

// "HOST:PORT" with a non-empty host and a port in 1..65535 (the last ':' splits them).
std::string checkedStoreAddress(const char* name, const std::string& address) {
  const uint16_t port =
      parseHostPort(address, std::string(name) + " (the rendezvous store, served by rank 0)")
          .second;
  TW_CHECK(port >= 1, name, "='", address, "': the port must be in 1..65535");
  return address;
}

std::string readStoreAddress() {
  if (std::optional<std::string> store = readVariable("THINWIRE_STORE")) {
    return checkedStoreAddress("THINWIRE_STORE", *store);
  }
  std::optional<std::string> host = readVariable("MASTER_ADDR");
  std::optional<std::string> port = readVariable("MASTER_PORT");
  // One of the pair alone may be left over from another tool's environment: not an address.
  if (!host || !port) return "";
  return checkedStoreAddress("MASTER_ADDR:MASTER_PORT", *host + ":" + *port);
}

}  // namespace

WorldInfo WorldInfo::fromEnvironment() {
  WorldInfo info;
  if (std::optional<int> rank = readInt("OMPI_COMM_WORLD_RANK")) {
    info.launcher = "mpirun";
    info.rank = *rank;
    info.worldSize = readInt("OMPI_COMM_WORLD_SIZE").value_or(1);
    info.localRank = readInt("OMPI_COMM_WORLD_LOCAL_RANK").value_or(0);
    info.localSize = readInt("OMPI_COMM_WORLD_LOCAL_SIZE").value_or(1);
  } else if (readVariable("OMPI_MCA_ess") == std::optional<std::string>("singleton")) {
    // Open MPI's singleton: a process that called MPI_Init without mpirun (thinwire train
    // CONFIG on its own). MPI_Init exports PMIX_RANK=0 into it, and no world size: it is alone.
    info.launcher = "none";
  } else if (std::optional<int> rank = readInt("PMIX_RANK")) {
    // PMIx exports only the rank; the size must come from the launcher that wraps it.
    info.launcher = "mpirun";
    info.rank = *rank;
    std::optional<int> worldSize = readInt("OMPI_COMM_WORLD_SIZE");
    if (!worldSize) worldSize = readInt("SLURM_NTASKS");
    TW_CHECK(worldSize.has_value(), "PMIX_RANK=", *rank,
             " is set but neither OMPI_COMM_WORLD_SIZE nor SLURM_NTASKS gives the world size");
    info.worldSize = *worldSize;
    info.localRank = 0;
    info.localSize = 1;
  } else if (std::optional<int> rank = readInt("SLURM_PROCID")) {
    info.launcher = "slurm";
    info.rank = *rank;
    info.worldSize = readInt("SLURM_NTASKS").value_or(1);
    info.localRank = readInt("SLURM_LOCALID").value_or(0);
    std::optional<int> localSize;
    if (std::optional<std::string> perNode = readVariable("SLURM_TASKS_PER_NODE")) {
      localSize = tasksOnNode(*perNode, readInt("SLURM_NODEID").value_or(0));
    }
    if (!localSize) localSize = readInt("SLURM_NTASKS_PER_NODE");
    info.localSize = localSize.value_or(info.localRank + 1);
  }
  validate(info);
  info.storeAddress = readStoreAddress();
  return info;
}

}  // namespace thinwire::comm
