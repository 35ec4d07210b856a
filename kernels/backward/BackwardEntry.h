//===- BackwardEntry.h - What the backward's entries share ------*- C++ -*-===//
//
// Internal to kernels/ (pulls in MLIR): the backward's arguments as IR
// values and one entry's kernel (its ForwardKernel, arguments, thread index
// and the index arithmetic of the gradients and the workspace), shared by
// the preprocessing and conversion entries (BackwardAux.cpp) and every
// family's main kernels (sm80: scalar, BackwardSm80.cpp; mma.sync,
// BackwardMmaSm80.cpp).
//
//===----------------------------------------------------------------------===//
#ifndef FLASHJIT_KERNELS_BACKWARD_BACKWARDENTRY_H
#define FLASHJIT_KERNELS_BACKWARD_BACKWARDENTRY_H

#include "common/ForwardKernel.h"

#include "flashjit/kernels/Backward.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

namespace flashjit {

/// BackwardKernelArgs, after ForwardKernelArgs, as IR values.
struct BackwardArgs {
  Value dO, dQ, dK, dV, dBias, ws;
  Value dOBS, dOHS, dORS, dQBS, dQHS, dQRS, dKBS, dKHS, dKRS, dVBS, dVHS, dVRS;
  Value dBiasBS, dBiasHS, dBiasRS;
  Value wsRowBS, wsRowHS, wsLse, wsDSum, wsDq, wsDqSplit, wsDqRow;
  Value dqSplits; ///< index
  Value scale;    ///< f32

  explicit BackwardArgs(ForwardKernel &fk) {
    Emitter &e = fk.e;
    dO = fk.extraArg(0), dQ = fk.extraArg(1), dK = fk.extraArg(2);
    dV = fk.extraArg(3), dBias = fk.extraArg(4), ws = fk.extraArg(5);
    auto stride = [&](int i) {
      return e.toIndex(fk.extraArg(kBackwardPointerArgs + i));
    };
    dOBS = stride(0), dOHS = stride(1), dORS = stride(2);
    dQBS = stride(3), dQHS = stride(4), dQRS = stride(5);
    dKBS = stride(6), dKHS = stride(7), dKRS = stride(8);
    dVBS = stride(9), dVHS = stride(10), dVRS = stride(11);
    dBiasBS = stride(12), dBiasHS = stride(13), dBiasRS = stride(14);
    wsRowBS = stride(15), wsRowHS = stride(16), wsLse = stride(17);
    wsDSum = stride(18), wsDq = stride(19), wsDqSplit = stride(20);
    wsDqRow = stride(21);
    constexpr int kScalars = kBackwardPointerArgs + kBackwardStrideArgs;
    dqSplits = e.toIndex(fk.extraArg(kScalars));
    scale = fk.extraArg(kScalars + 1);
  }
};

inline SmallVector<Type> backwardArgTypes(OpBuilder &b, const AttentionSpec &spec) {
  Type elemTy = spec.dtype == DType::BF16 ? Type(b.getBF16Type())
                                          : Type(b.getF16Type());
  auto space = b.getI64IntegerAttr(kGlobalSpace);
  Type gmem = mlir::MemRefType::get({kGlobalExtent}, elemTy, mlir::AffineMap(), space);
  Type gmemF32 =
      mlir::MemRefType::get({kGlobalExtent}, b.getF32Type(), mlir::AffineMap(), space);
  SmallVector<Type> types(5, gmem); // dO, dQ, dK, dV, dBias
  types.push_back(gmemF32);         // workspace
  types.append(kBackwardStrideArgs, b.getI64Type());
  types.append({b.getI32Type(), b.getF32Type()});
  assert(types.size() == kBackwardArgCount);
  return types;
}

inline SmallVector<Type> concat(SmallVector<Type> a, ArrayRef<Type> b) {
  a.append(b.begin(), b.end());
  return a;
}

/// The steps of one key tile of a main kernel: (query head g of the K/V
/// head's group, row block m) for g in [0, gqa), m in [loM, hiM) (the
/// blocks that see the tile), m fastest.
struct StepWalk {
  Value loM, hiM, steps, firstHead;

