// Shared pieces of tram's benchmark programs: command-line flags, timing
// (CUDA events on a GPU, a steady clock on the CPU), medians, memory
// statistics, the result table and its CSV.
#pragma once

#include <torch/torch.h>

#ifdef TRAM_WITH_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace tram::bench {

// --flag value / --flag=value / --switch. Unknown flags are an error that
// lists the known ones.
class Flags {
 public:
  Flags(int argc, char** argv, std::map<std::string, std::string> defaults, std::string usage)
      : values_(std::move(defaults)), usage_(std::move(usage)) {
    for (int i = 1; i < argc; ++i) {
      std::string arg = argv[i];
      if (arg == "--help" || arg == "-h") {
        std::cout << usage_ << "\nflags and defaults:\n";
        for (const auto& [k, v] : values_) std::cout << "  --" << k << " " << v << "\n";
        std::exit(0);
      }
      if (arg.rfind("--", 0) != 0) fail("unexpected argument '" + arg + "'");
      arg = arg.substr(2);
      std::string value = "1";
      if (const auto eq = arg.find('='); eq != std::string::npos) {
        value = arg.substr(eq + 1);
        arg = arg.substr(0, eq);
      } else if (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) {
        value = argv[++i];
      }
      if (!values_.count(arg)) fail("unknown flag --" + arg);
      values_[arg] = value;
    }
  }
  std::string str(const std::string& key) const { return values_.at(key); }
  int64_t integer(const std::string& key) const { return std::stoll(values_.at(key)); }
  double number(const std::string& key) const { return std::stod(values_.at(key)); }
  bool flag(const std::string& key) const {
    const std::string& v = values_.at(key);
    return v == "1" || v == "true" || v == "yes" || v == "on";
  }
  std::vector<std::string> list(const std::string& key) const {
    std::vector<std::string> items;
    std::stringstream in(values_.at(key));
    for (std::string item; std::getline(in, item, ',');) {
      if (!item.empty()) items.push_back(item);
    }
    return items;
  }

 private:
  [[noreturn]] void fail(const std::string& message) const {
    std::cerr << message << "\n" << usage_ << "\nflags:";
    for (const auto& [k, v] : values_) std::cerr << " --" << k;
    std::cerr << "\n";
    std::exit(2);
  }
  std::map<std::string, std::string> values_;
  std::string usage_;
};

inline torch::Device parse_device(const std::string& name) {
  if (name == "cuda") {
    if (!torch::cuda::is_available()) {
      std::cerr << "--device cuda: no CUDA device is visible; use --device cpu\n";
      std::exit(2);
    }
    return torch::Device(torch::kCUDA, 0);
  }
  if (name == "cpu") return torch::kCPU;
  std::cerr << "--device must be cuda or cpu, got '" << name << "'\n";
  std::exit(2);
}

inline torch::ScalarType parse_dtype(const std::string& name) {
  if (name == "fp32") return torch::kFloat;
  if (name == "bf16") return torch::kBFloat16;
  if (name == "fp16") return torch::kHalf;
  if (name == "fp64") return torch::kDouble;
  std::cerr << "unknown dtype '" << name << "' (fp32, bf16, fp16, fp64)\n";
  std::exit(2);
}

inline std::string dtype_name(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat: return "fp32";
    case torch::kBFloat16: return "bf16";
    case torch::kHalf: return "fp16";
    case torch::kDouble: return "fp64";
    default: return c10::toString(dtype);
  }
}

inline void synchronize(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

// Milliseconds of each of `iters` calls of `fn` after `warmup` untimed ones;
// `setup`, when given, runs untimed before every call (e.g. the forward pass
// whose backward is timed). On a GPU each call is bracketed by events on the
// current stream, so the numbers are device time; on the CPU a steady clock.
inline std::vector<double> time_calls(const torch::Device& device, int warmup, int iters,
                                      const std::function<void()>& fn,
                                      const std::function<void()>& setup = nullptr) {
  for (int i = 0; i < warmup; ++i) {
    if (setup) setup();
    fn();
  }
  synchronize(device);
  std::vector<double> ms;
  ms.reserve(iters);
#ifdef TRAM_WITH_CUDA
  if (device.is_cuda()) {
    std::vector<at::cuda::CUDAEvent> starts(iters), ends(iters);
    for (int i = 0; i < iters; ++i) {
      if (setup) setup();
      const auto stream = c10::cuda::getCurrentCUDAStream(device.index());
      starts[i] = at::cuda::CUDAEvent(cudaEventDefault);
      ends[i] = at::cuda::CUDAEvent(cudaEventDefault);
      starts[i].record(stream);
      fn();
      ends[i].record(stream);
    }
    synchronize(device);
    for (int i = 0; i < iters; ++i) ms.push_back(starts[i].elapsed_time(ends[i]));
    return ms;
  }
#endif
  for (int i = 0; i < iters; ++i) {
    if (setup) setup();
    synchronize(device);
    const auto start = std::chrono::steady_clock::now();
    fn();
    synchronize(device);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                     .count());
  }
  return ms;
}

