// upfirdn2d: torch-facing checks and Python bindings. Device code lives in upfirdn2d.cu.
//
// Like bias_act.cpp, the stream comes from Python as an integer and the launcher switches to
// x's device, so no c10/cuda header is needed. Separable (1-D) filters are run by the caller
// as two launches, with the taps viewed as [1, k] and then [k, 1] (latentedit/ops/cuda.py).
#include <torch/extension.h>

#include <limits>

#include "upfirdn2d.h"

namespace {

namespace ud = latentedit::upfirdn2d;

ud::DType dtype_of(const torch::Tensor& t) {
  switch (t.scalar_type()) {
    case torch::kFloat32: return ud::DType::kFloat32;
    case torch::kFloat16: return ud::DType::kFloat16;
    case torch::kBFloat16: return ud::DType::kBFloat16;
    default: TORCH_CHECK(false, "upfirdn2d: dtype must be float32, float16 or bfloat16, got ", t.scalar_type());
  }
  return ud::DType::kFloat32;  // unreachable
}

// x: [N, C, H, W], any strides; f: fp32 contiguous with fh * fw elements, read as [fh, fw].
// Returns [N, C, H', W'] in x's memory format (channels_last stays channels_last).
torch::Tensor upfirdn2d(const torch::Tensor& x, const torch::Tensor& f, int64_t fw, int64_t fh, int64_t up_x,
                        int64_t up_y, int64_t down_x, int64_t down_y, int64_t pad_x0, int64_t pad_x1,
                        int64_t pad_y0, int64_t pad_y1, bool flip, double gain, int64_t stream) {
  TORCH_CHECK(x.is_cuda(), "upfirdn2d: x must be a CUDA tensor, got ", x.device());
  const ud::DType dtype = dtype_of(x);
  TORCH_CHECK(x.dim() == 4, "upfirdn2d: x must be [N, C, H, W], got ", x.sizes());
  TORCH_CHECK(f.device() == x.device(), "upfirdn2d: f is on ", f.device(), ", x on ", x.device());
  TORCH_CHECK(f.scalar_type() == torch::kFloat32 && f.is_contiguous(), "upfirdn2d: f must be contiguous float32");
  TORCH_CHECK(fw >= 1 && fh >= 1 && f.numel() == fw * fh, "upfirdn2d: f has ", f.numel(),
              " taps, expected fh * fw = ", fh, " * ", fw);
  TORCH_CHECK(up_x >= 1 && up_y >= 1 && down_x >= 1 && down_y >= 1, "upfirdn2d: up and down must be >= 1");

  constexpr int64_t kMax = std::numeric_limits<int>::max() / 4;  // int index maths in the kernels
  const int64_t in_h = x.size(2), in_w = x.size(3);
  const int64_t span_w = in_w * up_x + pad_x0 + pad_x1 - fw, span_h = in_h * up_y + pad_y0 + pad_y1 - fh;
  // out = floor((span + down) / down), as in the reference; an empty result is allowed.
  TORCH_CHECK(span_w + down_x >= 0 && span_h + down_y >= 0, "upfirdn2d: padded input (",
              in_h * up_y + pad_y0 + pad_y1, " x ", in_w * up_x + pad_x0 + pad_x1, ") is smaller than the filter (",
              fh, " x ", fw, ")");
  const int64_t out_w = (span_w + down_x) / down_x, out_h = (span_h + down_y) / down_y;
  for (int64_t v : {x.size(0) * x.size(1), in_h * up_y, in_w * up_x, out_h * down_y, out_w * down_x, fw * fh,
                    std::abs(pad_x0), std::abs(pad_y0)})
    TORCH_CHECK(v <= kMax, "upfirdn2d: size ", v, " is too large");

  torch::Tensor y = torch::empty({x.size(0), x.size(1), out_h, out_w},
                                 x.options().memory_format(x.suggest_memory_format()));
  if (y.numel() == 0) return y;

  ud::Params p{};
  p.x = x.data_ptr();
  p.y = y.data_ptr();
  p.f = f.data_ptr<float>();
  p.n = int(x.size(0)), p.c = int(x.size(1));
  p.in_h = int(in_h), p.in_w = int(in_w), p.out_h = int(out_h), p.out_w = int(out_w);
  for (int i = 0; i < 4; ++i) p.sx[i] = x.stride(i), p.sy[i] = y.stride(i);
  p.up_x = int(up_x), p.up_y = int(up_y), p.down_x = int(down_x), p.down_y = int(down_y);
  p.pad_x0 = int(pad_x0), p.pad_y0 = int(pad_y0);
  p.fw = int(fw), p.fh = int(fh);
  p.flip = flip ? 1 : 0;
  p.gain = float(gain);
  const char* err = ud::launch(p, dtype, x.get_device(), static_cast<std::intptr_t>(stream));
  TORCH_CHECK(err == nullptr, "upfirdn2d: CUDA launch failed: ", err);
  return y;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "latentedit fused upsample / FIR filter / downsample (csrc/upfirdn2d.cu)";
  m.def("upfirdn2d", &upfirdn2d, "Upsample, pad, FIR filter and downsample in one pass (see csrc/upfirdn2d.h)",
        pybind11::arg("x"), pybind11::arg("f"), pybind11::arg("fw"), pybind11::arg("fh"), pybind11::arg("up_x"),
        pybind11::arg("up_y"), pybind11::arg("down_x"), pybind11::arg("down_y"), pybind11::arg("pad_x0"),
        pybind11::arg("pad_x1"), pybind11::arg("pad_y0"), pybind11::arg("pad_y1"), pybind11::arg("flip"),
        pybind11::arg("gain"), pybind11::arg("stream"));
}
