// Readers of the image classification files the ViT example trains on.
//
// CIFAR-100, binary version (train.bin, test.bin): records of 3074 bytes,
//   1 coarse label (0..19), 1 fine label (0..99), 3072 pixels: the 32x32 red
//   plane, then green, then blue, row-major.
// IDX (MNIST, Fashion-MNIST): bytes 0,0, a type code, the number of
//   dimensions; one big-endian u32 per dimension; the elements, big-endian.
//   Gzipped files are read as they are (Debian's dataset-fashion-mnist
//   installs train-images-idx3-ubyte.gz etc. in kDebianFashionMnistDirectory).
//
// Malformed files (truncated, corrupt, wrong magic, labels out of range,
// trailing bytes) are rejected with a std::runtime_error naming the file and
// the record or byte offset.
#pragma once

#include <torch/types.h>

#include <filesystem>

namespace tram::hf::data {

struct Cifar100 {
  torch::Tensor images;         // [N, 3, 32, 32] float32 in [0, 1]
  torch::Tensor fine_labels;    // [N] int64 in [0, 100)
  torch::Tensor coarse_labels;  // [N] int64 in [0, 20)
};
Cifar100 read_cifar100(const std::filesystem::path& file);

// Any IDX file, plain or gzip: a tensor of the stored type (u8 -> kUInt8,
// i8 -> kInt8, i16 -> kInt16, i32 -> kInt32, f32 -> kFloat32, f64 -> kFloat64)
// and the stored dimensions.
torch::Tensor read_idx(const std::filesystem::path& file);

struct ImageClassification {
  torch::Tensor images;  // [N, C, H, W] float32 in [0, 1]
  torch::Tensor labels;  // [N] int64
};

// The MNIST-layout split of a directory: {train,t10k}-images-idx3-ubyte and
// {train,t10k}-labels-idx1-ubyte, each plain or with ".gz". Images [N, 1, 28, 28].
ImageClassification read_mnist_split(const std::filesystem::path& directory, bool train);

constexpr const char* kDebianFashionMnistDirectory = "/usr/share/datasets/fashion-mnist";

}  // namespace tram::hf::data
