// tram: sharpness-aware and trust-region-aware optimizers for LibTorch.
// The one include users need.
#pragma once

#include <tram/checkpoint.h>
#include <tram/checksum.h>
#include <tram/closure.h>
#include <tram/distributed.h>
#include <tram/eval_mode.h>
#include <tram/factory.h>
#include <tram/grad_scaler.h>
#include <tram/host_reads.h>
#include <tram/method.h>
#include <tram/methods.h>
#include <tram/ops.h>
#include <tram/optimizer.h>
#include <tram/options.h>
#include <tram/parameter_groups.h>
#include <tram/policies.h>
#include <tram/policy.h>
#include <tram/schedules.h>
