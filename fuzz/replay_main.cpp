// The normal build's driver of the fuzz harnesses: runs
// LLVMFuzzerTestOneInput once on every file named on the command line or
// found (not recursively) in a directory named there, the committed corpus
// of a harness (fuzz/corpus/<harness>/). A finding crashes or aborts, which
// fails the ctest; an empty corpus fails it too, so that a test that checks
// nothing does not pass.
#include "fuzz_util.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <vector>

int main(int argc, char** argv) {
  std::vector<std::filesystem::path> inputs;
  for (int i = 1; i < argc; ++i) {
    const std::filesystem::path argument = argv[i];
    if (std::filesystem::is_directory(argument)) {
      for (const auto& entry : std::filesystem::directory_iterator(argument)) {
        if (entry.is_regular_file()) inputs.push_back(entry.path());
      }
    } else if (std::filesystem::is_regular_file(argument)) {
      inputs.push_back(argument);
    } else {
      std::cerr << argv[0] << ": " << argument << " is neither a file nor a directory\n";
      return 2;
    }
  }
  if (inputs.empty()) {
    std::cerr << "usage: " << argv[0] << " CORPUS_DIR_OR_FILE...: no inputs found\n";
    return 2;
  }
  std::sort(inputs.begin(), inputs.end());  // a stable order to reproduce a failure in
  for (const auto& input : inputs) {
    std::ifstream in(input, std::ios::binary);
    const std::vector<char> bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    if (!in.good() && !in.eof()) {
      std::cerr << argv[0] << ": cannot read " << input << "\n";
      return 2;
    }
    std::cerr << "replaying " << input.filename().string() << " (" << bytes.size() << " bytes)\n";
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  }
  std::cout << "replayed " << inputs.size() << " inputs, no finding\n";
  return 0;
}
