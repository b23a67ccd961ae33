// Gloo needs its own headers (Debian's libgloo-dev); the backend itself is
// compiled into LibTorch, which is why only this file sees them.
#define USE_C10D_GLOO 1
#include <tram/distributed.h>

#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

// TRAM_HAVE_NCCL is defined for this file only (cmake/TramNccl.cmake) when the
// LibTorch that was found has c10d NCCL (USE_C10D_NCCL) and nccl.h was found.
#ifdef TRAM_HAVE_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <cstdlib>
#include <optional>

namespace tram {

namespace {
// env:// is the launcher's rendezvous (torchrun, torch.distributed.launch):
// MASTER_ADDR and MASTER_PORT name the store. When the launcher's agent hosts
// that store itself (TORCHELASTIC_USE_AGENT_STORE, torchrun's default), every
// rank connects as a client; otherwise rank 0 serves it.
std::string required_environment(const char* who, const char* name) {
  const char* value = std::getenv(name);
  TORCH_CHECK(value != nullptr && *value != '\0', who, ": rendezvous 'env://' needs the environment variable ", name,
              " (set by torchrun; or give tcp://<host>:<port>)");
  return value;
}

bool agent_hosts_store() {
  const char* value = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
  if (value == nullptr) return false;
  const std::string text = value;
  return text == "True" || text == "true" || text == "1";
}

c10::intrusive_ptr<c10d::Store> make_store(const char* who, const std::string& rendezvous, int rank,
                                           int world_size, std::chrono::milliseconds timeout) {
  const std::string file = "file://", tcp = "tcp://";
  if (rendezvous == "env://") {
    const std::string port = required_environment(who, "MASTER_PORT");
    c10d::TCPStoreOptions options;
    try {
      options.port = static_cast<uint16_t>(std::stoi(port));
    } catch (const std::exception&) {
      TORCH_CHECK(false, who, ": MASTER_PORT is '", port, "', not a port number");
    }
    options.isServer = rank == 0 && !agent_hosts_store();
    options.numWorkers = agent_hosts_store() ? std::nullopt : std::optional<std::size_t>(world_size);
    options.timeout = timeout;
    return c10::make_intrusive<c10d::TCPStore>(required_environment(who, "MASTER_ADDR"), options);
  }
  if (rendezvous.rfind(file, 0) == 0) {
    return c10::make_intrusive<c10d::FileStore>(rendezvous.substr(file.size()), world_size);
  }
  if (rendezvous.rfind(tcp, 0) == 0) {
    const std::string address = rendezvous.substr(tcp.size());
    const auto colon = address.rfind(':');
    TORCH_CHECK(colon != std::string::npos && colon > 0, who, ": rendezvous '", rendezvous,
                "' needs a port: tcp://<host>:<port>");
    c10d::TCPStoreOptions options;
    options.port = static_cast<uint16_t>(std::stoi(address.substr(colon + 1)));
    options.isServer = rank == 0;
    options.numWorkers = world_size;
    options.timeout = timeout;
    return c10::make_intrusive<c10d::TCPStore>(address.substr(0, colon), options);
  }
  TORCH_CHECK(false, who, ": unknown rendezvous '", rendezvous,
              "'; use file://<path> or tcp://<host>:<port>");
}

void check_rank(const char* who, int rank, int world_size) {
  TORCH_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, who, ": invalid rank ", rank, " for world size ",
              world_size, " (need 0 <= rank < world_size)");
}
}  // namespace

c10::intrusive_ptr<c10d::Backend> make_process_group(const std::string& rendezvous, int rank, int world_size,
                                                     std::chrono::milliseconds timeout) {
  const char* who = "tram::make_process_group";
  check_rank(who, rank, world_size);
  auto store = make_store(who, rendezvous, rank, world_size, timeout);
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  // Loopback for a single host; multi-host runs use the host's name.
  std::string where = rendezvous;
  if (rendezvous == "env://" && std::getenv("MASTER_ADDR") != nullptr) where = std::getenv("MASTER_ADDR");
  const bool loopback = rendezvous.rfind("file://", 0) == 0 || where.find("127.0.0.1") != std::string::npos ||
                        where.find("localhost") != std::string::npos;
  options->devices.push_back(loopback ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                      : c10d::ProcessGroupGloo::createDefaultDevice());
  return c10::make_intrusive<c10d::ProcessGroupGloo>(c10::make_intrusive<c10d::PrefixStore>("tram", store), rank,
                                                     world_size, options);
}

bool has_nccl() {
#ifdef TRAM_HAVE_NCCL
  return true;
#else
  return false;
#endif
}

c10::intrusive_ptr<c10d::Backend> make_nccl_process_group(const std::string& rendezvous, int rank, int world_size,
                                                          std::chrono::milliseconds timeout) {
  const char* who = "tram::make_nccl_process_group";
#ifndef TRAM_HAVE_NCCL
  (void)rendezvous;
  (void)rank;
  (void)world_size;
  (void)timeout;
  TORCH_CHECK(false, who, ": tram was built without NCCL support (TRAM_WITH_NCCL=OFF). Rebuild tram against a "
              "CUDA LibTorch that has c10d NCCL (USE_C10D_NCCL, as the CUDA wheels do), with nccl.h findable "
              "(NCCL_INCLUDE_DIR or NCCL_ROOT) and -DTRAM_WITH_NCCL=ON; on CPUs use tram::make_process_group (Gloo)");
#else
  check_rank(who, rank, world_size);
  // Checked before the rendezvous, so that a rank without a GPU fails at once
  // instead of waiting for the others in the store.
  const int devices = static_cast<int>(c10::cuda::device_count());
  TORCH_CHECK(devices > 0, who, ": NCCL needs a CUDA GPU but no CUDA device is available to rank ", rank,
              " (torch sees 0 devices); on CPUs use tram::make_process_group (Gloo)");
  const int device = rank % devices;
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
  auto store = make_store(who, rendezvous, rank, world_size, timeout);
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  // Communicators are created lazily, on the device of the first collective's
  // tensors (this rank's device, set above).
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(c10::make_intrusive<c10d::PrefixStore>("tram", store), rank,
                                                     world_size, options);
#endif
}

}  // namespace tram
