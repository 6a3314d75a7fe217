// RUN: kiln opt %s -p fold-constants,kiln-canonicalize,cse,dce | filecheck %s
// The default pipeline (passes.DEFAULT_PIPELINE) on a small MLP-like body: folding exposes
// an identity (scale = 2 * 0.5 = 1), canonicalization removes it and a transpose pair,
// cse merges the repeated gelu, and dead ops vanish.

builtin.module {
  // CHECK-LABEL: func.func @forward
  // CHECK-NEXT:    %[[W:.*]] = "kiln.param"() <{name = "fc.weight"}>
  // CHECK-NEXT:    %[[L:.*]] = "kiln.linear"(%x, %[[W]])
  // CHECK-NEXT:    %[[G:.*]] = "kiln.gelu"(%[[L]])
  // CHECK-NEXT:    %[[S:.*]] = "kiln.add"(%[[G]], %[[G]])
  // CHECK-NEXT:    func.return %[[S]]
  func.func @forward(%x: tensor<4x8xf32>) -> tensor<4x16xf32> {
    %w = "kiln.param"() <{name = "fc.weight"}> : () -> tensor<16x8xf32>
    %wt = "kiln.permute"(%w) <{dims = array<i64: 1, 0>}> : (tensor<16x8xf32>) -> tensor<8x16xf32>
    %w2 = "kiln.permute"(%wt) <{dims = array<i64: 1, 0>}> : (tensor<8x16xf32>) -> tensor<16x8xf32>
    %l = "kiln.linear"(%x, %w2) : (tensor<4x8xf32>, tensor<16x8xf32>) -> tensor<4x16xf32>
    %two = "kiln.constant"() <{value = dense<2.0> : tensor<f32>}> : () -> tensor<f32>
    %half = "kiln.constant"() <{value = dense<0.5> : tensor<f32>}> : () -> tensor<f32>
    %scale = "kiln.mul"(%two, %half) : (tensor<f32>, tensor<f32>) -> tensor<f32>
    %ls = "kiln.mul"(%l, %scale) : (tensor<4x16xf32>, tensor<f32>) -> tensor<4x16xf32>
    %g1 = "kiln.gelu"(%ls) : (tensor<4x16xf32>) -> tensor<4x16xf32>
    %g2 = "kiln.gelu"(%ls) : (tensor<4x16xf32>) -> tensor<4x16xf32>
    %dead = "kiln.exp"(%g1) : (tensor<4x16xf32>) -> tensor<4x16xf32>
    %s = "kiln.add"(%g1, %g2) : (tensor<4x16xf32>, tensor<4x16xf32>) -> tensor<4x16xf32>
    func.return %s : tensor<4x16xf32>
  }
}
