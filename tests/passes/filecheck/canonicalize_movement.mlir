// RUN: kiln opt %s -p kiln-canonicalize | filecheck %s
// Data-movement rules of passes/canonicalize.py. Every function here is also run by the
// interpreter before and after the pass (tests/passes/test_filecheck.py).

builtin.module {
  // CHECK-LABEL: func.func @reshape_of_reshape
  // CHECK-NEXT:    %[[R:.*]] = "kiln.reshape"(%x) <{shape = array<i64: 6, 4>}>
  // CHECK-NEXT:    func.return %[[R]]
  func.func @reshape_of_reshape(%x: tensor<2x3x4xf32>) -> tensor<6x4xf32> {
    %a = "kiln.reshape"(%x) <{shape = array<i64: 24>}> : (tensor<2x3x4xf32>) -> tensor<24xf32>
    %b = "kiln.reshape"(%a) <{shape = array<i64: 6, 4>}> : (tensor<24xf32>) -> tensor<6x4xf32>
    func.return %b : tensor<6x4xf32>
  }

  // A reshape chain that returns to the input's shape disappears entirely.
  // CHECK-LABEL: func.func @reshape_round_trip
  // CHECK-NOT:     kiln.reshape
  // CHECK:         func.return %x
  func.func @reshape_round_trip(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
    %a = "kiln.reshape"(%x) <{shape = array<i64: 3, 2>}> : (tensor<2x3xf32>) -> tensor<3x2xf32>
    %b = "kiln.reshape"(%a) <{shape = array<i64: 2, 3>}> : (tensor<3x2xf32>) -> tensor<2x3xf32>
    func.return %b : tensor<2x3xf32>
  }

  // CHECK-LABEL: func.func @permute_of_permute
  // CHECK-NEXT:    %[[P:.*]] = "kiln.permute"(%x) <{dims = array<i64: 2, 0, 1>}>
  // CHECK-NEXT:    func.return %[[P]]
  func.func @permute_of_permute(%x: tensor<2x3x4xf32>) -> tensor<4x2x3xf32> {
    %a = "kiln.permute"(%x) <{dims = array<i64: 1, 2, 0>}> : (tensor<2x3x4xf32>) -> tensor<3x4x2xf32>
    %b = "kiln.permute"(%a) <{dims = array<i64: 1, 2, 0>}> : (tensor<3x4x2xf32>) -> tensor<4x2x3xf32>
    func.return %b : tensor<4x2x3xf32>
  }

  // A transpose of a transpose is no permute at all; a square transpose is kept even
  // though its type equals its input's.
  // CHECK-LABEL: func.func @permute_cancels
  // CHECK-NEXT:    %[[T:.*]] = "kiln.permute"(%x) <{dims = array<i64: 1, 0>}>
  // CHECK-NEXT:    func.return %x, %[[T]]
  func.func @permute_cancels(%x: tensor<3x3xf32>) -> (tensor<3x3xf32>, tensor<3x3xf32>) {
    %a = "kiln.permute"(%x) <{dims = array<i64: 1, 0>}> : (tensor<3x3xf32>) -> tensor<3x3xf32>
    %b = "kiln.permute"(%a) <{dims = array<i64: 1, 0>}> : (tensor<3x3xf32>) -> tensor<3x3xf32>
    %c = "kiln.permute"(%x) <{dims = array<i64: 0, 1>}> : (tensor<3x3xf32>) -> tensor<3x3xf32>
    %d = "kiln.permute"(%c) <{dims = array<i64: 1, 0>}> : (tensor<3x3xf32>) -> tensor<3x3xf32>
    func.return %b, %d : tensor<3x3xf32>, tensor<3x3xf32>
  }

  // CHECK-LABEL: func.func @slices
  // CHECK-NEXT:    %[[S:.*]] = "kiln.slice"(%x) <{dim = 1 : i64, start = 0 : i64, end = 3 : i64, step = 2 : i64}>
  // CHECK-NEXT:    func.return %x, %[[S]]
  func.func @slices(%x: tensor<2x4xf32>) -> (tensor<2x4xf32>, tensor<2x2xf32>) {
    %full = "kiln.slice"(%x) <{dim = -1 : i64, start = 0 : i64, end = 4 : i64, step = 1 : i64}> : (tensor<2x4xf32>) -> tensor<2x4xf32>
    %part = "kiln.slice"(%x) <{dim = 1 : i64, start = 0 : i64, end = 3 : i64, step = 2 : i64}> : (tensor<2x4xf32>) -> tensor<2x2xf32>
    func.return %full, %part : tensor<2x4xf32>, tensor<2x2xf32>
  }

  // CHECK-LABEL: func.func @expand_cast_concat
  // CHECK-NEXT:    %[[E:.*]] = "kiln.expand"(%x) <{shape = array<i64: 2, 2, 4>}>
  // CHECK-NEXT:    %[[C:.*]] = "kiln.cast"(%x) <{dtype = "float64"}>
  // CHECK-NEXT:    func.return %x, %x, %x, %[[E]], %[[C]]
  func.func @expand_cast_concat(%x: tensor<2x4xf32>) -> (tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x2x4xf32>, tensor<2x4xf64>) {
    %e = "kiln.expand"(%x) <{shape = array<i64: 2, 4>}> : (tensor<2x4xf32>) -> tensor<2x4xf32>
    %c = "kiln.cast"(%x) <{dtype = "float32"}> : (tensor<2x4xf32>) -> tensor<2x4xf32>
    %k = "kiln.concat"(%x) <{dim = 0 : i64}> : (tensor<2x4xf32>) -> tensor<2x4xf32>
    %e2 = "kiln.expand"(%x) <{shape = array<i64: 2, 2, 4>}> : (tensor<2x4xf32>) -> tensor<2x2x4xf32>
    %c2 = "kiln.cast"(%x) <{dtype = "float64"}> : (tensor<2x4xf32>) -> tensor<2x4xf64>
    func.return %e, %c, %k, %e2, %c2 : tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x2x4xf32>, tensor<2x4xf64>
  }
}
