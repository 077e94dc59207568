// Setting a layer as PyTorch's and ONNX's arguments do: dilation, groups,
// padding='same', asymmetric padding (ONNX's pads), auto_pad with a stride.
#include <convmat/convmat.hpp>

#include <iostream>

int main() {
  convmat::Conv2dSpec spec;  // Conv2d(4, 6, kernel_size=3, dilation=2, groups=2, padding='same') on 8 x 8
  spec.in_channels = 4;
  spec.out_channels = 6;
  spec.groups = 2;  // weights (6, 4 / 2, 3, 3)
  spec.input_size = {8, 8};
  spec.kernel_size = {3, 3};
  spec.dilation = {2, 2};
  spec.set_padding_same();  // stride 1: output 8 x 8, here 2 on each side
  std::cout << spec << ": weights " << spec.weight_numel() << ", output " << spec.output_size()[0] << " x "
            << spec.output_size()[1] << "\n";

  spec.set_padding({1, 0}, {2, 1});  // ONNX pads (1, 0, 2, 1): 1 before, 2 after in rows; 0 / 1 in columns
  std::cout << spec << ": output " << spec.output_size()[0] << " x " << spec.output_size()[1] << "\n";
  spec.padding_end.reset();  // symmetric again (PyTorch's padding): 3 on every side, wrapping around
  spec.padding = {3, 3};
  spec.padding_mode = convmat::PaddingMode::circular;
  std::cout << spec << "\n";

  convmat::Conv2dSpec strided;  // ONNX auto_pad=SAME_UPPER, stride 2: output ceil(8 / 2) = 4, padding 0 + 1
  strided.input_size = {8, 8};
  strided.kernel_size = {3, 3};
  strided.stride = {2, 2};
  strided.set_padding_same_upper();  // or set_padding_same_lower(): the odd element before
  std::cout << strided << ": output " << strided.output_size()[0] << " x " << strided.output_size()[1] << "\n";

  const Eigen::VectorXf w = Eigen::VectorXf::Ones(spec.weight_numel());
  const convmat::RowMajorMatrix<float> t = convmat::conv_matrix(spec, w);  // the public alias of T's type
  std::cout << "T is " << t.rows() << " x " << t.cols() << "\n";
}