  static StepWalk of(ForwardKernel &fk, Emitter &x, Value nBlock, int gqa) {
    StepWalk w;
    std::tie(w.loM, w.hiM) = fk.queryBlockRange(x, nBlock);
    w.steps = x.mul(x.sub(w.hiM, w.loM), x.idx(gqa));
    w.firstHead = x.mul(fk.kvHead, x.idx(gqa));
    return w;
  }
  /// The step after (mBlock, head): the next row block, or the next head's
  /// first.
  std::pair<Value, Value> next(Emitter &s, Value mBlock, Value head) const {
    Value nextM = s.add(mBlock, s.idx(1));
    Value wrap = s.cmp(mlir::arith::CmpIPredicate::eq, nextM, hiM);
    return {s.select(wrap, loM, nextM),
            s.select(wrap, s.add(head, s.idx(1)), head)};
  }
};

/// One backward entry: its ForwardKernel (arguments, sequence), the
/// backward's arguments and the thread index.
struct Entry {
  ForwardKernel fk;
  Emitter &e;
  BackwardArgs a;
  Value tid;

  /// `extraArgs` come after the backward's (fk.extraArg(kBackwardArgCount
  /// + i)): tensor maps.
  Entry(OpBuilder &builder, mlir::gpu::GPUModuleOp module, StringRef name,
        const AttentionSpec &spec, const TileConfig &cfg, int threads,
        ArrayRef<Type> extraArgs = {})
      : fk(builder, module, name, spec, cfg, threads,
           concat(backwardArgTypes(builder, spec), extraArgs)),
        e(fk.e), a(fk) {
    tid = mlir::gpu::ThreadIdOp::create(builder, fk.loc, mlir::gpu::Dimension::x);
  }

