// bias_act: the interface between bias_act.cpp (torch side, built by the host compiler) and
// bias_act.cu (device side, built by nvcc). Plain C++ types only: the .cu includes no torch
// header, so it compiles in seconds and against the CPU torch wheel too (csrc/README.md).
#pragma once

#include <cstdint>

namespace latentedit {
namespace bias_act {

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// Activation ids; they match ACTIVATIONS[...].cuda_index in latentedit/ops/bias_act.py.
enum Act : int { kLinear = 1, kRelu = 2, kLrelu = 3, kTanh = 4, kSigmoid = 5 };

// What one launch computes, element by element (z = ref + b, clamp < 0 means no clamp):
//   kForward    out = clamp(act(x + b) * gain)
//   kGradFromY  out = x * gain * act'(z) * [not clamped], with act' and the clamp test read off
//               ref = the forward output y. Valid for linear / relu / lrelu when gain > 0 and
//               alpha >= 0: there the sign of y decides act' exactly and act'' = 0.
//   kGradFromX  out = x * gain * act'(z) * [|act(z) * gain| <= clamp], ref = the forward input.
//   kGrad2FromX out = x * gain * act''(z) * [...]: the second-order term of tanh / sigmoid.
// In the gradient modes x is the incoming gradient, in kForward the op's input.
enum Mode : int { kForward = 0, kGradFromY = 1, kGradFromX = 2, kGrad2FromX = 3 };

struct Params {
  void* out;        // same size and strides as x
  const void* x;    // dense (any permutation of a contiguous layout)
  const void* ref;  // same size and strides as x; unused by kForward
  const void* b;    // [channels] or nullptr; unused by kGradFromY
  int64_t n;        // numel of x
  int64_t cstride;  // stride of the bias dim: element m of memory has channel (m / cstride) % channels
  int64_t channels;
  int act, mode;
  float alpha, gain, clamp;
};

// Launches on `stream` (a cudaStream_t passed as an integer) of CUDA device `device`.
// Returns nullptr on success, else a static error string.
const char* launch(const Params& p, DType dtype, int device, std::intptr_t stream);

}  // namespace bias_act
}  // namespace latentedit
