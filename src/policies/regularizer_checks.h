// The checks the regularizers share: lambda is a weight (>= 0, finite).
#pragma once

#include <c10/util/Exception.h>

#include <cmath>
#include <string>

namespace tram::policy {

inline void check_weight(const std::string& method, double lambda) {
  TORCH_CHECK(lambda >= 0 && std::isfinite(lambda), method, ": invalid lambda: ", lambda,
              " (the regularizer weight must be >= 0)");
}

}  // namespace tram::policy
