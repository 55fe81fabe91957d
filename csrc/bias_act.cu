// bias_act: fused bias + activation + gain + clamp, and the gradient modes (see bias_act.h).
//
// Memory-bound elementwise kernel. It walks x in memory order, so any dense layout works
// (NCHW, channels_last, [N, C] ...): the bias index of memory element m is
// (m / cstride) % channels. Each thread handles one 16-byte pack (4 fp32 or 8 fp16/bf16) per
// grid-stride step when every pointer is 16-byte aligned, and recovers the channel with one
// division per pack, then steps it along the pack. All arithmetic is fp32.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <climits>
#include <cstdint>

#include "bias_act.h"
#include "cuda_common.cuh"

namespace latentedit {
namespace bias_act {
namespace {

constexpr int kThreads = 256;


// N consecutive elements moved as one (up to 128-bit) load / store.
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

template <int ACT>
__device__ __forceinline__ float act_fwd(float z, float alpha) {
  if (ACT == kRelu) return z > 0.f ? z : 0.f;
  if (ACT == kLrelu) return z > 0.f ? z : z * alpha;
  if (ACT == kTanh) return tanhf(z);
  if (ACT == kSigmoid) return 1.f / (1.f + expf(-z));
  return z;
}

// act'(z) (ORDER 1) or act''(z) (ORDER 2).
template <int ACT, int ORDER>
__device__ __forceinline__ float act_deriv(float z, float alpha) {
  if (ACT == kTanh) {
    const float t = tanhf(z), d = 1.f - t * t;
    return ORDER == 1 ? d : -2.f * t * d;
  }
  if (ACT == kSigmoid) {
    const float s = 1.f / (1.f + expf(-z)), d = s * (1.f - s);
    return ORDER == 1 ? d : d * (1.f - 2.f * s);
  }
  if (ORDER == 2) return 0.f;  // piecewise linear
  if (ACT == kRelu) return z > 0.f ? 1.f : 0.f;
  if (ACT == kLrelu) return z > 0.f ? 1.f : alpha;
  return 1.f;
}

// x: input (forward) or incoming gradient; r: ref (y or pre-bias x); b: bias value.
template <int ACT, int MODE>
__device__ __forceinline__ float compute(float x, float r, float b, const Params& p) {
  if (MODE == kForward) {
    const float v = act_fwd<ACT>(x + b, p.alpha) * p.gain;
    return p.clamp >= 0.f ? fminf(fmaxf(v, -p.clamp), p.clamp) : v;
  }
  if (MODE == kGradFromY) {
    // y > 0 <=> z > 0 for these activations (gain > 0, alpha >= 0); a clamped y has |y| == clamp.
    const float d = ACT == kLinear ? 1.f : (r > 0.f ? 1.f : (ACT == kLrelu ? p.alpha : 0.f));
    const bool keep = p.clamp < 0.f || fabsf(r) < p.clamp;
    return keep ? x * p.gain * d : 0.f;
  }
  const float z = r + b;
  const bool keep = p.clamp < 0.f || fabsf(act_fwd<ACT>(z, p.alpha) * p.gain) <= p.clamp;
  const float d = act_deriv<ACT, MODE == kGradFromX ? 1 : 2>(z, p.alpha);
  return keep ? x * p.gain * d : 0.f;
}

// Channel c of memory element m, and m's offset `rem` inside its run of cstride elements.
__device__ __forceinline__ void channel_of(int64_t m, const Params& p, int64_t& c, int64_t& rem) {
  if (p.n <= INT_MAX) {  // 32-bit division is several times cheaper than 64-bit
    const uint32_t q = uint32_t(m) / uint32_t(p.cstride);
    rem = m - int64_t(q) * p.cstride;
    c = q % uint32_t(p.channels);
  } else {
    const int64_t q = m / p.cstride;
    rem = m - q * p.cstride;
    c = q % p.channels;
  }
}

template <typename T, int ACT, int MODE, int VEC>
__global__ void __launch_bounds__(kThreads) bias_act_kernel(Params p) {
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ ref = static_cast<const T*>(p.ref);
  const T* __restrict__ b = static_cast<const T*>(p.b);
  T* __restrict__ out = static_cast<T*>(p.out);
  const bool use_b = MODE != kGradFromY && b != nullptr;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t nvec = p.n / VEC;

  using P = Pack<T, VEC>;
  for (int64_t v = tid; v < nvec; v += step) {
    const P xs = reinterpret_cast<const P*>(x)[v];
    P rs;
    if (MODE != kForward) rs = reinterpret_cast<const P*>(ref)[v];
    int64_t c = 0, rem = 0;
    if (use_b) channel_of(v * VEC, p, c, rem);
    P os;
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const float bv = use_b ? to_float(b[c]) : 0.f;
      const float rv = MODE != kForward ? to_float(rs.v[k]) : 0.f;
      os.v[k] = from_float<T>(compute<ACT, MODE>(to_float(xs.v[k]), rv, bv, p));
      if (use_b && ++rem == p.cstride) {  // crossed into the next channel
        rem = 0;
        if (++c == p.channels) c = 0;
      }
    }
    reinterpret_cast<P*>(out)[v] = os;
  }
  // The n % VEC elements after the last full pack.
  for (int64_t m = nvec * VEC + tid; m < p.n; m += step) {
    int64_t c = 0, rem = 0;
    if (use_b) channel_of(m, p, c, rem);
    const float bv = use_b ? to_float(b[c]) : 0.f;
    const float rv = MODE != kForward ? to_float(ref[m]) : 0.f;
    out[m] = from_float<T>(compute<ACT, MODE>(to_float(x[m]), rv, bv, p));
  }
}

// Enough blocks to fill every SM (2048 resident threads each); the loops stride over the rest.
int max_blocks(int device) {
  static std::atomic<int> sm_count[64];
  int sms = device >= 0 && device < 64 ? sm_count[device].load() : 0;
  if (sms == 0) {
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || sms <= 0)
      sms = 1;
    if (device >= 0 && device < 64) sm_count[device].store(sms);
  }
  return sms * (2048 / kThreads);
}

bool aligned16(const void* ptr) { return reinterpret_cast<std::uintptr_t>(ptr) % 16 == 0; }

template <typename T, int ACT, int MODE>
void launch_typed(const Params& p, cudaStream_t stream, int cap) {
  constexpr int V = 16 / sizeof(T);
  const bool vec = p.n >= V && aligned16(p.out) && aligned16(p.x) && (MODE == kForward || aligned16(p.ref));
  const int64_t work = vec ? p.n / V : p.n;
  const int blocks = int(work / kThreads + 1 < cap ? work / kThreads + 1 : cap);
  if (vec)
    bias_act_kernel<T, ACT, MODE, V><<<blocks, kThreads, 0, stream>>>(p);
  else
    bias_act_kernel<T, ACT, MODE, 1><<<blocks, kThreads, 0, stream>>>(p);
}

// Instantiates only the (activation, mode) pairs that bias_act.h allows.
template <typename T, int ACT>
bool dispatch_mode(const Params& p, cudaStream_t stream, int cap) {
  switch (p.mode) {
    case kForward: launch_typed<T, ACT, kForward>(p, stream, cap); return true;
    case kGradFromX: launch_typed<T, ACT, kGradFromX>(p, stream, cap); return true;
    case kGradFromY:
      if constexpr (ACT == kLinear || ACT == kRelu || ACT == kLrelu) {
        launch_typed<T, ACT, kGradFromY>(p, stream, cap);
        return true;
      }
      return false;
    case kGrad2FromX:
      if constexpr (ACT == kTanh || ACT == kSigmoid) {
        launch_typed<T, ACT, kGrad2FromX>(p, stream, cap);
        return true;
      }
      return false;
    default: return false;
  }
}

template <typename T>
bool dispatch_act(const Params& p, cudaStream_t stream, int cap) {
  switch (p.act) {
    case kLinear: return dispatch_mode<T, kLinear>(p, stream, cap);
    case kRelu: return dispatch_mode<T, kRelu>(p, stream, cap);
    case kLrelu: return dispatch_mode<T, kLrelu>(p, stream, cap);
    case kTanh: return dispatch_mode<T, kTanh>(p, stream, cap);
    case kSigmoid: return dispatch_mode<T, kSigmoid>(p, stream, cap);
    default: return false;
  }
}

}  // namespace

const char* launch(const Params& p, DType dtype, int device, std::intptr_t stream_handle) {
  if (p.n == 0) return nullptr;
  DeviceGuard guard(device);
  const cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_handle);
  const int cap = max_blocks(device);
  bool ok = false;
  switch (dtype) {
    case DType::kFloat32: ok = dispatch_act<float>(p, stream, cap); break;
    case DType::kFloat16: ok = dispatch_act<__half>(p, stream, cap); break;
    case DType::kBFloat16: ok = dispatch_act<__nv_bfloat16>(p, stream, cap); break;
  }
  if (!ok) return "bias_act: unsupported dtype / activation / mode combination";
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace bias_act
}  // namespace latentedit
