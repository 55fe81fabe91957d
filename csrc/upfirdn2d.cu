// upfirdn2d: zero-insert upsampling, padding, FIR filtering and downsampling in one pass
// (semantics in upfirdn2d.h). Both kernels are polyphase: for output (oy, ox) only the taps
// t = t0, t0 + up, ... land on real input samples, so the inserted zeros are never read.
//
//  * tiled_kernel: for row-major planes (NCHW, W stride 1) with outputs of at least one tile.
//    A block owns a 32 x 32 output tile; it stages the input window the tile reads (fp32) and
//    the filter (flipped as needed and scaled by gain) in shared memory once per (n, c) plane,
//    so every input sample is fetched from global memory once per tile. The StyleGAN2 cases
//    (4x4 filter with up=2, down=2 or neither) are compiled with constant up / down / taps so
//    the tap loops unroll; everything else uses the same kernel with runtime values.
//  * direct_kernel: one output per thread, threads laid out in the output's memory order, so
//    for channels_last neighbouring threads read neighbouring channels (coalesced) and share
//    the same taps. Also covers small planes and filters whose window exceeds shared memory.
//
// All accumulation is fp32; fp16 / bf16 are converted on load and store.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <climits>
#include <cstdint>

#include "upfirdn2d.h"
#include "cuda_common.cuh"

