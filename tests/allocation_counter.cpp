// The test executable's operator new and delete: malloc and free, plus a
// per-thread count of allocations (allocation_counter.h). The array, nothrow
// and sized forms of the standard library forward to these two.
#include "allocation_counter.h"

#include <cstdlib>
#include <new>

namespace {
thread_local int64_t allocations = 0;
}

int64_t tram::testing::allocations_on_this_thread() { return allocations; }

void* operator new(std::size_t size) {
  ++allocations;
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}

void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
