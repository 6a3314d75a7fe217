// RUN: kiln opt %s -p fuse{solver=ilp} | filecheck %s
// A linear with a bias + gelu + residual epilogue, then a softmax: with the CPU target's
// rules (contractions stay library calls) the linear is alone, the elementwise epilogue
// joins the softmax's row kernel, and the module records the decision.

// CHECK:       builtin.module attributes {kiln.fusion = {
// CHECK-SAME:    kernels_none = 4 : i64
// CHECK-SAME:    status = "optimal"
// CHECK-SAME:    kernels_ilp = 2 : i64
// CHECK-SAME:    chosen = "ilp"
builtin.module {
  // CHECK-LABEL: func.func @block
  // CHECK:         "kiln.linear"(%x, %w) {group = 0 : i64}
  // CHECK-NEXT:    "kiln.gelu"({{.*}}) {group = 1 : i64}
  // CHECK-NEXT:    "kiln.add"({{.*}}) {group = 1 : i64}
  // CHECK-NEXT:    "kiln.softmax"({{.*}}) <{dim = -1 : i64}> {group = 1 : i64}
  func.func @block(%x: tensor<8x32xf32>, %w: tensor<32x32xf32>) -> tensor<8x32xf32> {
    %h = "kiln.linear"(%x, %w) : (tensor<8x32xf32>, tensor<32x32xf32>) -> tensor<8x32xf32>
    %g = "kiln.gelu"(%h) : (tensor<8x32xf32>) -> tensor<8x32xf32>
    %r = "kiln.add"(%g, %x) : (tensor<8x32xf32>, tensor<8x32xf32>) -> tensor<8x32xf32>
    %s = "kiln.softmax"(%r) <{dim = -1 : i64}> : (tensor<8x32xf32>) -> tensor<8x32xf32>
    func.return %s : tensor<8x32xf32>
  }
}
