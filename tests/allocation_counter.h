// Counts the calling thread's heap allocations through operator new, for
// tests that assert a code path allocates nothing (the replacement of the
// global operator new is in tests/allocation_counter.cpp, part of the test
// executable only). LibTorch's tensors count too: every TensorImpl and
// StorageImpl is created with operator new.
#pragma once

#include <cstdint>

namespace tram::testing {

// operator new calls made by this thread so far.
int64_t allocations_on_this_thread();

}  // namespace tram::testing
