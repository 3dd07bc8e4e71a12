// File: tests/testing/temp_dir.h
//
// A fresh directory under the system temp directory for one test, removed (with everything in
// it) when the object goes out of scope.
//
// Example:
//   TempDir dir("thinwire-ckpt");
//   writeStateFile(dir.file("a.twc"), state);
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <stdexcept>
#include <string>

namespace thinwire::testing {

class TempDir {
 public:
  // Creates "<tmp>/<prefix>-" plus six random characters (mkdtemp); throws std::runtime_error if
  // that fails.
  explicit TempDir(const std::string& prefix = "thinwire-test") {
    // mkdtemp replaces the template's trailing six 'X' characters.
    std::string pattern =
        (std::filesystem::temp_directory_path() / (prefix + "-" + std::string(6, 'X'))).string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      throw std::runtime_error("cannot create a temporary directory from " + pattern);
    }
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // "<path>/<name>".
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace thinwire::testing
