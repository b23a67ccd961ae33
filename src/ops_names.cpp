// The names of tram::ops' enums, as the factory's options and the messages
// spell them.
#include <tram/ops.h>

namespace tram::ops {

const char* to_string(Divergence divergence) {
  switch (divergence) {
    case Divergence::kForward: return "forward";
    case Divergence::kReverse: return "reverse";
    case Divergence::kSymmetric: return "symmetric";
  }
  return "?";
}

const char* to_string(Reduction reduction) {
  switch (reduction) {
    case Reduction::kNone: return "none";
    case Reduction::kMean: return "mean";
    case Reduction::kSum: return "sum";
    case Reduction::kLegacy: return "legacy";
  }
  return "?";
}

const char* to_string(Scaling scaling) {
  switch (scaling) {
    case Scaling::kIdentity: return "identity";
    case Scaling::kAdaptive: return "adaptive";
    case Scaling::kFisher: return "fisher";
    case Scaling::kReleasedIdentity: return "released-identity";
    case Scaling::kReleasedAdaptive: return "released-adaptive";
  }
  return "?";
}

}  // namespace tram::ops
