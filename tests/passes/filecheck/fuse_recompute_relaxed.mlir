// RUN: kiln opt %s -p fuse{relax-convexity=true} | filecheck %s
// A broadcast %y (a row mean times a bias) is read before a linear and again after it.
// No convex group can hold %y with the add after the linear (%y -> %s -> %q -> linear ->
// add), so without relaxed convexity %y is written and read back. With it, the add's
// group gets its own copy of %y, made from the small %m and %b: the copy feeds only its
// group, so the group is convex once rewritten.

// CHECK:       builtin.module attributes {kiln.fusion = {
// CHECK-SAME:    kernels_ilp = 3 : i64
// CHECK-SAME:    recomputed = 1 : i64
builtin.module {
  // CHECK-LABEL: func.func @broadcast_around_linear
  // CHECK:         "kiln.mul"(%m, %b) {group = [[LATE:[0-9]]] : i64}
  // CHECK-NEXT:    "kiln.mul"(%m, %b) {group = [[EARLY:[0-9]]] : i64}
  // CHECK:         "kiln.linear"
  // CHECK-NEXT:    "kiln.add"({{.*}}) {group = [[LATE]] : i64}
  // CHECK-NEXT:    "kiln.tanh"({{.*}}) {group = [[LATE]] : i64}
  func.func @broadcast_around_linear(%x: tensor<64x256xf32>, %b: tensor<256xf32>, %w: tensor<256x256xf32>) -> tensor<64x256xf32> {
    %m = "kiln.reduce"(%x) <{kind = "mean", dims = array<i64: 1>, keepdim = true}> : (tensor<64x256xf32>) -> tensor<64x1xf32>
    %y = "kiln.mul"(%m, %b) : (tensor<64x1xf32>, tensor<256xf32>) -> tensor<64x256xf32>
    %p = "kiln.mul"(%x, %y) : (tensor<64x256xf32>, tensor<64x256xf32>) -> tensor<64x256xf32>
    %s = "kiln.reduce"(%p) <{kind = "sum", dims = array<i64: 1>, keepdim = true}> : (tensor<64x256xf32>) -> tensor<64x1xf32>
    %q = "kiln.mul"(%x, %s) : (tensor<64x256xf32>, tensor<64x1xf32>) -> tensor<64x256xf32>
    %h = "kiln.linear"(%q, %w) : (tensor<64x256xf32>, tensor<256x256xf32>) -> tensor<64x256xf32>
    %a = "kiln.add"(%h, %y) : (tensor<64x256xf32>, tensor<64x256xf32>) -> tensor<64x256xf32>
    %t = "kiln.tanh"(%a) : (tensor<64x256xf32>) -> tensor<64x256xf32>
    func.return %t : tensor<64x256xf32>
  }
}
