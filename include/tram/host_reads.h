// Reads of tensor values to the host by tram's engine, counted.
//
// Each read of a value from a GPU tensor to the host waits for the device to
// finish the work queued before it (a synchronisation), which stalls the
// stream that should be running the next kernels. tram's step reads one
// value per step, the ascent's gradient norm (its coefficient r / ||T g|| is
// a kernel argument), plus the trust-region distance d for the TRAM
// variants and the inf/NaN flag with a GradScaler; everything else a step
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
