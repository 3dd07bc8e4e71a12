#include "base/error.h"

#include <cstring>

namespace thinwire {
namespace {
thread_local int tErrorRank = -1;
}  // namespace

void setErrorRank(int rank) { tErrorRank = rank; }
int errorRank() { return tErrorRank; }

namespace detail {

std::string withLocation(const std::string& message, const char* file, int line) {
  const char* base = std::strrchr(file, '/');
  // Keep "module/file.cc" rather than an absolute build path.
  const char* shown = file;
  if (base != nullptr) {
    const char* previous = base;
    while (previous > file && *(previous - 1) != '/') --previous;
    shown = previous;
  }
  std::ostringstream out;
  out << message << " [at " << shown << ":" << line;
  if (tErrorRank >= 0) out << ", rank " << tErrorRank;
  out << "]";
  return out.str();
}

}  // namespace detail
}  // namespace thinwire