namespace latentedit {
namespace upfirdn2d {
namespace {

constexpr int kThreads = 256;
constexpr int kTile = 32;                // tiled kernel: kTile x kTile outputs per block
constexpr int kMaxSmem = 48 * 1024;      // the default dynamic shared memory limit


// Floor-based helpers for possibly negative numerators (b > 0).
__host__ __device__ __forceinline__ int pmod(int a, int b) {
  const int r = a % b;
  return r < 0 ? r + b : r;
}
__host__ __device__ __forceinline__ int ceil_div(int a, int b) { return (a + pmod(-a, b)) / b; }

// Along one axis, output coordinate o reads the taps t0, t0 + up, ... (count of them below k);
// tap t0 lands on input sample i0, each next tap on the next input sample.
struct Axis {
  int t0, i0, count;
};
__device__ __forceinline__ Axis axis_taps(int o, int up, int down, int pad0, int k) {
  const int base = o * down - pad0;  // position of tap 0 in the upsampled, padded signal
  Axis a;
  a.t0 = pmod(-base, up);
  a.i0 = (base + a.t0) / up;  // exact
  a.count = (k - a.t0 + up - 1) / up;
  return a;
}

template <typename T, typename Index, bool CHANNELS_LAST>
__global__ void __launch_bounds__(kThreads) direct_kernel(Params p, Index total) {
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const float* __restrict__ f = p.f;
  T* __restrict__ y = static_cast<T*>(p.y);
  for (Index i = Index(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += Index(gridDim.x) * blockDim.x) {
    Index t = i;
    int n, c, oy, ox;
    if (CHANNELS_LAST) {
      c = int(t % p.c), t /= p.c;
      ox = int(t % p.out_w), t /= p.out_w;
      oy = int(t % p.out_h), n = int(t / p.out_h);
    } else {
      ox = int(t % p.out_w), t /= p.out_w;
      oy = int(t % p.out_h), t /= p.out_h;
      c = int(t % p.c), n = int(t / p.c);
    }
    const Axis ax = axis_taps(ox, p.up_x, p.down_x, p.pad_x0, p.fw);
    const Axis ay = axis_taps(oy, p.up_y, p.down_y, p.pad_y0, p.fh);
    // Skip the taps that fall on padding.
    const int kx0 = max(0, -ax.i0), kx1 = min(ax.count, p.in_w - ax.i0);
    const int ky0 = max(0, -ay.i0), ky1 = min(ay.count, p.in_h - ay.i0);
    // Walk the stored filter: forwards for correlation taps, backwards for a true convolution.
    int fbase, fsx, fsy;
    if (p.flip) {
      fbase = ay.t0 * p.fw + ax.t0, fsx = p.up_x, fsy = p.up_y * p.fw;
    } else {
      fbase = (p.fh - 1 - ay.t0) * p.fw + (p.fw - 1 - ax.t0), fsx = -p.up_x, fsy = -p.up_y * p.fw;
    }
    const int64_t plane = n * p.sx[0] + c * p.sx[1];
    float acc = 0.f;
    for (int ky = ky0; ky < ky1; ++ky) {
      const int64_t row = plane + int64_t(ay.i0 + ky) * p.sx[2];
      const float* frow = f + fbase + ky * fsy;
      for (int kx = kx0; kx < kx1; ++kx)
        acc += __ldg(frow + kx * fsx) * to_float(x[row + int64_t(ax.i0 + kx) * p.sx[3]]);
    }
    y[n * p.sy[0] + c * p.sy[1] + int64_t(oy) * p.sy[2] + int64_t(ox) * p.sy[3]] = from_float<T>(acc * p.gain);
  }
}

// UP, DOWN (both axes) and K (square filter) are compile-time when non-zero, else read from p.
// Needs p.sx[3] == p.sy[3] == 1. Grid: x = output tiles, y = (n, c) planes (strided).
template <typename T, int UP, int DOWN, int K>
__global__ void __launch_bounds__(kThreads) tiled_kernel(Params p, int tiles_x, int tin_w, int tin_h) {
  extern __shared__ float smem[];
  const T* __restrict__ x = static_cast<const T*>(p.x);
  T* __restrict__ y = static_cast<T*>(p.y);
  const int ux = UP ? UP : p.up_x, uy = UP ? UP : p.up_y;
  const int dx = DOWN ? DOWN : p.down_x, dy = DOWN ? DOWN : p.down_y;
  const int fw = K ? K : p.fw, fh = K ? K : p.fh;
  // When UP divides K every phase has K / UP taps: a constant, so the tap loops unroll fully.
  constexpr int kPhaseTaps = K > 0 && UP > 0 && K % (UP > 0 ? UP : 1) == 0 ? K / (UP > 0 ? UP : 1) : 0;
  float* sf = smem;            // [fh][fw] correlation taps, times gain
  float* sx = smem + fw * fh;  // [tin_h][tin_w] input window of this tile, zero outside the input
  for (int i = threadIdx.x; i < fw * fh; i += blockDim.x)
    sf[i] = p.gain * p.f[p.flip ? i : fw * fh - 1 - i];  // reversed row-major = rotated by 180 degrees

  const int ox0 = int(blockIdx.x % tiles_x) * kTile, oy0 = int(blockIdx.x / tiles_x) * kTile;
  const int ix_lo = ceil_div(ox0 * dx - p.pad_x0, ux);  // first input column any output here reads
  const int iy_lo = ceil_div(oy0 * dy - p.pad_y0, uy);
  const int planes = p.n * p.c;
  for (int pl = blockIdx.y; pl < planes; pl += gridDim.y) {
    const int n = pl / p.c, c = pl - n * p.c;
    const T* xp = x + n * p.sx[0] + c * p.sx[1];
    __syncthreads();  // sf is written / the previous plane's window is no longer read
    for (int i = threadIdx.x; i < tin_w * tin_h; i += blockDim.x) {
      const int r = i / tin_w, col = i - r * tin_w;
      const int iy = iy_lo + r, ix = ix_lo + col;
      sx[i] = iy >= 0 && iy < p.in_h && ix >= 0 && ix < p.in_w ? to_float(xp[iy * p.sx[2] + ix]) : 0.f;
    }
    __syncthreads();

    T* yp = y + n * p.sy[0] + c * p.sy[1];
    for (int i = threadIdx.x; i < kTile * kTile; i += blockDim.x) {
      const int ox = ox0 + i % kTile, oy = oy0 + i / kTile;
      if (ox >= p.out_w || oy >= p.out_h) continue;
      const int bx = ox * dx - p.pad_x0, by = oy * dy - p.pad_y0;
      const int tx0 = pmod(-bx, ux), ty0 = pmod(-by, uy);
      const int nkx = kPhaseTaps ? kPhaseTaps : (fw - tx0 + ux - 1) / ux;
      const int nky = kPhaseTaps ? kPhaseTaps : (fh - ty0 + uy - 1) / uy;
      const float* fp = sf + ty0 * fw + tx0;
      const float* sp = sx + ((by + ty0) / uy - iy_lo) * tin_w + ((bx + tx0) / ux - ix_lo);
      float acc = 0.f;
#pragma unroll
      for (int ky = 0; ky < nky; ++ky)
#pragma unroll
        for (int kx = 0; kx < nkx; ++kx) acc += fp[ky * uy * fw + kx * ux] * sp[ky * tin_w + kx];
      yp[int64_t(oy) * p.sy[2] + ox] = from_float<T>(acc);
    }
  }
}

int sm_count(int device) {
  static std::atomic<int> cache[64];
  int sms = device >= 0 && device < 64 ? cache[device].load() : 0;
  if (sms == 0) {
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || sms <= 0)
      sms = 1;
    if (device >= 0 && device < 64) cache[device].store(sms);
  }
  return sms;
}

template <typename T>
void launch_typed(const Params& p, cudaStream_t stream, int device) {
  const int64_t planes = int64_t(p.n) * p.c;
  if (p.sx[3] == 1 && p.sy[3] == 1 && p.out_w >= kTile && p.out_h >= kTile) {
    // Input window of one tile: enough for the first and last output of the tile in each axis.
    const int tin_w = ((kTile - 1) * p.down_x + p.fw - 1) / p.up_x + 1;
    const int tin_h = ((kTile - 1) * p.down_y + p.fh - 1) / p.up_y + 1;
    const int64_t smem = int64_t(sizeof(float)) * (int64_t(p.fw) * p.fh + int64_t(tin_w) * tin_h);
    if (smem <= kMaxSmem) {
      const int tiles_x = (p.out_w + kTile - 1) / kTile, tiles_y = (p.out_h + kTile - 1) / kTile;
      const dim3 grid(tiles_x * tiles_y, unsigned(planes < 65535 ? planes : 65535));
      const bool f4 = p.fw == 4 && p.fh == 4;
      const bool up2 = p.up_x == 2 && p.up_y == 2, up1 = p.up_x == 1 && p.up_y == 1;
      const bool down2 = p.down_x == 2 && p.down_y == 2, down1 = p.down_x == 1 && p.down_y == 1;
      if (f4 && up2 && down1)
        tiled_kernel<T, 2, 1, 4><<<grid, kThreads, smem, stream>>>(p, tiles_x, tin_w, tin_h);
      else if (f4 && up1 && down2)
        tiled_kernel<T, 1, 2, 4><<<grid, kThreads, smem, stream>>>(p, tiles_x, tin_w, tin_h);
      else if (f4 && up1 && down1)
        tiled_kernel<T, 1, 1, 4><<<grid, kThreads, smem, stream>>>(p, tiles_x, tin_w, tin_h);
      else
        tiled_kernel<T, 0, 0, 0><<<grid, kThreads, smem, stream>>>(p, tiles_x, tin_w, tin_h);
      return;
    }
  }
  const int64_t total = planes * p.out_h * p.out_w;
  const int64_t cap = int64_t(sm_count(device)) * (2048 / kThreads);
  const int blocks = int(total / kThreads + 1 < cap ? total / kThreads + 1 : cap);
  const bool channels_last = p.sy[1] == 1 && p.c > 1;
  if (total <= INT_MAX) {  // 32-bit index decomposition is much cheaper
    if (channels_last)
      direct_kernel<T, uint32_t, true><<<blocks, kThreads, 0, stream>>>(p, uint32_t(total));
    else
      direct_kernel<T, uint32_t, false><<<blocks, kThreads, 0, stream>>>(p, uint32_t(total));
  } else {
    if (channels_last)
      direct_kernel<T, int64_t, true><<<blocks, kThreads, 0, stream>>>(p, total);
    else
      direct_kernel<T, int64_t, false><<<blocks, kThreads, 0, stream>>>(p, total);
  }
}

}  // namespace

const char* launch(const Params& p, DType dtype, int device, std::intptr_t stream_handle) {
  if (int64_t(p.n) * p.c * p.out_h * p.out_w == 0) return nullptr;
  DeviceGuard guard(device);
  const cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
  switch (dtype) {
    case DType::kFloat32: launch_typed<float>(p, stream, device); break;
    case DType::kFloat16: launch_typed<__half>(p, stream, device); break;
    case DType::kBFloat16: launch_typed<__nv_bfloat16>(p, stream, device); break;
    default: return "upfirdn2d: unsupported dtype";
  }
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace upfirdn2d
}  // namespace latentedit
