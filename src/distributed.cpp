// Gloo needs its own headers (Debian's libgloo-dev); the backend itself is
// compiled into LibTorch, which is why only this file sees them.
#define USE_C10D_GLOO 1
#include <tram/distributed.h>

#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

namespace tram {

namespace {
c10::intrusive_ptr<c10d::Store> make_store(const std::string& rendezvous, int rank, int world_size,
                                           std::chrono::milliseconds timeout) {
  const std::string file = "file://", tcp = "tcp://";
  if (rendezvous.rfind(file, 0) == 0) {
    return c10::make_intrusive<c10d::FileStore>(rendezvous.substr(file.size()), world_size);
  }
  if (rendezvous.rfind(tcp, 0) == 0) {
    const std::string address = rendezvous.substr(tcp.size());
    const auto colon = address.rfind(':');
    TORCH_CHECK(colon != std::string::npos && colon > 0, "tram::make_process_group: rendezvous '", rendezvous,
                "' needs a port: tcp://<host>:<port>");
    c10d::TCPStoreOptions options;
    options.port = static_cast<uint16_t>(std::stoi(address.substr(colon + 1)));
    options.isServer = rank == 0;
    options.numWorkers = world_size;
    options.timeout = timeout;
    return c10::make_intrusive<c10d::TCPStore>(address.substr(0, colon), options);
  }
  TORCH_CHECK(false, "tram::make_process_group: unknown rendezvous '", rendezvous,
              "'; use file://<path> or tcp://<host>:<port>");
}
}  // namespace

c10::intrusive_ptr<c10d::Backend> make_process_group(const std::string& rendezvous, int rank, int world_size,
                                                     std::chrono::milliseconds timeout) {
  TORCH_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, "tram::make_process_group: invalid rank ", rank,
              " for world size ", world_size, " (need 0 <= rank < world_size)");
  auto store = make_store(rendezvous, rank, world_size, timeout);
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  // Loopback for a single host; multi-host runs use the host's name.
  const bool loopback = rendezvous.rfind("file://", 0) == 0 || rendezvous.find("127.0.0.1") != std::string::npos ||
                        rendezvous.find("localhost") != std::string::npos;
  options->devices.push_back(loopback ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                      : c10d::ProcessGroupGloo::createDefaultDevice());
  return c10::make_intrusive<c10d::ProcessGroupGloo>(c10::make_intrusive<c10d::PrefixStore>("tram", store), rank,
                                                     world_size, options);
}

}  // namespace tram
