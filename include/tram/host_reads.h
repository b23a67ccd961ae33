// Reads of tensor values to the host by tram's engine, counted.
//
// Each read of a value from a GPU tensor to the host waits for the device to
// finish the work queued before it (a synchronisation), which stalls the
// stream that should be running the next kernels. An ascending step of tram
// reads once: the values its ascent needs on the host (the gradient norm,
// whose coefficient r / ||T g|| is a kernel argument, the trust-region
// distance d of the TRAM variants, a GradScaler's inf/NaN flag), together.
// A GradScaler's descent reads its flag once more; everything else a step
// reports stays on the device until it is read (tram::ReportValue).
// docs/ALGORITHMS.md §15 lists the reads of every method.
//
//   const auto before = tram::host_reads();
//   optimizer->step(closure);
//   const auto reads = tram::host_reads() - before;  // this step's reads
//
// Counted on every device, so that a test on the CPU counts what would be a
// synchronisation on a GPU; reads made by the user's closure are not counted.
#pragma once

#include <cstdint>

namespace tram {

// Reads to the host tram has made in this process so far (all threads).
uint64_t host_reads();

}  // namespace tram
