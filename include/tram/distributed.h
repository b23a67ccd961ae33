// Data-parallel training through LibTorch's own c10d (no home-made transport).
//
//   auto group = tram::make_process_group("file:///tmp/rendezvous", rank, world_size);
//   optimizer->set_process_group(group);           // broadcasts rank 0's parameters
//   optimizer->step(closure_over_this_ranks_shard);
//
// Every rank then takes exactly the step one process would take on the whole
// batch (equal shards): both passes' gradients and the trust-region distance
// are averaged over ranks. On GPUs, use make_nccl_process_group (one GPU per
// rank, CUDA parameters) and pass it to set_process_group the same way.
#pragma once

#include <c10/util/intrusive_ptr.h>

#include <chrono>
#include <string>

namespace c10d {
class Backend;
}

namespace tram {

// A Gloo backend (CPU tensors) for `world_size` ranks. `rendezvous` is
// "file://<path>" (a FileStore shared by all ranks; remove the file between
// runs), "tcp://<host>:<port>" (a TCPStore that rank 0 serves), or "env://"
// (the launcher's: MASTER_ADDR and MASTER_PORT, a store torchrun's agent
// serves when TORCHELASTIC_USE_AGENT_STORE is set, else rank 0). Collectives
// that do not complete within `timeout` (e.g. a rank died) throw.
c10::intrusive_ptr<c10d::Backend> make_process_group(const std::string& rendezvous, int rank, int world_size,
                                                     std::chrono::milliseconds timeout = std::chrono::minutes(5));

// An NCCL backend (CUDA tensors) for `world_size` ranks, same rendezvous
// strings as make_process_group. Rank r uses CUDA device r % device_count();
// the caller's parameters must live on that device. Throws if tram was built
// without NCCL (has_nccl() is false: rebuild against a CUDA LibTorch with
// NCCL, with TRAM_WITH_NCCL=ON) or if no CUDA device is available.
c10::intrusive_ptr<c10d::Backend> make_nccl_process_group(const std::string& rendezvous, int rank, int world_size,
                                                          std::chrono::milliseconds timeout = std::chrono::minutes(5));

// Whether make_nccl_process_group was compiled in.
bool has_nccl();

}  // namespace tram