inline double median(std::vector<double> values) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

inline double median_ms(const torch::Device& device, int warmup, int iters,
                        const std::function<void()>& fn,
                        const std::function<void()>& setup = nullptr) {
  return median(time_calls(device, warmup, iters, fn, setup));
}

// Peak bytes allocated by the caching allocator since the last reset; -1 on
// the CPU (no allocator statistics).
inline void reset_peak_memory(const torch::Device& device) {
#ifdef TRAM_WITH_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
#endif
  (void)device;
}
inline int64_t peak_memory_bytes(const torch::Device& device) {
#ifdef TRAM_WITH_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    return stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak;
  }
#endif
  (void)device;
  return -1;
}
inline void release_cached_memory(const torch::Device& device) {
#ifdef TRAM_WITH_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::emptyCache();
#endif
  (void)device;
}

// The floor every memory-bound kernel is measured against: the bandwidth of
// a large device-to-device copy, counting bytes read plus bytes written.
inline double copy_bandwidth_gbs(const torch::Device& device, int64_t bytes, int warmup, int iters) {
  const int64_t n = bytes / 4;
  const torch::Tensor src = torch::rand({n}, torch::TensorOptions().device(device));
  torch::Tensor dst = torch::empty_like(src);
  const double ms = median_ms(device, warmup, iters, [&] { dst.copy_(src); });
  return 2.0 * static_cast<double>(n) * 4.0 / (ms * 1e-3) / 1e9;
}

// A table printed aligned on stdout and written as CSV.
class Table {
 public:
  explicit Table(std::vector<std::string> columns) : columns_(std::move(columns)) {}

  void add(std::vector<std::string> row) {
    if (row.size() != columns_.size()) throw std::logic_error("table row of the wrong width");
    rows_.push_back(std::move(row));
  }

  void print(std::ostream& out) const {
    std::vector<size_t> width(columns_.size());
    for (size_t c = 0; c < columns_.size(); ++c) width[c] = columns_[c].size();
    for (const auto& row : rows_) {
      for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
    }
    auto line = [&](const std::vector<std::string>& cells) {
      for (size_t c = 0; c < cells.size(); ++c) {
        out << (c ? "  " : "") << std::setw(static_cast<int>(width[c]))
            << (c ? std::right : std::left) << cells[c];
      }
      out << "\n";
    };
    line(columns_);
    for (const auto& row : rows_) line(row);
  }

  void write_csv(const std::string& path) const {
    std::ofstream out(path);
    if (!out) throw std::runtime_error("cannot write " + path);
    // RFC 4180: a cell holding a comma or a quote is quoted ("forward (op,
    // mean)" is one cell), its quotes doubled.
    auto cell = [](const std::string& text) {
      if (text.find_first_of(",\"\n") == std::string::npos) return text;
      std::string quoted = "\"";
      for (char ch : text) quoted += ch == '"' ? std::string("\"\"") : std::string(1, ch);
      return quoted + "\"";
    };
    auto line = [&](const std::vector<std::string>& cells) {
      for (size_t c = 0; c < cells.size(); ++c) out << (c ? "," : "") << cell(cells[c]);
      out << "\n";
    };
    line(columns_);
    for (const auto& row : rows_) line(row);
  }

 private:
  std::vector<std::string> columns_;
  std::vector<std::vector<std::string>> rows_;
};

inline std::string fixed(double value, int digits) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(digits) << value;
  return out.str();
}

// "" for a value that was not measured (e.g. memory on the CPU).
inline std::string fixed_or_blank(double value, int digits, bool measured) {
  return measured ? fixed(value, digits) : "";
}

inline std::string output_path(const std::string& dir, const std::string& file) {
  std::filesystem::create_directories(dir);
  return (std::filesystem::path(dir) / file).string();
}

}  // namespace tram::bench
