// RUN: kiln opt %s -p fold-constants{max-elements=8} | filecheck %s
// All-constant ops become kiln.constant, evaluated by the op's reference implementation.
// max-elements=8 stands in for the default 4096 so the "too big to fold" case stays short.

builtin.module {
  // A chain folds to one literal; the inputs it used up are erased with it.
  // CHECK-LABEL: func.func @chain
  // CHECK-NEXT:    %[[C:.*]] = "kiln.constant"() <{value = dense<[3.000000e+00, 6.000000e+00]> : tensor<2xf32>}>
  // CHECK-NEXT:    %[[Y:.*]] = "kiln.add"(%x, %[[C]])
  // CHECK-NEXT:    func.return %[[Y]]
  func.func @chain(%x: tensor<2xf32>) -> tensor<2xf32> {
    %a = "kiln.constant"() <{value = dense<[1.0, 2.0]> : tensor<2xf32>}> : () -> tensor<2xf32>
    %two = "kiln.constant"() <{value = dense<2.0> : tensor<f32>}> : () -> tensor<f32>
    %b = "kiln.mul"(%a, %two) : (tensor<2xf32>, tensor<f32>) -> tensor<2xf32>
    %c = "kiln.add"(%b, %a) : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
    %d = "kiln.sub"(%c, %two) : (tensor<2xf32>, tensor<f32>) -> tensor<2xf32>
    %e = "kiln.relu"(%d) : (tensor<2xf32>) -> tensor<2xf32>
    %f = "kiln.add"(%e, %two) : (tensor<2xf32>, tensor<f32>) -> tensor<2xf32>
    %y = "kiln.add"(%x, %f) : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
    func.return %y : tensor<2xf32>
  }

  // Movement, compare and cast ops fold too, keeping their result types.
  // CHECK-LABEL: func.func @types
  // CHECK-NEXT:    "kiln.constant"() <{value = dense<[[1, 3], [2, 4]]> : tensor<2x2xi64>}>
  // CHECK-NEXT:    "kiln.constant"() <{value = dense<[false, true]> : tensor<2xi1>}>
  // CHECK-NEXT:    "kiln.constant"() <{value = dense<[1.000000e+00, 2.000000e+00]> : tensor<2xf64>}>
  // CHECK-NEXT:    func.return
  func.func @types() -> (tensor<2x2xi64>, tensor<2xi1>, tensor<2xf64>) {
    %a = "kiln.constant"() <{value = dense<[[1, 2], [3, 4]]> : tensor<2x2xi64>}> : () -> tensor<2x2xi64>
    %t = "kiln.permute"(%a) <{dims = array<i64: 1, 0>}> : (tensor<2x2xi64>) -> tensor<2x2xi64>
    %f = "kiln.constant"() <{value = dense<[1.0, 2.0]> : tensor<2xf32>}> : () -> tensor<2xf32>
    %one = "kiln.constant"() <{value = dense<1.5> : tensor<f32>}> : () -> tensor<f32>
    %gt = "kiln.gt"(%f, %one) : (tensor<2xf32>, tensor<f32>) -> tensor<2xi1>
    %d = "kiln.cast"(%f) <{dtype = "float64"}> : (tensor<2xf32>) -> tensor<2xf64>
    func.return %t, %gt, %d : tensor<2x2xi64>, tensor<2xi1>, tensor<2xf64>
  }

  // CHECK-LABEL: func.func @not_folded
  // Parameters are values outside the IR, never literals.
  // CHECK:         "kiln.mul"(%w, %two)
  // A 16-element result is over max-elements=8: the op stays, and so does its input.
  // CHECK:         %[[BIG:.*]] = "kiln.expand"(%two) <{shape = array<i64: 4, 4>}>
  // CHECK:         func.return %{{.*}}, %[[BIG]]
  func.func @not_folded() -> (tensor<2xf32>, tensor<4x4xf32>) {
    %w = "kiln.param"() <{name = "w"}> : () -> tensor<2xf32>
    %two = "kiln.constant"() <{value = dense<2.0> : tensor<f32>}> : () -> tensor<f32>
    %a = "kiln.mul"(%w, %two) : (tensor<2xf32>, tensor<f32>) -> tensor<2xf32>
    %big = "kiln.expand"(%two) <{shape = array<i64: 4, 4>}> : (tensor<f32>) -> tensor<4x4xf32>
    func.return %a, %big : tensor<2xf32>, tensor<4x4xf32>
  }
}
