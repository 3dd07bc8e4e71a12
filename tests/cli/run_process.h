// File: tests/cli/run_process.h
//
// Test helpers that run the `thinwire` executable and capture its exit status and output.
//
// Example:
//   ProcessResult r = runCommand({thinwireBinary(), "train", "bad.yaml"}, 120);
//   EXPECT_EQ(r.exitCode, 2);
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace thinwire::testing {

inline std::string thinwireBinary() { return std::string(THINWIRE_BINARY_DIR) + "/bin/thinwire"; }

struct ProcessResult {
  int exitCode = -1;  // exit status, or 128 + signal
  bool timedOut = false;
  std::string output;  // stdout and stderr together
  double seconds = 0;
};

// Starts `argv` with stdout+stderr redirected to `logPath`; returns the child's pid.
inline pid_t startProcess(const std::vector<std::string>& argv, const std::string& logPath) {
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);  // own process group, so a timeout can kill the whole job
    int fd = open(logPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    std::vector<char*> raw;
    for (const auto& a : argv) raw.push_back(const_cast<char*>(a.c_str()));
    raw.push_back(nullptr);
    execvp(raw[0], raw.data());
    _exit(127);
  }
  return pid;
}

// Waits at most `timeoutSeconds` for `pid`; on expiry kills its process group.
inline ProcessResult waitProcess(pid_t pid, const std::string& logPath, double timeoutSeconds) {
  ProcessResult result;
  const auto start = std::chrono::steady_clock::now();
  int status = 0;
  while (true) {
    pid_t done = waitpid(pid, &status, WNOHANG);
    if (done == pid) break;
    result.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (result.seconds > timeoutSeconds) {
      result.timedOut = true;
      kill(-pid, SIGKILL);
      waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (WIFEXITED(status)) result.exitCode = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.exitCode = 128 + WTERMSIG(status);
  std::ifstream in(logPath);
  std::stringstream text;
  text << in.rdbuf();
  result.output = text.str();
  return result;
}

inline ProcessResult runCommand(const std::vector<std::string>& argv,
                                const std::string& logPath,
                                double timeoutSeconds) {
  return waitProcess(startProcess(argv, logPath), logPath, timeoutSeconds);
}

inline void writeFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

}  // namespace thinwire::testing
