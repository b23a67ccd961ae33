// Checkpoints of a tram optimizer: its own state (counters, group options,
// parameter sets, loss scaler), then the base optimizer's in a sub-archive.
#include <tram/checkpoint.h>
#include <tram/checksum.h>
#include <tram/optimizer.h>

#include "engine/archive.h"
#include "engine/rule_state.h"
#include "engine/managed.h"
#include "engine/parameter_sets.h"

#include <torch/serialize/archive.h>

#include <array>
#include <cstring>
#include <optional>
#include <string>

namespace tram {

using torch::Tensor;
using detail::read_double;
using detail::read_entry;
using detail::read_int;
using detail::read_string;

// ---------------------------------------------------------------------------
// Serialization: the wrapper's own state, then the base's in a sub-archive.
// ---------------------------------------------------------------------------

namespace {
// Version 1: the state below directly in the archive. Version 2 (written
// now): the version-1 state serialized into a byte payload, stored with its
// length and FNV-1a checksum (tram::fnv1a_64) next to the method's name, so that a damaged
// archive (a flipped bit in a tensor, which LibTorch's reader does not
// detect) is rejected instead of silently loaded. Both are read.
constexpr int64_t kArchiveVersion = 2;

}  // namespace

void SharpnessAware::save(torch::serialize::OutputArchive& archive) const {
  TORCH_CHECK(!perturbed(), method_.name(), ": save() while the parameters are perturbed (between first_step() and "
              "second_step()); save after second_step()");
  // The version-1 layout, into the payload.
  torch::serialize::OutputArchive state;
  state.write("tram/method", c10::IValue(method_.name()));
  state.write("tram/step_count", c10::IValue(step_count_));
  state.write("tram/skipped_ascents", c10::IValue(skipped_ascents_));
  state.write("tram/skipped_steps", c10::IValue(skipped_steps_));
  if (scaler_) {
    torch::serialize::OutputArchive scaler(state.compilation_unit());
    scaler_->save(scaler);
    state.write("tram/scaler", scaler);
  }
  state.write("tram/groups", c10::IValue(static_cast<int64_t>(param_groups_.size())));
  for (size_t i = 0; i < param_groups_.size(); ++i) {
    torch::serialize::OutputArchive group(state.compilation_unit());
    param_groups_[i].options().serialize(group);
    state.write("tram/group/" + std::to_string(i), group);
  }
  sets_->save(state);
  rules_->save(state);
  torch::serialize::OutputArchive base(state.compilation_unit());
  base_->save(base);
  state.write("base", base);

  std::string bytes;
  state.save_to([&bytes](const void* data, size_t size) {
    bytes.append(static_cast<const char*>(data), size);
    return size;
  });
  Tensor payload = torch::empty({static_cast<int64_t>(bytes.size())}, torch::kUInt8);
  std::memcpy(payload.data_ptr<uint8_t>(), bytes.data(), bytes.size());
  const uint64_t checksum = fnv1a_64(payload.data_ptr<uint8_t>(), bytes.size());
  archive.write("tram/version", c10::IValue(kArchiveVersion));
  archive.write("tram/method", c10::IValue(method_.name()));
  archive.write("tram/payload", payload, true);
  archive.write("tram/payload_size", c10::IValue(static_cast<int64_t>(bytes.size())));
  archive.write("tram/payload_fnv1a", c10::IValue(static_cast<int64_t>(checksum)));
}

void SharpnessAware::load(torch::serialize::InputArchive& archive) {
  const auto& n = method_.name();
  restore();
  sync_groups();
  // Everything is read and checked before anything changes: a rejected
  // checkpoint leaves the optimizer as it was (the base optimizer's own
  // load() comes last, and LibTorch's also reads everything first).
  try {
    const int64_t version = read_int(archive, "tram/version");
    TORCH_CHECK(version == 1 || version == kArchiveVersion, "unsupported tram checkpoint version ", version,
                " (this build reads versions 1 and ", kArchiveVersion, ")");
    const std::string method = read_string(archive, "tram/method");
    TORCH_CHECK(method == n, "the checkpoint was written by a ", method, " optimizer; load it into a ", method,
                " optimizer");
    torch::serialize::InputArchive payload_archive;
    torch::serialize::InputArchive* state = &archive;
    if (version >= 2) {
      Tensor payload;
      read_entry(archive, "tram/payload", payload);
      const int64_t size = read_int(archive, "tram/payload_size");
      const auto expected = static_cast<uint64_t>(read_int(archive, "tram/payload_fnv1a"));
      TORCH_CHECK(payload.scalar_type() == torch::kUInt8 && payload.dim() == 1 && payload.numel() == size,
                  "the state payload has ", payload.numel(), " bytes of ", payload.scalar_type(), ", expected ", size,
                  " bytes of Byte (truncated or damaged archive)");
      payload = payload.cpu().contiguous();
      const uint64_t actual = fnv1a_64(payload.data_ptr<uint8_t>(), static_cast<size_t>(size));
      TORCH_CHECK(actual == expected, "checksum mismatch in the state payload (FNV-1a ", actual, ", saved ", expected,
                  "): the archive is damaged");
      // Onto the parameters' device, as the outer archive's tensors would be.
      std::optional<torch::Device> device;
      const auto params = managed_parameters(false).params;
      if (!params.empty()) device = params[0].device();
      // The checksum proves the payload is the one written, not that it was
      // written by tram: check it before LibTorch's reader trusts it.
      check_archive(payload.data_ptr<uint8_t>(), static_cast<size_t>(size), "the state payload");
      payload_archive.load_from(reinterpret_cast<const char*>(payload.data_ptr<uint8_t>()),
                                static_cast<size_t>(size), device);
      state = &payload_archive;
      TORCH_CHECK(read_string(*state, "tram/method") == n, "the state payload names another method");
    }
    const int64_t groups = read_int(*state, "tram/groups");
    TORCH_CHECK(groups >= 0 && static_cast<size_t>(groups) == param_groups_.size(), "the checkpoint has ", groups,
                " parameter groups, this optimizer ", param_groups_.size());
    std::vector<GroupOptions> options;
    for (size_t i = 0; i < param_groups_.size(); ++i) {
      torch::serialize::InputArchive group;
      read_entry(*state, "tram/group/" + std::to_string(i), group);
      GroupOptions read;
      read.rho(read_double(group, "rho")).eta(read_double(group, "eta")).fisher_eta(read_double(group, "fisher_eta"));
      // Checkpoints written before SAM-ON have no "perturb": every group was perturbed.
      c10::IValue perturb;
      if (group.try_read("perturb", perturb)) {
        TORCH_CHECK(perturb.isBool(), "entry 'perturb' of group ", i, " is a ", perturb.tagKind(),
                    ", expected a boolean (damaged archive?)");
        read.perturb(perturb.toBool());
      }
      options.push_back(read);
    }
    const auto sets = sets_->read(*state);
    auto rule_state = rules_->read(*state, managed_parameters(false).params);
    const int64_t step_count = read_int(*state, "tram/step_count");
    const int64_t skipped_ascents = read_int(*state, "tram/skipped_ascents");
    const int64_t skipped_steps = read_int(*state, "tram/skipped_steps");
    torch::serialize::InputArchive scaler;
    const bool has_scaler = state->try_read("tram/scaler", scaler);
    TORCH_CHECK(has_scaler == (scaler_ != nullptr), "the checkpoint ", has_scaler ? "has" : "has no",
                " loss-scaler state but this optimizer ", scaler_ ? "has" : "has no",
                " GradScaler attached; attach one (set_grad_scaler) before load() exactly when the run used one");
    torch::serialize::InputArchive base;
    read_entry(*state, "base", base);

    base_->load(base);
    if (scaler_) scaler_->load(scaler);
    for (size_t i = 0; i < param_groups_.size(); ++i) {
      group_options(i).rho(options[i].rho()).eta(options[i].eta()).fisher_eta(options[i].fisher_eta())
          .perturb(options[i].perturb());
    }
    sets_->commit(sets);
    rules_->commit(std::move(rule_state));
    step_count_ = step_count;
    skipped_ascents_ = skipped_ascents;
    skipped_steps_ = skipped_steps;
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "tram ", n, ": cannot load optimizer state: ", e.msg());
  }
}

}  // namespace tram
