// Replays fuzz inputs through a target's LLVMFuzzerTestOneInput without
// libFuzzer, so the seed corpus and every regression input also run in the
// normal (g++) build and under its sanitizers.
//
// Usage: shmbus_fuzz_replay_<target> PATH...   (files, or directories of files)
// Exits 0 after running every input; a crash is the test failing, and so is
// an input that runs longer than kInputLimitS (a hang: libFuzzer's -timeout).
// Exits 2 if no input was found (a missing corpus is a broken test, not a
// pass).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <csignal>
#include <unistd.h>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

constexpr unsigned kInputLimitS = 10;

void on_alarm(int) {
  static const char msg[] = "replay: the input above ran longer than the limit: a hang\n";
  (void)!::write(2, msg, sizeof msg - 1);
  ::_exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  std::vector<fs::path> inputs;
  for (int i = 1; i < argc; ++i) {
    const fs::path p(argv[i]);
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      for (const auto& e : fs::directory_iterator(p)) {
        if (e.is_regular_file() && e.path().filename().string()[0] != '.') inputs.push_back(e.path());
      }
    } else if (fs::is_regular_file(p, ec)) {
      inputs.push_back(p);
    } else {
      std::fprintf(stderr, "replay: %s is neither a file nor a directory\n", argv[i]);
      return 2;
    }
  }
  std::sort(inputs.begin(), inputs.end());
  if (inputs.empty()) {
    std::fprintf(stderr, "replay: no inputs\n");
    return 2;
  }
  std::signal(SIGALRM, on_alarm);
  for (const fs::path& p : inputs) {
    std::ifstream f(p, std::ios::binary);
    const std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    std::fprintf(stderr, "replay: %s (%zu bytes)\n", p.c_str(), bytes.size());
    ::alarm(kInputLimitS);
    (void)LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
    ::alarm(0);
  }
  std::printf("replay: %zu inputs ran\n", inputs.size());
  return 0;
}
