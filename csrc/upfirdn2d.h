// upfirdn2d: the interface between upfirdn2d.cpp (torch side, host compiler) and upfirdn2d.cu
// (device side, nvcc). Plain C++ types only, like bias_act.h.
//
// For every (n, c) plane, with U the input after inserting up-1 zeros after every sample and
// padding by (pad_x0, ., pad_y0, .) (negative pads crop):
//   y[oy][ox] = gain * sum_{ty, tx} c[ty][tx] * U[oy * down_y + ty - pad_y0][ox * down_x + tx - pad_x0]
// where c are the correlation taps: c = f when flip != 0, else f rotated by 180 degrees (so that
// the op is a true convolution with f). Only taps that land on real input samples are visited.
#pragma once

#include <cstdint>

namespace latentedit {
namespace upfirdn2d {

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

struct Params {
  const void* x;    // [n, c, in_h, in_w] with strides sx (elements), any strides
  void* y;          // [n, c, out_h, out_w] with strides sy
  const float* f;   // [fh, fw] row-major fp32 filter on the same device
  int n, c, in_h, in_w, out_h, out_w;
  int64_t sx[4], sy[4];
  int up_x, up_y, down_x, down_y, pad_x0, pad_y0;
  int fw, fh;
  int flip;
  float gain;
};

// Launches on `stream` (a cudaStream_t passed as an integer) of CUDA device `device`.
// Returns nullptr on success, else a static error string.
const char* launch(const Params& p, DType dtype, int device, std::intptr_t stream);

}  // namespace upfirdn2d
}  // namespace latentedit
