// bias_act: torch-facing checks and Python bindings. Device code lives in bias_act.cu.
//
// The CUDA stream arrives from Python as an integer (torch.cuda.current_stream(dev).cuda_stream)
// and the launcher makes x's device current for the launch, so this file needs no c10/cuda or
// ATen/cuda header (the CPU torch wheel ships those incompletely; see csrc/README.md).
#include <torch/extension.h>

#include <optional>

#include "bias_act.h"

namespace {

using latentedit::bias_act::DType;
namespace ba = latentedit::bias_act;

DType dtype_of(const torch::Tensor& t) {
  switch (t.scalar_type()) {
    case torch::kFloat32: return DType::kFloat32;
    case torch::kFloat16: return DType::kFloat16;
    case torch::kBFloat16: return DType::kBFloat16;
    default: TORCH_CHECK(false, "bias_act: dtype must be float32, float16 or bfloat16, got ", t.scalar_type());
  }
  return DType::kFloat32;  // unreachable
}

void check_like(const torch::Tensor& t, const torch::Tensor& x, const char* name) {
  TORCH_CHECK(t.device() == x.device(), "bias_act: ", name, " is on ", t.device(), ", x on ", x.device());
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), "bias_act: ", name, " has dtype ", t.scalar_type(),
              ", x has ", x.scalar_type());
  TORCH_CHECK(t.sizes() == x.sizes() && t.strides() == x.strides(), "bias_act: ", name,
              " must have the size and strides of x, got ", t.sizes(), " / ", t.strides(), " vs ", x.sizes(),
              " / ", x.strides());
}

// See bias_act.h for the modes. x: the input (mode 0) or the incoming gradient; ref: y (mode 1)
// or the forward input (modes 2, 3); b: [x.size(dim)] or None. Returns a tensor like x.
torch::Tensor bias_act(const torch::Tensor& x, const std::optional<torch::Tensor>& ref,
                       const std::optional<torch::Tensor>& b, int64_t dim, int64_t act, int64_t mode,
                       double alpha, double gain, double clamp, int64_t stream) {
  TORCH_CHECK(x.is_cuda(), "bias_act: x must be a CUDA tensor, got ", x.device());
  const DType dtype = dtype_of(x);
  TORCH_CHECK(x.is_non_overlapping_and_dense(), "bias_act: x must be dense (contiguous in some dim order)");
  TORCH_CHECK(x.dim() >= 1, "bias_act: x must have at least one dim");
  TORCH_CHECK(dim >= 0 && dim < x.dim(), "bias_act: dim ", dim, " out of range for ", x.dim(), "-d x");
  TORCH_CHECK(act >= ba::kLinear && act <= ba::kSigmoid, "bias_act: unknown activation id ", act);
  TORCH_CHECK(mode >= ba::kForward && mode <= ba::kGrad2FromX, "bias_act: unknown mode ", mode);
  TORCH_CHECK(mode != ba::kGradFromY || act <= ba::kLrelu, "bias_act: mode 1 supports linear/relu/lrelu only");
  TORCH_CHECK(mode != ba::kGrad2FromX || act >= ba::kTanh, "bias_act: mode 3 supports tanh/sigmoid only");

  ba::Params p{};
  if (mode != ba::kForward) {
    TORCH_CHECK(ref.has_value(), "bias_act: gradient modes need ref");
    check_like(*ref, x, "ref");
    p.ref = ref->data_ptr();
  }
  if (b.has_value() && mode != ba::kGradFromY) {
    TORCH_CHECK(b->device() == x.device() && b->scalar_type() == x.scalar_type(),
                "bias_act: b must match x's device and dtype");
    TORCH_CHECK(b->dim() == 1 && b->size(0) == x.size(dim) && b->is_contiguous(),
                "bias_act: b must be contiguous of shape [", x.size(dim), "], got ", b->sizes());
    p.b = b->data_ptr();
  }
  torch::Tensor out = torch::empty_like(x);  // keeps x's (dense) strides
  TORCH_CHECK(out.strides() == x.strides(), "bias_act: could not allocate the output in x's layout");
  if (x.numel() == 0) return out;

  p.out = out.data_ptr();
  p.x = x.data_ptr();
  p.n = x.numel();
  p.channels = x.size(dim);
  p.cstride = p.channels > 1 ? x.stride(dim) : 1;  // a size-1 dim may carry any stride
  p.act = int(act);
  p.mode = int(mode);
  p.alpha = float(alpha);
  p.gain = float(gain);
  p.clamp = float(clamp);
  const char* err = ba::launch(p, dtype, x.get_device(), static_cast<std::intptr_t>(stream));
  TORCH_CHECK(err == nullptr, "bias_act: CUDA launch failed: ", err);
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "latentedit fused bias + activation + gain + clamp (csrc/bias_act.cu)";
  m.def("bias_act", &bias_act, "Fused bias_act forward / gradient modes (see csrc/bias_act.h)",
        pybind11::arg("x"), pybind11::arg("ref"), pybind11::arg("b"), pybind11::arg("dim"),
        pybind11::arg("act"), pybind11::arg("mode"), pybind11::arg("alpha"), pybind11::arg("gain"),
        pybind11::arg("clamp"), pybind11::arg("stream"));
}