  /// An element of a global or shared memref, as f32.
  Value loadF32(Emitter &x, Value mem, Value i) {
    Value v = mlir::memref::LoadOp::create(x.b, x.loc, mem, ValueRange{i});
    if (v.getType() == fk.f32)
      return v;
    return mlir::arith::ExtFOp::create(x.b, x.loc, fk.f32, v);
  }
  void store(Emitter &x, Value v, Value mem, Value i) {
    Type elem = mlir::cast<mlir::MemRefType>(mem.getType()).getElementType();
    if (elem != v.getType())
      v = mlir::arith::TruncFOp::create(x.b, x.loc, elem, v);
    mlir::memref::StoreOp::create(x.b, x.loc, v, mem, ValueRange{i});
  }
  /// sum over c in [0, n) of a[aBase + c * aStep] * b[bBase + c * bStep]
  /// (f32, in order of c). A plain loop of constant trip count, which LLVM
  /// may unroll (the products' inner loops: unrolled they issue several
  /// loads per branch).
  Value dot(Emitter &x, Value aMem, Value aBase, int aStep, Value bMem,
            Value bBase, int bStep, int n) {
    auto loop = mlir::scf::ForOp::create(
        x.b, x.loc, x.idx(0), x.idx(n), x.idx(1), ValueRange{x.f32(0)},
        [&](OpBuilder &lb, Location l, Value c, ValueRange acc) {
          Emitter y{lb, l};
          Value av = loadF32(y, aMem, y.add(aBase, y.mul(c, y.idx(aStep))));
          Value bv = loadF32(y, bMem, y.add(bBase, y.mul(c, y.idx(bStep))));
          mlir::scf::YieldOp::create(lb, l, ValueRange{y.fma(av, bv, acc[0])});
        });
    return loop.getResult(0);
  }
  /// for (i = tid; i < count; i += threads) body(i).
  void forEach(Emitter &x, Value count, int threads,
               function_ref<void(Emitter &, Value)> body) {
    x.runtimeLoop(tid, count, threads, body);
  }
  /// The main kernels' CTA: K/V head and batch from the grid's y and z,
  /// the sequence located, the causal diagonal and score modifiers set.
  /// Returns the sequence's key rows, key padding included (dK and dV write
  /// all of them): seqK before key lengths shorten it.
  Value locateKeyTile(const AttentionSpec &spec) {
    OpBuilder &builder = fk.builder;
    Location loc = fk.loc;
    fk.kvHead = mlir::gpu::BlockIdOp::create(builder, loc,
                                             mlir::gpu::Dimension::y);
    fk.batch = mlir::gpu::BlockIdOp::create(builder, loc,
                                            mlir::gpu::Dimension::z);
    fk.locateSequence();
    Value keyRows = e.toIndex(fk.seqKArg);
    if (spec.varlen)
      keyRows = e.sub(e.toIndex(mlir::memref::LoadOp::create(
                          builder, loc, fk.cuSeqlensK,
                          ValueRange{e.add(fk.batch, e.idx(1))})),
                      fk.startK);
    fk.diag = e.sub(fk.seqK, fk.seqQ);
    return keyRows;
  }
  /// Workspace row of query `query` (of this sequence) of head `head`.
  Value wsRow(Emitter &x, Value head, Value query) {
    return x.add(x.add(x.mul(fk.batch, a.wsRowBS), x.mul(head, a.wsRowHS)),
                 x.add(fk.startQ, query));
  }
  /// Element offset of row `query` of head `head` of a query-shaped tensor.
  Value queryRow(Emitter &x, Value bs, Value hs, Value rs, Value head,
                 Value query) {
    return x.add(x.add(x.mul(fk.batch, bs), x.mul(head, hs)),
                 x.mul(x.add(fk.startQ, query), rs));
  }
  Value keyRow(Emitter &x, Value bs, Value hs, Value rs, Value head,
               Value key) {
    return x.add(x.add(x.mul(fk.batch, bs), x.mul(head, hs)),
                 x.mul(x.add(fk.startK, key), rs));
  }
  /// dQ partial sum `split`'s element (head, query, col).
  Value dqIndex(Emitter &x, Value split, Value head, Value query, Value col) {
    return x.add(x.add(a.wsDq, x.mul(split, a.wsDqSplit)),
                 x.add(x.mul(wsRow(x, head, query), a.wsDqRow), col));
  }
  /// dBias element (head, query, key): positions within the sequence, as
  /// the bias tensor's.
  Value dBiasIndex(Emitter &x, Value head, Value query, Value key) {
    return x.add(x.add(x.add(x.mul(fk.batch, a.dBiasBS),
                             x.mul(head, a.dBiasHS)),
                       x.mul(query, a.dBiasRS)),
                 key);
  }
  /// Adds `sum` to dQ element `col` of the workspace row at `rowAt`
  /// (dqIndex of column 0): a float32 atomic, or, deterministic, a plain
  /// add into this CTA's own partial. `inCols` (null: every column is) says
  /// whether `col` is below head_dim_qk; a padding column's sum is 0 and
  /// adds it to the row's first element, no branch per element (branches
  /// spilled the sm80 kernel at d = 176..240).
  void addDq(Emitter &x, Value rowAt, Value col, Value sum, Value inCols) {
    if (fk.spec.deterministic) {
      x.ifThen(inCols, [&] {
        Value at = x.add(rowAt, col);
        store(x, x.fadd(loadF32(x, a.ws, at), sum), a.ws, at);
      });
      return;
    }
    Value at = x.add(rowAt, col);
    if (inCols) {
      at = x.select(inCols, at, rowAt);
      sum = x.select(inCols, sum, x.f32(0));
    }
    mlir::memref::AtomicRMWOp::create(x.b, x.loc,
                                      mlir::arith::AtomicRMWKind::addf, sum,
                                      a.ws, ValueRange{at});
  }

  /// The workspace array of row value `which` (0: LSE', 1: D).
  Value rowArray(int which) { return which == 0 ? a.wsLse : a.wsDSum; }

  /// LSE' (which 0) and D (1) of query rows [first, first + rows) of head
  /// `head` into rowVals[which][slot][r] ([2][stages][rows] f32 in shared
  /// memory), one 4-byte cp.async each, on threads [0, rows) and [rows,
  /// 2 rows) where the CTA has them; rows past seqlen_q copy the last row's
  /// (the reader replaces them). The caller commits.
  void stageRowValues(Emitter &x, Value rowVals, Value head, Value first,
                      Value slot, int rows, int threads) {
    Value tid = x.freshSreg("%tid.x");
    const bool apart = 2 * rows <= threads;
    for (int which = 0; which < 2; ++which) {
      const int lane0 = apart ? which * rows : 0;
      for (int r = 0; r < (rows + threads - 1) / threads; ++r) {
        Value row = x.sub(x.add(tid, x.idx(r * threads)), x.idx(lane0));
        Value in;
        if (lane0 > 0)
          in = x.cmp(mlir::arith::CmpIPredicate::uge, tid, x.idx(lane0));
        if (lane0 > 0 || (r + 1) * threads > rows)
          in = in ? x.andI(in, x.lt(row, x.idx(rows))) : x.lt(row, x.idx(rows));
        x.ifThen(in, [&] {
          Value query = x.minS(x.add(first, row), x.sub(fk.seqQ, x.idx(1)));
          mlir::nvgpu::DeviceAsyncCopyOp::create(
              x.b, x.loc,
              mlir::nvgpu::DeviceAsyncTokenType::get(x.b.getContext()),
              rowVals, ValueRange{x.idx(which), slot, row}, a.ws,
              ValueRange{x.add(rowArray(which), wsRow(x, head, query))},
              x.b.getIndexAttr(1), Value(), mlir::UnitAttr());
        });
      }
    }
  }

