// RUN: kiln opt %s -p kiln-canonicalize | filecheck %s
// x + 0, x - 0, x * 1, x / 1 with a splat kiln.constant go away, but only when the result
// type is x's type: a broadcast or a dtype promotion is semantics and must stay.

builtin.module {
  // CHECK-LABEL: func.func @identities
  // CHECK-NOT:     kiln.
  // CHECK:         func.return %x, %x, %x, %x, %x, %x
  func.func @identities(%x: tensor<2x3xf32>) -> (tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>) {
    %zero = "kiln.constant"() <{value = dense<0.0> : tensor<f32>}> : () -> tensor<f32>
    %ones = "kiln.constant"() <{value = dense<1.0> : tensor<3xf32>}> : () -> tensor<3xf32>
    %a = "kiln.add"(%x, %zero) : (tensor<2x3xf32>, tensor<f32>) -> tensor<2x3xf32>
    %b = "kiln.add"(%zero, %x) : (tensor<f32>, tensor<2x3xf32>) -> tensor<2x3xf32>
    %c = "kiln.sub"(%x, %zero) : (tensor<2x3xf32>, tensor<f32>) -> tensor<2x3xf32>
    %d = "kiln.mul"(%x, %ones) : (tensor<2x3xf32>, tensor<3xf32>) -> tensor<2x3xf32>
    %e = "kiln.mul"(%ones, %x) : (tensor<3xf32>, tensor<2x3xf32>) -> tensor<2x3xf32>
    %f = "kiln.div"(%x, %ones) : (tensor<2x3xf32>, tensor<3xf32>) -> tensor<2x3xf32>
    func.return %a, %b, %c, %d, %e, %f : tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>
  }

  // 0 - x is a negation, 1 / x a reciprocal: not identities.
  // CHECK-LABEL: func.func @not_commutative
  // CHECK:         "kiln.sub"(%zero, %x)
  // CHECK:         "kiln.div"(%one, %x)
  func.func @not_commutative(%x: tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>) {
    %zero = "kiln.constant"() <{value = dense<0.0> : tensor<f32>}> : () -> tensor<f32>
    %one = "kiln.constant"() <{value = dense<1.0> : tensor<f32>}> : () -> tensor<f32>
    %a = "kiln.sub"(%zero, %x) : (tensor<f32>, tensor<4xf32>) -> tensor<4xf32>
    %b = "kiln.div"(%one, %x) : (tensor<f32>, tensor<4xf32>) -> tensor<4xf32>
    func.return %a, %b : tensor<4xf32>, tensor<4xf32>
  }

  // CHECK-LABEL: func.func @kept
  // The constant broadcasts x to 2x4: kept.
  // CHECK:         "kiln.add"(%x, %zeros)
  // i32 + f32 promotes to f32: kept.
  // CHECK:         "kiln.add"(%i, %zero)
  // Not a splat: kept.
  // CHECK:         "kiln.mul"(%x, %mixed)
  // Integer division is true division in torch (a float result): kept.
  // CHECK:         "kiln.div"(%i, %ione)
  // x * 0 is not 0 when x is inf or nan: kept.
  // CHECK:         "kiln.mul"(%x, %zero)
  func.func @kept(%x: tensor<4xf32>, %i: tensor<4xi32>) -> (tensor<2x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) {
    %zeros = "kiln.constant"() <{value = dense<0.0> : tensor<2x4xf32>}> : () -> tensor<2x4xf32>
    %zero = "kiln.constant"() <{value = dense<0.0> : tensor<f32>}> : () -> tensor<f32>
    %mixed = "kiln.constant"() <{value = dense<[1.0, 1.0, 2.0, 1.0]> : tensor<4xf32>}> : () -> tensor<4xf32>
    %ione = "kiln.constant"() <{value = dense<1> : tensor<i32>}> : () -> tensor<i32>
    %a = "kiln.add"(%x, %zeros) : (tensor<4xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
    %b = "kiln.add"(%i, %zero) : (tensor<4xi32>, tensor<f32>) -> tensor<4xf32>
    %c = "kiln.mul"(%x, %mixed) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
    %d = "kiln.div"(%i, %ione) : (tensor<4xi32>, tensor<i32>) -> tensor<4xf32>
    %e = "kiln.mul"(%x, %zero) : (tensor<4xf32>, tensor<f32>) -> tensor<4xf32>
    func.return %a, %b, %c, %d, %e : tensor<2x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>
  }
}
