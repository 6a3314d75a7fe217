// RUN: kiln opt %s -p fuse{multi-reduction=false} | filecheck %s
// A bias broadcast feeding two reductions that may not share a kernel (multi-reduction off).
// Without recompute one kernel writes the 64x256 sum x + b and the other reads it back;
// with recompute each reduction's kernel computes x + b itself from x and the small b:
// the add is cloned (same operands), and each kernel reads its own copy.

// CHECK:       builtin.module attributes {kiln.fusion = {
// CHECK-SAME:    kernels_ilp = 2 : i64
// CHECK-SAME:    recomputed = 1 : i64
builtin.module {
  // CHECK-LABEL: func.func @two_reductions
  // CHECK:         %[[A:.*]] = "kiln.add"(%x, %b) {group = [[G1:[01]]] : i64}
  // CHECK-NEXT:    %[[B:.*]] = "kiln.add"(%x, %b) {group = [[G2:[01]]] : i64}
  // CHECK-DAG:     "kiln.reduce"(%[[A]]) {{.*}} {group = [[G1]] : i64}
  // CHECK-DAG:     "kiln.reduce"(%[[B]]) {{.*}} {group = [[G2]] : i64}
  func.func @two_reductions(%x: tensor<64x256xf32>, %b: tensor<1x256xf32>) -> (tensor<64x1xf32>, tensor<64x1xf32>) {
    %e = "kiln.add"(%x, %b) : (tensor<64x256xf32>, tensor<1x256xf32>) -> tensor<64x256xf32>
    %s = "kiln.reduce"(%e) <{kind = "sum", dims = array<i64: 1>, keepdim = true}> : (tensor<64x256xf32>) -> tensor<64x1xf32>
    %m = "kiln.reduce"(%e) <{kind = "max", dims = array<i64: 1>, keepdim = true}> : (tensor<64x256xf32>) -> tensor<64x1xf32>
    func.return %s, %m : tensor<64x1xf32>, tensor<64x1xf32>
  }
}