  /// Stores accumulator tiles of the gradient of K or V (dK, dV), rounded:
  /// tiles[mt][nt] of a warp hold rows firstKey + 16 mt (+ 8: half 1) +
  /// group and columns col0 + 8 nt + 2 inGroup (+1), as mma.sync's and
  /// wgmma's accumulators do; rows at or past `keyRows` and columns at or
  /// past `dim` are not stored. Times `factor` when it is given.
  void storeKeyTiles(Emitter &x, const Scores &tiles, Value firstKey,
                     Value col0, Value keyRows, Value group, Value inGroup,
                     int dim, int paddedDim, Value dst, Value bs, Value hs,
                     Value rs, Value factor) {
    const bool pairs = fk.spec.globalAlignElems >= 2;
    for (size_t mt = 0; mt < tiles.size(); ++mt)
      for (int half = 0; half < 2; ++half) {
        Value key = x.add(firstKey, x.add(x.idx(mt * 16 + half * 8), group));
        x.ifThen(x.lt(key, keyRows), [&] {
          Value rowBase = keyRow(x, bs, hs, rs, fk.kvHead, key);
          for (size_t nt = 0; nt < tiles[mt].size(); ++nt) {
            Value col = x.add(x.add(col0, x.idx(nt * 8)),
                              x.mul(inGroup, x.idx(2)));
            SmallVector<Value, 2> vals;
            for (int el = 0; el < 2; ++el) {
              Value v = tiles[mt][nt][2 * half + el];
              vals.push_back(factor ? x.fmul(v, factor) : v);
            }
            Value at = x.add(rowBase, col);
            if (pairs && dim % 2 == 0) {
              // The column is even, and so is every row start.
              Value inCols = dim == paddedDim ? Value() : x.lt(col, x.idx(dim));
              x.ifThen(inCols, [&] {
                mlir::vector::StoreOp::create(
                    x.b, x.loc, fk.roundPair(x, vals[0], vals[1]), dst,
                    ValueRange{at}, /*nontemporal=*/false, llvm::MaybeAlign(4));
              });
              continue;
            }
            for (int el = 0; el < 2; ++el) {
              Value elCol = x.add(col, x.idx(el));
              Value inCols =
                  dim == paddedDim ? Value() : x.lt(elCol, x.idx(dim));
              x.ifThen(inCols, [&] { store(x, vals[el], dst, x.add(at, x.idx(el))); });
            }
          }
        });
      }
  }

  void finish() { mlir::gpu::ReturnOp::create(fk.builder, fk.loc); }
};

/// A backward module (BackwardAux.cpp): <name>_pre (D = rowsum(dO * O),
/// LSE * log2(e), the dQ partial sums and dBias zeroed), the family's main
/// kernel <name> by `buildMain`, and <name>_dq (dQ from the partial sums).
void buildBackwardModule(OpBuilder &builder, mlir::gpu::GPUModuleOp module,
                         StringRef name, const AttentionSpec &spec,
                         const TileConfig &cfg,
                         function_ref<void(const std::string &main)> buildMain);

/// The main entry <name> with mma.sync products (TileConfig::scalar off).
void buildMainMma(OpBuilder &builder, mlir::gpu::GPUModuleOp module,
                  StringRef name, const AttentionSpec &spec,
                  const TileConfig &cfg);

} // namespace flashjit

#endif // FLASHJIT_KERNELS_BACKWARD_BACKWARDENTRY_H
