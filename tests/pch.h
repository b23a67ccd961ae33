// Shared precompiled header of the test executable.
#pragma once
#include <gtest/gtest.h>
#include <torch/torch.h>
